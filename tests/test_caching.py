"""When caching triggers, the middle blocks really do not run, and the stats say so."""

import pytest
import torch

import dit_fx
from helpers import BlockCounter, all_blocks, rel_err, run_steps
from tiny_models import make_trajectory

STEPS = 24


@pytest.mark.parametrize(
    "name, fn, bn, threshold",
    [("flux_deep", 2, 1, 0.25), ("wan_deep", 1, 0, 0.22), ("qwenimage", 1, 1, 0.23), ("sd3", 1, 1, 0.22)],
)
def test_cached_steps_skip_exactly_the_middle_blocks(tiny, name, fn, bn, threshold):
    spec = tiny(name)
    model = spec.build()
    steps = make_trajectory(name, STEPS)
    plain = run_steps(model, steps)
    blocks = all_blocks(model, spec.block_lists)
    head, middle, tail = blocks[:fn], blocks[fn : len(blocks) - bn], blocks[len(blocks) - bn :]
    counters = [BlockCounter(head), BlockCounter(middle), BlockCounter(tail)]
    cfg = dit_fx.DBCacheConfig(fn_blocks=fn, bn_blocks=bn, residual_diff_threshold=threshold, max_warmup_steps=3)
    dit_fx.optimize(model, cfg)
    got = run_steps(model, steps)
    stats = dit_fx.summary(model)

    cached = stats.cached_steps
    assert 0 < len(cached) < STEPS - 3, f"test recipe should mix cached and computed steps, got {cached}"
    assert cached == sorted(cached) and min(cached) >= 3
    assert stats.executed_steps == STEPS
    assert counters[0].value() == len(head) * STEPS, "Fn blocks run every step"
    assert counters[2].value() == len(tail) * STEPS, "Bn blocks run every step"
    assert counters[1].value() == len(middle) * (STEPS - len(cached)), "middle blocks skipped on cached steps"
    # Every post-warmup step got a diff; cached exactly where diff < threshold.
    assert sorted(stats.residual_diffs) == list(range(3, STEPS))
    assert cached == [s for s, d in stats.residual_diffs.items() if d < threshold]
    for s in range(STEPS):
        if s in cached:
            assert not torch.equal(got[s], plain[s]) and rel_err(got[s], plain[s]) < 0.5
        else:
            assert torch.equal(got[s], plain[s]), f"computed step {s} must be exact"


def test_num_inference_steps_and_reset_start_new_generations(tiny):
    spec = tiny("wan_deep")
    model = spec.build()
    steps = make_trajectory("wan_deep", 12)
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.22, max_warmup_steps=3, num_inference_steps=12)
    dit_fx.optimize(model, cfg)
    first = run_steps(model, steps)
    s1 = dit_fx.summary(model)
    second = run_steps(model, steps)  # call 13 starts generation 2 by itself
    s2 = dit_fx.summary(model)
    assert s1.cached_steps and s1.cached_steps == s2.cached_steps
    assert s1.residual_diffs == s2.residual_diffs and (s1.generation, s2.generation) == (1, 2)
    for a, b in zip(first, second):
        assert torch.equal(a, b), "nothing may leak from one generation into the next"
    # reset() mid-generation: the next call is step 0 again (warmup, computes)
    run_steps(model, steps[:5])
    dit_fx.reset(model)
    third = run_steps(model, steps)
    assert dit_fx.summary(model).cached_steps == s1.cached_steps
    for a, b in zip(first, third):
        assert torch.equal(a, b)


def test_new_resolution_recaptures_and_starts_fresh(tiny):
    spec = tiny("flux")
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=1))
    small = make_trajectory("flux", 3)
    run_steps(model, small)
    first = dit_fx.summary(model)
    assert first.cached_steps == [1] and first.generation == 1
    big = make_trajectory("flux", 3, batch=2)  # new input shape -> new capture, new generation
    plain_model = spec.build()
    expected = run_steps(plain_model, big)
    got = run_steps(model, big)
    stats = dit_fx.summary(model)
    assert stats.generation == 2 and stats.executed_steps == 3
    assert stats.cached_steps == [1] and set(stats.residual_diffs) == {1, 2}
    assert torch.equal(got[0], expected[0]), "first step at a new resolution must compute"
