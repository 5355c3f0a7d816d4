"""Compiled lowering: one Inductor artifact per distinct block, no recompiles, same outputs as eager.

CUDA graphs need a GPU: here only their option checks and the CPU fallback (one warning, exact
outputs) are tested; ``benchmarks/check_cuda_graphs.py`` checks replays against eager on a GPU.
"""

import warnings

import pytest
import torch

import dit_fx
from dit_fx.lowering.inductor import CompiledRegion, _Selected
from dit_fx.lowering.region_keys import structure_key
from helpers import rel_err, run_steps
from test_cfg_parity import cfg_calls
from tiny_models import make_trajectory


def _compiles(model):
    return dit_fx.inspect(model).regions.compiles


def _glue(model):
    return dit_fx.inspect(model).captures[-1].glue


def _captures(model):
    return dit_fx.inspect(model).captures_total


def _regions(glue):
    """(partition, region name, CompiledRegion) for every compiled region of a glue graph."""
    for part in ("head", "body", "tail"):
        for name, mod in getattr(glue, part).named_children():
            if isinstance(mod, CompiledRegion):
                yield part, name, mod


def test_identical_blocks_share_one_compiled_artifact(tiny):
    spec = tiny("wan_deep")  # 6 blocks of one class
    model = spec.build()
    steps = make_trajectory("wan_deep", 2)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0), compile=True)
    run_steps(model, steps)
    regions = list(_regions(_glue(model)))
    blocks = [r for _, name, r in regions if name.startswith("blocks_")]
    assert len(blocks) == 6
    # Same op structure for every block, so at most a different input layout splits them.
    assert len({b.structure for b in blocks}) == 1
    artifacts = {id(b._compiled) for b in blocks}
    assert len(artifacts) <= 2, "six identical blocks must not compile six times"
    body = [r for part, name, r in regions if part == "body"]
    assert len({id(b._compiled) for b in body}) == 1, "the middle blocks share one artifact"
    # Every compile is accounted for: one per distinct region, the ops around blocks included.
    assert _compiles(model) == len({id(r._compiled) for _, _, r in regions})
    assert _compiles(model) < len(regions)


def test_structure_key_tells_block_classes_apart(tiny):
    spec = tiny("flux")  # double-stream and single-stream blocks
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=0, residual_diff_threshold=0.0), compile=True)
    run_steps(model, make_trajectory("flux", 1))
    by_list = {}
    for _, name, region in _regions(_glue(model)):
        by_list.setdefault(name.rsplit("_", 1)[0], set()).add(region.structure)
    double, single = by_list["transformer_blocks"], by_list["single_transformer_blocks"]
    # Two double-block structures: the middle's full block, and the head's block 0 without the
    # text-stream layers the plan deferred to the body (those run eager there: computed steps only).
    glue = _glue(model)
    assert len(double) == 2
    assert glue.head.transformer_blocks_0.structure != glue.body.transformer_blocks_1.structure
    assert isinstance(glue.body.transformer_blocks_0, torch.fx.GraphModule)  # the deferred fragment
    assert not double & single
    # Single blocks read slices of one concatenated stream (odd strides): inputs are made
    # canonical, so the first two share an artifact (the last one drops an unused output).
    glue = _glue(model)
    assert glue.body.single_transformer_blocks_0._compiled is glue.body.single_transformer_blocks_1._compiled
    # The last single block returns one output fewer: it calls its siblings' artifact and keeps
    # the output it has, instead of compiling again.
    last = glue.body.single_transformer_blocks_2
    assert isinstance(last._compiled, _Selected) and last._compiled.fn is glue.body.single_transformer_blocks_0._compiled
    assert _compiles(model) == 5  # embeddings, head double, double, single, output ops
    # The key is positional: renaming nodes does not change it.
    region = next(r for _, n, r in _regions(_glue(model)) if n == "transformer_blocks_0")
    for node in region.gm.graph.nodes:
        if node.op == "call_function":
            node._rename(f"renamed_{node.name}")
    assert structure_key(region.gm) == region.structure


