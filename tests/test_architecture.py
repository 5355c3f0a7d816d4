"""Architecture contracts of the restructured package: no import cycles, one options validator,
per-request generation state, the host-read seam, per-model direct-call epochs, the bounded record
store, ``dit_fx.inspect``, and ``disable`` undoing every patch."""

import ast
import gc
import json
import os
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch
from torch import nn

import dit_fx
from dit_fx.backend import parse_backend_options
from dit_fx.options import CompileOptions
from dit_fx.runtime import CacheContext, PruneContext
from dit_fx.runtime.host import LOCAL, HostReads
from dit_fx.runtime.state import StateSlot
from dit_fx.session import MAX_RECORDS, CompileRecord, RecordStore, Session
from toy_models import ToyDiT, toy_inputs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = "dit_fx"

CFG = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1)


def toy(seed=0, num_blocks=4):
    torch.manual_seed(seed)
    return ToyDiT(num_blocks=num_blocks).eval()


def run(model, steps, start=0):
    with torch.no_grad():
        return [model(**toy_inputs(s))[0] for s in range(start, start + steps)]


# ---------------------------------------------------------------------------------------------
# Imports
# ---------------------------------------------------------------------------------------------
def package_modules(root=ROOT, package=PACKAGE):
    """Module name -> path for every ``<package>/**/*.py``."""
    found = {}
    for dirpath, _, files in os.walk(os.path.join(root, package)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_statements(tree):
    """Import statements that run when the module is imported: at top level and in top-level
    if / try / with / class bodies; not in functions, not under ``if TYPE_CHECKING:``."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            todo.extend(node.orelse if _is_type_checking(node.test) else node.body + node.orelse)
        elif isinstance(node, ast.Try):
            todo.extend(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])
        elif isinstance(node, (ast.With, ast.ClassDef)):
            todo.extend(node.body)


def import_graph(root=ROOT, package=PACKAGE):
    """Module -> the package modules it imports when it is imported (module-level imports only,
    relative imports resolved; ``from pkg import name`` counts ``pkg.name`` when that is a module)."""
    modules = package_modules(root, package)
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = os.path.basename(path) == "__init__.py"
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        for node in import_time_statements(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
                # ``from pkg import name`` runs pkg; ``from . import sub`` only needs the submodule.
                targets = submodules + ([module] if len(submodules) < len(node.names) else [])
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


FAKE_PACKAGE = {
    "__init__.py": "from .a import thing\n",
    "a.py": "from typing import TYPE_CHECKING\nimport os\nfrom . import b\nif TYPE_CHECKING:\n    from .c import hidden\n"
            "def later():\n    from .c import lazy\nthing = 1\n",
    "b.py": "try:\n    from .sub.d import x\nexcept ImportError:\n    pass\n",
    "c.py": "",
    "sub/__init__.py": "",
    "sub/d.py": "from ..c import y\nfrom .. import a\nimport pkg.c\nx = 1\n",
}


def test_the_import_graph_is_read_correctly(tmp_path):
    for name, text in FAKE_PACKAGE.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    graph = import_graph(str(tmp_path), "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},  # not the TYPE_CHECKING import, not the one in a function
        "pkg.b": {"pkg.sub.d"},  # inside try: runs at import
        "pkg.c": set(),
        "pkg.sub": set(),
        "pkg.sub.d": {"pkg.c", "pkg.a"},  # two levels up; "from .. import a" is pkg.a
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.d", "pkg.a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    real = import_graph()
    assert len(real) > 40 and "dit_fx.api" in real["dit_fx"]


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


IMPORT_EACH = textwrap.dedent(
    """
    import importlib, json, os, sys, traceback

    def in_fork(work):
        # run work() in a forked child; (exit status, what it wrote)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            code = 0
            try:
                text = work()
            except BaseException:
                text, code = traceback.format_exc()[-3000:], 1
            os.write(write, text.encode())
            os._exit(code)
        os.close(write)
        chunks = []
        while True:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read)
        return os.waitpid(pid, 0)[1], b"".join(chunks).decode()

    names = sys.argv[1:]
    before = set(sys.modules)

    def third_party():
        for name in names:
            importlib.import_module(name)
        return json.dumps([m for m in sys.modules if m not in before and m.split(".")[0] != "dit_fx"])

    # Load what the package needs from elsewhere (torch, Dynamo) once, here; then every dit_fx
    # module is imported first, in a fork of its own with no dit_fx module loaded.
    status, out = in_fork(third_party)
    if status != 0:
        print(json.dumps({"<all>": out}))
        sys.exit(0)
    for module in json.loads(out):
        try:
            importlib.import_module(module)
        except Exception:
            pass
    assert not any(m.split(".")[0] == "dit_fx" for m in sys.modules)
    failures = {}
    for name in names:
        status, out = in_fork(lambda: importlib.import_module(name) and "")
        if status != 0:
            failures[name] = out or f"exit status {status}"
    print(json.dumps(failures))
    """
)


def test_every_module_imports_on_its_own():
    names = sorted(package_modules())
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, *names], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


# ---------------------------------------------------------------------------------------------
# CompileOptions: the one validator
# ---------------------------------------------------------------------------------------------
BAD_OPTIONS = [
    ("compile", dict(compile="yes"), "compile must be a bool"),
    ("cuda_graphs", dict(cuda_graphs=1), "cuda_graphs must be a bool"),
    ("mode", dict(mode="fastest"), "mode must be one of"),
    ("inductor_options", dict(compile=True, inductor_options={"no_such_option": 1}), "inductor_options 'no_such_option'"),
    ("dump_dir", dict(dump_dir=3), "dump_dir must be a path"),
]


@pytest.mark.parametrize("field,bad,message", BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
def test_one_validator_for_both_entry_points(field, bad, message):
    with pytest.raises(ValueError, match=message) as direct:
        CompileOptions(**bad)
    assert field in str(direct.value)
    model = toy()
    with pytest.raises(ValueError) as through_optimize:
        dit_fx.optimize(model, CFG, **bad)
    assert dit_fx.api.optimized_state(model) is None and "forward" not in model.__dict__, "nothing installed"
    with pytest.raises(ValueError) as through_backend:
        parse_backend_options(dict(bad))
    assert str(through_optimize.value) == str(through_backend.value) == str(direct.value)
    # torch.compile(..., backend="dit_fx", options=...): the backend raises it (Dynamo wraps it).
    torch._dynamo.reset()
    compiled = torch.compile(toy(), backend="dit_fx", options=dict(bad, config=CFG))
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as through_torch_compile:
        with torch.no_grad():
            compiled(**toy_inputs(0))
    inner = through_torch_compile.value.inner_exception
    assert isinstance(inner, ValueError) and str(inner) == str(direct.value)


# ---------------------------------------------------------------------------------------------
# Generation state: one per request, swapped on one context
# ---------------------------------------------------------------------------------------------
BASE = torch.arange(1.0, 7.0).reshape(2, 3)
TIMESTEPS = [torch.tensor([1.0 - 0.1 * k]) for k in range(5)]
TIMESTEPS_B = [t - 0.05 for t in TIMESTEPS]  # interleaved with A's, one decreasing schedule
SEQ_A = [BASE, BASE * 1.05, BASE * 1.5, BASE * 1.52, BASE * 1.53]  # cached at 1, 3, 4
SEQ_B = [-BASE, -BASE * 1.4, -BASE * 1.8, -BASE * 1.81, -BASE * 2.5]  # cached at 3 only
STATE_CFG = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.1, max_warmup_steps=1)


class Body:
    """A stand-in middle adding ``offset`` (per request), so the residuals of two requests differ."""

    def __init__(self, offset):
        self.offset, self.calls = offset, 0

    def __call__(self, hidden):
        self.calls += 1
        return hidden + self.offset


def one_step(ctx, body, fn_residual, t):
    hidden = torch.zeros(2, 3)
    reuse = ctx.decide(fn_residual, torch.zeros_like(fn_residual), t)
    (out,) = ctx.run_middle(reuse, body, (hidden,), (hidden,))
    return reuse, out


def alone(seq, offset, timesteps):
    ctx, body = CacheContext(STATE_CFG), Body(offset)
    results = [one_step(ctx, body, r, t) for r, t in zip(seq, timesteps)]
    return results, ctx.stats, body.calls


def test_two_generation_states_on_one_context_stay_separate():
    (res_a, stats_a, calls_a), (res_b, stats_b, calls_b) = alone(SEQ_A, 1.0, TIMESTEPS), alone(SEQ_B, 5.0, TIMESTEPS_B)
    assert stats_a.cached_steps != stats_b.cached_steps, "the two requests decide differently"
    slot = StateSlot(STATE_CFG)
    ctx = CacheContext(STATE_CFG, states=slot)
    state_a, state_b = slot.new_state(), slot.new_state()
    body_a, body_b = Body(1.0), Body(5.0)
    got_a, got_b = [], []
    for k in range(len(TIMESTEPS)):  # interleaved call by call
        with slot.use(state_a) as bound:
            assert bound is state_a and slot.current() is state_a
            got_a.append(one_step(ctx, body_a, SEQ_A[k], TIMESTEPS[k]))
        with slot.use(state_b):
            got_b.append(one_step(ctx, body_b, SEQ_B[k], TIMESTEPS_B[k]))
    assert slot.current() is slot.default and slot.default.tracker.calls == 0
    for (reuse, out), (reuse_alone, out_alone) in zip(got_a + got_b, res_a + res_b):
        assert reuse == reuse_alone and torch.equal(out, out_alone)
    assert CacheContext.collect_stats(state_a, None) == stats_a
    assert CacheContext.collect_stats(state_b, None) == stats_b
    assert (body_a.calls, body_b.calls) == (calls_a, calls_b)
    with slot.use(state_b):
        assert ctx.stats == stats_b
    residual_a = state_a.scope(None).branches["cond"].middle_residuals[0]
    residual_b = state_b.scope(None).branches["cond"].middle_residuals[0]
    assert torch.equal(residual_a, torch.ones(2, 3)) and torch.equal(residual_b, torch.full((2, 3), 5.0))


def test_interleaving_on_one_shared_state_would_mix_them():
    """Control for the test above: the same interleaving on one state gives other results."""
    ctx = CacheContext(STATE_CFG)
    mixed = []
    for k in range(len(TIMESTEPS)):
        mixed.append(one_step(ctx, Body(1.0), SEQ_A[k], TIMESTEPS[k]))
        one_step(ctx, Body(5.0), SEQ_B[k], TIMESTEPS_B[k])
    expected, stats_a, _ = alone(SEQ_A, 1.0, TIMESTEPS)
    assert [r for r, _ in mixed] != [r for r, _ in expected]
    assert ctx.stats.executed_steps == 10 != stats_a.executed_steps


def test_a_state_bound_in_another_thread_is_not_seen_here():
    import threading

    slot = StateSlot(STATE_CFG)
    other = slot.new_state()
    seen = []
    entered, release = threading.Event(), threading.Event()

    def worker():
        with slot.use(other):
            entered.set()
            release.wait(5)
            seen.append(slot.current())

    thread = threading.Thread(target=worker)
    thread.start()
    entered.wait(5)
    here = slot.current()
    release.set()
    thread.join(5)
    assert here is slot.default and seen == [other]


# ---------------------------------------------------------------------------------------------
# HostReads: the one seam for decision reads
# ---------------------------------------------------------------------------------------------
class CountingHost(HostReads):
    def __init__(self, diff=None):
        self.diff_calls, self.scalar_calls, self.diff = 0, 0, diff

    def diff_sums(self, num, den):
        self.diff_calls += 1
        real = super().diff_sums(num, den)
        return real if self.diff is None else [self.diff, 1.0]

    def scalar(self, value):
        self.scalar_calls += 1
        return super().scalar(value)


DRIFTING = [BASE * (1 + 0.5 * k) for k in range(5)]  # relative diffs far above the threshold


def run_host(host):
    ctx, body = CacheContext(STATE_CFG, host=host), Body(1.0)
    for r, t in zip(DRIFTING, TIMESTEPS):
        one_step(ctx, body, r, t)
    return ctx.stats, body.calls


def test_every_diff_read_goes_through_the_host():
    host = CountingHost()
    stats, calls = run_host(host)
    assert stats.cached_steps == [] and calls == 5
    assert host.diff_calls == len(stats.residual_diffs) == 4  # every step after the warmup
    assert host.scalar_calls == 5, "the timestep of every call is read through the host too"
    assert run_host(LOCAL)[0] == stats


def test_what_the_host_returns_decides():
    """A parallel run reduces across ranks in ``diff_sums``: what it returns is the decision."""
    agreeing = CountingHost(diff=0.0)  # e.g. the ranks' reduced sums say: nothing changed
    stats, calls = run_host(agreeing)
    assert stats.cached_steps == [1, 2, 3, 4] and calls == 1
    assert set(stats.residual_diffs.values()) == {0.0}
    # And the other way: a diff above the threshold computes although the tensors are equal.
    ctx, body = CacheContext(STATE_CFG, host=CountingHost(diff=0.5)), Body(1.0)
    for t in TIMESTEPS:
        one_step(ctx, body, BASE, t)
    assert ctx.stats.cached_steps == [] and body.calls == 5


def test_dbprune_block_diffs_go_through_the_host():
    cfg = dit_fx.DBPruneConfig(fn_blocks=1, residual_diff_threshold=0.1, max_warmup_steps=1)
    host = CountingHost(diff=0.0)
    ctx = PruneContext(cfg, host=host, num_blocks=3)
    block = Body(1.0)
    for t in TIMESTEPS[:3]:
        ctx.begin(BASE, t)
        for block_id in (1, 2):
            ctx.run_block(block_id, block, (BASE,), (BASE,), 0)
    assert host.diff_calls == 4  # two guarded blocks, two steps after the warmup
    assert ctx.stats.pruned_blocks == [0, 2, 2] and block.calls == 2


# ---------------------------------------------------------------------------------------------
# Direct calls: per-model epochs
# ---------------------------------------------------------------------------------------------
def _direct(model):
    return dit_fx.inspect(model).direct_calls


def _register_parameter(model):
    model.proj_out.register_parameter("extra", nn.Parameter(torch.zeros(1)))


def _register_buffer(model):
    model.blocks[2].register_buffer("extra", torch.zeros(1))


def _add_module(model):
    model.proj_out.add_module("adapter", nn.Identity())


@pytest.mark.parametrize("change", [_register_parameter, _register_buffer, _add_module])
def test_a_change_to_one_model_invalidates_only_its_direct_calls(change):
    a, b = toy(0), toy(1)
    for m in (a, b):
        dit_fx.optimize(m, CFG)
        run(m, 2)  # captured, then direct
    before_a, before_b = _direct(a), _direct(b)
    assert before_a.hits == before_b.hits == 1 and before_a.dynamo_calls == before_b.dynamo_calls == 1
    change(a)
    run(a, 1, start=2)
    run(b, 1, start=2)
    after_a, after_b = _direct(a), _direct(b)
    assert after_a.dynamo_calls == 2 and after_a.hits == 1, "A's structure changed: through Dynamo again"
    assert after_b.dynamo_calls == 1 and after_b.hits == 2, "B is untouched: still direct"
    run(a, 1, start=3)
    assert _direct(a).hits == 2, "A learned its direct call again"
    dit_fx.disable(a)
    dit_fx.disable(b)


def test_a_module_that_joins_a_model_belongs_to_it():
    a, b = toy(0), toy(1)
    for m in (a, b):
        dit_fx.optimize(m, CFG)
    a.add_module("adapter", nn.Sequential(nn.Linear(2, 2)))
    run(a, 2)
    run(b, 2)
    assert _direct(a).hits == 1 and _direct(b).hits == 1
    a.adapter[0].register_parameter("extra", nn.Parameter(torch.zeros(1)))  # on the new submodule
    stranger = nn.Linear(2, 2)
    stranger.register_parameter("extra", nn.Parameter(torch.zeros(1)))  # on no optimized model
    run(a, 1, start=2)
    run(b, 1, start=2)
    assert _direct(a).dynamo_calls == 2
    assert _direct(b).dynamo_calls == 1 and _direct(b).hits == 2
    dit_fx.disable(a)
    dit_fx.disable(b)


HOOKS = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {here!r})
    import torch
    from torch.nn.modules import module as M
    import dit_fx
    from toy_models import ToyDiT

    def sizes():
        return [len(M._global_parameter_registration_hooks), len(M._global_buffer_registration_hooks),
                len(M._global_module_registration_hooks)]

    cfg = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1)
    seen = {{"before": sizes()}}
    a, b = ToyDiT(), ToyDiT()
    dit_fx.optimize(a, cfg); seen["one"] = sizes()
    dit_fx.optimize(b, cfg); seen["two"] = sizes()
    dit_fx.disable(a); seen["one_left"] = sizes()
    dit_fx.disable(b); seen["none_left"] = sizes()
    dit_fx.optimize(a, cfg); seen["again"] = sizes()
    dit_fx.optimize(a, cfg); seen["twice"] = sizes()  # optimizing again disables first
    dit_fx.disable(a); seen["after"] = sizes()
    a.proj_out.register_parameter("extra", torch.nn.Parameter(torch.zeros(1)))  # no hook left to fail
    print(json.dumps(seen))
    """
)


