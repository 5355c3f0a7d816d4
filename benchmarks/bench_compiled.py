#!/usr/bin/env python
"""Compiled speed, side by side in one process: torch.compile (whole graph, regional,
reduce-overhead), cache-dit 1.5.3 + torch.compile, dit_fx compiled, dit_fx compiled + CUDA graphs.

One model per run (random weights; FLUX.1-dev-sized weights scaled by 0.5 so activations stay
finite), one resolution. Every system runs the same end-to-end loop: ``--steps`` Euler steps of a
flow-matching sampler (latents += dt * prediction) over a fixed timestep list, with the same
static steps mask for the cache systems (1 = compute, 0 = reuse), so random weights decide
nothing. ``--policy dynamic`` rows use the mask with the threshold decision on the 0 steps.

Per system: cold time (first call, compile included), then ``--repeats`` timed end-to-end runs
after one warm run; per-call CUDA events give computed-step and cached-step medians (by the mask),
and the total of each run is timed with events around the whole loop (no sync inside it).
"ideal FnB0" is the model truncated to its first Fn blocks, compiled whole: the floor of a
cached step. Each cache row checks its own stats against the mask.

    python benchmarks/bench_compiled.py --model flux --size 1024 --out benchmarks/results/compiled_h100_flux_1024.json
    python benchmarks/bench_compiled.py --model pixart --size 512 --fn 1 --out ...
    python benchmarks/bench_compiled.py --model tiny          # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

import torch

from common import (  # noqa: E402  (also puts the repository root on sys.path)
    DTYPES,
    FLUX_BLOCK_LISTS,
    FLUX_DEV_CONFIG,
    PIXART_BLOCK_LISTS,
    PIXART_SIGMA_CONFIG,
    TINY_FLUX_CONFIG,
    TINY_PIXART_CONFIG,
    Timer,
    all_blocks,
    build_flux,
    build_pixart,
    environment,
    flow_sampler,
    flux_inputs,
    log,
    median,
    pixart_inputs,
    truncated_blocks,
    write_json,
)
import dit_fx  # noqa: E402


def steps_mask(steps: int) -> List[int]:
    """The issue's schedule: 4 computed steps, then compute one of three, last step computed."""
    mask = ([1, 1, 1, 1] + [1, 0, 0] * steps)[:steps]
    mask[-1] = 1
    return mask


# ------------------------------------------------------------------------------------ models
class Workload:
    """A model, its block lists, and the sampler loop every system runs."""

    def __init__(self, args, device, dtype):
        self.args, self.device, self.dtype = args, device, dtype
        if args.model in ("flux", "tiny"):
            cfg = FLUX_DEV_CONFIG if args.model == "flux" else TINY_FLUX_CONFIG
            self.model = build_flux(cfg, device, dtype, seed=0)
            text = 512 if args.model == "flux" else 8
            size = args.size if args.model == "flux" else 64
            fixed = flux_inputs(size, cfg, text, device, dtype, seed=0)
            latents = fixed.pop("hidden_states")
            fixed.pop("timestep")
            self.lists = list(FLUX_BLOCK_LISTS)
            self.sampler = flow_sampler(latents, fixed, args.steps, device, t_scale=1.0 / 1000)
        else:
            cfg = PIXART_SIGMA_CONFIG if args.model == "pixart" else TINY_PIXART_CONFIG
            self.model = build_pixart(cfg, device, dtype, seed=0)
            side = args.size // 8 if args.model == "pixart" else 8
            text = 300 if args.model == "pixart" else 8
            fixed = pixart_inputs(side, cfg, text, device, dtype, seed=1)
            latents = fixed.pop("hidden_states")
            self.lists = list(PIXART_BLOCK_LISTS)
            self.sampler = flow_sampler(latents, fixed, args.steps, device, t_scale=1.0, out_channels=cfg["in_channels"])
        self.latents = self.sampler.latents
        self.num_blocks = sum(len(getattr(self.model, name)) for name in self.lists)

    def call(self, fn: Callable, x: torch.Tensor, i: int):
        return self.sampler.call(fn, x, i)

    def blocks(self):
        return all_blocks(self.model, self.lists)


