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
import statistics

import torch

from common import (  # noqa: E402  (also puts the repository root on sys.path)
    Sampler,
    Timer,
    environment,
    flux_sampler_setup,
    interleaved_rounds,
    profile_sampler,
    truncated_blocks,
)
import dit_fx  # noqa: E402


def measure(name, fn, sampler: Sampler, skip, lines, reset=None):
    timer = Timer(torch.device("cuda"))
    with torch.no_grad():
        for _ in range(2):
            if reset:
                reset()
            sampler.run(fn)
        if reset:
            reset()
        events = timer.step_events(len(sampler))
        timer.sync()
        sampler.run(fn, events=events)
        timer.sync()
        per_call = [a.elapsed_time(b) for a, b in events][skip:]
        if reset:
            reset()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        x = sampler.run(fn, stop=skip)  # the computed first step stays out of the profile
        timer.sync()
        with torch.profiler.profile(activities=acts) as prof:
            sampler.run(fn, x, start=skip)
            timer.sync()
    timesteps = sampler.timesteps
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--fn", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=1, help="alternate ideal and dit_fx this many times")
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                    help="compare without CUDA graphs on either side (default: reduce-overhead ideal against dit_fx + CUDA graphs)")
    a = ap.parse_args()
    dev = torch.device("cuda")
    model, latents, fixed = flux_sampler_setup(a.size, dev)
    sampler = profile_sampler(latents, fixed, a.steps, dev)
    lines, results = [], {}

    mask = [1] + [0] * (a.steps - 1)
    cfg = dit_fx.DBCacheConfig(fn_blocks=a.fn, bn_blocks=0, max_warmup_steps=0, steps_computation_mask=mask,
                               steps_computation_policy="static", enable_separate_cfg=False)
    ideal_name = "ideal F{} torch.compile{}".format(a.fn, " reduce-overhead" if a.cuda_graphs else "")
    ours_name = "dit_fx compiled{}, static mask".format(" + CUDA graphs" if a.cuda_graphs else "")

    last_ideal = {}

    def ideal_round(round_):
        mode = "reduce-overhead" if a.cuda_graphs else None
        with truncated_blocks(model, a.fn):
            last_ideal["r"] = measure(f"[round {round_}] {ideal_name}", torch.compile(model, fullgraph=True, mode=mode),
                                      sampler, 1, lines)
        torch._dynamo.reset()
        return last_ideal["r"]

    def ours_round(round_):
        dit_fx.optimize(model, cfg, compile=True, cuda_graphs=a.cuda_graphs)
        result = measure(f"[round {round_}] {ours_name}", model, sampler, 1, lines, reset=lambda: dit_fx.reset(model))
        lines.append(f"cached steps {dit_fx.summary(model).cached_steps}; "
                     f"per-call ratio {result['median'] / last_ideal['r']['median']:.3f}")
        dit_fx.disable(model)
        torch._dynamo.reset()
        return result

    # ideal then dit_fx in every round, so clock drift and host noise hit both alike
    rounds = interleaved_rounds(a.rounds, ideal_round, ours_round, key=lambda r: r["median"])
    ideals, ours = rounds.a, rounds.b
    lines.append(f"per-call medians: ideal {[round(r['median'], 3) for r in ideals]}, dit_fx {[round(r['median'], 3) for r in ours]}; "
                 f"ratio of medians {rounds.ratio_of_medians:.3f}; median of paired ratios {rounds.median_ratio:.3f}")
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
    env = environment(dev)
    lines.append(f"\n-- host {env['host']}, {env.get('gpu')}, torch {env['torch']}, diffusers {env['diffusers']}, git {env['git_head']}")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
