"""The pass manager: ordered, named, editable ``PassList`` stages; each run timed into the context;
the graph after each pass logged (and only then formatted) with debug logging of ``dit_fx.passes``."""

import logging
from dataclasses import dataclass, field
from typing import List

import pytest
import torch
import torch.fx as fx

import dit_fx
from dit_fx.algorithms import ALGORITHMS, DBCACHE, DBPRUNE
from dit_fx.passes import DBCACHE_REWRITE, DBPRUNE_REWRITE, PassList, PassTiming, checked
from dit_fx.passes import manager
from dit_fx.passes.manager import stage_names
from pass_graphs import capture, call_targets, rewrite_passes


@dataclass
class Ctx:
    timings: List[PassTiming] = field(default_factory=list)
    ran: List[str] = field(default_factory=list)


def named(name):
    def run(gm, ctx):
        ctx.ran.append(name)
        return gm

    run.__name__ = name
    return run


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x)


def tiny_gm():
    return fx.symbolic_trace(Tiny())


def test_runs_in_order_and_names_list_the_order():
    stage = PassList("rewrite", [named("a"), named("b"), named("c")])
    assert stage.names == ["a", "b", "c"] and len(stage) == 3
    ctx = Ctx()
    gm = tiny_gm()
    assert stage(gm, ctx) is gm
    assert ctx.ran == ["a", "b", "c"]
    assert repr(stage) == "PassList('rewrite', ['a', 'b', 'c'])"


def test_each_pass_gets_the_previous_result():
    def replace(gm, ctx):
        return tiny_gm()

    replace.__name__ = "replace"
    seen = []

    def record(gm, ctx):
        seen.append(gm)
        return gm

    first = tiny_gm()
    out = PassList("s", [replace, record])(first, Ctx())
    assert seen == [out] and out is not first


def test_insert_before_after_append_remove_by_name():
    stage = PassList("rewrite", [named("a"), named("c")])
    assert stage.insert_before("c", named("b")) is stage
    assert stage.insert_after("c", named("d")).append(named("e")).names == ["a", "b", "c", "d", "e"]
    stage.insert_before("a", named("start"))
    assert stage.names[0] == "start"
    assert stage.remove("c").names == ["start", "a", "b", "d", "e"]
    ctx = Ctx()
    stage(tiny_gm(), ctx)
    assert ctx.ran == ["start", "a", "b", "d", "e"]


@pytest.mark.parametrize("edit", ["insert_before", "insert_after", "remove"])
def test_unknown_name_raises_naming_it(edit):
    stage = PassList("lowering", [named("a"), named("b")])
    args = ("nope",) if edit == "remove" else ("nope", named("x"))
    with pytest.raises(ValueError, match=r"no pass named 'nope' in stage 'lowering' \(passes: \['a', 'b'\]\)"):
        getattr(stage, edit)(*args)
    assert stage.names == ["a", "b"], "a failed edit changes nothing"


def test_copies_are_independent():
    stage = PassList("rewrite", [named("a")])
    other = stage.copy().append(named("b"))
    assert stage.names == ["a"] and other.names == ["a", "b"] and other.stage == "rewrite"
    # Iterating yields a snapshot: editing while iterating does not disturb the loop.
    seen = []
    for p in stage:
        seen.append(p.__name__)
        if len(seen) < 3:  # bounded, should iteration see the appended passes
            stage.append(named("late"))
    assert seen == ["a"] and stage.names == ["a", "late"]


def test_algorithm_stages_are_fresh_copies():
    assert DBCACHE.rewrite_passes().names == ["split_partitions", "bind_partition_parameters", "insert_dbcache_glue"]
    assert DBPRUNE.rewrite_passes().names == [
        "split_partitions", "bind_partition_parameters", "split_body_blocks", "insert_dbprune_guards"]
    edited = DBCACHE.rewrite_passes().insert_after("bind_partition_parameters", named("quantize"))
    assert "quantize" in edited.names and "quantize" not in DBCACHE.rewrite_passes().names
    assert [p.__name__ for p in DBCACHE_REWRITE] == DBCACHE.rewrite_passes().names
    assert [p.__name__ for p in DBPRUNE_REWRITE] == DBPRUNE.rewrite_passes().names
    assert set(ALGORITHMS) == {"dbcache", "dbprune"}