# ------------------------------------------------------------------------------------ runner
class Runner:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.timer = Timer(self.device)
        log(f"building {args.model}")
        self.work = Workload(args, self.device, self.dtype)
        self.mask = steps_mask(args.steps)
        self.result: Dict[str, Any] = dict(
            model=args.model, size=args.size, steps=args.steps, mask=self.mask, computed_steps=sum(self.mask),
            dtype=args.dtype, env=environment(self.device), rows={}, notes=[])
        self.reference: Optional[torch.Tensor] = None

    def save(self):
        write_json(self.args.out, self.result)

    def free(self):
        torch._dynamo.reset()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def row(self, key: str, fn: Callable, *, mask: Optional[List[int]] = None, setup_s: float = 0.0,
            check: Optional[Callable[[], Dict[str, Any]]] = None, before_run: Optional[Callable] = None):
        """Cold first call, one warm end-to-end run, then timed runs."""
        if key in self.args.skip:
            return
        log(key)
        work, timer = self.work, self.timer
        try:
            with torch.no_grad():
                if before_run:
                    before_run()
                cold = timer.wall(lambda: work.call(fn, work.latents, 0)) + setup_s
                totals, per_call, out = [], [], None
                for r in range(1 + self.args.repeats):
                    if before_run:
                        before_run()
                    total, calls, out = timer.sample(work.sampler, fn)
                    if r > 0:
                        totals.append(total)
                        per_call.append(calls)
            entry: Dict[str, Any] = dict(cold_s=round(cold, 3), e2e_s=round(median(totals), 4), e2e_runs_s=[round(t, 4) for t in totals])
            if per_call and per_call[0]:
                flat = [c for run in per_call for c in run]
                entry["step_ms"] = round(median(flat), 3)
                if mask is not None:
                    entry["computed_ms"] = round(median([c for run in per_call for c, m in zip(run, mask) if m]), 3)
                    entry["cached_ms"] = round(median([c for run in per_call for c, m in zip(run, mask) if not m]), 3)
            if check:
                entry.update(check())
            if out is not None:
                out = out.float()
                if self.reference is None:
                    self.reference = out
                entry["finite"] = bool(torch.isfinite(out).all())
                entry["rel_diff_vs_first_row"] = round(((out - self.reference).abs().mean() / self.reference.abs().mean()).item(), 4)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            entry = dict(error=f"{type(exc).__name__}: {str(exc)[:400]}")
        self.result["rows"][key] = entry
        log(f"  {key}: {entry}")
        self.save()

    # ---- systems --------------------------------------------------------------------------
    def baselines(self):
        model = self.work.model
        self.row("eager", model)
        if "torch.compile" not in self.args.skip:
            self.row("torch.compile", torch.compile(model, fullgraph=True))
            self.free()
        if "torch.compile reduce-overhead" not in self.args.skip:
            self.row("torch.compile reduce-overhead", torch.compile(model, mode="reduce-overhead", fullgraph=True))
            self.free()
        for blk in self.work.blocks():  # what diffusers' compile_repeated_blocks does, for any model
            blk.compile(fullgraph=True)
        self.row("regional compile", model)
        for blk in self.work.blocks():
            blk._compiled_call_impl = None
        self.free()

    def ideal(self, fn: int):
        model = self.work.model
        try:
            with truncated_blocks(model, fn, self.work.lists):
                self.row(f"ideal F{fn}B0 torch.compile", torch.compile(model, fullgraph=True))
        finally:
            self.free()

    def dit_fx_rows(self, fn: int):
        model = self.work.model
        for policy in self.args.policies:
            for cuda_graphs in (False, True):
                if cuda_graphs and self.device.type != "cuda" or ("cuda_graphs" if cuda_graphs else "compiled") not in self.args.variants:
                    continue
                key = f"dit_fx compiled{' + CUDA graphs' if cuda_graphs else ''} F{fn}B0 {policy}"
                cfg = dit_fx.DBCacheConfig(fn_blocks=fn, bn_blocks=0, residual_diff_threshold=self.args.threshold,
                                           max_warmup_steps=0, steps_computation_mask=self.mask,
                                           steps_computation_policy=policy, enable_separate_cfg=False)
                t = time.perf_counter()
                dit_fx.optimize(model, cfg, compile=True, cuda_graphs=cuda_graphs)
                setup = time.perf_counter() - t

                def check():
                    s = dit_fx.summary(model)
                    seen = dit_fx.inspect(model)
                    cached = [i for i, m in enumerate(self.mask) if not m]
                    return dict(cached_steps=s.cached_steps, matches_mask=s.cached_steps == cached,
                                inductor_compiles=seen.regions.compiles, graph_captures=seen.cuda_graphs.captures,
                                captures=seen.captures_total)

                self.row(key, model, mask=self.mask, setup_s=setup, check=check, before_run=lambda: dit_fx.reset(model))
                dit_fx.disable(model)
                self.free()

    def cache_dit_rows(self, fn: int):
        import cache_dit

        model = self.work.model
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        for policy in self.args.policies:
            key = f"cache-dit + torch.compile F{fn}B0 {policy}"
            if key in self.args.skip:
                continue
            cfg = cache_dit.DBCacheConfig(
                Fn_compute_blocks=fn, Bn_compute_blocks=0, residual_diff_threshold=self.args.threshold,
                max_warmup_steps=0, max_cached_steps=-1, max_continuous_cached_steps=-1, enable_separate_cfg=False,
                num_inference_steps=self.args.steps, steps_computation_mask=self.mask, steps_computation_policy=policy)
            enabled = False
            try:
                cache_dit.enable_cache(model, cache_config=cfg)
                enabled = True
                compiled = torch.compile(model)

                def refresh():
                    if hasattr(cache_dit, "refresh_context"):
                        cache_dit.refresh_context(model, num_inference_steps=self.args.steps)

                def check():
                    st = cache_dit.summary(model, logging=False)[0]
                    cached = sorted(int(s) for s in st.cached_steps)
                    return dict(cached_steps=cached, matches_mask=cached == [i for i, m in enumerate(self.mask) if not m])

                self.row(key, compiled, mask=self.mask, check=check, before_run=refresh)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                self.result["rows"][key] = dict(error=f"{type(exc).__name__}: {str(exc)[:400]}")
            finally:
                if enabled:
                    cache_dit.disable_cache(model)
                for mod in model.modules():  # cache-dit's patch functors leave instance forwards behind
                    if "forward" in mod.__dict__:
                        del mod.forward
                self.free()

    def run(self):
        a = self.args
        if "baselines" in a.groups:
            self.baselines()
        for fn in a.fn:
            if "ideal" in a.groups:
                self.ideal(fn)
            if "dit_fx" in a.groups:
                self.dit_fx_rows(fn)
            if "cache_dit" in a.groups:
                self.cache_dit_rows(fn)
        self.result["markdown"] = markdown(self.result)
        self.save()
        print(self.result["markdown"])


