#!/usr/bin/env python
"""Does Inductor's autotuning pay inside dit_fx? FLUX.1-dev-sized, bf16, one GPU, dit_fx compiled
+ CUDA graphs with each ``mode`` in one process: first-call (compile) time, computed-step and
cached-step medians (CUDA events), and the output against the default mode's.

The steps mask computes steps 0-5 and caches 6-11 (static), so both step kinds are timed after
their graphs exist. Each mode is passed as ``dit_fx.optimize(..., mode=mode, cuda_graphs=True)``
(the backend maps modes the same way): max-autotune-no-cudagraphs = Inductor's autotuning options
for every distinct region; the options used are read back from ``dit_fx.inspect(model).options``.

    python benchmarks/inductor_modes.py --size 1024 --fn 8 --out benchmarks/results/inductor_modes_h100.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from common import Timer, environment, flux_sampler_setup, profile_sampler, write_json  # noqa: E402
import dit_fx  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--fn", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=["default", "max-autotune-no-cudagraphs"])
    ap.add_argument("--out")
    a = ap.parse_args()
    dev = torch.device("cuda")
    timer = Timer(dev)
    model, latents, fixed = flux_sampler_setup(a.size, dev)
    n = 12
    mask = [1] * 6 + [0] * 6
    sampler = profile_sampler(latents, fixed, n, dev)
    cfg = dit_fx.DBCacheConfig(fn_blocks=a.fn, bn_blocks=0, max_warmup_steps=0, steps_computation_mask=mask,
                               steps_computation_policy="static", enable_separate_cfg=False, num_inference_steps=n)
    results, reference = {}, None
    for mode in a.modes:
        torch._dynamo.reset()
        dit_fx.optimize(model, cfg, compile=True, cuda_graphs=True, mode=mode)
        times = {0: [], 1: []}  # by mask value: cached / computed
        with torch.no_grad():
            first = timer.wall(lambda: sampler.call(model, latents, 0))
            for run in range(3):  # run 0 warms the graphs up (captures)
                dit_fx.reset(model)
                events = timer.step_events(n)
                x = sampler.run(model, events=events)
                timer.sync()
                if run:
                    for i, (s, e) in enumerate(events[1:], 1):  # step 0 starts the generation
                        times[mask[i]].append(s.elapsed_time(e))
        final = x.float()
        summary = dit_fx.summary(model)
        assert summary.cached_steps == [i for i, m in enumerate(mask) if m == 0], summary.cached_steps
        reference = final if reference is None else reference
        seen = dit_fx.inspect(model)
        results[mode] = dict(
            inductor_options=dict(seen.options.inductor_options),
            first_call_s=round(first, 2),
            region_compiles=seen.regions.compiles,
            region_compile_s=list(seen.regions.compile_seconds),
            computed_step_ms=round(statistics.median(times[1]), 3),
            cached_step_ms=round(statistics.median(times[0]), 3),
            final_latents_rel_diff_vs_first_mode=((final - reference).abs().max() / reference.abs().max()).item(),
        )
        print(mode, json.dumps(results[mode], default=str), flush=True)
        dit_fx.disable(model)
    base = results[a.modes[0]]
    for mode, r in results.items():
        r["computed_ratio"] = round(r["computed_step_ms"] / base["computed_step_ms"], 4)
        r["cached_ratio"] = round(r["cached_step_ms"] / base["cached_step_ms"], 4)
    out = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, size=a.size, fn=a.fn, mask=mask, modes=results,
               environment=environment(dev))
    print(json.dumps(out, indent=1, default=str))
    write_json(a.out, out, indent=1)


if __name__ == "__main__":
    main()
