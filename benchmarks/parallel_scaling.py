"""Context-parallel scaling with the cache on several GPUs, against the peers (issue 20).

One process group per GPU count (``--gpus 1 2 4 8``, those the machine has), spawned from this
script; each group runs every system one after another on the same random-weight model, the same
inputs and the same steps mask, and rank 0 writes its records. The parent then adds the scaling
numbers and writes one JSON, a plot and a Markdown table.

Systems (``SYSTEMS``):
- ``dit_fx_ulysses`` / ``dit_fx_ring`` / ``dit_fx_hybrid``: ``dit_fx.optimize(model, cfg,
  parallel=dit_fx.ParallelConfig(ulysses=N | ring=N | ulysses=2 x ring=N/2))`` + the cache,
  compiled regions and CUDA graphs (eager with ``--no-compile``);
- ``cache_dit_ulysses`` / ``cache_dit_ring``: ``cache_dit.enable_cache(model, cache_config,
  parallelism_config=cache_dit.ParallelismConfig(ulysses_size=N | ring_size=N))``, then
  ``torch.compile(model)``;
- ``dit_fx_cfg`` (with ``--guidance``, on 2 GPUs): ``ParallelConfig(cfg=2)``, the cond and uncond
  halves of the batched CFG call on one GPU each;
- ``diffusers_ulysses``: diffusers' native ``model.enable_parallelism(config=ContextParallelConfig(
  ulysses_degree=N))`` + ``torch.compile``, no cache (what CP alone gives).
On one GPU every system runs unsharded (its 1-GPU time is the scaling baseline); the hybrid needs
N >= 4 and is skipped below.

Per system and GPU count: end to end (median of ``--rounds`` timed loops after a warm one, each
between barriers), per-step times of rank 0 split into computed / cached steps by the mask,
``scaling_efficiency`` = T1 / (N x TN) against the same system on one GPU, the cached steps of
every rank (``cached_steps_equal_on_ranks``; and equal to the mask), and the final latents against
the same system's 1-GPU latents (``rel_l1_vs_1gpu``, max abs diff); each peer's latents against
dit_fx Ulysses' on the same GPU count (``rel_l1_vs_dit_fx``). A system that fails is recorded with
its error and the run goes on. cache-dit's CP planners import ``einops`` (not among cache-dit's
declared dependencies): install it, or carry its wheel to the GPU machine.

    python benchmarks/parallel_scaling.py --gpus 1 2 4 8                     # FLUX.1-dev-sized, 1024²
    python benchmarks/parallel_scaling.py --size 2048 --gpus 1 8 --out /tmp/p.json
    python benchmarks/parallel_scaling.py --model wan --steps 50 --gpus 1 2 4 8              # Wan-14B-sized, 480p, 81 frames
    python benchmarks/parallel_scaling.py --model wan --height 720 --width 1280 --steps 50
    python benchmarks/parallel_scaling.py --preset tiny --device cpu --gpus 1 2 --no-compile   # gloo smoke run

Decisions: the static mask of ``quantize.py`` (13 of 28 computed, F8B0 at the full preset) so the
cache makes the same choices on every system and GPU count (``--policy dynamic`` uses the
threshold instead: the decision is then all-reduced over the ranks, and the cached steps must
still agree); NVLink multicast stays off (``NCCL_NVLS_ENABLE=0``, the device notes say why); the
model is rebuilt for each system (each library changes the modules it parallelizes). Steps other
than 28 use a mask computing the first 4 steps and every odd one (about half, like the 28-step
mask's 13). Wan: ``WanTransformer3DModel`` from ``common.WAN_14B_CONFIG``, inputs as ``WanPipeline``
passes them; ``--guidance G`` makes every system's loop batched CFG (cond + uncond as one call of
batch 2, the uncond text a second random draw), as WanPipeline runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional

from common import (  # noqa: E402  (puts the repo root on sys.path)
    DTYPES,
    FLUX_DEV_CONFIG,
    RESULTS,
    TINY_FLUX_CONFIG,
    WAN_14B_CONFIG,
    build_flux,
    build_wan,
    environment,
    flow_sampler,
    flux_inputs,
    log,
    median,
    wan_inputs,
    wan_shape,
    write_json,
)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

SYSTEMS: Dict[str, str] = {
    "dit_fx_ulysses": "dit_fx Ulysses + DBCache + compile + CUDA graphs",
    "dit_fx_ring": "dit_fx ring + DBCache + compile + CUDA graphs",
    "dit_fx_hybrid": "dit_fx Ulysses 2 x ring N/2 + DBCache + compile + CUDA graphs",
    "dit_fx_cfg": "dit_fx CFG parallel (cond / uncond on 2 GPUs) + DBCache + compile + CUDA graphs",
    "cache_dit_ulysses": "cache-dit Ulysses + DBCache + torch.compile",
    "cache_dit_ring": "cache-dit ring + DBCache + torch.compile",
    "diffusers_ulysses": "diffusers native CP (Ulysses) + torch.compile, no cache",
}
CACHED = {"dit_fx_ulysses", "dit_fx_ring", "dit_fx_hybrid", "dit_fx_cfg", "cache_dit_ulysses", "cache_dit_ring"}
PRESETS = {"flux": {"full": FLUX_DEV_CONFIG, "tiny": TINY_FLUX_CONFIG},
           "wan": {"full": WAN_14B_CONFIG,
                   "tiny": dict(WAN_14B_CONFIG, num_layers=2, num_attention_heads=2, attention_head_dim=16, text_dim=32,
                                freq_dim=32, ffn_dim=64)}}
WAN_VIDEO = {"full": (480, 832, 21), "tiny": (32, 32, 2)}  # height px, width px, latent frames (21: 81 frames)
MASK_28 = (1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1)  # quantize.py's


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=list(PRESETS), default="flux")
    ap.add_argument("--preset", choices=["full", "tiny"], default="full")
    ap.add_argument("--size", type=int, default=None, help="FLUX: pixels (default 1024; tiny 64)")
    ap.add_argument("--height", type=int, default=None, help="Wan: video height px (default 480; 720p: 720)")
    ap.add_argument("--width", type=int, default=None, help="Wan: video width px (default 832; 720p: 1280)")
    ap.add_argument("--frames", type=int, default=None, help="Wan: latent frames (default 21 = 81 video frames)")
    ap.add_argument("--text-tokens", type=int, default=None, help="default 512; tiny 8")
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--fn", type=int, default=None, help="Fn compute blocks (default 8; tiny 1)")
    ap.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance scale: every system runs cond + uncond as one batch of 2 (Wan)")
    ap.add_argument("--policy", choices=["static", "dynamic"], default="static")
    ap.add_argument("--threshold", type=float, default=0.08, help="residual diff threshold (--policy dynamic)")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", choices=list(DTYPES), default=None, help="default bf16 (cpu: fp32)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-compile", action="store_true", help="eager everywhere (CPU smoke run)")
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/parallel_scaling_<device>.json)")
    ap.add_argument("--plot", default=None, help="PNG (default: --out with .png); '' for none")
    a = ap.parse_args(argv)
    tiny = a.preset == "tiny"
    a.size = a.size or (64 if tiny else 1024)
    h, w, f = WAN_VIDEO[a.preset]
    a.height, a.width, a.frames = a.height or h, a.width or w, a.frames or f
    a.text_tokens = a.text_tokens or (8 if tiny else 512)
    a.fn = a.fn if a.fn is not None else (1 if tiny else 8)
    a.dtype = a.dtype or ("fp32" if a.device == "cpu" else "bf16")
    a.out = a.out or os.path.join(RESULTS, f"parallel_scaling_{a.model}_{a.device}.json")
    a.plot = os.path.splitext(a.out)[0] + ".png" if a.plot is None else a.plot
    a.mask = list(MASK_28) if a.steps == 28 else [1 if i < 4 or i % 2 else 0 for i in range(a.steps)]
    if a.device == "cuda":
        have = torch.cuda.device_count()
        dropped = [n for n in a.gpus if n > have]
        a.gpus = [n for n in a.gpus if n <= have]
        if dropped:
            log(f"--gpus {dropped}: this machine has {have} GPU(s); not run")
    if not a.gpus:
        raise SystemExit("--gpus: none of the asked GPU counts fits this machine")
    return a


# ------------------------------------------------------------------------------------ one rank


def dit_fx_config(a):
    import dit_fx

    static = a.policy == "static"
    return dit_fx.DBCacheConfig(fn_blocks=a.fn, bn_blocks=0, residual_diff_threshold=a.threshold, max_warmup_steps=0,
                                steps_computation_mask=list(a.mask) if static else None,
                                steps_computation_policy="static" if static else "dynamic",
                                enable_separate_cfg=False, num_inference_steps=a.steps)


def cache_dit_config(a):
    import cache_dit

    static = a.policy == "static"
    return cache_dit.DBCacheConfig(Fn_compute_blocks=a.fn, Bn_compute_blocks=0, residual_diff_threshold=a.threshold,
                                   max_warmup_steps=0, max_cached_steps=-1, max_continuous_cached_steps=-1,
                                   enable_separate_cfg=False, num_inference_steps=a.steps,
                                   steps_computation_mask=list(a.mask) if static else None,
                                   steps_computation_policy="static" if static else "dynamic")


def degrees(key: str, n: int) -> Optional[Dict[str, int]]:
    """dit_fx's ParallelConfig degrees of ``key`` on ``n`` ranks (None: not runnable there)."""
    if n == 1:
        return {}
    if key.endswith("hybrid"):
        return dict(ulysses=2, ring=n // 2) if n >= 4 and n % 2 == 0 else None
    if key.endswith("cfg"):
        return dict(cfg=2) if n == 2 else None
    return dict(ring=n) if key.endswith("ring") else dict(ulysses=n)


def setup(key: str, model, n: int, a):
    """(callable, before each loop, cached steps after a loop or None)."""
    compile_ = not a.no_compile
    if key.startswith("dit_fx"):
        import dit_fx

        parallel = dit_fx.ParallelConfig(**degrees(key, n)) if n > 1 else None
        dit_fx.optimize(model, dit_fx_config(a), parallel=parallel, compile=compile_,
                        cuda_graphs=compile_ and a.device == "cuda")
        return model, lambda: dit_fx.reset(model), lambda: list(dit_fx.summary(model).cached_steps)
    if key.startswith("cache_dit"):
        import cache_dit

        cache_dit.enable_cache(model, cache_config=cache_dit_config(a))
        if n > 1:  # a second call: with both configs at once cache-dit 1.5.3 fails on a bare transformer
            # ('list' object has no attribute 'transformer', as its quantize_config does in quantize.py)
            size = {"ring_size": n} if key.endswith("ring") else {"ulysses_size": n}
            cache_dit.enable_cache(model, cache_config=None, parallelism_config=cache_dit.ParallelismConfig(**size))

        def cached():
            return sorted(int(s) for s in (cache_dit.summary(model, logging=False)[0].cached_steps or []))

        return (torch.compile(model) if compile_ else model), (lambda: cache_dit.refresh_context(model, num_inference_steps=a.steps)), cached
    from diffusers import ContextParallelConfig

    if n > 1:
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=n))
    return (torch.compile(model) if compile_ else model), (lambda: None), None


