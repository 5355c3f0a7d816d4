#!/usr/bin/env python
"""Cold compile time of one system, in this fresh process, with empty Inductor/Triton caches
(or, with ``--cache-dir DIR`` run twice, the warm start of a second process on the same caches).

Times the first call (capture + compile + run) of a FLUX.1-dev-sized transformer (bf16, CUDA) and
splits it: Dynamo's own phases (``torch._dynamo.utils.compile_times``), the dit_fx backend
(plan + passes), and each Inductor region compile. Run each system in its own process:

    python benchmarks/cold_compile.py --system dit_fx --out benchmarks/results/cold_dit_fx.json
    python benchmarks/cold_compile.py --system regional
    python benchmarks/cold_compile.py --system dit_fx --cache-dir /tmp/c   # cold, then again: warm
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import os
import sys
import tempfile
import time

# The cache location must be known before torch is imported.
_PRE = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
_PRE.add_argument("--cache-dir")
_CACHE = _PRE.parse_known_args()[0].cache_dir or tempfile.mkdtemp(prefix="dit_fx_cold_")
_FXGRAPH = os.path.join(_CACHE, "inductor", "fxgraph")
_WARM = os.path.isdir(_FXGRAPH) and bool(os.listdir(_FXGRAPH))  # a previous run left compiled graphs
os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(_CACHE, "inductor")  # before torch is imported
os.environ["TRITON_CACHE_DIR"] = os.path.join(_CACHE, "triton")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import dit_fx  # noqa: E402
import dit_fx.api  # noqa: E402
import dit_fx.backend  # noqa: E402
import dit_fx.lowering  # noqa: E402
from dit_fx.api import _OPTIMIZED  # noqa: E402
from bench_dbcache import FLUX_DEV_CONFIG, build_model, make_inputs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--system", choices=["dit_fx", "regional", "whole"], required=True)
    ap.add_argument("--flat", action="store_true", help="dit_fx: trace the forward flat (no per-class block regions)")
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument("--cache-dir", help="Inductor/Triton caches here (kept): a second run is a warm start")
    ap.add_argument("--bare-inductor-compile", action="store_true",
                    help="dit_fx: compile regions with a bare torch._inductor.compile (before commit 'FX graph cache'), "
                         "which bypasses Inductor's FX graph cache")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out")
    ap.add_argument("--profile-backend", help="write a cProfile of the dit_fx backend call here")
    a = ap.parse_args()
    if a.bare_inductor_compile and a.system != "dit_fx":
        ap.error("--bare-inductor-compile applies to --system dit_fx only")
    dev = torch.device("cuda")
    model = build_model(FLUX_DEV_CONFIG, dev, torch.bfloat16, seed=0)
    inputs = make_inputs(a.size, FLUX_DEV_CONFIG, 512, dev, torch.bfloat16, seed=0)
    backend_s, invokes = [], []
    if a.system == "dit_fx":
        original = dit_fx.backend.Session.__call__

        def timed(self, *args, **kw):
            t = time.perf_counter()
            prof = cProfile.Profile() if a.profile_backend else None
            try:
                if prof:
                    prof.enable()
                return original(self, *args, **kw)
            finally:
                backend_s.append(round(time.perf_counter() - t, 3))
                if prof:
                    prof.disable()
                    out = io.StringIO()
                    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
                    with open(a.profile_backend, "w") as f:
                        f.write(out.getvalue())

        dit_fx.backend.Session.__call__ = timed
        if a.bare_inductor_compile:
            dit_fx.lowering.inductor_compile = lambda gm, args: torch._inductor.compile(gm, list(args))
        inline = dit_fx.backend.inline_subgraph_calls

        def counting(gm):
            invokes.append(sum(n.target is torch.ops.higher_order.invoke_subgraph for n in gm.graph.nodes))
            return inline(gm)

        dit_fx.backend.inline_subgraph_calls = counting
        if a.flat:
            dit_fx.api.mark_blocks = lambda model: []
        cfg = dit_fx.DBCacheConfig(fn_blocks=8, bn_blocks=0, residual_diff_threshold=0.08)
        dit_fx.optimize(model, cfg, compile=True, cuda_graphs=a.cuda_graphs)
        fn = model
    elif a.system == "regional":
        for blk in list(model.transformer_blocks) + list(model.single_transformer_blocks):
            blk.compile(fullgraph=True)
        fn = model
    else:
        fn = torch.compile(model, fullgraph=True)
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.no_grad():
        out = fn(**inputs)
    torch.cuda.synchronize()
    first = time.perf_counter() - t
    out = out[0] if isinstance(out, (tuple, list)) else out.sample
    result = dict(system=a.system + ("_flat" if a.flat else ""), cuda_graphs=a.cuda_graphs, size=a.size, first_call_s=round(first, 2),
                  gpu=torch.cuda.get_device_name(), torch=torch.__version__, warm_cache=_WARM,
                  bare_inductor_compile=a.bare_inductor_compile, inductor_counters=dict(torch._dynamo.utils.counters["inductor"]),
                  output_checksum=float(out.double().abs().sum()))  # sum |out|: same code, same weights -> nearly equal
    if a.system == "dit_fx":
        compiler = _OPTIMIZED[model].session.lowerer.compiler
        result.update(traced_once=not a.flat, block_regions_inlined=invokes, backend_s=backend_s, inductor_compiles=compiler.compiles, inductor_compile_s=compiler.compile_seconds)
    result["dynamo_compile_times"] = torch._dynamo.utils.compile_times(repr="str")
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
