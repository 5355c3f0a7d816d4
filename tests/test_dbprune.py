"""DBPrune: one guard per middle block, as a rewrite pass; parity with cache-dit's DBPrune."""

import os

import pytest
import torch

import dit_fx
from helpers import BlockCounter, all_blocks, rel_err, run_steps
from reference_harness import run_cache_dit
from tiny_models import make_trajectory

STEPS = 16


@pytest.mark.parametrize(
    "name, threshold, dynamic",
    [("flux_deep", 0.2, False), ("flux_deep", 0.2, True), ("wan_deep", 0.36, False), ("wan_deep", 0.3, True)],
)
def test_parity_with_cache_dit_dbprune(tiny, name, threshold, dynamic):
    model = tiny(name).build()
    steps = make_trajectory(name, STEPS)
    kwargs = dict(max_warmup_steps=3, enable_dynamic_prune_threshold=dynamic)
    ref = run_cache_dit(model, steps, Fn=1, Bn=1, residual_diff_threshold=threshold, prune=True, **kwargs)
    dit_fx.optimize(model, dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=threshold, **kwargs))
    got = run_steps(model, steps)
    stats = dit_fx.summary(model)
    assert ref["pruned_steps"], "the case must prune something to be meaningful"
    assert stats.pruned_steps == ref["pruned_steps"] == stats.cached_steps
    assert stats.pruned_blocks == ref["pruned_blocks"]
    assert stats.pruned_ratio == pytest.approx(ref["pruned_ratio"])
    assert stats.block_diffs.keys() == ref["block_diffs"].keys()
    for step, diffs in ref["block_diffs"].items():
        assert stats.block_diffs[step] == pytest.approx(diffs, rel=1e-4, abs=1e-6)
    for step, (a, b) in enumerate(zip(got, ref["outputs"])):
        assert rel_err(a, b) <= 1e-5, f"step {step}"


def test_fn_bn_and_non_prune_blocks_always_run(tiny):
    spec = tiny("flux_deep")
    model = spec.build()
    blocks = all_blocks(model, spec.block_lists)
    keep = [3, 6]
    always = [blocks[0], blocks[-1]] + [blocks[i] for i in keep]
    prunable = [b for i, b in enumerate(blocks[1:-1], start=1) if i not in keep]
    always_count, prunable_count = BlockCounter(always), BlockCounter(prunable)
    cfg = dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=100.0, max_warmup_steps=2,
                               non_prune_block_ids=keep)
    dit_fx.optimize(model, cfg)
    run_steps(model, make_trajectory("flux_deep", 6))
    stats = dit_fx.summary(model)
    assert stats.pruned_steps == [2, 3, 4, 5]
    assert stats.pruned_blocks == [0, 0] + [len(prunable)] * 4 and stats.actual_blocks == [len(blocks)] * 6
    assert always_count.value() == len(always) * 6, "Fn, Bn and non_prune_block_ids blocks run every step"
    assert prunable_count.value() == len(prunable) * 2, "the others only in warmup"


@pytest.mark.parametrize("compile", [False, True])
def test_never_pruned_is_exact_and_dump_shows_the_guards(tiny, tmp_path, compile):
    model = tiny("wan_deep").build()
    steps = make_trajectory("wan_deep", 3)
    plain = run_steps(model, steps)
    dit_fx.optimize(model, dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0), compile=compile)
    got = run_steps(model, steps)
    for a, b in zip(got, plain):
        assert torch.equal(a, b) if not compile else rel_err(a, b) < 1e-5
    assert dit_fx.summary(model).pruned_steps == []
    cap = os.path.join(dit_fx.dump(model, str(tmp_path)), "capture_0")
    body = open(os.path.join(cap, "body.glue.py")).read()
    assert body.count("dbprune_block(") == 4  # wan_deep: 6 blocks, Fn=1, Bn=1 -> 4 guards
    assert "dbprune_begin" in open(os.path.join(cap, "glue.py")).read()
    assert "weight" not in body  # parameters are bound inside each block


def test_bad_prune_values():
    with pytest.raises(ValueError, match="non_prune_block_ids"):
        dit_fx.DBPruneConfig(non_prune_block_ids=[-1])
    with pytest.raises(ValueError, match="dynamic_prune_threshold_relax_ratio"):
        dit_fx.DBPruneConfig(dynamic_prune_threshold_relax_ratio=0)
    with pytest.raises(ValueError, match="calibrator"):
        dit_fx.DBPruneConfig(calibrator=dit_fx.TaylorSeerConfig())
    assert dit_fx.DBPruneConfig(residual_diff_threshold=0.1, enable_dynamic_prune_threshold=True).threshold_for([0.1, 0.12]) == pytest.approx(0.1375)
    assert dit_fx.DBPruneConfig(residual_diff_threshold=0.1, enable_dynamic_prune_threshold=True).threshold_for([0.3]) == 0.1  # above 2x


def test_dump_names_the_passes_that_ran(tiny, tmp_path):
    import json

    model = tiny("wan").build()
    dit_fx.optimize(model, dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=0, residual_diff_threshold=0.1))
    run_steps(model, make_trajectory("wan", 1))
    plan = json.load(open(os.path.join(dit_fx.dump(model, str(tmp_path)), "plan.json")))
    assert plan["passes"]["None"] == ["split_partitions", "bind_partition_parameters", "split_body_blocks", "insert_dbprune_guards"]
    assert plan["config"]["non_prune_block_ids"] == []