def sync(a) -> None:
    if a.device == "cuda":
        torch.cuda.synchronize()
    dist.barrier()


def loop(fn, sampler, a, step_times: Optional[List[float]] = None) -> torch.Tensor:
    x = sampler.latents.clone()
    for i in range(len(sampler)):
        t = time.perf_counter()
        x = x + sampler.dts[i] * sampler.call(fn, x, i).to(x.dtype)
        if step_times is not None:
            sync(a)
            step_times.append(time.perf_counter() - t)
    return x


def build(a, device):
    """The model (same seed on every rank) and its denoising loop: FLUX takes t / 1000, Wan t."""
    dtype, cfg = DTYPES[a.dtype], PRESETS[a.model][a.preset]
    if a.model == "wan":
        model = build_wan(cfg, device, dtype, seed=0)
        fixed = wan_inputs(wan_shape(cfg, a.height, a.width, a.frames), cfg, a.text_tokens, device, dtype, seed=0)
        t_scale = 1.0
    else:
        model = build_flux(cfg, device, dtype, seed=0)
        fixed = flux_inputs(a.size, cfg, a.text_tokens, device, dtype, seed=0)
        fixed.pop("timestep")
        t_scale = 1 / 1000
    latents = fixed.pop("hidden_states")
    if a.guidance is not None:  # batched CFG: the text of the uncond branch is a second random draw
        if a.model != "wan":
            raise SystemExit("--guidance: only the Wan model takes CFG here (FLUX.1-dev is guidance-distilled)")
        g = torch.Generator().manual_seed(1)
        cond = fixed.pop("encoder_hidden_states")
        fixed["encoder_hidden_states"] = torch.cat([cond, torch.randn(cond.shape, generator=g).to(cond)])
    return model, flow_sampler(latents, fixed, a.steps, device, t_scale=t_scale)


