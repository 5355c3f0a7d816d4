"""Separate CFG on Wan (two calls per step, cond then uncond): parity with cache-dit 1.5.3."""

import pytest
import torch

import dit_fx
from helpers import run_steps
from reference_harness import run_cache_dit
from tiny_models import make_trajectory

STEPS = 20


def cfg_calls(name="wan_deep", steps=STEPS):
    """cond and uncond calls per step: same latents and timestep, different text embeddings."""
    cond = make_trajectory(name, steps)
    g = torch.Generator().manual_seed(4242)
    negative = torch.randn(cond[0]["encoder_hidden_states"].shape, generator=g)
    calls = []
    for c in cond:
        calls += [c, dict(c, encoder_hidden_states=negative)]
    return calls


@pytest.mark.parametrize("separate", [None, True])
@pytest.mark.parametrize("fn, bn, threshold", [(1, 0, 0.15), (2, 1, 0.15)])
def test_separate_cfg_matches_cache_dit(tiny, separate, fn, bn, threshold):
    spec = tiny("wan_deep")
    model = spec.build()
    calls = cfg_calls()
    ref = run_cache_dit(model, calls, Fn=fn, Bn=bn, residual_diff_threshold=threshold, max_warmup_steps=3,
                        enable_separate_cfg=True)
    cfg = dit_fx.DBCacheConfig(fn_blocks=fn, bn_blocks=bn, residual_diff_threshold=threshold, max_warmup_steps=3,
                               enable_separate_cfg=separate)
    dit_fx.optimize(model, cfg)
    got = run_steps(model, calls)
    stats = dit_fx.summary(model)
    assert stats.separate_cfg and stats.executed_steps == STEPS and stats.calls == 2 * STEPS
    assert ref["cached_steps"] and ref["cfg_cached_steps"]
    assert stats.cached_steps == ref["cached_steps"]
    assert stats.cfg_cached_steps == ref["cfg_cached_steps"]
    for mine, theirs in ((stats.residual_diffs, ref["residual_diffs"]), (stats.cfg_residual_diffs, ref["cfg_residual_diffs"])):
        assert mine.keys() == theirs.keys()
        for step, diff in theirs.items():
            assert mine[step] == pytest.approx(diff, rel=1e-4, abs=1e-6)
    for i, (a, b) in enumerate(zip(got, ref["outputs"])):
        err = ((a - b).abs().max() / b.abs().max()).item()
        assert err <= 1e-5, f"call {i}: relative error {err:.2e}"
