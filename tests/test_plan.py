"""Pattern analysis on real (tiny) diffusers transformers: regions, counts, patterns, roles."""

import dataclasses
import json
import re

import pytest
import torch

import dit_fx
from helpers import run_steps

# (model, block lists in order, Pattern per block, carried streams per block), as cache-dit labels them
EXPECTED = {
    "flux": ((("transformer_blocks", 2), ("single_transformer_blocks", 3)), [1] * 5, [2] * 5),
    "wan": ((("blocks", 3),), [2] * 3, [1] * 3),
    "qwenimage": ((("transformer_blocks", 4),), [1] * 4, [2] * 4),
    "sd3": ((("transformer_blocks", 4),), [1] * 4, [2] * 4),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plan_regions_and_patterns(tiny, name):
    spec = tiny(name)
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0))
    run_steps(model, [spec.make_inputs(0, 500.0)])
    plan = dit_fx.plan(model)
    lists, patterns, carried = EXPECTED[name]
    assert plan.supported, plan.reason
    assert plan.block_lists == lists
    assert plan.block_lists == tuple(spec.block_lists)
    assert [b.pattern for b in plan.blocks] == patterns
    assert [len(b.carried_inputs) for b in plan.blocks] == carried
    assert [b.index for b in plan.blocks] == list(range(len(patterns)))
    # Every block has context inputs (temb / rotary / encoder) and at least one output.
    assert all(b.context_inputs and b.outputs for b in plan.blocks)
    # With Bn=1 the tail block consumes every carried stream: both for dual-stream models.
    roles = sorted(s.role for s in plan.middle_streams)
    assert roles == (["hidden"] if carried[-1] == 1 else ["encoder", "hidden"])
    parts = plan.partition_blocks()
    assert len(parts["head"]) == 1 and len(parts["tail"]) == 1
    assert len(parts["body"]) == len(patterns) - 2
    # printable and JSON-serialisable
    assert "Pattern_" in str(plan)
    assert json.loads(plan.dumps())["supported"] is True


def test_plan_is_frozen(tiny):
    spec = tiny("wan")
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=0, residual_diff_threshold=0.0))
    run_steps(model, [spec.make_inputs(0, 500.0)])
    plan = dit_fx.plan(model)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.fn_blocks = 3  # type: ignore[misc]


def test_flux_fn_boundary_in_single_blocks(tiny):
    """Fn/Bn count over the joined sequence (19 double + 38 single in FLUX.1): here 2 + 3."""
    spec = tiny("flux")
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=3, bn_blocks=1, residual_diff_threshold=0.0))
    run_steps(model, [spec.make_inputs(0, 500.0)])
    parts = dit_fx.plan(model).partition_blocks()
    assert parts == {
        "head": ["transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0"],
        "body": ["single_transformer_blocks.1"],
        "tail": ["single_transformer_blocks.2"],
    }


def _module_paths(gm):
    """Dotted module paths (``transformer_blocks.0.ff_context``) of the ops of ``gm``."""
    paths = set()
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.meta.get("nn_module_stack"):
            raw = next(reversed(n.meta["nn_module_stack"].values()))[0]
            paths.add(re.sub(r"\['(\w+)'\]", r".\1", raw.split("['_modules']", 1)[-1]).replace("['_modules']", "").strip("."))
    return paths


def test_ops_only_the_middle_reads_are_deferred_to_the_body(tiny):
    """FLUX with Bn=0: nothing after the middle reads the text stream, so the last Fn block's text
    output layers (to_add_out, ff_context) run in the body, which cached steps skip."""
    spec = tiny("flux")
    model = spec.build()
    steps = [spec.make_inputs(i, 900.0 - 100 * i) for i in range(3)]
    plain = run_steps(model, steps)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=0, residual_diff_threshold=0.0))
    got = run_steps(model, steps)
    plan = dit_fx.plan(model)
    assert plan.deferred_to_body and "deferred to the body" in str(plan)
    glue = dit_fx.inspect(model).captures[-1].glue
    head_nodes = {n.name for n in glue.head.graph.nodes}
    body_nodes = {n.name for n in glue.body.graph.nodes}
    assert set(plan.deferred_to_body) <= body_nodes and not set(plan.deferred_to_body) & head_nodes
    glue_values = {plan.hidden_in, plan.hidden_fn} | {s.base for s in plan.middle_streams}
    assert not glue_values & set(plan.deferred_to_body)
    assert "transformer_blocks.0.ff_context.net.0.proj" in _module_paths(glue.body), _module_paths(glue.body)
    assert not any(p.startswith("transformer_blocks.0.ff_context") for p in _module_paths(glue.head))
    assert all(torch.equal(a, b) for a, b in zip(got, plain)), "computed steps stay exact"
    # With Bn=1 the tail's single block reads the text stream: its base must stay in the head.
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0))
    run_steps(model, steps[:1])
    plan = dit_fx.plan(model)
    assert {s.role for s in plan.middle_streams} == {"hidden", "encoder"}
    assert not {s.base for s in plan.middle_streams} & set(plan.deferred_to_body)
    # DBPrune guards whole blocks: nothing is deferred.
    dit_fx.optimize(model, dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=0, residual_diff_threshold=0.0))
    run_steps(model, steps[:1])
    assert dit_fx.plan(model).deferred_to_body == ()