def with_cfg(fn, guidance: Optional[float]):
    """``fn`` as the loop calls it; with ``guidance``, one batched call of cond and uncond and
    ``uncond + guidance * (cond - uncond)``."""
    if guidance is None:
        return fn

    def call(hidden_states, timestep, **kw):
        out = fn(hidden_states=torch.cat([hidden_states, hidden_states]), timestep=timestep.expand(2), **kw)
        cond, uncond = (out[0] if isinstance(out, (tuple, list)) else out).chunk(2)
        return (uncond + guidance * (cond - uncond),)

    return call


def run_system(key: str, n: int, rank: int, a, device) -> Dict[str, Any]:
    rec: Dict[str, Any] = dict(system=SYSTEMS[key], gpus=n, lowering="eager" if a.no_compile else "compiled")
    deg = degrees(key, n)
    if deg is None:
        return dict(rec, status="skipped", reason=("needs --guidance and 2 GPUs (cfg=2 alone)" if key.endswith("cfg")
                                                    else f"needs an even GPU count >= 4, got {n}"))
    if key.endswith("cfg") and a.guidance is None:
        return dict(rec, status="skipped", reason="needs --guidance (a batched CFG loop)")
    rec["degrees"] = deg
    model, sampler = build(a, device)
    try:
        with torch.no_grad():
            fn, before, cached = setup(key, model, n, a)
            fn = with_cfg(fn, a.guidance)
            sync(a)
            t = time.perf_counter()
            before()
            loop(fn, sampler, a)
            sync(a)
            rec["first_run_s"] = round(time.perf_counter() - t, 3)
            before()
            loop(fn, sampler, a)  # warm
            totals, steps = [], []
            for _ in range(a.rounds):
                before()
                sync(a)
                t = time.perf_counter()
                out = loop(fn, sampler, a)
                sync(a)
                totals.append(time.perf_counter() - t)
            before()
            loop(fn, sampler, a, steps)  # per-step times (a sync after each step)
        rec.update(status="ok", e2e_s=round(median(totals), 4), e2e_runs_s=[round(x, 4) for x in totals])
        if key in CACHED:
            rec["computed_ms"] = round(1e3 * median(s for s, m in zip(steps, a.mask) if m), 3)
            rec["cached_ms"] = round(1e3 * median(s for s, m in zip(steps, a.mask) if not m), 3)
        else:
            rec["step_ms"] = round(1e3 * median(steps), 3)
        if cached is not None:
            mine = cached()
            every: List[Any] = [None] * n
            dist.all_gather_object(every, mine)
            rec["cached_steps"] = mine
            rec["cached_steps_equal_on_ranks"] = all(c == mine for c in every)
            if a.policy == "static":
                rec["matches_mask"] = mine == [i for i, m in enumerate(a.mask) if not m]
        rec["finite"] = bool(torch.isfinite(out).all())
        rec["_out"] = out.float().cpu()
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        rec.update(status="error", error=f"{type(exc).__name__}: {str(exc)[:400]}")
    finally:
        if key.startswith("dit_fx"):
            import dit_fx

            dit_fx.disable(model)
        del model
        torch._dynamo.reset()
        if a.device == "cuda":
            torch.cuda.empty_cache()
    return rec


