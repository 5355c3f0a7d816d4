"""Pass ``insert_dbcache_glue``: the parent graph's call of ``body`` becomes the DBCache decision
and a guarded middle (``dbcache_decide`` / ``dbcache_middle``), the routed values are consumed and
the graph returns what the model returns."""

import operator

import pytest
import torch

import dit_fx
from dit_fx.config import coerce_config
from dit_fx.runtime import dbcache_decide, dbcache_middle, dbcache_read_timestep
from pass_graphs import (
    Counting,
    TwoListDiT,
    call_targets,
    calls_of,
    capture,
    full_rewrite,
    get_attr_targets,
    graph_modules,
    nodes,
    rewrite,
    tiny_inputs,
)

CFG = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)


@pytest.fixture(scope="module")
def cap():
    return capture()


def test_glue_reads_like_the_algorithm(cap):
    gm, ctx = rewrite(cap, CFG)
    order = list(gm.graph.nodes)
    read, decide, middle = (calls_of(gm, f) for f in (dbcache_read_timestep, dbcache_decide, dbcache_middle))
    assert len(read) == len(decide) == len(middle) == 1
    head = next(n for n in order if n.op == "call_module" and n.target == "head")
    tail = next(n for n in order if n.op == "call_module" and n.target == "tail")
    pos = order.index
    assert pos(read[0]) < pos(head) < pos(decide[0]) < pos(middle[0]) < pos(tail)
    # The body is no longer called by the graph: it is handed to the middle as a module.
    assert call_targets(gm) == ["head", "tail"]
    assert set(get_attr_targets(gm)) == {"cache", "body"}
    assert gm.cache is ctx.cache
    decide = decide[0]
    cache, hidden_fn, hidden_in, timestep = decide.args
    assert cache.op == "get_attr" and cache.target == "cache"
    assert (decide.name, hidden_fn.name, hidden_in.name) == ("reuse", "hidden_after_fn", "hidden_before_blocks")
    assert timestep.op == "placeholder" and timestep.name == "l_timestep_"
    middle = middle[0]
    _, reuse, body, body_args, bases = middle.args
    assert reuse is decide and body.op == "get_attr" and body.target == "body"
    assert [b.name for b in bases] == ["hidden_after_fn", "encoder_after_fn"]
    assert len(body_args) == len(gm.body.graph.find_nodes(op="placeholder"))
    unpacked = {u.name: u.args[1] for u in middle.users if u.target is operator.getitem}
    assert unpacked == {"hidden_after_middle": 0, "encoder_after_middle": 1}
    assert set(tail.args) >= set(middle.users)


def test_every_get_attr_of_the_rewritten_graph_is_one_level(cap):
    gm, _ = rewrite(cap, CFG)
    graphs = graph_modules(gm)
    assert [path for path, _ in graphs] == ["", "head", "body", "tail"]
    for path, sub in graphs:
        targets = get_attr_targets(sub)
        assert targets, path
        assert all("." not in t for t in targets), (path, targets)


def test_routed_values_are_consumed_and_the_output_restored(cap):
    gm, ctx = rewrite(cap, CFG)
    output = nodes(gm, "output")[0]
    ret = output.args[0]
    assert isinstance(ret, tuple) and len(ret) == 1 and ret[0].target == "tail"
    with torch.no_grad():
        out = gm(*cap.activations)
    assert isinstance(out, tuple) and len(out) == 1
    assert torch.equal(out[0], cap.expected)


def test_threshold_zero_runs_the_middle_every_step_exactly(cap):
    gm, ctx = rewrite(cap, CFG)
    gm.body = Counting(gm.body)
    with torch.no_grad():
        for step in range(4):
            got = gm(*cap.glue_inputs(tiny_inputs(step)))[0]
            expected = cap.model(**tiny_inputs(step))[0]
            assert torch.equal(got, expected), step
    assert gm.body.calls == 4
    stats = ctx.cache.stats
    assert stats.executed_steps == 4 and stats.cached_steps == []


def test_cached_step_rebuilds_the_middle_from_stored_residuals(cap):
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=10.0, max_warmup_steps=1)
    gm, ctx = rewrite(cap, cfg)
    body = gm.body
    gm.body = Counting(body)
    with torch.no_grad():
        a0, a1 = cap.glue_inputs(tiny_inputs(0)), cap.glue_inputs(tiny_inputs(1))
        out0 = gm(*a0)[0]
        out1 = gm(*a1)[0]
        # By hand: step 1 reuses step 0's middle residuals on top of its own Fn outputs.
        h0, temb0, e0, _ = gm.head(*a0)
        mid_h0, mid_e0 = body(h0, temb0, e0)
        h1, temb1, e1, _ = gm.head(*a1)
        manual = gm.tail(h1 + (mid_h0 - h0), temb1, e1 + (mid_e0 - e0))
        uncached = cap.model(**tiny_inputs(1))[0]
    assert gm.body.calls == 1, "the cached step did not run the middle"
    assert ctx.cache.stats.cached_steps == [1]
    assert torch.equal(out0, cap.model(**tiny_inputs(0))[0])
    assert torch.equal(out1, manual)
    assert not torch.equal(out1, uncached)


def test_only_the_leading_plan_reads_the_timestep():
    """Per-list configs nest: the second list's glue sits in the first one's tail, decides after
    it and reads no timestep (the leading context placed the call)."""
    torch.manual_seed(0)
    cap = capture(TwoListDiT().eval())
    per_list = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)
    cfg = coerce_config({"blocks": per_list, "single_blocks": per_list})
    glue, glues, contexts = full_rewrite(cap, cfg)
    assert [path for path, _ in glues] == ["", "tail."]
    assert [c.plan.scope for c in contexts] == ["blocks", "single_blocks"]
    assert [c.plan.leads for c in contexts] == [True, False]
    outer, inner = glue, glue.tail
    assert len(calls_of(outer, dbcache_read_timestep)) == 1
    assert calls_of(inner, dbcache_read_timestep) == []
    (decide,) = calls_of(inner, dbcache_decide)
    assert decide.args[3] is None
    assert inner.cache is contexts[1].cache and outer.cache is contexts[0].cache
    assert inner.cache is not outer.cache
    with torch.no_grad():
        assert torch.equal(glue(*cap.activations)[0], cap.expected)
    s_outer, s_inner = contexts[0].cache.stats, contexts[1].cache.stats
    assert s_outer.calls == s_inner.calls == 1 and s_outer.executed_steps == 1
