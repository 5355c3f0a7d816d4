"""Parity with the reference implementation (cache-dit 1.5.3) on the same model, inputs and config."""

import pytest

import dit_fx
from helpers import run_steps
from reference_harness import run_cache_dit
from tiny_models import make_trajectory

STEPS = 24

CASES = [
    # model, Fn, Bn, threshold, extra config
    ("flux_deep", 1, 0, 0.39, {}),
    ("flux_deep", 2, 1, 0.25, {}),
    ("wan_deep", 1, 0, 0.22, {}),
    ("wan_deep", 2, 1, 0.30, {}),
    ("wan_deep", 1, 0, 0.30, {"max_cached_steps": 6}),
    ("wan_deep", 2, 0, 0.22, {"max_warmup_steps": 4, "warmup_interval": 2}),
    ("qwenimage", 1, 1, 0.23, {}),
    ("sd3", 1, 1, 0.22, {}),
]


@pytest.mark.parametrize("name, fn, bn, threshold, extra", CASES)
def test_same_cached_steps_and_outputs_as_cache_dit(tiny, name, fn, bn, threshold, extra):
    spec = tiny(name)
    model = spec.build()
    steps = make_trajectory(name, STEPS)
    kwargs = dict(max_warmup_steps=3, warmup_interval=1, max_cached_steps=-1)
    kwargs.update(extra)
    ref = run_cache_dit(model, steps, Fn=fn, Bn=bn, residual_diff_threshold=threshold, **kwargs)

    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=fn, bn_blocks=bn, residual_diff_threshold=threshold, **kwargs))
    got = run_steps(model, steps)
    stats = dit_fx.summary(model)

    assert ref["cached_steps"], "the case must cache something to be meaningful"
    assert stats.cached_steps == ref["cached_steps"]
    assert stats.residual_diffs.keys() == ref["residual_diffs"].keys()
    for step, diff in ref["residual_diffs"].items():
        assert stats.residual_diffs[step] == pytest.approx(diff, rel=1e-4, abs=1e-6)
    for step, (a, b) in enumerate(zip(got, ref["outputs"])):
        err = ((a - b).abs().max() / b.abs().max()).item()
        assert err <= 1e-5, f"step {step}: relative error {err:.2e}"
