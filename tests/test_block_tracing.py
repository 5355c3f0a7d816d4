"""Blocks traced once per class (``dit_fx/block_tracing.py``): the planner must see exactly the
graph a flat trace gives, a block that cannot be a region falls back to the flat trace, and
``disable`` leaves the blocks as they were."""

import warnings

import pytest
import torch

import dit_fx
import dit_fx.api
import dit_fx.backend
from dit_fx import block_tracing
from dit_fx.api import _session
from dit_fx.patterns.regions import module_stack
from helpers import run_steps
from tiny_models import make_trajectory

pytestmark = pytest.mark.skipif(
    not block_tracing.dynamo_reuses_regions(), reason="this torch's Dynamo traces every region call: blocks are traced flat"
)
CFG = dict(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1)


def _graph_signature(gm: torch.fx.GraphModule):
    """Each node's op and target, and each op's module path: what the planner reads."""
    return [
        (n.op, str(n.target) if n.op != "placeholder" else "", [t for t, _ in module_stack(n)] if n.op.startswith("call") else [])
        for n in gm.graph.nodes
    ]


def _capture(spec, traced_once: bool, monkeypatch):
    invokes = []
    inline = block_tracing.inline_subgraph_calls

    def counting(gm):
        invokes.append(sum(n.target is torch.ops.higher_order.invoke_subgraph for n in gm.graph.nodes))
        return inline(gm)

    with monkeypatch.context() as m:
        m.setattr(dit_fx.backend, "inline_subgraph_calls", counting)
        if not traced_once:
            m.setattr(dit_fx.api, "mark_blocks", lambda model: [])
        model = spec.build()
        dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback of any kind
            outs = run_steps(model, make_trajectory(spec.name, 4))
    return model, outs, invokes


@pytest.mark.parametrize("name", ["flux", "wan", "sd3", "hunyuanvideo"])
def test_blocks_traced_once_give_the_flat_graph(tiny, name, monkeypatch):
    spec = tiny(name)
    flat_model, flat_outs, flat_invokes = _capture(spec, False, monkeypatch)
    model, outs, invokes = _capture(spec, True, monkeypatch)
    num_blocks = sum(n for _, n in spec.block_lists)
    # Dynamo really traced regions: most blocks are invoke_subgraph calls before inlining.
    assert flat_invokes == [0] and invokes and invokes[0] >= num_blocks - len(spec.block_lists)
    record, flat_record = _session(model).last_record, _session(flat_model).last_record
    assert _graph_signature(record.captured) == _graph_signature(flat_record.captured)
    assert str(dit_fx.plan(model)) == str(dit_fx.plan(flat_model))
    for a, b in zip(outs, flat_outs):
        assert torch.equal(a, b)  # same ops, same order, fp32: bit-identical
    assert dit_fx.summary(model).cached_steps == dit_fx.summary(flat_model).cached_steps


def test_a_block_that_fails_as_a_region_is_traced_flat(tiny, monkeypatch):
    """If Dynamo cannot trace a block as a region, the forward is traced flat, silently (only
    trace time is lost) and with the same result."""

    def failing_runner(cls):
        @torch.compiler.nested_compile_region
        def run(block, *args, **kwargs):
            torch._dynamo.graph_break()  # unsupported inside a region under fullgraph
            return cls.forward(block, *args, **kwargs)

        return run

    spec = tiny("wan")
    reference = run_steps(spec.build(), make_trajectory("wan", 4))
    monkeypatch.setattr(block_tracing, "_runner", failing_runner)
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
    assert all("forward" in blk.__dict__ for blk in model.blocks)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        outs = run_steps(model, make_trajectory("wan", 4))
    assert not any("forward" in blk.__dict__ for blk in model.blocks)  # routed back to the class
    assert dit_fx.plan(model).supported and dit_fx.summary(model).cached_steps
    assert torch.equal(outs[0], reference[0])  # warmup step: computed in full


def test_disable_restores_blocks_and_leaves_hooked_ones_alone(tiny):
    model = tiny("wan").build()
    hooked = model.blocks[1]
    own_forward = hooked.forward  # e.g. a hook that replaced the instance's forward
    hooked.forward = own_forward
    dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
    assert hooked.__dict__["forward"] is own_forward
    assert "forward" in model.blocks[0].__dict__ and "forward" in model.blocks[2].__dict__
    run_steps(model, make_trajectory("wan", 2))
    dit_fx.disable(model)
    assert "forward" not in model.blocks[0].__dict__ and "forward" not in model.blocks[2].__dict__
    assert hooked.__dict__["forward"] is own_forward


def test_no_regions_where_dynamo_would_trace_each_call(tiny, monkeypatch):
    monkeypatch.setattr(block_tracing, "dynamo_reuses_regions", lambda: False)
    model = tiny("wan").build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
    assert not any("forward" in blk.__dict__ for blk in model.blocks)
