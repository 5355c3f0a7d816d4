"""Model coverage: every row of ``dit_fx.tools.matrix.MODEL_MATRIX`` checked on a tiny model of its family.

Per family (one test, one model): the plan's block lists and Pattern per block match the row;
with caching off the output is bit-identical to the unmodified model over a few decreasing
timesteps; with caching forced on the middle blocks really stop running (counted inside the
graph) and the stats say so, per CFG branch for families whose pipeline calls the transformer
twice per step. A family the row marks unsupported must run unmodified with exactly one warning
carrying the row's reason.
"""

import os
import warnings

import pytest
import torch

import dit_fx
from dit_fx.tools.matrix import MATRIX_BY_KEY, MODEL_MATRIX, markdown_table, supported_models
from dit_fx.patterns.regions import module_block_lists
from helpers import BlockCounter
from tiny_models import output_tensor
from tiny_zoo import ZOO, uncond_inputs

STEPS = 3
TIMESTEPS = [999.0 - 41.0 * k for k in range(STEPS)]  # decreasing, as schedulers run
PREFIX = "dit_fx: running the model unmodified (no caching): "


def _calls(spec, model=None):
    """[(step, inputs)] in pipeline order: cond then uncond per step for separate-CFG families."""
    shared = spec.prepare(model) if spec.prepare is not None else {}
    out = []
    for k, t in enumerate(TIMESTEPS):
        out.append((k, {**spec.make_inputs(k, t), **shared}))
        if spec.separate_cfg:
            out.append((k, {**uncond_inputs(spec, k, t), **shared}))
    return out


