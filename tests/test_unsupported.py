"""Graphs the rewrite cannot handle run unmodified, with exactly one warning saying why."""

import warnings

import pytest
import torch

import dit_fx
import dit_fx.frontend.captures
from toy_models import CacheWritingDiT, ToyDiT, TwinStreamDiT, toy_inputs

CFG = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=1)


def run(model, n=4):
    with torch.no_grad():
        return [model(**toy_inputs(s))[0].clone() for s in range(n)]


def dit_fx_warnings(record):
    return [w for w in record if "dit_fx" in str(w.message)]


def test_supported_toy_is_cached():
    """Control case: the same toy without defects is planned (Pattern_3) and caches."""
    model = ToyDiT()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dit_fx.optimize(model, CFG)
        run(model)
    assert not dit_fx_warnings(record)
    plan = dit_fx.plan(model)
    assert plan.supported and [b.pattern for b in plan.blocks] == [3, 3, 3, 3]
    assert dit_fx.summary(model).cached_steps == [1, 2, 3]


@pytest.mark.parametrize(
    "mode, reason",
    [("reuse", "not contiguous"), ("middle_skip", "used after the middle"), ("graph_break", "graph")],
)
def test_unsupported_graph_runs_unmodified_with_one_warning(mode, reason):
    model = ToyDiT(mode=mode)
    expected = run(model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dit_fx.optimize(model, CFG)
        got = run(model)
    found = dit_fx_warnings(record)
    assert len(found) == 1, [str(w.message) for w in found]
    assert reason in str(found[0].message)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def backend_run_with_warnings(model):
    """Run the plain model, then through the dit_fx backend; return (plain, got, dit_fx warnings)."""
    expected = run(model)
    compiled = torch.compile(model, backend="dit_fx", options={"config": CFG, "compile": False})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = run(compiled)
    return expected, got, dit_fx_warnings(record)


def test_graph_break_through_backend_warns_and_is_unmodified():
    """Without fullgraph, Dynamo hands the backend partial graphs: refuse them, do not cache halves."""
    expected, got, found = backend_run_with_warnings(ToyDiT(mode="graph_break"))
    assert found and all("graph break" in str(w.message) for w in found)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_too_few_blocks_through_backend_warns():
    """optimize() raises for Fn+Bn >= blocks; the backend cannot raise mid-compile, so it warns."""
    expected, got, found = backend_run_with_warnings(ToyDiT(num_blocks=2))
    assert len(found) == 1 and "no middle block" in str(found[0].message)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_streams_of_equal_shape_are_refused_not_guessed():
    model = TwinStreamDiT()
    g = torch.Generator().manual_seed(0)
    h, e = torch.randn(1, 5, 8, generator=g), torch.randn(1, 5, 8, generator=g)
    with torch.no_grad():
        expected = model(h, e)[0]
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            dit_fx.optimize(model, CFG)
            got = model(h, e)[0]
    found = dit_fx_warnings(record)
    assert len(found) == 1 and "ambiguous" in str(found[0].message)
    assert torch.equal(got, expected)
    # With distinct token counts the same model is planned: two carried streams (Pattern_0).
    model2 = TwinStreamDiT()
    dit_fx.optimize(model2, CFG)
    with torch.no_grad():
        model2(h, torch.randn(1, 7, 8, generator=g))
    plan = dit_fx.plan(model2)
    assert plan.supported and {b.pattern for b in plan.blocks} == {0}


def test_dynamos_recompile_limit_is_not_shared_and_dit_fx_s_own_limit_is_loud(tiny, monkeypatch):
    """Each input signature compiles on its own copy of the forward's code, so Dynamo's per-code
    recompile limit (2 here) never turns acceleration off; past dit_fx's own per-model limit the
    least recently used signature is dropped with one warning and captured again when it returns."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    monkeypatch.setattr(dit_fx.frontend.captures, "MAX_SIGNATURES", 3)
    spec = tiny("flux")
    model = spec.build()
    batches = [1, 2, 3, 4, 1]
    inputs = [spec.make_inputs(0, 500.0, batch=b) for b in batches]
    with torch.no_grad():
        expected = [model(**i)[0] for i in inputs]
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with torch.no_grad():
            got = [model(**i)[0] for i in inputs]
    found = dit_fx_warnings(record)
    assert len(found) == 1 and "input signatures" in str(found[0].message)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    info = dit_fx.inspect(model)
    assert info.captures_total == 5 and all(c.supported for c in info.captures)  # batch 1 again: re-captured
    assert info.signatures == 3 and info.signature_evictions == 2
    assert info.live_captures == 3  # the dropped signatures' captures were let go


def test_a_graph_break_before_the_blocks_still_caches_the_graph_that_holds_them():
    """Captured in pieces (frontend/pieces.py): the graph after the break holds every block and is
    rewritten; its glue reads the call's timestep (Dynamo passes it no timestep input)."""
    model = ToyDiT(mode="break_before")
    expected = run(model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0))
        got = run(model)
    assert not dit_fx_warnings(record)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    stats = dit_fx.summary(model)
    assert stats.executed_steps == 4 and stats.calls == 4  # steps read from the call's timestep
    assert dit_fx.inspect(model).direct_calls.hits == 0  # the pieces and the Python between them run
    dit_fx.optimize(model, CFG)
    run(model)
    assert dit_fx.summary(model).cached_steps == [1, 2, 3]


def test_a_middle_block_writing_into_a_tensor_the_call_passes_in_is_refused():
    """A cached step would skip the write (a KV cache the blocks fill): never silently stale."""
    torch.manual_seed(0)
    model = CacheWritingDiT()
    caches = [torch.zeros(4, 2, 6, 8) for _ in range(2)]

    def calls(cache):
        with torch.no_grad():
            return [model(**toy_inputs(s), kv_cache=cache)[0].clone() for s in range(3)]

    expected = calls(caches[0])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dit_fx.optimize(model, CFG)
        got = calls(caches[1])
    found = [str(w.message) for w in dit_fx_warnings(record)]
    assert len(found) == 1 and "a middle block writes in place into a tensor the call passes in" in found[0], found
    assert "L['kv_cache']" in found[0]  # Dynamo's source of the input: the forward's argument
    assert all(torch.equal(a, b) for a, b in zip(got, expected)) and torch.equal(caches[0], caches[1])
