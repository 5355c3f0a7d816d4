"""Pass ``split_partitions``: the captured graph becomes ``head`` / ``body`` / ``tail`` submodules,
with the values the glue needs routed out as partition outputs (``ctx.glue_values``)."""

import operator

import pytest
import torch
import torch.fx as fx

import dit_fx
from dit_fx.passes.split_partitions import glue_value_names, split_partitions
from pass_graphs import blocks_in, call_targets, capture, compute_nodes, nodes, placeholder_names, rewrite

CFG = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)


@pytest.fixture(scope="module")
def cap():
    return capture()


def _compute_names(gm):
    return {n.name for n in compute_nodes(gm)}


def test_three_partitions_called_in_order(cap):
    gm, _ = rewrite(cap, CFG, upto="split_partitions")
    assert call_targets(gm) == ["head", "body", "tail"]
    assert {name for name, _ in gm.named_children()} == {"head", "body", "tail"}
    for part in ("head", "body", "tail"):
        assert isinstance(getattr(gm, part), fx.GraphModule)
    assert not any(name.startswith("submod_") for name, _ in gm.named_modules())
    # Nothing runs in the parent graph besides the calls and the unpacking of their outputs.
    others = [n for n in nodes(gm, "call_function") if n.target is not operator.getitem]
    assert others == []


def test_nodes_go_where_the_plan_put_them(cap):
    plan = cap.plan(CFG)
    gm, _ = rewrite(cap, CFG, upto="split_partitions")
    where = plan.partition_map()
    for part in ("head", "body", "tail"):
        names = _compute_names(getattr(gm, part))
        assert names, part
        # keep_original_node_name: the partitions' nodes keep the captured graph's names
        assert names == {n for n, p in where.items() if p == part}, part


def test_blocks_land_in_their_partition(cap):
    gm, _ = rewrite(cap, CFG, upto="split_partitions")
    blocks = {part: set(blocks_in(getattr(gm, part))) for part in ("head", "body", "tail")}
    assert blocks == {"head": {0}, "body": {1, 2}, "tail": {3}}


def test_glue_values_routed_through_the_output(cap):
    plan = cap.plan(CFG)
    gm, ctx = rewrite(cap, CFG, upto="split_partitions")
    assert ctx.glue_values == tuple(glue_value_names(plan))
    assert set(ctx.glue_values) >= {plan.hidden_in, plan.hidden_fn}
    assert {s.role for s in plan.middle_streams} == {"hidden", "encoder"}
    output = nodes(gm, "output")[0]
    ret, routed = output.args[0]
    assert len(routed) == len(ctx.glue_values)
    # Each routed value is a partition output, named as the value was named before the split.
    for name, node in zip(ctx.glue_values, routed):
        assert node.name == name
        assert node.target is operator.getitem and node.args[0].target in ("head", "body")


def test_runs_like_the_module_and_routes_the_right_values(cap):
    plan = cap.plan(CFG)
    gm, ctx = rewrite(cap, CFG, upto="split_partitions")
    # Before parameters are bound, the split graph takes Dynamo's inputs, parameters included.
    assert placeholder_names(gm) == placeholder_names(cap.gm)
    with torch.no_grad():
        ret, routed = gm(*cap.example_inputs)
    assert torch.equal(ret[0], cap.expected)
    values = dict(zip(ctx.glue_values, routed))
    model, inputs = cap.model, cap.inputs
    with torch.no_grad():
        hidden_in = model.x_embed(inputs["hidden_states"])
        temb = model.time_embed(inputs["timestep"][:, None])[:, None]
        encoder_fn, hidden_fn = model.blocks[0](hidden_in, model.context_embed(inputs["encoder_hidden_states"]), temb)
    assert torch.equal(values[plan.hidden_in], hidden_in)
    assert torch.equal(values[plan.hidden_fn], hidden_fn)
    encoder = next(s for s in plan.middle_streams if s.role == "encoder")
    assert torch.equal(values[encoder.base], encoder_fn)


def test_the_input_graph_is_left_as_it_was(cap):
    """The output is rerouted only for the split; the graph handed in returns what it returned."""
    working = cap.working()
    before = str(working.graph)
    split = split_partitions(working, cap.rewrite_context(CFG))
    assert split is not working
    assert str(working.graph) == before


def test_partition_boundaries_follow_fn_and_bn(cap):
    cfg = dit_fx.DBCacheConfig(fn_blocks=2, bn_blocks=0, residual_diff_threshold=0.0)
    plan = cap.plan(cfg)
    gm, _ = rewrite(cap, cfg, upto="split_partitions")
    head, body, tail = (blocks_in(getattr(gm, part)) for part in ("head", "body", "tail"))
    assert set(head) == {0, 1} and tail == {}
    # With Bn=0 nothing after the middle reads the text stream: the last Fn block's text-stream
    # ops only the middle reads were deferred into the body (cached steps skip them).
    assert plan.deferred_to_body and set(body) == {1, 2, 3}
    assert body[1] == set(plan.deferred_to_body)
    assert not head[1] & body[1]
    with torch.no_grad():
        assert torch.equal(gm(*cap.example_inputs)[0][0], cap.expected)
