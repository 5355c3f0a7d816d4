"""Blocks traced once per class (``dit_fx/frontend/block_tracing.py``): the planner must see exactly the
graph a flat trace gives, a block that cannot be a region falls back to the flat trace, and
``disable`` leaves the blocks as they were."""

import warnings

import torch.nn as nn
import torch.nn.functional as F

import pytest
import torch

import dit_fx
import dit_fx.integrations.diffusers
import dit_fx.session
from dit_fx.frontend import block_tracing
from dit_fx.patterns.regions import module_stack
from helpers import run_steps
from tiny_models import make_trajectory

needs_reuse = pytest.mark.skipif(
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
        m.setattr(dit_fx.session, "inline_subgraph_calls", counting)
        if not traced_once:
            m.setattr(dit_fx.integrations.diffusers, "mark_blocks", lambda model: [])
        model = spec.build()
        dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback of any kind
            outs = run_steps(model, make_trajectory(spec.name, 4))
    return model, outs, invokes


@needs_reuse
@pytest.mark.parametrize("name", ["flux", "wan", "sd3", "hunyuanvideo", "qwenimage"])
def test_blocks_traced_once_give_the_flat_graph(tiny, name, monkeypatch):
    spec = tiny(name)
    flat_model, flat_outs, flat_invokes = _capture(spec, False, monkeypatch)
    model, outs, invokes = _capture(spec, True, monkeypatch)
    num_blocks = sum(n for _, n in spec.block_lists)
    # Dynamo really traced regions: most blocks are invoke_subgraph calls before inlining.
    assert flat_invokes == [0] and invokes and invokes[0] >= num_blocks - len(spec.block_lists)
    record, flat_record = dit_fx.inspect(model).captures[-1], dit_fx.inspect(flat_model).captures[-1]
    assert _graph_signature(record.captured) == _graph_signature(flat_record.captured)
    assert str(dit_fx.plan(model)) == str(dit_fx.plan(flat_model))
    for a, b in zip(outs, flat_outs):
        assert torch.equal(a, b)  # same ops, same order, fp32: bit-identical
    assert dit_fx.summary(model).cached_steps == dit_fx.summary(flat_model).cached_steps


@needs_reuse
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


@needs_reuse
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


# ----------------------------------------------------------------------------- toy DiTs


class _InPlaceBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h, temb):
        y = self.lin(h) + temb
        F.relu(y, inplace=True)  # result unread: only the mutation matters
        return h + y


class _NormArgBlock(nn.Module):
    """Calls a module it is handed, which lives outside the block."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h, temb, norm=None):
        return h + self.lin(norm(h)) + temb


class _Encoder(nn.Module):
    def __init__(self, d, n):
        super().__init__()
        self.blocks = nn.ModuleList(_NormArgBlock(d) for _ in range(n))


@torch.compiler.nested_compile_region
def _embed(t):
    return torch.sin(t[:, None, None] * 3.0)


class _ToyDiT(nn.Module):
    """proj_in -> 4 blocks -> proj_out; ``kind`` picks the block and how it is called."""

    def __init__(self, kind, d=8, n=4):
        super().__init__()
        self.kind, self.proj_in, self.proj_out = kind, nn.Linear(d, d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        if kind == "container":
            self.encoder = _Encoder(d, n)
        else:
            self.blocks = nn.ModuleList((_InPlaceBlock if kind == "inplace" else _NormArgBlock)(d) for _ in range(n))

    def forward(self, hidden_states, timestep):
        h = self.proj_in(hidden_states)
        temb = _embed(timestep) + _embed(2 * timestep) if self.kind == "own_region" else timestep[:, None, None]
        for blk in self.encoder.blocks if self.kind == "container" else self.blocks:
            h = h + blk(h, temb) if self.kind == "inplace" else blk(h, temb, norm=self.norm)
        return (self.proj_out(h),)


def _toy_steps(n=4):
    g = torch.Generator().manual_seed(0)
    base, drift = torch.randn(1, 5, 8, generator=g), torch.randn(1, 5, 8, generator=g)
    return [(base + 0.001 * i * drift, torch.tensor([0.9 - 0.001 * i])) for i in range(n)]  # close steps: cacheable


def _run_toy(kind, traced_once, monkeypatch):
    torch.manual_seed(0)
    model = _ToyDiT(kind).eval()
    with torch.no_grad():
        reference = [model(*a)[0] for a in _toy_steps()]
    with monkeypatch.context() as m:
        if not traced_once:
            m.setattr(dit_fx.integrations.diffusers, "mark_blocks", lambda model: [])
        dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            with torch.no_grad():
                outs = [model(*a)[0] for a in _toy_steps()]
    return model, outs, reference


@needs_reuse
@pytest.mark.parametrize("kind", ["inplace", "norm_arg", "container"])
def test_toy_blocks_traced_once_match_the_flat_trace(kind, monkeypatch):
    """An in-place op whose result nobody reads, a module handed to the block from outside, and a
    block list inside a container module: same graph, plan and outputs as a flat trace."""
    model, outs, reference = _run_toy(kind, True, monkeypatch)
    flat, flat_outs, _ = _run_toy(kind, False, monkeypatch)
    assert torch.equal(outs[0], reference[0])  # warmup step: every block ran
    assert _graph_signature(dit_fx.inspect(model).captures[-1].captured) == _graph_signature(dit_fx.inspect(flat).captures[-1].captured)
    assert [(b.list_name, b.list_index) for b in dit_fx.plan(model).blocks] == [(b.list_name, b.list_index) for b in dit_fx.plan(flat).blocks]
    for a, b in zip(outs, flat_outs):
        assert torch.equal(a, b)
    assert dit_fx.summary(model).cached_steps


def test_a_models_own_top_level_region_is_inlined(monkeypatch):
    """A model's own nested_compile_region outside any block is inlined with its own module paths."""
    model, outs, reference = _run_toy("own_region", True, monkeypatch)
    assert dit_fx.plan(model).supported and dit_fx.summary(model).cached_steps == [1, 2, 3]
    assert torch.equal(outs[0], reference[0])


@needs_reuse
def test_runner_follows_a_patched_block_class(monkeypatch, tiny):
    model = tiny("wan").build()
    cls = type(model.blocks[0])
    dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
    run_steps(model, make_trajectory("wan", 1))
    dit_fx.disable(model)
    original = cls.forward

    def doubled(self, *args, **kwargs):
        return original(self, *args, **kwargs) * 2

    monkeypatch.setattr(cls, "forward", doubled)
    expected = run_steps(model, make_trajectory("wan", 1))
    dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
    assert torch.equal(run_steps(model, make_trajectory("wan", 1))[0], expected[0])


@needs_reuse
def test_blocks_that_cannot_be_inlined_are_traced_flat(tiny, monkeypatch):
    """A failure to inline our regions is not a reason to lose caching: the forward is traced flat."""

    def broken(gm):
        raise KeyError("boom")

    spec = tiny("wan")
    reference = run_steps(spec.build(), make_trajectory("wan", 4))
    monkeypatch.setattr(block_tracing, "_inlined", broken)
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(**CFG))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        outs = run_steps(model, make_trajectory("wan", 4))
    assert not any("forward" in blk.__dict__ for blk in model.blocks)
    assert dit_fx.plan(model).supported and dit_fx.summary(model).cached_steps
    assert torch.equal(outs[0], reference[0])
