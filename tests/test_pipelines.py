"""dit_fx.optimize on whole diffusers pipelines built from tiny random components (no downloads)."""

import pytest
import torch

import dit_fx
from tiny_pipelines import PIPELINES

STEPS = 6


def first_output(result):
    return result[0] if isinstance(result, tuple) else getattr(result, "images", getattr(result, "frames", result))


def run_pipe(pipe, name, height=16, width=16, steps=STEPS, seed=0):
    _, kwargs_fn = PIPELINES[name]
    with torch.no_grad():
        return first_output(pipe(**kwargs_fn(height, width, steps, seed)))


@pytest.mark.parametrize("name", ["flux", "wan", "qwenimage"])
def test_pipeline_twice_same_seed_then_new_resolution(name):
    build, _ = PIPELINES[name]
    pipe = build()
    plain = run_pipe(pipe, name)
    config_before = dict(pipe.transformer.config)
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=2)
    assert dit_fx.optimize(pipe, cfg) is pipe
    assert dict(pipe.transformer.config) == config_before and pipe.transformer.dtype == torch.float32
    first = run_pipe(pipe, name)
    stats1 = dit_fx.summary(pipe)["transformer"]
    second = run_pipe(pipe, name)
    stats2 = dit_fx.summary(pipe)["transformer"]
    assert torch.equal(first, second), "same seed -> same image: nothing leaks between calls"
    assert stats2.generation == stats1.generation + 1
    assert (stats1.cached_steps, stats1.cfg_cached_steps, stats1.residual_diffs) == (
        stats2.cached_steps,
        stats2.cfg_cached_steps,
        stats2.residual_diffs,
    )
    assert stats1.executed_steps == STEPS and stats1.cached_steps, stats1
    cfg_pipeline = name != "flux"
    assert stats1.separate_cfg == cfg_pipeline and stats1.calls == STEPS * (2 if cfg_pipeline else 1)
    assert bool(stats1.cfg_cached_steps) == cfg_pipeline
    assert set(stats1.branches) == ({"cond", "uncond"} if cfg_pipeline else {"cond"})
    assert not torch.equal(first, plain), "some steps were cached"
    bigger = run_pipe(pipe, name, height=32, width=32)
    stats3 = dit_fx.summary(pipe)["transformer"]
    assert stats3.executed_steps == STEPS and stats3.generation == stats2.generation + 1
    assert torch.isfinite(bigger).all()
    dit_fx.disable(pipe)
    assert "forward" not in pipe.transformer.__dict__ and "cache_context" not in pipe.transformer.__dict__
    assert "set_timesteps" not in pipe.scheduler.__dict__
    assert torch.equal(run_pipe(pipe, name), plain)


def test_wan22_per_transformer_configs_take_effect():
    build, _ = PIPELINES["wan22"]
    pipe = build()
    never = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0)
    eager = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=1)
    dit_fx.optimize(pipe, {"transformer": never, "transformer_2": eager})
    run_pipe(pipe, "wan22", steps=8)
    stats = dit_fx.summary(pipe)
    assert set(stats) == {"transformer", "transformer_2"}
    high, low = stats["transformer"], stats["transformer_2"]
    assert high.executed_steps > 0 and low.executed_steps > 0
    assert high.executed_steps + low.executed_steps == 8, "each expert sees its own range of steps"
    assert high.cached_steps == [] and high.cfg_cached_steps == [] and high.residual_diffs == {}
    assert low.cached_steps and low.cfg_cached_steps
    assert dit_fx.plan(pipe)["transformer_2"].supported


def test_pipeline_with_per_block_list_configs():
    """Configs by block list nest under a component name (or apply to every transformer)."""
    build, _ = PIPELINES["flux"]
    pipe = build()
    plain = run_pipe(pipe, "flux")
    never = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0)
    dit_fx.optimize(pipe, {"transformer": {"transformer_blocks": never, "single_transformer_blocks": never}})
    assert torch.equal(run_pipe(pipe, "flux"), plain)
    eager = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=2)
    dit_fx.optimize(pipe, {"transformer_blocks": never, "single_transformer_blocks": eager})
    first = run_pipe(pipe, "flux")
    stats = dit_fx.summary(pipe)["transformer"]
    assert set(stats) == {"transformer_blocks", "single_transformer_blocks"}
    assert stats["transformer_blocks"].cached_steps == []
    assert stats["single_transformer_blocks"].cached_steps == list(range(2, STEPS))
    assert torch.equal(run_pipe(pipe, "flux"), first), "per-list state is fresh for every pipe(...) call"
    assert dit_fx.summary(pipe)["transformer"]["single_transformer_blocks"].generation == stats["transformer_blocks"].generation + 1


def test_pipeline_config_mapping_is_checked():
    build, _ = PIPELINES["flux"]
    pipe = build()
    with pytest.raises(ValueError, match="transformer_2"):
        dit_fx.optimize(pipe, {"transformer_2": dit_fx.DBCacheConfig(fn_blocks=1)})
    with pytest.raises(ValueError, match="fn_blocks"):
        dit_fx.optimize(pipe, {"fn_blocks": 0})


def test_accelerate_hooks_keep_running_around_the_optimized_forward(tiny):
    """Offloading / device-map hooks (accelerate) wrap forward; dit_fx takes the inner slot."""
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    from helpers import run_steps
    from tiny_models import make_trajectory

    class Counting(ModelHook):
        calls = 0

        def pre_forward(self, module, *args, **kwargs):
            Counting.calls += 1
            return args, kwargs

    spec = tiny("wan_deep")
    model = spec.build()
    steps = make_trajectory("wan_deep", 8)
    expected = run_steps(model, steps)
    add_hook_to_module(model, Counting())
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    got = run_steps(model, steps)
    assert Counting.calls == 8, "the accelerate hook runs on every call"
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert dit_fx.summary(model).executed_steps == 8
    dit_fx.disable(model)
    remove_hook_from_module(model)
    # accelerate itself leaves the original bound forward as an instance attribute
    assert not getattr(model.forward, "__dit_fx__", False) and "_old_forward" not in model.__dict__
    for a, b in zip(run_steps(model, steps), expected):
        assert torch.equal(a, b)
