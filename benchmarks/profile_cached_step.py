#!/usr/bin/env python
"""Profile one cached dit_fx step against the ideal cached step (model truncated to Fn blocks).

FLUX.1-dev-sized transformer, random weights x0.5, bf16, CUDA, dit_fx's eager lowering
(``compile=False``), the same inputs on every call. Writes profiler tables (top ops by device and
host time) to --out-dir: ``profile_ideal_F{n}B0.txt``, ``profile_dit_fx_cached_F{n}B0.txt``,
``profile_eager_full.txt``, ``profile_dit_fx_computed_F{n}B0.txt``. Used to find where a cached
step spends time beyond the ideal.

    python benchmarks/profile_cached_step.py --size 1024 --fn 1 --out-dir benchmarks/results
"""

import argparse
import os

import torch

from common import FLUX_DEV_CONFIG, build_flux, environment, flux_inputs, truncated_blocks  # noqa: E402
import dit_fx  # noqa: E402


def profile(name, fn, out_dir):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    env = environment(torch.device("cuda"))
    with open(os.path.join(out_dir, f"profile_{name}.txt"), "w") as f:
        f.write(ka.table(sort_by="self_cuda_time_total", row_limit=25))
        f.write("\n\n")
        f.write(ka.table(sort_by="self_cpu_time_total", row_limit=25))
        f.write(f"\n\n-- host {env['host']}, {env.get('gpu')}, torch {env['torch']}, git {env['git_head']}\n")
    cuda = sum(e.self_device_time_total for e in ka) / 5 / 1000
    cpu = sum(e.self_cpu_time_total for e in ka) / 5 / 1000
    print(f"{name}: device time {cuda:.2f} ms/step, host time {cpu:.2f} ms/step", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--fn", type=int, default=1)
    p.add_argument("--out-dir", default=".")
    a = p.parse_args()
    dev = torch.device("cuda")
    model = build_flux(FLUX_DEV_CONFIG, dev, torch.bfloat16, seed=0)
    inputs = flux_inputs(a.size, FLUX_DEV_CONFIG, 512, dev, torch.bfloat16, seed=0)

    with torch.no_grad():
        with truncated_blocks(model, a.fn):
            profile(f"ideal_F{a.fn}B0", lambda: model(**inputs), a.out_dir)
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=a.fn, residual_diff_threshold=0.5, max_warmup_steps=1,
                                                    enable_separate_cfg=False), compile=False, cuda_graphs=False)
        model(**inputs)
        profile(f"dit_fx_cached_F{a.fn}B0", lambda: model(**inputs), a.out_dir)
        s = dit_fx.summary(model)
        print("cached", len(s.cached_steps), "of", s.executed_steps, flush=True)
        # computed step (threshold 0: never caches) against plain eager
        dit_fx.disable(model)
        profile("eager_full", lambda: model(**inputs), a.out_dir)
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=a.fn, residual_diff_threshold=0.0, enable_separate_cfg=False),
                        compile=False, cuda_graphs=False)
        model(**inputs)
        profile(f"dit_fx_computed_F{a.fn}B0", lambda: model(**inputs), a.out_dir)


if __name__ == "__main__":
    main()
