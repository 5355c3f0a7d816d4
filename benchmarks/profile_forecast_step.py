"""Where a forecast generation spends its time: dit_fx ``fn_blocks=0`` + TaylorSeer o1 on the
outputs (which equals diffusers' TaylorSeer lite) against lite itself and the plain model, on the
shipped Fashion-MNIST model, eager, batched CFG, one schedule (GPU).

Per system: wall seconds per generation (median of ``--reps``), CUDA busy time inside one
profiled generation (the sum of kernel times; wall minus busy is the GPU idle time), and the
kernels with the largest total time.

    python benchmarks/profile_forecast_step.py --samples 200 --interval 5 --out profile.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dit_fx  # noqa: E402
from benchmarks.common import environment  # noqa: E402
from benchmarks.quality import lite_schedule  # noqa: E402
from dit_fx.models import fashion as fm  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--interval", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--systems", nargs="+", default=["plain", "lite", "dit_fx"])
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = fm.load_fashion_transformer(device=dev)
    cond = fm.load_fashion_conditioner(device=dev)
    classes = torch.arange(a.samples) % 10
    latents = torch.randn(a.samples, fm.NUM_IMAGE_TOKENS, fm.LATENT_CHANNELS, generator=torch.Generator().manual_seed(0))
    mask = lite_schedule(a.steps, a.warmup, a.interval)
    lines = [f"{a.samples} samples x {a.steps} steps, batched CFG, {dev}, mask {''.join(map(str, mask))} ({sum(mask)} computed)"]

    lite = {"on": False}

    def gen():
        import contextlib

        with model.cache_context("cond") if lite["on"] else contextlib.nullcontext():  # diffusers' hooks need one
            return fm.sample(model, cond, classes, steps=a.steps, latents=latents, cfg="batched", output="latents")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for name in a.systems:
        if name == "lite":
            from diffusers import TaylorSeerCacheConfig

            model.enable_cache(TaylorSeerCacheConfig(cache_interval=a.interval, disable_cache_before_step=a.warmup,
                                                     max_order=1, taylor_factors_dtype=torch.float32, use_lite_mode=True))
            reset = model._reset_stateful_cache
            lite["on"] = True
        elif name == "dit_fx":
            dit_fx.optimize(model, dit_fx.DBCacheConfig(
                fn_blocks=0, bn_blocks=0, steps_computation_mask=mask, steps_computation_policy="static",
                max_warmup_steps=a.warmup, num_inference_steps=a.steps, enable_separate_cfg=False,
                calibrator=dit_fx.TaylorSeerConfig(order=1, cache_type="output")), compile=False, cuda_graphs=False)
            reset = lambda: dit_fx.reset(model)  # noqa: E731
        else:
            reset = lambda: None  # noqa: E731
        with torch.no_grad():
            reset(); gen(); sync()  # noqa: E702 - first generation: captures, allocations
            times = []
            for _ in range(a.reps):
                reset(); sync()  # noqa: E702
                t0 = time.perf_counter()
                out = gen()
                sync()
                times.append(time.perf_counter() - t0)
            reset()
            acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            with torch.profiler.profile(activities=acts) as prof:
                gen(); sync()  # noqa: E702
        busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6 if dev.type == "cuda" else float("nan")
        times.sort()
        lines.append(f"\n== {name}: wall {times[len(times) // 2]:.4f} s per generation (runs {[round(t, 4) for t in times]}), "
                     f"CUDA busy {busy:.4f} s, output checksum {out.double().sum().item():.6f}")
        lines.append(prof.key_averages().table(sort_by="self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total",
                                               row_limit=18, max_name_column_width=70))
        if name == "lite":
            model.disable_cache()
            lite["on"] = False
        elif name == "dit_fx":
            dit_fx.disable(model)
    env = environment(dev)
    lines.append(f"\n-- {env.get('gpu') or env.get('cpu')}, torch {env['torch']}, diffusers {env['diffusers']}, git {env['git_head']}")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