def markdown(result) -> str:
    rows = result["rows"]
    lines = [f"{result['model']} {result['size']}px, {result['steps']} steps ({result['computed_steps']} computed), "
             f"{result['env'].get('gpu', 'cpu')}, torch {result['env']['torch']}",
             "", "| system | cold s | step ms | computed ms | cached ms | e2e s | mask ok |", "|---|---:|---:|---:|---:|---:|---|"]
    for key, r in rows.items():
        if "error" in r:
            lines.append(f"| {key} | error: {r['error'][:80]} | | | | | |")
            continue
        lines.append(f"| {key} | {r.get('cold_s', '')} | {r.get('step_ms', '')} | {r.get('computed_ms', '')} | "
                     f"{r.get('cached_ms', '')} | {r.get('e2e_s', '')} | {r.get('matches_mask', '')} |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["flux", "pixart", "tiny", "tiny_pixart"], default="tiny")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=None, help="default: 28 (flux), 20 (pixart)")
    ap.add_argument("--fn", type=int, nargs="+", default=None, help="default: 8 1 (flux), 1 (pixart)")
    ap.add_argument("--groups", nargs="+", default=["baselines", "ideal", "dit_fx", "cache_dit"])
    ap.add_argument("--policies", nargs="+", default=["static", "dynamic"])
    ap.add_argument("--variants", nargs="+", default=["compiled", "cuda_graphs"], help="dit_fx rows: without / with CUDA graphs")
    ap.add_argument("--threshold", type=float, default=0.8, help="for the dynamic policy (0 steps cache when diff < it)")
    ap.add_argument("--skip", nargs="*", default=[], help="row keys to skip")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    pixart = a.model in ("pixart", "tiny_pixart")
    a.steps = a.steps or (20 if pixart else 28)
    a.fn = a.fn or ([1] if pixart else [8, 1])
    if a.model.startswith("tiny"):
        a.device, a.dtype = a.device or "cpu", a.dtype or "fp32"
        a.fn = [f for f in a.fn if f < 3] or [1]
        torch.set_num_threads(2)
    a.device = a.device or "cuda"
    a.dtype = a.dtype or "bf16"
    return a


if __name__ == "__main__":
    Runner(parse_args()).run()
