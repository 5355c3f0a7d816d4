"""Pass ``split_body_blocks`` (DBPrune): the ``body`` partition becomes one submodule per middle
block, ``block_<index>``, each holding that block's nodes and its own parameters (bound flat)."""

import dataclasses

import pytest
import torch

import dit_fx
from pass_graphs import blocks_in, call_targets, capture, get_attr_targets, nodes, placeholder_names, rewrite

CFG = dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)


@pytest.fixture(scope="module")
def cap():
    return capture()


def test_one_submodule_per_middle_block(cap):
    gm, _ = rewrite(cap, CFG, upto="split_body_blocks")
    assert call_targets(gm) == ["head", "body", "tail"]
    assert call_targets(gm.body) == ["block_1", "block_2"]
    for index in (1, 2):
        block = getattr(gm.body, f"block_{index}")
        assert set(blocks_in(block)) == {index}, "a block submodule holds that block's nodes only"


def test_each_block_binds_its_own_parameters_flat(cap):
    gm, _ = rewrite(cap, CFG, upto="split_body_blocks")
    params = dict(cap.model.named_parameters())
    assert get_attr_targets(gm.body) == [], "the split body hands no tensors to its blocks"
    for index in (1, 2):
        block = getattr(gm.body, f"block_{index}")
        targets = get_attr_targets(block)
        assert targets and all("." not in t for t in targets)
        bound = {name for name, p in params.items() for t in targets if getattr(block, t) is p}
        assert bound == {f"blocks.{index}.{layer}.{kind}" for layer in ("img", "txt") for kind in ("weight", "bias")}
        # Activations only: the streams and the time embedding.
        assert len(placeholder_names(block)) == 3
        call = next(n for n in nodes(gm.body, "call_module") if n.target == f"block_{index}")
        assert all(a.op in ("placeholder", "call_function") for a in call.args)


def test_split_graph_computes_what_the_module_computes(cap):
    gm, _ = rewrite(cap, CFG, upto="split_body_blocks")
    with torch.no_grad():
        ret, _ = gm(*cap.activations)
    assert torch.equal(ret[0], cap.expected)
    body_graph = str(gm.body.graph)
    assert "submod_" not in body_graph


def test_the_body_is_runnable_right_after_the_pass(cap):
    gm, _ = rewrite(cap, CFG, upto="split_body_blocks")
    with torch.no_grad():
        ret, _ = gm(*cap.activations)
    assert torch.equal(ret[0], cap.expected)


def test_a_node_before_the_first_block_is_refused(cap):
    gm, ctx = rewrite(cap, CFG, upto="bind_partition_parameters")
    body = gm.body
    first = next(n for n in body.graph.nodes if n.op not in ("placeholder", "get_attr"))
    ph = nodes(body, "placeholder")[0]
    with body.graph.inserting_before(first):
        body.graph.call_function(torch.mul, (ph, 1.0))  # no module information: not in any block
    from dit_fx.passes.split_body_blocks import split_body_blocks

    with pytest.raises(ValueError, match="sits before the first middle block"):
        split_body_blocks(gm, ctx)


def test_a_block_the_plan_does_not_know_is_refused(cap):
    gm, ctx = rewrite(cap, CFG, upto="bind_partition_parameters")
    ctx.plan = dataclasses.replace(ctx.plan, blocks=tuple(b for b in ctx.plan.blocks if b.index != 2))
    from dit_fx.passes.split_body_blocks import split_body_blocks

    with pytest.raises(ValueError, match=r"runs in blocks\.2, not a planned block"):
        split_body_blocks(gm, ctx)


def test_wider_middle(cap):
    cfg = dataclasses.replace(CFG, bn_blocks=0)
    gm, _ = rewrite(cap, cfg, upto="split_body_blocks")
    assert call_targets(gm.body) == ["block_1", "block_2", "block_3"]
    gm.body.recompile()
    with torch.no_grad():
        assert torch.equal(gm(*cap.activations)[0][0], cap.expected)