def test_compiled_caching_matches_eager_caching(tiny):
    """Same cached steps and diffs, outputs within fp32 tolerance, with caching really on."""
    spec = tiny("flux")
    steps = make_trajectory("flux", 10)
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.3, max_warmup_steps=2)
    results = {}
    for compile in (False, True):
        model = spec.build()
        dit_fx.optimize(model, cfg, compile=compile)
        results[compile] = (run_steps(model, steps), dit_fx.summary(model))
    (eager_out, eager_stats), (comp_out, comp_stats) = results[False], results[True]
    assert eager_stats.cached_steps, "the trajectory must trigger caching"
    assert comp_stats.cached_steps == eager_stats.cached_steps
    for step, diff in eager_stats.residual_diffs.items():
        assert comp_stats.residual_diffs[step] == pytest.approx(diff, rel=1e-3, abs=1e-6)
    for a, b in zip(comp_out, eager_out):
        assert rel_err(a, b) < 1e-4


def test_no_recompiles_across_steps_branches_and_generations(tiny):
    """Separate CFG, cached and computed steps, two generations: one capture, compiles only once."""
    spec = tiny("wan_deep")
    model = spec.build()
    calls = cfg_calls(steps=8)
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.35, max_warmup_steps=2)
    dit_fx.optimize(model, cfg, compile=True)
    torch._dynamo.utils.counters.clear()
    run_steps(model, calls[:2])  # first step: cond + uncond
    compiles = _compiles(model)
    assert compiles > 0
    run_steps(model, calls[2:])
    stats = dit_fx.summary(model)
    assert stats.separate_cfg and stats.cached_steps and stats.cfg_cached_steps
    assert len(stats.cached_steps) < stats.executed_steps  # computed steps too
    run_steps(model, calls)  # a second generation (the timestep jumps back up)
    assert dit_fx.summary(model).generation == 2
    assert _compiles(model) == compiles
    assert _captures(model) == 1
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_new_resolution_compiles_once(tiny):
    spec = tiny("wan_deep")
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.15), compile=True)
    small = make_trajectory("wan_deep", 3)
    run_steps(model, small)
    first = _compiles(model)
    big = [dict(s, hidden_states=torch.cat([s["hidden_states"]] * 2, dim=-1)) for s in small]
    run_steps(model, big)
    second = _compiles(model)
    assert second > first and _captures(model) == 2
    run_steps(model, small + big)  # back and forth: both are known
    assert _compiles(model) == second and _captures(model) == 2


def test_cuda_graphs_option_is_checked():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="cuda_graphs"):
        dit_fx.optimize(model, dit_fx.DBCacheConfig(), cuda_graphs="yes")
    from dit_fx.backend import parse_backend_options

    with pytest.raises(ValueError, match="cuda_graphs"):
        parse_backend_options({"cuda_graphs": 1})
    assert parse_backend_options({"cuda_graphs": True}).cuda_graphs


def test_inductor_options_reach_every_region_compile(tiny, monkeypatch):
    spec = tiny("wan_deep")
    model = spec.build()
    steps = make_trajectory("wan_deep", 2)
    expected = run_steps(model, steps)
    seen = []
    original = torch._inductor.compile

    def spy(gm, args, options=None):
        seen.append(options)
        return original(gm, args, options)

    monkeypatch.setattr(torch._inductor, "compile", spy)
    options = {"epilogue_fusion": False, "max_fusion_size": 8}
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0)
    dit_fx.optimize(model, cfg, compile=True, inductor_options=options)
    got = run_steps(model, steps)
    assert _compiles(model) == len(seen) > 0
    assert all(o == options for o in seen)
    for a, b in zip(got, expected):
        assert rel_err(a, b) < 1e-4
    with pytest.raises(ValueError, match="compile=True"):
        dit_fx.optimize(spec.build(), cfg, inductor_options=options)