def _output(out):
    """The sample tensor; Z-Image returns a list of per-sample tensors (stacked here)."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], (tuple, list)):
        return torch.stack(list(out[0]))
    return output_tensor(out)


@torch.no_grad()
def _run(model, calls):
    return [_output(model(**inputs)).clone() for _, inputs in calls]


def _config(spec, **kw):
    cfg = dit_fx.DBCacheConfig(fn_blocks=spec.fn, bn_blocks=spec.bn, **kw)
    return {spec.scope: cfg} if spec.scope else cfg


def _one(value, spec):
    """plan()/summary() of a per-list config is a dict by list name."""
    if spec.scope:
        assert isinstance(value, dict) and list(value) == [spec.scope]
        return value[spec.scope]
    return value


def _dit_fx_warnings(record):
    return [str(w.message) for w in record if str(w.message).startswith("dit_fx")]


def test_matrix_rows_and_zoo_agree():
    assert [r.key for r in MODEL_MATRIX] == list(ZOO), "one zoo model per matrix row, same order"
    for row in MODEL_MATRIX:
        spec = ZOO[row.key]
        assert (row.family, row.class_name, row.separate_cfg, row.scope) == (
            spec.family, spec.class_name, spec.separate_cfg, spec.scope,
        ), row.key
    assert supported_models() == tuple(sorted({r.class_name for r in MODEL_MATRIX if r.status == "cached"}))
    assert "FluxTransformer2DModel" in supported_models() and "Cosmos3OmniTransformer" not in supported_models()
    table = markdown_table()
    assert table.count("\n") == len(MODEL_MATRIX) + 1 and all(r.family in table for r in MODEL_MATRIX)
    models_doc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "models.md")
    with open(models_doc, encoding="utf-8") as f:
        assert table in f.read(), "docs/models.md's table must be `python -m dit_fx matrix` output"


@pytest.mark.parametrize("key", [r.key for r in MODEL_MATRIX])
def test_family(key):
    row, spec = MATRIX_BY_KEY[key], ZOO[key]
    model = spec.build()
    assert type(model).__name__ == row.class_name
    # The module's block lists (the planner's rule, applied to the module tree) are the row's.
    assert module_block_lists(model) == dict(spec.block_lists)
    assert tuple(module_block_lists(model)) == row.block_lists
    calls = _calls(spec, model)
    plain = _run(model, calls)

    stack = [(n, c) for n, c in spec.block_lists if spec.scope in (None, n)]
    # One counter per block, before optimize (traced into the graph); grouped into head / middle /
    # tail by execution order: the spec's (lists one after another), or the plan's where lists
    # interleave (ConsisID runs a perceiver block after every other transformer block).
    names = [f"{name}.{i}" for name, _ in stack for i in range(len(getattr(model, name)))]
    per_block = {nm: BlockCounter([model.get_submodule(nm)]) for nm in names}
    n, fn, bn = len(names), spec.fn, spec.bn

    def split(order):
        return {"head": order[:fn], "middle": order[fn : n - bn], "tail": order[n - bn :]}

    parts = split(names)
    assert len(parts["middle"]) >= 2

    def counts():
        return {k: sum(per_block[nm].value() for nm in v) for k, v in parts.items()}

    def zero():
        for c in per_block.values():
            c.count.zero_()

    # ---------------------------------------------------------------- unsupported: unmodified + one warning
    if row.status != "cached":
        zero()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            dit_fx.optimize(model, _config(spec, residual_diff_threshold=1e9, max_warmup_steps=1))
            got = _run(model, calls)
        found = _dit_fx_warnings(record)
        assert len(found) == 1, found
        assert found[0].startswith(PREFIX + row.status), found[0]
        plan = dit_fx.plan(model)
        if plan is not None:  # refused by the planner (not at capture): the reason is exactly the row's
            plan = _one(plan, spec)
            assert not plan.supported and plan.reason == row.status
            assert found[0] == PREFIX + row.status
            assert tuple(dict.fromkeys(name for name, _ in plan.block_lists)) == row.block_lists
            assert _patterns(plan) == row.patterns
        for a, b in zip(got, plain):
            assert torch.equal(a, b)
        # every block ran on every call: nothing was skipped
        assert counts() == {k: len(v) * len(calls) for k, v in parts.items()}
        return

    # ---------------------------------------------------------------- (a) + (b): plan, caching off is exact
    zero()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dit_fx.optimize(model, _config(spec, residual_diff_threshold=0.0))
        got = _run(model, calls)
    assert not _dit_fx_warnings(record)
    plan = _one(dit_fx.plan(model), spec)
    assert plan.supported, plan.reason
    assert _joined(plan.block_lists) == tuple(stack)
    assert _patterns(plan) == row.patterns
    parts = split([f"{b.list_name}.{b.list_index}" for b in plan.blocks])  # execution order
    assert plan.partition_blocks() == {
        "head": [f"{b.list_name}.{b.list_index}" for b in plan.blocks[:fn]],
        "body": [f"{b.list_name}.{b.list_index}" for b in plan.blocks[fn : n - bn]],
        "tail": [f"{b.list_name}.{b.list_index}" for b in plan.blocks[n - bn :]],
    }
    assert any(s.role == "hidden" for s in plan.middle_streams)
    for a, b in zip(got, plain):
        assert torch.equal(a, b)
    stats = _one(dit_fx.summary(model), spec)
    assert stats.cached_steps == [] and stats.cfg_cached_steps == []
    assert stats.executed_steps == STEPS and stats.calls == len(calls)
    assert stats.separate_cfg == spec.separate_cfg
    assert counts() == {k: len(v) * len(calls) for k, v in parts.items()}

    # ---------------------------------------------------------------- (c) + (d): caching on skips the middle
    dit_fx.disable(model)
    zero()
    dit_fx.optimize(model, _config(spec, residual_diff_threshold=1e9, max_warmup_steps=1))
    got = _run(model, calls)
    stats = _one(dit_fx.summary(model), spec)
    cached = list(range(1, STEPS))
    assert stats.cached_steps == cached, stats
    assert stats.separate_cfg == spec.separate_cfg
    assert stats.cfg_cached_steps == (cached if spec.separate_cfg else [])
    assert stats.executed_steps == STEPS and stats.calls == len(calls)
    computed_calls = sum(1 for step, _ in calls if step == 0)
    assert counts() == {
        "head": len(parts["head"]) * len(calls),
        "middle": len(parts["middle"]) * computed_calls,
        "tail": len(parts["tail"]) * len(calls),
    }
    for (step, _), a, b in zip(calls, got, plain):
        if step == 0:
            assert torch.equal(a, b), "warmup step computes everything: exact"
        else:
            assert not torch.equal(a, b), "a cached step reuses the middle residual: not the plain output"
            assert torch.isfinite(a).all()
    dit_fx.disable(model)


def _joined(block_lists):
    """(list, count) runs of a plan merged per list, in the order each list first runs."""
    out = {}
    for name, count in block_lists:
        out[name] = out.get(name, 0) + count
    return tuple(out.items())


def _patterns(plan):
    out = {}
    for b in plan.blocks:
        out.setdefault(b.list_name, []).append(b.pattern)
    return tuple((name, _compact(p)) for name, p in out.items())


def _compact(patterns):
    """All blocks of a list share one Pattern: (p,); otherwise the full per-block list."""
    return (patterns[0],) if len(set(patterns)) == 1 else tuple(patterns)
