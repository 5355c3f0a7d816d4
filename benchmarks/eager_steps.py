#!/usr/bin/env python
"""dit_fx's eager lowering on the GPU, step by step, against what it must match (interleaved A/B).

FLUX.1-dev-sized, random weights x0.5, bf16, the same inputs every call, ``compile=False,
cuda_graphs=False``. Pairs, each as ``--rounds`` alternating rounds of ``--calls`` calls (CUDA-event
time per call, median per round; reported: medians and the median of the paired ratios):
- computed step: dit_fx with threshold 0 (every step computes) vs the plain model;
- cached F1B0 step, static mask (no diff): dit_fx vs the ideal (the model truncated to block 0);
- cached F1B0 step, dynamic (threshold decision with its one host read): dit_fx vs the ideal.
Also a profile of one cached step vs one ideal step (kernel time per call, wall per call, and the
kernels by total time), so a gap can be placed.

    python benchmarks/eager_steps.py --sizes 512 1024 --out benchmarks/results/eager_steps_h200.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Callable, Dict

import torch

from common import FLUX_DEV_CONFIG, TINY_FLUX_CONFIG, Timer, build_flux, environment, flux_inputs, interleaved_rounds, write_json
import dit_fx

N_STEPS = 1000  # a long generation: the mask never runs out inside a round


def per_call_ms(timer: Timer, fn: Callable, calls: int) -> float:
    return statistics.median(timer.call(fn)[0] for _ in range(calls))


def kernel_profile(fn: Callable, calls: int = 5) -> Dict[str, object]:
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    kernels = sorted(((e.key, e.self_device_time_total / calls / 1000, e.count // calls) for e in ka if e.self_device_time_total > 0),
                     key=lambda t: -t[1])
    return {
        "kernel_ms_per_call": round(sum(k[1] for k in kernels), 4),
        "kernels_per_call": sum(k[2] for k in kernels),
        "top": [(name[:80], round(ms, 4), n) for name, ms, n in kernels[:25]],
    }


def sharing_view(model: torch.nn.Module, keep=None) -> torch.nn.Module:
    """Another module object over the same submodules (no weight copy); ``keep``: first blocks only."""
    view = copy.copy(model)
    view.__dict__["_modules"] = dict(model._modules)
    if keep is not None:
        left = keep
        for name in ("transformer_blocks", "single_transformer_blocks"):
            blocks = list(model._modules[name])
            view._modules[name] = torch.nn.ModuleList(blocks[:left])
            left = max(0, left - len(blocks))
    return view


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--out")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run on a tiny FLUX (no profile)")
    a = ap.parse_args()
    # Every diffusers transformer shares one forward code object: several optimized views and
    # resolutions in one process pass Dynamo's default recompile limit of 8.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 512
    dev = torch.device("cpu" if a.tiny else "cuda")
    cfg_model, dtype = (TINY_FLUX_CONFIG, torch.float32) if a.tiny else (FLUX_DEV_CONFIG, torch.bfloat16)
    timer = Timer(dev)
    model = build_flux(cfg_model, dev, dtype, seed=0)
    ideal_model = sharing_view(model, keep=1)
    result = {"environment": environment(dev), "rounds": a.rounds, "calls": a.calls, "sizes": {}}
    configs = {
        "computed": dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0, enable_separate_cfg=False),
        "cached static": dit_fx.DBCacheConfig(
            fn_blocks=1, max_warmup_steps=1, enable_separate_cfg=False, num_inference_steps=N_STEPS,
            steps_computation_mask=[1] + [0] * (N_STEPS - 1), steps_computation_policy="static"),
        "cached dynamic": dit_fx.DBCacheConfig(fn_blocks=1, max_warmup_steps=1, residual_diff_threshold=0.5,
                                               enable_separate_cfg=False),
    }
    optimized = {}
    for name, cfg in configs.items():
        optimized[name] = dit_fx.optimize(sharing_view(model), cfg, compile=False, cuda_graphs=False)
    with torch.no_grad():
        for size in a.sizes:
            inputs = flux_inputs(size, cfg_model, 7 if a.tiny else 512, dev, dtype, seed=0)
            rows = {}

            def plain_run(target):
                return lambda _r: per_call_ms(timer, lambda: target(**inputs), a.calls)

            def dit_fx_run(target, name):
                def run(_r):
                    dit_fx.reset(target)
                    target(**inputs)  # the generation's first step computes (warmup)
                    ms = per_call_ms(timer, lambda: target(**inputs), a.calls)
                    stats = dit_fx.summary(target)
                    rows.setdefault("cached_calls", {})[name] = f"{len(stats.cached_steps)} of {stats.executed_steps}"
                    return ms
                return run

            pairs = (("computed vs plain", model, "computed"), ("cached static vs ideal", ideal_model, "cached static"),
                     ("cached dynamic vs ideal", ideal_model, "cached dynamic"))
            for label, base, name in pairs:
                run_a, run_b = plain_run(base), dit_fx_run(optimized[name], name)
                run_a(0), run_b(0)  # warm: captures, cuBLAS
                rounds = interleaved_rounds(a.rounds, run_a, run_b, alternate_order=True)
                rows[label] = rounds.as_dict()
                print(size, label, rows[label]["median_a"], rows[label]["median_b"], rows[label]["median_ratio"], flush=True)
            result["sizes"][str(size)] = rows
            if a.tiny:
                write_json(a.out, result)
                continue
            target = optimized["cached static"]
            dit_fx.reset(target)
            target(**inputs)
            rows["profile dit_fx cached static"] = kernel_profile(lambda: target(**inputs))
            rows["profile ideal"] = kernel_profile(lambda: ideal_model(**inputs))
            for k in ("profile dit_fx cached static", "profile ideal"):
                print(size, k, rows[k]["kernel_ms_per_call"], rows[k]["kernels_per_call"], flush=True)
            result["sizes"][str(size)] = rows
            write_json(a.out, result)


if __name__ == "__main__":
    main()