def test_compile_modes_map_onto_dit_fx_settings():
    from dit_fx.backend import parse_backend_options

    autotune = dict(torch._inductor.list_mode_options("max-autotune-no-cudagraphs"))
    s = parse_backend_options({"mode": "max-autotune"})
    assert s.cuda_graphs and s.inductor_options == autotune and "triton.cudagraphs" not in s.inductor_options
    s = parse_backend_options(None, mode="reduce-overhead")
    assert s.cuda_graphs and s.inductor_options == {} and s.lowering == "inductor"
    s = parse_backend_options({"mode": "max-autotune-no-cudagraphs", "inductor_options": {"coordinate_descent_tuning": False}})
    assert not s.cuda_graphs and s.inductor_options == {**autotune, "coordinate_descent_tuning": False}
    assert not parse_backend_options({"mode": "reduce-overhead", "cuda_graphs": False}).cuda_graphs  # explicit wins
    assert parse_backend_options({"mode": "default"}).inductor_options == {}


def test_cuda_graphs_on_cpu_warns_once_and_stays_exact(tiny):
    spec = tiny("flux")
    model = spec.build()
    steps = make_trajectory("flux", 4)
    expected = run_steps(model, steps)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), cuda_graphs=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run_steps(model, steps)
    messages = [str(w.message) for w in caught if "CUDA graphs" in str(w.message)]
    assert len(messages) == 1 and "cpu" in messages[0]
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert dit_fx.inspect(model).cuda_graphs.captures == 0


WARM_START = """
import json, sys
sys.path[:0] = [{here!r}, {root!r}]
import torch
import dit_fx
from torch._dynamo.utils import counters
from tiny_models import MODELS, make_trajectory
model = MODELS["wan_deep"].build()
dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.0), compile=True)
with torch.no_grad():
    out = [model(**kw) for kw in make_trajectory("wan_deep", 2)]
out = [o[0] if isinstance(o, tuple) else o.sample for o in out]
torch.save(out, {path!r})
print(json.dumps(dict(compiles=dit_fx.inspect(model).regions.compiles, **counters["inductor"])))
"""


def test_regions_are_served_from_inductors_disk_cache_in_a_new_process(tmp_path):
    """A second process on the same cache dir loads every region from Inductor's FX graph cache
    (a bare ``torch._inductor.compile`` bypassed it: "No shape env") and computes the same outputs."""
    import json
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if "CACHE" not in k or not k.startswith(("TORCHINDUCTOR_", "TORCH_COMPILE_"))}
    env.update(TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"), TORCHINDUCTOR_FX_GRAPH_CACHE="1")
    runs = []
    for i in range(2):
        script = WARM_START.format(here=here, root=os.path.dirname(here), path=str(tmp_path / f"out{i}.pt"))
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=250, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["compiles"] >= 3 and cold.get("fxgraph_cache_miss") == cold["compiles"]
    assert warm.get("fxgraph_cache_hit") == warm["compiles"] == cold["compiles"]
    assert not warm.get("fxgraph_cache_miss") and not warm.get("fxgraph_cache_bypass")
    for a, b in zip(torch.load(tmp_path / "out0.pt"), torch.load(tmp_path / "out1.pt")):
        assert torch.equal(a, b)


def test_inductor_compile_uses_the_fx_graph_cache_and_keeps_int_inputs_static():
    """Tensor-only regions go through Inductor's FX graph cache; a region with an int input is
    compiled bare, so the int stays a constant (under a ShapeEnv it would turn symbolic)."""
    import torch.fx as fx
    from torch._dynamo.utils import counters

    from dit_fx.lowering.inductor import inductor_compile

    def tensors_only(x, w):
        return torch.relu(x @ w) + 1

    def with_int(x, n):
        return x.sum(dim=n, keepdim=True) * 2

    x, w = torch.randn(4, 6), torch.randn(6, 3)
    counters.clear()
    fn = inductor_compile(fx.symbolic_trace(tensors_only), (x, w))
    assert counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"] == 1
    assert counters["inductor"]["fxgraph_cache_bypass"] == 0
    out = fn(x, w)
    assert torch.allclose(out[0] if isinstance(out, (list, tuple)) else out, tensors_only(x, w))
    fn = inductor_compile(fx.symbolic_trace(with_int), (x, 1))
    out = fn(x, 1)
    assert torch.allclose(out[0] if isinstance(out, (list, tuple)) else out, with_int(x, 1))