def test_timings_are_recorded_per_pass():
    ctx = Ctx()
    ctx.timings.append(PassTiming("earlier", "x", 0.0))
    PassList("lowering", [named("a"), named("b")])(tiny_gm(), ctx)
    assert [(t.stage, t.name) for t in ctx.timings] == [("earlier", "x"), ("lowering", "a"), ("lowering", "b")]
    assert all(t.seconds >= 0.0 for t in ctx.timings)
    assert stage_names(PassList("rewrite", [named("a")]), None, PassList("lowering", [])) == {"rewrite": ["a"], "lowering": []}


@pytest.fixture
def formatted(monkeypatch):
    """Counts how often a graph is formatted for the log."""
    count = []
    original = manager._LazyCode.__str__

    def counting(self):
        count.append(1)
        return original(self)

    monkeypatch.setattr(manager._LazyCode, "__str__", counting)
    return count


def test_no_debug_logging_no_formatting(caplog, formatted, monkeypatch):
    caplog.set_level(logging.INFO, logger="dit_fx.passes")
    gm = tiny_gm()
    monkeypatch.setattr(gm, "print_readable", lambda *a, **k: pytest.fail("formatted without debug logging"))
    PassList("rewrite", [named("a"), named("b")])(gm, Ctx())
    assert formatted == []
    assert [r for r in caplog.records if r.name == "dit_fx.passes"] == []


def test_debug_logging_shows_the_graph_before_and_after_each_pass(caplog):
    caplog.set_level(logging.DEBUG, logger="dit_fx.passes")
    PassList("rewrite", [named("a"), named("b")])(tiny_gm(), Ctx())
    messages = [r.getMessage() for r in caplog.records if r.name == "dit_fx.passes"]
    assert len(messages) == 3
    assert messages[0].startswith("dit_fx rewrite: before a:")
    assert messages[1].startswith("dit_fx rewrite/a (") and messages[2].startswith("dit_fx rewrite/b (")
    assert all("def forward" in m and "self.lin(" in m for m in messages)
    caplog.clear()
    PassList("rewrite", [])(tiny_gm(), Ctx())
    assert [r for r in caplog.records if r.name == "dit_fx.passes"] == [], "an empty stage logs nothing"


def test_debug_logging_is_lazy_until_a_handler_formats(formatted):
    """The logger holds the unformatted graph: a record nobody handles is never formatted."""
    log = logging.getLogger("dit_fx.passes")
    old_level, old_propagate = log.level, log.propagate
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(logging.DEBUG)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        PassList("rewrite", [named("a")])(tiny_gm(), Ctx())
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate
    assert len(records) == 2 and formatted == []  # before the first pass, after it
    assert all(isinstance(r.args[-1], manager._LazyCode) for r in records)
    assert "def forward" in records[1].getMessage() and len(formatted) == 1


def test_checked_lints_recompiles_and_keeps_the_name():
    def edit(gm, ctx):
        """doc"""
        node = next(n for n in gm.graph.nodes if n.op == "call_module")
        with gm.graph.inserting_after(node):
            neg = gm.graph.call_function(torch.neg, (node,))
        node.replace_all_uses_with(neg, delete_user_cb=lambda user: user is not neg)
        return gm  # no recompile: ``checked`` does it

    run = checked(edit)
    assert run.__name__ == "edit" and run.__doc__ == "doc"
    gm = tiny_gm()
    x = torch.randn(3, 2)
    expected = -gm(x)
    out = run(gm, Ctx())
    assert "neg" in out.code and torch.equal(out(x), expected)

    def broken(gm, ctx):
        node = next(n for n in gm.graph.nodes if n.op == "call_module")
        node.target = "missing"
        return gm

    with pytest.raises(RuntimeError):
        checked(broken)(tiny_gm(), Ctx())


def test_a_pass_inserted_into_a_real_stage_runs_between_the_rewrites():
    """The extension seam: a pass inserted by name sees the graph as the earlier passes left it."""
    cap = capture()
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)
    seen = {}

    def quantize(gm, ctx):
        seen["children"] = call_targets(gm)
        seen["placeholders"] = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
        seen["routed"] = ctx.glue_values
        return gm

    stage = rewrite_passes(cfg).insert_after("bind_partition_parameters", quantize)
    ctx = cap.rewrite_context(cfg)
    gm = stage(cap.working(), ctx)
    assert seen["children"] == ["head", "body", "tail"], "split, and the glue not yet inserted"
    assert seen["placeholders"] == ["l_timestep_", "l_hidden_states_", "l_encoder_hidden_states_"], "parameters bound"
    assert seen["routed"]
    assert [t.name for t in ctx.timings] == ["split_partitions", "bind_partition_parameters", "quantize", "insert_dbcache_glue"]
    with torch.no_grad():
        assert torch.equal(gm(*cap.activations)[0], cap.expected)
