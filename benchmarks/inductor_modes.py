#!/usr/bin/env python
"""Does Inductor's autotuning pay inside dit_fx? FLUX.1-dev-sized, bf16, one GPU, dit_fx compiled
+ CUDA graphs with each ``mode`` in one process: first-call (compile) time, computed-step and
cached-step medians (CUDA events), and the output against the default mode's.

The steps mask computes steps 0-5 and caches 6-11 (static), so both step kinds are timed after
their graphs exist. Modes map onto dit_fx as the backend maps them (``lowering.mode_options``):
max-autotune-no-cudagraphs = Inductor's autotuning options for every distinct region.

    python benchmarks/inductor_modes.py --size 1024 --fn 8 --out benchmarks/results/inductor_modes_h100.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import dit_fx  # noqa: E402
from dit_fx.api import _OPTIMIZED  # noqa: E402
from dit_fx.lowering import mode_options  # noqa: E402
from profile_compiled_step import loop, sampler_setup  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--fn", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=["default", "max-autotune-no-cudagraphs"])
    ap.add_argument("--out")
    a = ap.parse_args()
    dev = torch.device("cuda")
    model, latents, fixed = sampler_setup(a.size, dev)
    n = 12
    mask = [1] * 6 + [0] * 6
    timesteps = [torch.full((1,), 1.0 - i / n, device=dev) for i in range(n)]
    cfg = dit_fx.DBCacheConfig(fn_blocks=a.fn, bn_blocks=0, max_warmup_steps=0, steps_computation_mask=mask,
                               steps_computation_policy="static", enable_separate_cfg=False, num_inference_steps=n)
    results, reference = {}, None
    for mode in a.modes:
        torch._dynamo.reset()
        _, options = mode_options(mode)
        dit_fx.optimize(model, cfg, compile=True, cuda_graphs=True, inductor_options=options)
        times = {0: [], 1: []}  # by mask value: cached / computed
        with torch.no_grad():
            torch.cuda.synchronize()
            start = time.perf_counter()
            model(hidden_states=latents, timestep=timesteps[0], **fixed)
            torch.cuda.synchronize()
            first = time.perf_counter() - start
            for run in range(3):  # run 0 warms the graphs up (captures)
                dit_fx.reset(model)
                events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in timesteps]
                x = loop(model, latents, fixed, timesteps, events)
                torch.cuda.synchronize()
                if run:
                    for i, (s, e) in enumerate(events[1:], 1):  # step 0 starts the generation
                        times[mask[i]].append(s.elapsed_time(e))
        final = x.float()
        summary = dit_fx.summary(model)
        assert summary.cached_steps == [i for i, m in enumerate(mask) if m == 0], summary.cached_steps
        reference = final if reference is None else reference
        compiler = _OPTIMIZED[model].session.lowerer.compiler
        results[mode] = dict(
            inductor_options=options,
            first_call_s=round(first, 2),
            region_compiles=compiler.compiles,
            region_compile_s=compiler.compile_seconds,
            computed_step_ms=round(statistics.median(times[1]), 3),
            cached_step_ms=round(statistics.median(times[0]), 3),
            final_latents_rel_diff_vs_first_mode=((final - reference).abs().max() / reference.abs().max()).item(),
        )
        print(mode, json.dumps(results[mode]), flush=True)
        dit_fx.disable(model)
    base = results[a.modes[0]]
    for mode, r in results.items():
        r["computed_ratio"] = round(r["computed_step_ms"] / base["computed_step_ms"], 4)
        r["cached_ratio"] = round(r["cached_step_ms"] / base["cached_step_ms"], 4)
    out = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, size=a.size, fn=a.fn, mask=mask, modes=results)
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
