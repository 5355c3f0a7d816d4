"""Pass ``bind_partition_parameters``: Dynamo's parameter placeholders become flat ``get_attr``
nodes of the very same tensors inside each partition; the glue and the partitions take
activations only."""

import pytest
import torch
from torch.fx.passes.split_module import split_module

import dit_fx
from dit_fx.fx_utils import tensor_attributes
from dit_fx.passes.bind_partition_parameters import bind_in_partitions
from dit_fx.passes.split_partitions import _split_options
from pass_graphs import (
    capture,
    compute_nodes,
    get_attr_targets,
    nodes,
    placeholder_names,
    rewrite,
    rewrite_passes,
)

CFG = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)


@pytest.fixture(scope="module")
def cap():
    return capture()


@pytest.fixture
def bound(cap):
    return rewrite(cap, CFG, upto="bind_partition_parameters")


def _activation_names(cap):
    ph = placeholder_names(cap.gm)
    return [ph[i] for i in cap.static.activation_indices]


def test_glue_and_partitions_take_activations_only(cap, bound):
    gm, _ = bound
    assert placeholder_names(gm) == _activation_names(cap) == ["l_timestep_", "l_hidden_states_", "l_encoder_hidden_states_"]
    static = set(cap.static.by_placeholder)
    for part in ("head", "body", "tail"):
        sub = getattr(gm, part)
        assert not static & set(placeholder_names(sub)), part
        call = next(n for n in nodes(gm, "call_module") if n.target == part)
        assert len(call.args) == len(placeholder_names(sub))
        assert all(a.op != "placeholder" or a.name in _activation_names(cap) for a in call.args)


def test_parameters_are_flat_attributes_of_the_same_tensors(cap, bound):
    gm, _ = bound
    params = dict(cap.model.named_parameters())
    seen = {}
    for part in ("head", "body", "tail"):
        sub = getattr(gm, part)
        for target in get_attr_targets(sub):
            assert "." not in target, f"{part}.{target} is not a one-level name"
            tensor = getattr(sub, target)
            assert isinstance(tensor, torch.nn.Parameter)
            match = [name for name, p in params.items() if p is tensor]
            assert len(match) == 1, f"{part}.{target} is no parameter of the model (a copy?)"
            assert target == match[0].replace(".", "_"), "named after the parameter's path"
            seen[match[0]] = part
    # Every parameter is bound exactly where it is used.
    assert set(seen) == set(params)
    assert seen["x_embed.weight"] == "head" and seen["blocks.0.img.weight"] == "head"
    assert seen["blocks.1.txt.bias"] == "body" and seen["blocks.2.img.weight"] == "body"
    assert seen["blocks.3.img.weight"] == "tail" and seen["proj_out.weight"] == "tail"
    # The partitions' own parameters, registered flat (no holder modules).
    assert dict(gm.body.named_children()) == {}
    assert {n for n, _ in gm.body.named_parameters()} == {"blocks_1_img_weight", "blocks_1_img_bias", "blocks_1_txt_weight",
                                                          "blocks_1_txt_bias", "blocks_2_img_weight", "blocks_2_img_bias",
                                                          "blocks_2_txt_weight", "blocks_2_txt_bias"}


def test_outputs_unchanged_and_in_place_updates_seen(cap, bound):
    gm, ctx = bound
    with torch.no_grad():
        ret, routed = gm(*cap.activations)
    assert torch.equal(ret[0], cap.expected)
    assert len(routed) == len(ctx.glue_values)
    # Bound by reference: an in-place weight update reaches the partitions.
    weight = cap.model.proj_out.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(0.5)
            expected = cap.model(**cap.inputs)[0]
            ret, _ = gm(*cap.activations)
        assert torch.equal(ret[0], expected) and not torch.equal(expected, cap.expected)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_parameter_used_outside_the_partitions_is_refused(cap):
    gm, ctx = rewrite(cap, CFG, upto="split_partitions")
    name = "l_self_modules_proj_out_parameters_weight_"
    ph = next(n for n in nodes(gm, "placeholder") if n.name == name)
    output = nodes(gm, "output")[0]
    with gm.graph.inserting_before(output):
        gm.graph.call_function(torch.neg, (ph,))  # the glue itself reads a parameter
    with pytest.raises(ValueError, match=r"proj_out\.weight is used outside the partitions"):
        rewrite_passes(CFG, ["bind_partition_parameters"])(gm, ctx)


def test_get_attr_parameters_of_a_nested_split_are_bound_by_target(cap, bound):
    """A partition split again (a tail for the next block list, a body per block) hands its
    ``get_attr`` tensors to the pieces as inputs: those are bound back, keyed by target."""
    gm, _ = bound
    body = gm.body
    ops = compute_nodes(body)
    first_half = {n.name for n in ops[: len(ops) // 2]}
    split = split_module(body, None, lambda node: 0 if node.name in first_half else 1, **_split_options())
    pieces = [n for n in nodes(split, "call_module")]
    assert any(a.op == "get_attr" for call in pieces for a in call.args), "split_module passes tensors in"
    static = tensor_attributes(body)
    assert static and all("." not in k for k in static)
    bound_split = bind_in_partitions(split, static)
    for call in nodes(bound_split, "call_module"):
        assert all(a.op != "get_attr" for a in call.args)
        sub = getattr(bound_split, call.target)
        for target in get_attr_targets(sub):
            assert "." not in target
            assert any(getattr(sub, target) is t for _, t in static.values())
    assert get_attr_targets(bound_split) == []
    bound_split.recompile()
    acts = [torch.randn(p.meta["example_value"].shape) for p in nodes(body, "placeholder")]
    with torch.no_grad():
        expected, got = body(*acts), bound_split(*acts)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)
