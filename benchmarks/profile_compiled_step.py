#!/usr/bin/env python
"""Where a compiled cached step spends its time: dit_fx compiled + CUDA graphs against the ideal
(the model truncated to its first Fn blocks, torch.compile whole, mode="reduce-overhead"), like
with like: ``--no-cuda-graphs`` compares both without CUDA graphs. FLUX.1-dev-sized, bf16, CUDA.

Both run the benchmark's sampler loop (``latents += dt * prediction``, distinct timesteps, no sync
inside the loop); dit_fx uses a static mask that computes step 0 and caches every later step.
Per system it reports the per-call time (CUDA events), the kernel time per call (profiler), the
kernels per call, the GPU's idle time between kernels (and which kernels it waited for), and the
kernels that differ from the ideal's, so a gap splits into extra GPU work and host-side stalls.

    python benchmarks/profile_compiled_step.py --size 1024 --fn 1 --out benchmarks/results/profile_compiled_F1B0.txt
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import dit_fx  # noqa: E402
from bench_dbcache import FLUX_DEV_CONFIG, build_model, make_inputs  # noqa: E402


def sampler_setup(size: int, dev: torch.device, dtype: torch.dtype = torch.bfloat16):
    """The FLUX.1-dev-sized model, its starting latents and the inputs fixed across steps."""
    model = build_model(FLUX_DEV_CONFIG, dev, dtype, seed=0)
    fixed = make_inputs(size, FLUX_DEV_CONFIG, 512, dev, dtype, seed=0)
    latents = fixed.pop("hidden_states")
    fixed.pop("timestep")
    fixed["return_dict"] = False
    return model, latents, fixed


def loop(fn, latents, fixed, timesteps, events=None):
    x = latents.clone()
    for i, t in enumerate(timesteps):
        if events is not None:
            events[i][0].record()
        out = fn(hidden_states=x, timestep=t, **fixed)[0]
        x = x + 0.01 * out.to(x.dtype)
        if events is not None:
            events[i][1].record()
    return x


def measure(name, fn, latents, fixed, timesteps, skip, lines, reset=None):
    with torch.no_grad():
        for _ in range(2):
            if reset:
                reset()
            loop(fn, latents, fixed, timesteps)
        if reset:
            reset()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in timesteps]
        torch.cuda.synchronize()
        loop(fn, latents, fixed, timesteps, events)
        torch.cuda.synchronize()
        per_call = [a.elapsed_time(b) for a, b in events][skip:]
        if reset:
            reset()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        x = loop(fn, latents, fixed, timesteps[:skip])  # the computed first step stays out of the profile
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=acts) as prof:
            loop(fn, x, fixed, timesteps[skip:])
            torch.cuda.synchronize()
    calls = len(timesteps) - skip
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total_us = sum(e.device_time for e in kernels)
    by_name = collections.Counter()
    count = collections.Counter()
    for e in kernels:
        by_name[e.name[:90]] += e.device_time
        count[e.name[:90]] += 1
    # GPU idle time inside the profiled calls: gaps between consecutive kernels/copies, by what ran next.
    spans = sorted((e.time_range.start, e.time_range.end, e.name[:60]) for e in kernels)
    idle = collections.Counter()
    for (_, end, _), (start, _, nxt) in zip(spans, spans[1:]):
        if start > end:
            idle[nxt] += start - end
    lines.append(f"== {name}")
    lines.append(f"per-call median {statistics.median(per_call):.3f} ms (calls {skip}..{calls - 1}), "
                 f"kernel time {total_us / calls / 1000:.3f} ms/call over calls {skip}..{len(timesteps) - 1}, "
                 f"{len(kernels) / calls:.1f} kernels/call")
    lines.append(f"GPU idle between kernels {sum(idle.values()) / calls:.1f} us/call; largest, by the kernel after the gap: "
                 + ", ".join(f"{n} {t / calls:.1f}" for n, t in idle.most_common(4)))
    return dict(median=statistics.median(per_call), by_name=by_name, count=count, calls=calls, kernel_ms=total_us / calls / 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--fn", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=1, help="alternate ideal and dit_fx this many times")
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                    help="compare without CUDA graphs on either side (default: reduce-overhead ideal against dit_fx + CUDA graphs)")
    a = ap.parse_args()
    dev = torch.device("cuda")
    model, latents, fixed = sampler_setup(a.size, dev)
    timesteps = [torch.full((1,), 1.0 - i / a.steps, device=dev) for i in range(a.steps)]
    lines, results = [], {}

    blocks, singles = model.transformer_blocks, model.single_transformer_blocks
    mask = [1] + [0] * (a.steps - 1)
    cfg = dit_fx.DBCacheConfig(fn_blocks=a.fn, bn_blocks=0, max_warmup_steps=0, steps_computation_mask=mask,
                               steps_computation_policy="static", enable_separate_cfg=False)
    ideal_name = "ideal F{} torch.compile{}".format(a.fn, " reduce-overhead" if a.cuda_graphs else "")
    ours_name = "dit_fx compiled{}, static mask".format(" + CUDA graphs" if a.cuda_graphs else "")
    ideals, ours = [], []
    for round_ in range(a.rounds):  # alternate, so clock drift and host noise hit both alike
        model.transformer_blocks = torch.nn.ModuleList(list(blocks)[: a.fn])
        model.single_transformer_blocks = torch.nn.ModuleList()
        mode = "reduce-overhead" if a.cuda_graphs else None
        ideals.append(measure(f"[round {round_}] {ideal_name}", torch.compile(model, fullgraph=True, mode=mode),
                              latents, fixed, timesteps, 1, lines))
        model.transformer_blocks, model.single_transformer_blocks = blocks, singles
        torch._dynamo.reset()
        dit_fx.optimize(model, cfg, compile=True, cuda_graphs=a.cuda_graphs)
        ours.append(measure(f"[round {round_}] {ours_name}", model, latents, fixed,
                            timesteps, 1, lines, reset=lambda: dit_fx.reset(model)))
        lines.append(f"cached steps {dit_fx.summary(model).cached_steps}; "
                     f"per-call ratio {ours[-1]['median'] / ideals[-1]['median']:.3f}")
        dit_fx.disable(model)
        torch._dynamo.reset()
    lines.append(f"per-call medians: ideal {[round(r['median'], 3) for r in ideals]}, dit_fx {[round(r['median'], 3) for r in ours]}; "
                 f"ratio of medians {statistics.median(r['median'] for r in ours) / statistics.median(r['median'] for r in ideals):.3f}")
    lines.append(f"kernel ms/call: ideal {[round(r['kernel_ms'], 3) for r in ideals]}, dit_fx {[round(r['kernel_ms'], 3) for r in ours]}")
    results["ideal"], r = ideals[-1], ours[-1]

    ideal = results["ideal"]
    lines.append("\n-- kernels of dit_fx minus ideal (last round), us per call (count per call)")
    diffs = []
    for n in set(r["by_name"]) | set(ideal["by_name"]):
        d = (r["by_name"][n] / r["calls"]) - (ideal["by_name"][n] / ideal["calls"])
        c = (r["count"][n] / r["calls"]) - (ideal["count"][n] / ideal["calls"])
        if abs(d) > 2 or abs(c) > 0.5:
            diffs.append((d, c, n))
    for d, c, n in sorted(diffs, key=lambda t: -abs(t[0]))[:30]:
        lines.append(f"{d:+9.1f} us {c:+6.1f}  {n}")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