def worker(rank: int, n: int, a, rendezvous: str, out_path: str) -> None:
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    if a.device == "cuda":
        torch.cuda.set_device(rank)
    # A file rendezvous (one node): no TCP port to pick, so runs started side by side never meet.
    dist.init_process_group("nccl" if a.device == "cuda" else "gloo", init_method=f"file://{rendezvous}",
                            rank=rank, world_size=n)
    device = torch.device(a.device, rank) if a.device == "cuda" else torch.device("cpu")
    records = {}
    try:
        for key in a.systems:
            if rank == 0:
                log(f"[{n} GPU(s)] {key}")
            rec = run_system(key, n, rank, a, device)
            statuses: List[Any] = [None] * n
            dist.all_gather_object(statuses, rec["status"])
            rec["status_on_ranks"] = statuses
            records[key] = rec
            if rank == 0:
                log(f"[{n} GPU(s)] {key}: " + ", ".join(f"{k}={v}" for k, v in rec.items()
                                                        if k in ("status", "e2e_s", "computed_ms", "cached_ms", "error")))
    finally:
        if rank == 0:
            torch.save(records, out_path)
        dist.destroy_process_group()
    # Done: end here, skipping interpreter teardown, where the backend's threads can abort a process
    # whose results are already written (SIGABRT seen in CI with gloo). Errors above still propagate.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ------------------------------------------------------------------------------------ parent


