"""Pass ``insert_dbprune_guards`` (DBPrune): the parent places the call with ``dbprune_begin``
before the body, and every prunable middle block call becomes its own ``dbprune_block`` guard."""

import dataclasses

import pytest
import torch

import dit_fx
from dit_fx.patterns.streams import signature
from dit_fx.runtime import PruneContext, dbprune_begin, dbprune_block
from pass_graphs import Counting, call_targets, calls_of, capture, get_attr_targets, graph_modules, nodes, rewrite, tiny_inputs

CFG = dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)


@pytest.fixture(scope="module")
def cap():
    return capture()


def test_begin_before_the_body_and_one_guard_per_block(cap):
    gm, ctx = rewrite(cap, CFG)
    assert isinstance(ctx.cache, PruneContext)
    order = list(gm.graph.nodes)
    (begin,) = calls_of(gm, dbprune_begin)
    body_call = next(n for n in order if n.op == "call_module" and n.target == "body")
    assert order.index(begin) < order.index(body_call)
    cache, hidden, timestep = begin.args
    assert cache.target == "cache" and timestep.name == "l_timestep_"
    assert hidden.name == ctx.plan.hidden_fn
    # The body is a glue graph of its own now: guards, no plain block calls.
    assert ctx.inner_glues == [("body.", gm.body)]
    assert gm.body.cache is gm.cache is ctx.cache
    assert call_targets(gm.body) == []
    guards = calls_of(gm.body, dbprune_block)
    assert [g.args[1] for g in guards] == [1, 2]
    for guard in guards:
        cache, block_id, block, args, bases, hidden_index = guard.args
        assert cache.op == "get_attr" and cache.target.startswith("cache")
        assert block.op == "get_attr" and block.target == f"block_{block_id}"
        sub = getattr(gm.body, block.target)
        assert len(args) == len(nodes(sub, "placeholder"))
        assert len(bases) == 2  # the block's two outputs continue the hidden and text streams
        out = nodes(sub, "output")[0].args[0]
        placeholders = nodes(sub, "placeholder")
        # Each base is the block input (a carried stream) of its output's shape and dtype.
        base_inputs = [placeholders[next(i for i, a in enumerate(args) if a is b)] for b in bases]
        assert [signature(p) for p in base_inputs] == [signature(o) for o in out]
        assert all(p.name in ctx.plan.blocks[block_id].carried_inputs for p in base_inputs)
        # The hidden index points at the hidden stream's output (image tokens).
        assert out[hidden_index].meta["example_value"].shape[1] == 6


def test_every_get_attr_of_the_rewritten_graph_is_one_level(cap):
    gm, _ = rewrite(cap, CFG)
    paths = [path for path, _ in graph_modules(gm)]
    assert paths == ["", "head", "body", "body.block_1", "body.block_2", "tail"]
    for path, sub in graph_modules(gm):
        assert all("." not in t for t in get_attr_targets(sub)), path


def test_output_restored_and_exact_without_pruning(cap):
    gm, ctx = rewrite(cap, CFG)
    assert nodes(gm, "output")[0].args[0][0].target == "tail"
    block_1 = Counting(gm.body.block_1)
    gm.body.block_1 = block_1
    with torch.no_grad():
        for step in range(3):
            got = gm(*cap.glue_inputs(tiny_inputs(step)))
            assert isinstance(got, tuple) and len(got) == 1
            assert torch.equal(got[0], cap.model(**tiny_inputs(step))[0])
    assert block_1.calls == 3
    stats = ctx.cache.stats
    assert stats.executed_steps == 3 and stats.pruned_steps == [] and stats.actual_blocks == [4, 4, 4]


def test_pruned_block_is_input_plus_its_stored_residual(cap):
    cfg = dataclasses.replace(CFG, residual_diff_threshold=10.0, max_warmup_steps=1)
    gm, ctx = rewrite(cap, cfg)
    blocks = {i: getattr(gm.body, f"block_{i}") for i in (1, 2)}
    counters = {i: Counting(b) for i, b in blocks.items()}
    for i, c in counters.items():
        setattr(gm.body, f"block_{i}", c)
    with torch.no_grad():
        gm(*cap.glue_inputs(tiny_inputs(0)))
        out1 = gm(*cap.glue_inputs(tiny_inputs(1)))[0]
    assert {i: c.calls for i, c in counters.items()} == {1: 1, 2: 1}, "both middle blocks pruned at step 1"
    stats = ctx.cache.stats
    assert stats.pruned_steps == [1] and stats.pruned_blocks == [0, 2]
    assert not torch.equal(out1, cap.model(**tiny_inputs(1))[0])


def test_non_prune_blocks_stay_plain_calls(cap):
    cfg = dataclasses.replace(CFG, non_prune_block_ids=(1,))
    gm, _ = rewrite(cap, cfg)
    assert call_targets(gm.body) == ["block_1"]
    assert [g.args[1] for g in calls_of(gm.body, dbprune_block)] == [2]
    assert "block_2" in get_attr_targets(gm.body)
    with torch.no_grad():
        assert torch.equal(gm(*cap.activations)[0], cap.expected)
