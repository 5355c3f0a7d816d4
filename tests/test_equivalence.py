"""With caching never triggered, the rewritten graph is bit-exact with the unmodified model."""

import pytest
import torch

import dit_fx
from helpers import run_steps
from tiny_models import make_trajectory


@pytest.mark.parametrize("name", ["flux", "wan", "qwenimage", "sd3"])
@pytest.mark.parametrize("fn_bn", [(1, 0), (1, 1), (2, 1)])
def test_never_cached_is_exact(tiny, name, fn_bn):
    spec = tiny(name)
    model = spec.build()
    steps = make_trajectory(name, 4)
    expected = run_steps(model, steps)
    fn, bn = fn_bn
    if fn + bn >= spec.num_blocks:
        with pytest.raises(ValueError, match="fn_blocks"):
            dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=fn, bn_blocks=bn))
        return
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=fn, bn_blocks=bn, residual_diff_threshold=0.0))
    got = run_steps(model, steps)
    assert dit_fx.plan(model).supported
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert dit_fx.summary(model).cached_steps == []
    assert dit_fx.summary(model).executed_steps == 4


def test_warmup_only_is_exact_and_disable_restores(tiny):
    spec = tiny("flux")
    model = spec.build()
    original_forward = model.forward
    steps = make_trajectory("flux", 5)
    expected = run_steps(model, steps)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=100))
    assert model.forward is not original_forward and getattr(model.forward, "__dit_fx__", False)
    for a, b in zip(run_steps(model, steps), expected):
        assert torch.equal(a, b)
    dit_fx.disable(model)
    assert "forward" not in model.__dict__, "disable must remove the instance attribute it added"
    assert model.forward == original_forward
    for a, b in zip(run_steps(model, steps), expected):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        dit_fx.summary(model)


def test_disable_keeps_a_users_own_forward_override(tiny):
    spec = tiny("wan")
    model = spec.build()
    calls = []
    inner = model.forward

    def user_forward(*a, **k):
        calls.append(1)
        return inner(*a, **k)

    model.forward = user_forward
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    dit_fx.disable(model)
    assert model.__dict__["forward"] is user_forward


def test_compile_true_matches_eager_closely(tiny):
    """Inductor-lowered partitions (fused kernels): equal up to float rounding."""
    spec = tiny("flux")
    model = spec.build()
    steps = make_trajectory("flux", 3)
    expected = run_steps(model, steps)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), compile=True)
    for a, b in zip(run_steps(model, steps), expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
