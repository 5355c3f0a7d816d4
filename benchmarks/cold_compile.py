#!/usr/bin/env python
"""Cold compile time of one system, in this fresh process, with empty Inductor/Triton caches
(or, with ``--cache-dir DIR`` run twice, the warm start of a second process on the same caches).

Times the first call (capture + compile + run) of a FLUX.1-dev-sized transformer (bf16, CUDA) and
splits it, from public timers only: Dynamo's own phases (``torch._dynamo.utils.compile_times``),
dit_fx's part of the capture (plan + rewrite + lowering passes: ``dit_fx.inspect(model)``'s
``captures[-1].seconds`` and ``.pass_seconds``) and each Inductor region compile
(``.regions.compile_seconds``). Run each system in its own process:

    python benchmarks/cold_compile.py --system dit_fx --out benchmarks/results/cold_dit_fx.json
    python benchmarks/cold_compile.py --system regional
    python benchmarks/cold_compile.py --system dit_fx --cache-dir /tmp/c   # cold, then again: warm
    python benchmarks/cold_compile.py --system dit_fx --tiny               # CPU smoke run

``--profile-backend FILE`` runs the first call under cProfile and writes dit_fx's functions in it
by cumulative time: ``session.py(__call__)`` is the backend (plan, rewrite and lowering passes),
``lowering/inductor.py(inductor_compile)`` the region compiles, which run lazily inside the first
call. The profiler slows the whole call: take the times from a run without it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
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

from common import FLUX_DEV_CONFIG, TINY_FLUX_CONFIG, Timer, all_blocks, build_flux, environment, flux_inputs, write_json  # noqa: E402
import dit_fx  # noqa: E402


def pin_block_forwards(model: torch.nn.Module) -> int:
    """``--flat``: give every block an instance ``forward`` (its own bound method, so nothing it
    computes changes). ``optimize`` leaves blocks with an instance ``forward`` alone (as it does
    for accelerate's hooks), so Dynamo traces the forward flat."""
    blocks = all_blocks(model)
    for blk in blocks:
        blk.forward = blk.forward
    return len(blocks)


def routed_blocks(model: torch.nn.Module, pinned: bool) -> int:
    """Blocks whose forward ``optimize`` routed through a per-class region (an instance ``forward``
    that is not the block's own bound method); 0 when the forward is traced flat."""
    if pinned:
        return 0
    return sum(1 for blk in all_blocks(model) if "forward" in blk.__dict__)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("--system", choices=["dit_fx", "regional", "whole"], required=True)
    ap.add_argument("--flat", action="store_true", help="dit_fx: trace the forward flat (no per-class block regions)")
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument("--cache-dir", help="Inductor/Triton caches here (kept): a second run is a warm start")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out")
    ap.add_argument("--profile-backend", help="write a cProfile of the first call's dit_fx functions here")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny FLUX config, fp32, Fn=1")
    a = ap.parse_args()
    if a.tiny:
        dev, dtype, cfg_model, size, text, fn_blocks = torch.device("cpu"), torch.float32, TINY_FLUX_CONFIG, 64, 8, 1
    else:
        dev, dtype, cfg_model, size, text, fn_blocks = torch.device("cuda"), torch.bfloat16, FLUX_DEV_CONFIG, a.size, 512, 8
    timer = Timer(dev)
    model = build_flux(cfg_model, dev, dtype, seed=0)
    inputs = flux_inputs(size, cfg_model, text, dev, dtype, seed=0)
    if a.system == "dit_fx":
        if a.flat:
            pin_block_forwards(model)
        cfg = dit_fx.DBCacheConfig(fn_blocks=fn_blocks, bn_blocks=0, residual_diff_threshold=0.08)
        dit_fx.optimize(model, cfg, compile=True, cuda_graphs=a.cuda_graphs)
        fn = model
    elif a.system == "regional":
        for blk in all_blocks(model):
            blk.compile(fullgraph=True)
        fn = model
    else:
        fn = torch.compile(model, fullgraph=True)
    prof = cProfile.Profile() if a.profile_backend else None
    timer.sync()
    t = time.perf_counter()
    with torch.no_grad():
        if prof:
            prof.enable()
        out = fn(**inputs)
        if prof:
            prof.disable()
    timer.sync()
    first = time.perf_counter() - t
    out = out[0] if isinstance(out, (tuple, list)) else out.sample
    result = dict(system=a.system + ("_flat" if a.flat else ""), cuda_graphs=a.cuda_graphs, size=size, first_call_s=round(first, 2),
                  gpu=torch.cuda.get_device_name() if dev.type == "cuda" else None, torch=torch.__version__, tiny=a.tiny, warm_cache=_WARM, profiled=bool(prof),
                  inductor_counters=dict(torch._dynamo.utils.counters["inductor"]),
                  output_checksum=float(out.double().abs().sum()))  # sum |out|: same code, same weights -> nearly equal
    if a.system == "dit_fx":
        seen = dit_fx.inspect(model)
        captures = seen.captures
        result.update(
            traced_once=not a.flat,
            blocks_traced_as_regions=routed_blocks(model, a.flat),
            captures=seen.captures_total,
            backend_s=[round(c.seconds, 3) for c in captures],  # dit_fx's part of each capture
            pass_s=[{f"{stage}/{name}": round(sec, 4) for stage, name, sec in c.pass_seconds} for c in captures],
            inductor_compiles=seen.regions.compiles,
            inductor_compile_s=list(seen.regions.compile_seconds),
            fallback_reason=seen.fallback_reason,
        )
    result["dynamo_compile_times"] = torch._dynamo.utils.compile_times(repr="str")
    result["environment"] = environment(dev)
    if prof:
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(r"dit_fx[/\\]", 40)  # dit_fx's own functions
        with open(a.profile_backend, "w") as f:
            f.write(text.getvalue())
    print(json.dumps(result, indent=1, default=str))
    write_json(a.out, result, indent=1)


if __name__ == "__main__":
    main()