def test_registration_hooks_are_removed_with_the_last_model():
    proc = subprocess.run([sys.executable, "-c", HOOKS.format(here=HERE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    before = seen["before"]
    plus_one = [n + 1 for n in before]
    assert seen["one"] == seen["two"] == seen["one_left"] == plus_one, seen
    assert seen["none_left"] == before, seen
    assert seen["again"] == seen["twice"] == plus_one and seen["after"] == before, seen


def test_a_dropped_optimized_model_is_freed():
    """Nothing dit_fx keeps beside the model refers to it (its weights are issue 15's part:
    Dynamo's cache entries still hold the captured graph)."""
    model = toy()
    dit_fx.optimize(model, CFG)
    run(model, 1)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------------------------------------
# The record store
# ---------------------------------------------------------------------------------------------
def _record(index):
    return CompileRecord(index, (), None, None)


def test_record_store_keeps_the_latest_records_and_counts_all():
    store = RecordStore(maxlen=3)
    assert store.last is None and len(store) == 0 and store.total == 0
    for _ in range(5):
        store.add(_record)
    assert len(store) == 3 and store.total == 5
    assert [r.index for r in store] == [2, 3, 4] and store.last.index == 4
    assert RecordStore()._records.maxlen == MAX_RECORDS
    assert Session(CFG).records._records.maxlen == MAX_RECORDS


def test_a_session_keeps_at_most_its_bound_of_captures():
    model = toy()
    dit_fx.optimize(model, CFG)
    dit_fx.api.session_for(model).records = RecordStore(maxlen=2)
    with torch.no_grad():
        for batch in (1, 2, 3, 4):  # a new input shape is a new capture
            model(**toy_inputs(0, batch=batch))
    info = dit_fx.inspect(model)
    assert info.captures_total == 4
    assert [c.index for c in info.captures] == [2, 3]
    assert all(c.supported for c in info.captures)
    dit_fx.disable(model)


# ---------------------------------------------------------------------------------------------
# dit_fx.inspect
# ---------------------------------------------------------------------------------------------
REWRITE = ["split_partitions", "bind_partition_parameters", "insert_dbcache_glue"]


@pytest.mark.parametrize("compile_flag", [False, True], ids=["eager", "compiled"])
def test_inspect_reports_what_dit_fx_did(compile_flag):
    model = toy()
    dit_fx.optimize(model, CFG, compile=compile_flag)
    empty = dit_fx.inspect(model)
    assert empty.captures_total == 0 and empty.captures == () and empty.plan is None and empty.passes == {}
    assert empty.cache_bytes == 0 and empty.direct_calls.hits == 0
    run(model, 1)
    computed = dit_fx.inspect(model)
    hidden_bytes = 2 * 6 * 8 * 4  # batch x tokens x dim, fp32
    assert computed.cache_bytes == 2 * hidden_bytes, "the reference residual and the middle residual"
    run(model, 3, start=1)
    info = dit_fx.inspect(model)
    assert info.options.compile is compile_flag and info.config == CFG and info.fallback_reason is None
    assert info.captures_total == 1 and len(info.captures) == 1
    capture = info.captures[0]
    assert capture.supported and capture.reason is None and capture.glue is not None and capture.captured is not None
    assert capture.plans[0].num_blocks == 4 and info.plan is capture.plans[0]
    assert capture.options.compile is compile_flag and capture.options.cuda_graphs is False  # as decided on CPU
    lowering = ["split_block_regions", "compile_regions"] if compile_flag else []
    assert info.passes == capture.passes == {"rewrite": REWRITE, "lowering": lowering}
    assert [(stage, name) for stage, name, _ in capture.pass_seconds] == [("rewrite", n) for n in REWRITE] + [
        ("lowering", n) for n in lowering]
    assert all(seconds >= 0 for _, _, seconds in capture.pass_seconds) and capture.seconds > 0
    if compile_flag:
        assert info.regions.compiles > 0 and len(info.regions.compile_seconds) == info.regions.compiles
        assert info.regions.artifacts > 0
    else:
        assert info.regions.compiles == 0
    assert info.direct_calls.entries == 1 and info.direct_calls.hits == 3 and info.direct_calls.dynamo_calls == 1
    assert info.cuda_graphs.captures == info.cuda_graphs.replays == 0
    assert dit_fx.summary(model).cached_steps == [1, 2, 3], "caching was on"
    assert info.cache_bytes > 0
    dit_fx.disable(model)


def test_inspect_refuses_what_dit_fx_did_not_touch():
    with pytest.raises(ValueError, match="not optimized by dit_fx"):
        dit_fx.inspect(toy())
    with pytest.raises(ValueError, match="inspect expects a module or pipeline"):
        dit_fx.inspect(object())


def test_inspect_a_model_compiled_through_the_backend():
    model = toy()
    compiled = torch.compile(model, backend="dit_fx", options={"config": CFG, "compile": False})
    run(compiled, 2)
    info = dit_fx.inspect(model)
    assert info.captures_total == 1 and info.passes["rewrite"] == REWRITE
    assert info.direct_calls is None, "no direct calls outside dit_fx.optimize"


# ---------------------------------------------------------------------------------------------
# disable undoes every patch
# ---------------------------------------------------------------------------------------------
def _block_lists(model):
    from dit_fx.patterns.regions import module_block_lists

    return [blk for name in module_block_lists(model) for blk in model.get_submodule(name)]


def test_disable_undoes_every_patch_of_a_model(tiny):
    from dit_fx.frontend.block_tracing import dynamo_reuses_regions
    from helpers import run_steps

    spec = tiny("wan")
    model = spec.build()
    inputs = [spec.make_inputs(0, 900.0)]
    plain = run_steps(model, inputs)[0]
    own_before = set(model.__dict__)
    blocks = _block_lists(model)
    assert len(blocks) == 3
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    assert {"forward", "cache_context"} <= set(model.__dict__)
    marked = [b for b in blocks if "forward" in b.__dict__]
    assert marked == (blocks if dynamo_reuses_regions() else [])
    assert torch.equal(run_steps(model, inputs)[0], plain)
    dit_fx.disable(model)
    assert "forward" not in model.__dict__ and "cache_context" not in model.__dict__
    assert set(model.__dict__) == own_before
    assert all("forward" not in b.__dict__ for b in blocks)
    assert model.forward.__func__ is type(model).forward
    assert model.cache_context.__func__ is type(model).cache_context
    assert torch.equal(run_steps(model, inputs)[0], plain)
    with pytest.raises(ValueError, match="not optimized"):
        dit_fx.disable(model)
    with pytest.raises(ValueError, match="not optimized"):
        dit_fx.inspect(model)


def test_disable_leaves_a_patch_someone_made_since():
    model = toy()
    dit_fx.optimize(model, CFG)
    theirs = lambda *args, **kwargs: "theirs"  # noqa: E731
    model.forward = theirs
    dit_fx.disable(model)
    assert model.__dict__["forward"] is theirs


def test_disable_undoes_every_patch_of_a_pipeline():
    from tiny_pipelines import PIPELINES

    build, _ = PIPELINES["flux"]
    pipe = build()
    transformer, scheduler = pipe.transformer, pipe.scheduler
    blocks = _block_lists(transformer)
    assert len(blocks) > 2
    assert "set_timesteps" not in scheduler.__dict__
    dit_fx.optimize(pipe, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.2))
    assert "set_timesteps" in scheduler.__dict__
    assert {"forward", "cache_context"} <= set(transformer.__dict__)
    assert set(dit_fx.inspect(pipe)) == {"transformer"}
    dit_fx.disable(pipe)
    assert "set_timesteps" not in scheduler.__dict__
    assert scheduler.set_timesteps.__func__ is type(scheduler).set_timesteps
    assert "forward" not in transformer.__dict__ and "cache_context" not in transformer.__dict__
    assert all("forward" not in b.__dict__ for b in blocks)
    with pytest.raises(ValueError, match="not optimized"):
        dit_fx.inspect(transformer)
