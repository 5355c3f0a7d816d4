"""Lowering pass ``split_block_regions``: every leaf partition becomes one region per block (named
for the block) and one per run of other ops (``ops_0``, ...), block membership read from the Plan
(``LoweringContext.block_of``); glue graphs and the cache context are left alone."""

import pytest
import torch
import torch.fx as fx

import dit_fx
from dit_fx.lowering.region_keys import structure_key
from dit_fx.passes import PassList, split_block_regions
from dit_fx.passes.split_block_regions import leaf_partitions, split_partition
from pass_graphs import call_targets, capture, compute_nodes, full_rewrite, lowering_context, nodes, placeholder_names

CFG = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)
LOWER = PassList("lowering", [split_block_regions])


@pytest.fixture(scope="module")
def cap():
    return capture()


def _lowered(cap, cfg=CFG, block_of=None):
    glue, glues, contexts = full_rewrite(cap, cfg)
    lctx = lowering_context(glues, [c.plan for c in contexts])
    if block_of is not None:
        lctx.block_of = block_of
    return LOWER(glue, lctx), lctx, contexts


def test_regions_per_block_and_per_run_of_other_ops(cap):
    glue, lctx, _ = _lowered(cap)
    assert call_targets(glue.head) == ["ops_0", "blocks_0"]
    assert call_targets(glue.body) == ["blocks_1", "blocks_2"]
    assert call_targets(glue.tail) == ["blocks_3", "ops_0"]
    assert [id(m) for m in lctx.split_leaves] == [id(glue.head), id(glue.body), id(glue.tail)]
    assert isinstance(glue.cache, dit_fx.runtime.CacheContext), "the cache context is no partition"
    assert lctx.timings and lctx.timings[0].name == "split_block_regions" and lctx.timings[0].stage == "lowering"


def test_membership_comes_from_the_plan(cap):
    glue, lctx, contexts = _lowered(cap)
    block_of = contexts[0].plan.block_map()
    for part in ("head", "body", "tail"):
        for name, region in getattr(glue, part).named_children():
            ops = {n.name for n in compute_nodes(region)}
            if name.startswith("ops_"):
                assert not ops & set(block_of), f"{part}.{name} holds block nodes"
            else:
                assert {block_of[n] for n in ops} == {name.replace("_", ".")}, f"{part}.{name}"
    # Another block_of: the regions follow it, not the graph's module stacks.
    custom = {n: "custom.7" for n in block_of if block_of[n] == "blocks.1"}
    glue, _, _ = _lowered(cap, block_of=custom)
    assert call_targets(glue.body) == ["custom_7", "ops_0"]
    assert call_targets(glue.head) == ["ops_0"] and call_targets(glue.tail) == ["ops_0"]


def test_identical_blocks_give_identical_regions(cap):
    """Regions take their weights as inputs, so blocks that differ only in weights share a structure
    (and so one compiled artifact)."""
    glue, _, _ = _lowered(cap)
    b1, b2 = glue.body.blocks_1, glue.body.blocks_2
    assert nodes(b1, "get_attr") == [] and len(placeholder_names(b1)) == 3 + 4  # 3 activations, 4 weights
    assert structure_key(b1) == structure_key(b2)
    # Each region returns its outputs in its own graph order.
    for region in (b1, b2):
        out = nodes(region, "output")[0].args[0]
        order = list(region.graph.nodes)
        assert [order.index(o) for o in out] == sorted(order.index(o) for o in out)


def test_outputs_unchanged(cap):
    glue, _, _ = _lowered(cap)
    with torch.no_grad():
        assert torch.equal(glue(*cap.activations)[0], cap.expected)


def test_glue_graphs_are_not_split_their_leaves_are(cap):
    """DBPrune's body is a glue graph (its guards call the blocks): its blocks are the leaves."""
    cfg = dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)
    glue, glues, contexts = full_rewrite(cap, cfg)
    assert [p for p, _ in glues] == ["", "body."]
    lctx = lowering_context(glues, [c.plan for c in contexts])
    leaves = [(id(parent), name) for parent, name, _ in leaf_partitions(lctx)]
    assert leaves == [(id(glue), "head"), (id(glue), "tail"), (id(glue.body), "block_1"), (id(glue.body), "block_2")]
    glue = LOWER(glue, lctx)
    assert call_targets(glue.body) == [], "the guarded body keeps its guards"
    assert call_targets(glue.body.block_1) == ["blocks_1"] and call_targets(glue.body.block_2) == ["blocks_2"]
    with torch.no_grad():
        assert torch.equal(glue(*cap.activations)[0], cap.expected)


def test_a_partition_without_ops_is_left_as_is():
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(x)
    empty = fx.GraphModule(torch.nn.Module(), graph)
    assert split_partition(empty, {}) is empty
