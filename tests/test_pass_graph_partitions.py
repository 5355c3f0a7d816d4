"""Lowering passes ``graph_partitions`` / ``copy_graph_outputs`` (``cuda_graphs``): every leaf
partition is wrapped in a ``GraphedPartition`` named by its path, and the top glue returns copies
of its outputs. Here on CPU: the structure, and the fallback (a partition with CPU inputs runs
eagerly, with one warning for all of them)."""

import warnings

import pytest
import torch

import dit_fx
from dit_fx.lowering.cuda_graphs import GraphedPartition, copy_out_of_graph
from dit_fx.options import CompileOptions
from dit_fx.passes import PassList, compile_regions, copy_graph_outputs, graph_partitions, lowering_passes
from dit_fx.passes import split_block_regions
from pass_graphs import calls_of, capture, full_rewrite, lowering_context, nodes, tiny_inputs

CFG = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)
GRAPHED = CompileOptions(cuda_graphs=True)


@pytest.fixture(scope="module")
def cap():
    return capture()


def _lower(cap, passes, cfg=CFG, options=GRAPHED):
    glue, glues, contexts = full_rewrite(cap, cfg)
    lctx = lowering_context(glues, [c.plan for c in contexts], options=options)
    before = {name: mod for name, mod in glue.named_children()}
    return PassList("lowering", passes)(glue, lctx), lctx, before


def test_stage_for_the_options():
    assert lowering_passes(CompileOptions()).names == []
    assert lowering_passes(GRAPHED).names == ["graph_partitions", "copy_graph_outputs"]
    assert lowering_passes(CompileOptions(compile=True, cuda_graphs=True)).names == [
        "split_block_regions", "compile_regions", "graph_partitions", "copy_graph_outputs"]
    assert lowering_passes(CompileOptions(compile=True, mode="reduce-overhead")).names[-2:] == [
        "graph_partitions", "copy_graph_outputs"]


def test_leaf_partitions_are_wrapped_by_name(cap):
    glue, lctx, before = _lower(cap, [graph_partitions])
    for part in ("head", "body", "tail"):
        wrapped = getattr(glue, part)
        assert isinstance(wrapped, GraphedPartition)
        assert wrapped.fn is before[part] and wrapped.name == part
        assert wrapped._pool is lctx.graphs
    assert glue.cache is before["cache"], "the cache context is no partition"


def test_partitions_of_inner_glues_are_named_by_their_path(cap):
    cfg = dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)
    glue, _, before = _lower(cap, [graph_partitions], cfg)
    assert not isinstance(glue.body, GraphedPartition), "DBPrune's body is a glue graph: its blocks are graphed"
    assert glue.body is before["body"]
    names = {n: m.name for n, m in glue.body.named_children() if isinstance(m, GraphedPartition)}
    assert names == {"block_1": "body.block_1", "block_2": "body.block_2"}
    assert glue.head.name == "head" and glue.tail.name == "tail"


def test_graphed_compiled_regions_keep_their_compiled_wrapping(cap):
    options = CompileOptions(compile=True, cuda_graphs=True)
    glue, _, _ = _lower(cap, [split_block_regions, compile_regions, graph_partitions], options=options)
    # The split leaf is graphed whole (its regions inside stay compiled regions).
    assert isinstance(glue.body, GraphedPartition)
    from dit_fx.lowering.inductor import CompiledRegion

    assert isinstance(glue.body.fn.blocks_1, CompiledRegion)


def test_the_glue_returns_copies(cap):
    glue, _, _ = _lower(cap, [graph_partitions, copy_graph_outputs])
    output = nodes(glue, "output")[0]
    (ret,) = output.args
    copies = calls_of(glue, copy_out_of_graph)
    assert len(copies) == 1 and list(ret) == copies
    assert copies[0].args[0].target == "tail"
    produced = []
    glue.tail.register_forward_hook(lambda mod, args, out: produced.append(out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with torch.no_grad():
            out = glue(*cap.activations)[0]
    assert torch.equal(out, cap.expected)
    assert out is not produced[0] and out.data_ptr() != produced[0].data_ptr()


def test_only_the_top_glue_copies(cap):
    """An inner glue (DBPrune's guarded body) hands its outputs to the tail's graph in place."""
    cfg = dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)
    glue, _, _ = _lower(cap, [graph_partitions, copy_graph_outputs], cfg)
    assert len(calls_of(glue, copy_out_of_graph)) == 1
    assert calls_of(glue.body, copy_out_of_graph) == []


def test_cpu_inputs_run_eagerly_with_one_warning(cap):
    glue, lctx, _ = _lower(cap, [graph_partitions, copy_graph_outputs])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with torch.no_grad():
            outs = [glue(*cap.glue_inputs(tiny_inputs(step)))[0] for step in range(3)]
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "CUDA graphs off" in messages[0] and "inputs on cpu" in messages[0]
    for step, out in enumerate(outs):
        assert torch.equal(out, cap.model(**tiny_inputs(step))[0])
    pool = lctx.graphs
    assert (pool.captures, pool.replays, pool.input_copies) == (0, 0, 0)
    assert all(getattr(glue, p)._graph is None and getattr(glue, p)._off for p in ("head", "body", "tail"))