def summarize(by_n: Dict[int, Dict[str, Dict[str, Any]]], a) -> Dict[str, Any]:
    """Scaling efficiency and agreement with the 1-GPU run, per system."""
    base = by_n.get(1, {})
    for n in sorted(by_n):  # the 1-GPU records first: the others compare with them
        mine = by_n[n].get("dit_fx_ulysses", {}).get("_out")
        for key, rec in by_n[n].items():  # each peer against dit_fx on the same GPU count (parity)
            if not key.startswith("dit_fx") and rec.get("_out") is not None and mine is not None:
                rec["rel_l1_vs_dit_fx"] = float((rec["_out"] - mine).abs().mean() / mine.abs().mean().clamp_min(1e-12))
        for key, rec in by_n[n].items():
            out = rec.pop("_out", None)
            one = base.get(key, {})
            ref = one.get("_out_kept")
            if rec.get("status") == "ok" and n == 1:
                rec["_out_kept"] = out
            if rec.get("status") == "ok" and one.get("status") == "ok" and n > 1 and ref is not None and out is not None:
                rec["scaling_efficiency"] = round(one["e2e_s"] / (n * rec["e2e_s"]), 4)
                rec["speedup_vs_1gpu"] = round(one["e2e_s"] / rec["e2e_s"], 4)
                rec["rel_l1_vs_1gpu"] = float((out - ref).abs().mean() / ref.abs().mean().clamp_min(1e-12))
                rec["max_abs_diff_vs_1gpu"] = float((out - ref).abs().max())
                if "cached_steps" in rec and "cached_steps" in one:
                    rec["cached_steps_equal_1gpu"] = rec["cached_steps"] == one["cached_steps"]
    for recs in by_n.values():
        for rec in recs.values():
            rec.pop("_out_kept", None)
    ratios = {}
    for n, recs in by_n.items():
        mine, peer = recs.get("dit_fx_ulysses", {}), recs.get("cache_dit_ulysses", {})
        if mine.get("status") == "ok" and peer.get("status") == "ok":
            ratios[f"dit_fx_over_cache_dit_ulysses_e2e_{n}gpu"] = round(mine["e2e_s"] / peer["e2e_s"], 4)
    return ratios


