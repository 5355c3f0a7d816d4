"""Lowering pass ``compile_regions``: every region of a split leaf (or a whole unsplit leaf) is
wrapped in a ``CompiledRegion``, compiled lazily on its first call, once per distinct region;
regions made only of ops deferred into the body stay eager.

Most tests replace Inductor by a counting stand-in (the pass and the compiler's bookkeeping are
under test, not Inductor); one test compiles for real."""

import dataclasses

import pytest
import torch
import torch.fx as fx

import dit_fx
import dit_fx.lowering.inductor as inductor
from dit_fx.lowering.inductor import CompiledRegion
from dit_fx.passes import PassList, compile_regions, split_block_regions
from pass_graphs import capture, full_rewrite, lowering_context, tiny_inputs

CFG = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)


@pytest.fixture(scope="module")
def cap():
    return capture()


@pytest.fixture
def fake_inductor(monkeypatch):
    compiled = []

    def fake(gm, args, options=None):
        compiled.append(gm)
        return gm.forward

    monkeypatch.setattr(inductor, "inductor_compile", fake)
    return compiled


def _lower(cap, passes, cfg=CFG):
    glue, glues, contexts = full_rewrite(cap, cfg)
    lctx = lowering_context(glues, [c.plan for c in contexts])
    before = {part: getattr(glue, part) for part in ("head", "body", "tail")}
    return PassList("lowering", passes)(glue, lctx), lctx, contexts, before


def _regions(glue):
    return [(part, name, mod) for part in ("head", "body", "tail") for name, mod in getattr(glue, part).named_children()]


def test_every_region_is_wrapped_and_compiled_lazily(cap, fake_inductor):
    glue, lctx, _, _ = _lower(cap, [split_block_regions, compile_regions])
    regions = _regions(glue)
    assert [(p, n) for p, n, _ in regions] == [("head", "ops_0"), ("head", "blocks_0"), ("body", "blocks_1"),
                                               ("body", "blocks_2"), ("tail", "blocks_3"), ("tail", "ops_0")]
    assert all(isinstance(m, CompiledRegion) and isinstance(m.gm, fx.GraphModule) for _, _, m in regions)
    assert all(m._compiler is lctx.compiler for _, _, m in regions)
    assert lctx.compiler.compiles == 0 and fake_inductor == [], "nothing compiles before the first call"
    with torch.no_grad():
        out = glue(*cap.activations)[0]
    assert torch.equal(out, cap.expected)
    body = glue.body
    assert body.blocks_1._compiled is body.blocks_2._compiled, "identical middle blocks share one artifact"
    distinct = {id(m._compiled) for _, _, m in regions}
    assert lctx.compiler.compiles == len(fake_inductor) == len(distinct) < len(regions)
    with torch.no_grad():
        for step in (1, 2):
            assert torch.equal(glue(*cap.glue_inputs(tiny_inputs(step)))[0],
                               cap.model(**tiny_inputs(step))[0])
    assert lctx.compiler.compiles == len(distinct), "later calls compile nothing"


def test_weights_move_into_the_regions(cap, fake_inductor):
    """The leaf's calls pass activations only; each region holds its weights (the model's own
    parameters, no copies) and takes them as its last inputs."""
    glue, _, _, _ = _lower(cap, [split_block_regions, compile_regions])
    params = {id(p): name for name, p in cap.model.named_parameters()}
    held = {}
    for part in ("head", "body", "tail"):
        leaf = getattr(glue, part)
        assert [n for n in leaf.graph.nodes if n.op == "get_attr"] == [], part
        for call in [n for n in leaf.graph.nodes if n.op == "call_module"]:
            region = getattr(leaf, call.target)
            placeholders = [n.name for n in region.gm.graph.nodes if n.op == "placeholder"]
            assert len(placeholders) == len(call.args) + len(region._static)
            assert all(id(t) in params for t in region._static), "the model's parameters themselves"
            weights = placeholders[len(call.args):]
            assert weights == [params[id(t)].replace(".", "_") for t in region._static]
            held.update({params[id(t)]: f"{part}.{call.target}" for t in region._static})
    assert set(held) == set(params.values()), "every parameter is held by exactly the region that uses it"
    assert held["blocks.1.img.weight"] == "body.blocks_1" and held["proj_out.bias"] == "tail.ops_0"
    with torch.no_grad():
        assert torch.equal(glue(*cap.activations)[0], cap.expected)
    weight = cap.model.blocks[1].img.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(0.5)  # in-place updates still reach the held weights
            assert torch.equal(glue(*cap.activations)[0], cap.model(**cap.inputs)[0])
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_an_unsplit_leaf_is_compiled_whole(cap, fake_inductor):
    glue, lctx, _, before = _lower(cap, [compile_regions])
    for part in ("head", "body", "tail"):
        mod = getattr(glue, part)
        assert isinstance(mod, CompiledRegion) and mod.gm is before[part]
    assert isinstance(glue.cache, dit_fx.runtime.CacheContext)
    with torch.no_grad():
        assert torch.equal(glue(*cap.activations)[0], cap.expected)
    assert lctx.compiler.compiles == 3 == len(fake_inductor)


def test_regions_of_deferred_ops_stay_eager(cap, fake_inductor):
    """Bn=0: the text-stream ops of the last Fn block only the middle reads run in the body (computed
    steps only); their region is not worth a compile of its own."""
    cfg = dataclasses.replace(CFG, bn_blocks=0)
    glue, lctx, contexts, _ = _lower(cap, [split_block_regions, compile_regions], cfg)
    deferred = set(contexts[0].plan.deferred_to_body)
    assert deferred and lctx.eager_nodes == deferred
    fragment = glue.body.blocks_0
    assert type(fragment) is not CompiledRegion and isinstance(fragment, fx.GraphModule)
    ops = {n.name for n in fragment.graph.nodes if n.op not in ("placeholder", "get_attr", "output")}
    assert ops and ops <= deferred
    others = [m for p, n, m in _regions(glue) if (p, n) != ("body", "blocks_0")]
    assert all(isinstance(m, CompiledRegion) for m in others)
    with torch.no_grad():
        assert torch.equal(glue(*cap.activations)[0], cap.expected)
    assert all(gm is not fragment for gm in fake_inductor)


def test_with_inductor(cap):
    glue, lctx, _, _ = _lower(cap, [split_block_regions, compile_regions])
    with torch.no_grad():
        out = glue(*cap.activations)[0]
    assert torch.allclose(out, cap.expected, rtol=1e-5, atol=1e-6)
    assert lctx.compiler.compiles >= 1 and len(lctx.compiler.compile_seconds) == lctx.compiler.compiles
    assert glue.body.blocks_1._compiled is glue.body.blocks_2._compiled
