"""Per-step host cost on the CPU: a FLUX-structured transformer (19 double + 38 single blocks, the
real block counts) with tiny dims, so a step is launch/host bound like a cached step on a GPU.

Systems, timed per call in the same process, interleaved over ``--rounds`` rounds (each round runs
every system once, in turn), reported as medians and as medians of paired ratios:
- ``eager``: the plain model; ``compiled``: ``torch.compile(model, fullgraph=True)``;
- ``ideal F1``: the model truncated to its first block, compiled (the floor of a cached F1B0 step);
- ``dit_fx {eager,compiled} {computed,cached}``: ``dit_fx.optimize`` (compile False/True) with
  threshold 0 (every step computes) or a static mask (every step after the first caches, F1B0).
With ``--before DIR``: the same dit_fx rows for another copy of the package importable as
``dit_fx_before`` from DIR (e.g. ``git archive <rev> dit_fx | tar -x -C DIR`` then rename the
folder to ``dit_fx_before``), so before/after ratios come from one process.

    python benchmarks/host_overhead.py --rounds 7 --out benchmarks/results/host_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

STEPS = 12  # calls per generation; the first computes (warmup), the rest are timed


def build_model(seed: int = 0) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=19, num_single_layers=38, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[2, 2, 4],
    ).eval()


def make_inputs(t: float) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(16, 3)
    ids[:, 1] = torch.arange(16) // 4
    ids[:, 2] = torch.arange(16) % 4
    return dict(
        hidden_states=torch.randn(1, 16, 16, generator=g),
        encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
        pooled_projections=torch.randn(1, 32, generator=g),
        timestep=torch.tensor([t]),
        img_ids=ids,
        txt_ids=torch.zeros(8, 3),
        return_dict=False,
    )


INPUTS = [make_inputs(1.0 - i / STEPS) for i in range(STEPS)]


def per_call(fn: Callable, reset: Callable = lambda: None, request: Callable = None) -> float:
    """Median seconds per call over steps 1..STEPS-1 of one generation. ``request``: makes a
    request handle per generation, entered around every call (how a server interleaves requests)."""
    reset()
    handle = request() if request is not None else None
    times = []
    with torch.no_grad():
        for i, kw in enumerate(INPUTS):
            start = time.perf_counter()
            if handle is None:
                fn(**kw)
            else:
                with handle:
                    fn(**kw)
            if i:
                times.append(time.perf_counter() - start)
    if handle is not None:
        handle.close()
    return statistics.median(times)


@contextlib.contextmanager
def truncated(model: torch.nn.Module, n: int):
    saved = model.transformer_blocks, model.single_transformer_blocks
    try:
        model.transformer_blocks = torch.nn.ModuleList(list(saved[0])[:n])
        model.single_transformer_blocks = torch.nn.ModuleList()
        yield model
    finally:
        model.transformer_blocks, model.single_transformer_blocks = saved


def dit_fx_systems(pkg, tag: str, with_requests: bool = False) -> Dict[str, Callable[[], float]]:
    computed = pkg.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0, max_warmup_steps=1)
    cached = pkg.DBCacheConfig(fn_blocks=1, max_warmup_steps=1, steps_computation_mask=[1] + [0] * (STEPS - 1),
                               steps_computation_policy="static")
    systems = {}
    for compile_ in (False, True):
        for kind, cfg in (("computed", computed), ("cached", cached)):
            model = build_model()
            pkg.optimize(model, cfg, compile=compile_)
            name = f"{tag} {'compiled' if compile_ else 'eager'} {kind}"
            systems[name] = (lambda m=model, p=pkg: per_call(m, lambda: p.reset(m)))
            if with_requests:
                systems[f"{tag} request {'compiled' if compile_ else 'eager'} {kind}"] = (
                    lambda m=model, p=pkg: per_call(m, request=lambda: p.new_request(m)))
    return systems


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", help="folder holding a package dit_fx_before to compare against")
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--requests", action="store_true", help="also time the calls inside a request handle")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    # Every diffusers transformer shares one forward code object (diffusers' lora wrapper), so
    # this many models in one process pass Dynamo's default recompile limit of 8.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 512
    import dit_fx

    base = build_model()
    systems: Dict[str, Callable[[], float]] = {
        "eager": lambda: per_call(base),
    }
    whole = torch.compile(build_model(), fullgraph=True)
    systems["compiled"] = lambda: per_call(whole)
    ideal_model = build_model()
    with truncated(ideal_model, 1):
        ideal = torch.compile(ideal_model, fullgraph=True)
        ideal(**INPUTS[0])  # compiled now, for the truncated structure
    systems["ideal F1 compiled"] = lambda: _with_truncated(ideal_model, ideal)
    systems.update(dit_fx_systems(dit_fx, "after", with_requests=args.requests))
    if args.before:
        sys.path.insert(0, args.before)
        before = importlib.import_module("dit_fx_before")
        systems.update(dit_fx_systems(before, "before"))
    for name, run in systems.items():  # warm up: captures and compiles
        run()
        print(f"warm: {name}", flush=True)
    rows: Dict[str, List[float]] = {name: [] for name in systems}
    for r in range(args.rounds):
        for name, run in systems.items():
            rows[name].append(run())
        print(f"round {r + 1}/{args.rounds}", flush=True)
    result = {
        "host": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "steps_per_generation": STEPS, "rounds": args.rounds,
        "median_ms": {k: round(statistics.median(v) * 1e3, 4) for k, v in rows.items()},
        "ratios": {},
    }

    def ratio(a: str, b: str) -> None:
        if a in rows and b in rows:
            result["ratios"][f"{a} / {b}"] = round(statistics.median(x / y for x, y in zip(rows[a], rows[b])), 4)

    for kind in ("eager computed", "eager cached", "compiled computed", "compiled cached"):
        ratio(f"after {kind}", f"before {kind}")
        ratio(f"after request {kind}", f"before {kind}")
        ratio(f"after request {kind}", f"after {kind}")
    for tag in ("after", "before"):
        ratio(f"{tag} eager computed", "eager")
        ratio(f"{tag} compiled computed", "compiled")
        ratio(f"{tag} compiled cached", "ideal F1 compiled")
        ratio(f"{tag} eager cached", "ideal F1 compiled")
    print(json.dumps(result, indent=2))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


def _with_truncated(model: torch.nn.Module, compiled: Callable) -> float:
    with truncated(model, 1):
        return per_call(compiled)


if __name__ == "__main__":
    main()