def markdown(by_n, a) -> str:
    lines = ["| system | GPUs | lowering | status | end to end s | computed ms | cached ms | efficiency | rel L1 vs 1 GPU | cached steps agree |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for key in a.systems:
        for n in sorted(by_n):
            r = by_n[n].get(key, {})
            g = lambda k: "" if r.get(k) is None else (f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]))  # noqa: E731
            agree = "" if "cached_steps_equal_on_ranks" not in r else str(r["cached_steps_equal_on_ranks"] and r.get("cached_steps_equal_1gpu", True))
            lines.append(f"| {SYSTEMS[key]} | {n} | {r.get('lowering', '')} | {r.get('status', '')} | {g('e2e_s')} | {g('computed_ms')} | {g('cached_ms')} | "
                         f"{g('scaling_efficiency')} | {g('rel_l1_vs_1gpu')} | {agree} |")
    return "\n".join(lines)


def plot(by_n, a) -> None:
    if not a.plot:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in a.systems:
        pts = [(n, by_n[n][key]["e2e_s"]) for n in sorted(by_n) if by_n[n].get(key, {}).get("status") == "ok"]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=SYSTEMS[key])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GPUs")
    ax.set_ylabel("end to end (s)")
    what = f"Wan-{a.preset} {a.height}x{a.width}x{a.frames}" if a.model == "wan" else f"FLUX-{a.preset} {a.size}²"
    ax.set_title(f"{what}, {a.steps} steps, {a.policy} cache")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=120)


def main(argv=None) -> Dict[str, Any]:
    a = parse(argv)
    t0 = time.perf_counter()
    by_n: Dict[int, Dict[str, Dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.gpus:
            path = os.path.join(tmp, f"{n}.pt")
            log(f"spawning {n} rank(s)")
            try:
                mp.spawn(worker, args=(n, a, os.path.join(tmp, f"rendezvous{n}"), path), nprocs=n, join=True)
            except Exception as exc:  # noqa: BLE001  a rank died: keep what rank 0 saved
                log(f"{n} rank(s): {type(exc).__name__}: {str(exc)[:300]}")
            by_n[n] = torch.load(path, weights_only=False) if os.path.exists(path) else {
                k: dict(system=SYSTEMS[k], gpus=n, status="error", error="the process group died") for k in a.systems}
    ratios = summarize(by_n, a)
    table = markdown(by_n, a)
    shape = (dict(video=wan_shape(PRESETS["wan"][a.preset], a.height, a.width, a.frames)) if a.model == "wan"
             else dict(size=a.size, image_tokens=(a.size // 16) ** 2))
    result = dict(benchmark="parallel_scaling", model=a.model, preset=a.preset, **shape, text_tokens=a.text_tokens, steps=a.steps,
                  policy=a.policy, mask=a.mask if a.policy == "static" else None, fn_blocks=a.fn, dtype=a.dtype,
                  device=a.device, compile=not a.no_compile, gpus=a.gpus, rounds=a.rounds, env=environment(),
                  runs={str(n): recs for n, recs in by_n.items()}, ratios=ratios, markdown=table,
                  total_s=round(time.perf_counter() - t0, 1), plot=a.plot or None)
    write_json(a.out, result)
    plot(by_n, a)
    print(table)
    print(json.dumps(ratios, indent=1))
    log(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
