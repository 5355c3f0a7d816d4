#!/usr/bin/env python
"""fp8 quantization with and without a cache, side by side in one process (issue 17 item 4).

Two models (``--model``): ``flux`` (the default, below) and ``wan`` (a Wan 2.1 14B-sized video
transformer at a 480x832 video shape: see "Wan" at the end).

One FLUX.1-dev-sized ``FluxTransformer2DModel`` (random weights, bf16, built from its config like
the other benchmarks: 19 double + 38 single blocks, 24 heads x 128, every parameter scaled by 0.5),
1024² (4096 image tokens + 512 text tokens), ``--steps`` 28 Euler steps of a flow-matching sampler
over fixed timesteps, the same static steps mask for every cache system (``mask`` in the JSON:
4 computed steps, then one of three, the last step computed: 13 of 28, as ``bench_compiled.py``;
made with ``dit_fx.steps_mask``; cache-dit gets it as ``steps_computation_mask``), F8B0 (``--fn``).
Systems (``--systems``, run in the order given; the default runs all six in the order below):

  ``bf16_compile``         bf16 + torch.compile, no cache (``--baseline-compile regional``, the
                           default: diffusers' ``compile_repeated_blocks(fullgraph=True)``;
                           ``whole``: ``torch.compile(model, fullgraph=True)``)
  ``dit_fx_bf16``          dit_fx bf16 + DBCache + compile + CUDA graphs (``dit_fx.optimize``
                           defaults on CUDA)
  ``dit_fx_fp8``           the same with ``quantize="fp8"``
  ``cache_dit_fp8``        cache-dit 1.5.3's own fp8, ``QuantizeConfig(quant_type="float8_per_row")``
                           (per-row, its default ``exclude_layers``): first the one call
                           ``enable_cache(model, cache_config=..., quantize_config=...)``; cache-dit
                           1.5.3 fails there on a bare transformer (``AttributeError: 'list' object
                           has no attribute 'transformer'``), so then, on a fresh model,
                           ``enable_cache(model, cache_config=...)`` followed by
                           ``cache_dit.quantize(model, quantize_config=...)``; if that fails too,
                           torchao ``quantize_`` on the blocks' Linears applied here, then
                           ``enable_cache``. Then ``torch.compile(model)`` (as ``bench_compiled.py``).
                           ``quantization`` and ``earlier_attempts`` in the record say which ran
  ``torchao_fp8_compile``  torchao ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``
                           on every Linear (torchao's default filter), then the same torch.compile
                           as ``bf16_compile``, no cache
  ``cache_dit_bf16``       cache-dit bf16 + DBCache + torch.compile (the same-precision peer of
                           ``dit_fx_bf16``; last, so a short budget drops it first)

Before the systems: an eager bf16 uncached run of the same loop from the same inputs, the
reference of every quality number (PSNR in float64 over the final latents, with the reference's
value range max - min as the peak; also the relative L1 difference and max |diff|).

Per system: ``first_call_s`` (the first transformer call, wall clock: quantization, capture and
that call's compiles), ``first_run_s`` (the whole first 28-step loop: later lazy compiles and
CUDA-graph captures included), ``setup_s`` (quantize_ / enable_cache / optimize before the first
call); then one warm loop and ``--rounds`` timed loops: per-step CUDA events (model call + latent
update) give ``computed_ms`` / ``cached_ms`` (medians over the mask's 1 / 0 steps; a system
without a cache has computed steps only), events around the whole loop (no sync inside it) give
``e2e_s`` (median; ``e2e_runs_s`` all of them). ``weight_bytes`` / ``weight_gib``: the bytes of
every parameter and buffer, tensor subclasses (torchao's fp8 weights) counted by their inner
tensors' storages; ``quantized_linears`` of ``linears``; ``memory_allocated_gib``: allocated after
the timed loops minus before the build (weights + cache buffers + CUDA-graph pools);
``peak_gib`` likewise. Systems run one after another (the timed loops of one system agree within
about 0.5% on an H200, so rounds are not interleaved across systems); each builds its own model
(the bf16 systems share one, which they leave as built) and frees it (del + gc +
``torch._dynamo.reset()`` + ``empty_cache``) before the next. First calls after the first system
can hit Inductor/Triton caches that earlier systems (or an earlier process on the same machine:
``inductor_cache.warm``) filled.

Inductor tuning. torchao's ``quantize_`` (also the one inside dit_fx's and cache-dit's
quantization) turns on coordinate-descent tuning process wide; the fp8 first calls then take
minutes (measured on an H200: dit_fx fp8 over 250 s at this size, cut off; torchao's own
regional-compile first call 260 s in the issue). ``--inductor-tuning off`` (the default) keeps it
off for every compile (torchao: ``set_inductor_config=False``; dit_fx: ``inductor_options`` with
``compile=True``; cache-dit: reset after its quantization, before the compile), so every system
compiles with torch's default Inductor settings; ``--inductor-tuning library`` leaves each
library's choice. Inductor's config is restored after each system either way
(``inductor_config``, ``coordinate_descent_tuning_effective`` in each record). cache-dit's
quantization patches torchao's ``_choose_scale_float8`` process wide; the original is put back
after that system.

Variants of dit_fx fp8 (``EXPERIMENTS``, not in the default order; name them in ``--systems``):
``dit_fx_fp8_calls`` (``step_source="calls"``: no host read of the timestep per call),
``dit_fx_fp8_mod`` (``QuantizeConfig("fp8", modulation=True)``: the AdaLN Linears too) and
``dit_fx_fp8_autotune`` (``inductor_options={"max_autotune_gemm": True}``: on the H200 one
``scaled_mm`` shape alone took 107 s of autotuning, 106 choices, so its first call cannot meet
the 60 s target; recorded in ``quantize_h200_flux_1024_variants.json`` as cut off).

Time budget: ``--budget-s`` (default 520) from the script's start. A system is skipped (recorded
with the reason) when less than its minimum is left, timed rounds stop early when the next one
would not fit, and a watchdog writes the JSON, the plot and the table at the deadline (the system
in flight recorded as cut off, with its phase) and exits 0. The JSON is rewritten after every
phase. On one H200 the default run took 164-250 s (warm / cold caches).

    python benchmarks/quantize.py                                # FLUX.1-dev-sized, GPU, all systems
    python benchmarks/quantize.py --preset small --out /tmp/q.json          # 5 + 10 blocks, F2B0
    python benchmarks/quantize.py --preset tiny --device cpu --no-compile   # CPU smoke run

Wan (``--model wan``). One Wan-2.1-T2V-14B-sized ``WanTransformer3DModel`` (random weights from
its config, the diffusers defaults: 40 blocks, 40 heads x 128 = 5120 wide, ffn 13824, text_dim
4096, 16 latent channels in and out, patch (1, 2, 2), RMS QK norm across heads, cross-attention to
``--text-tokens`` 512 text tokens; 14.3 B parameters, 26.6 GiB in bf16), built like the FLUX one:
directly on the device in ``--dtype``, every parameter scaled by 0.5 (the RoPE tables, buffers,
stay fp32 as ``from_pretrained`` keeps them; the parameters ``from_pretrained`` would keep in fp32,
``_keep_in_fp32_modules``, are bf16 here, like every FLUX parameter). Inputs as ``WanPipeline``
passes them: latents ``hidden_states`` [1, 16, F, H/8, W/8] (``--height`` x ``--width`` pixels,
``--frames`` F latent frames = 4(F-1)+1 video frames), ``timestep`` [1] in 0..1000 (the sampler's
``sigma * 1000``), ``encoder_hidden_states`` [1, 512, 4096]. Video tokens: F x (H/16) x (W/16);
480x832 is 1560 a latent frame, so the full preset's default F = 5 gives 7800 tokens (a real
81-frame video, F = 21, would be 32760: its loops do not fit six systems in one ~540 s run).
Presets: ``full`` (the above), ``small`` (Wan widths, 10 blocks, 2 latent frames: 3120 tokens),
``tiny`` (2 blocks, 2 heads x 16, one 4x4 latent frame: 4 tokens; CPU smoke run). Everything else
as for FLUX: the same six systems, mask, F8B0, timing, quality and JSON layout (with ``video``: the
shape; ``image_tokens`` holds the video tokens), the block list ``blocks`` for regional compiles
and the cache-dit fallback. Defaults that differ: ``--rounds`` 3 (a Wan loop is about three
FLUX loops long), ``--budget-s`` 500 and ``--out`` ``benchmarks/results/quantize_h200_wan.json``.
Expected on one H200 (the FLUX run's times scaled by the FLOPs, 2.4e14 a computed step vs 7.4e13:
computed step ~0.44 s bf16, ~0.33 s fp8; cached F8 steps ~0.09 / 0.07 s; eager ~0.55 s): about
330 s for the reference and all six systems with warm Inductor caches, ~400 s cold; an estimate,
not a measurement: ``--budget-s`` 500 writes what it has and exits before a 540 s limit.

    python benchmarks/quantize.py --model wan                   # Wan-2.1-14B-sized, 480x832 x 5 latent frames
    python benchmarks/quantize.py --model wan --preset tiny --device cpu --dtype fp32 --no-compile
"""

from __future__ import annotations

import time

_START = time.perf_counter()

import argparse  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from common import (  # noqa: E402  (also puts the repository root on sys.path)
    DTYPES,
    FLUX_BLOCK_LISTS,
    FLUX_DEV_CONFIG,
    RESULTS,
    TINY_FLUX_CONFIG,
    WAN_14B_CONFIG,
    Timer,
    all_blocks,
    build_flux,
    build_wan,
    environment,
    flow_sampler,
    flux_inputs,
    median,
    wan_inputs,
    wan_shape,
    write_json,
)
import dit_fx  # noqa: E402

SYSTEMS: Dict[str, str] = {
    "bf16_compile": "bf16 + torch.compile, no cache",
    "torchao_fp8_compile": "torchao fp8 (per-row) + torch.compile, no cache",
    "cache_dit_fp8": "cache-dit fp8 + DBCache + torch.compile",
    "dit_fx_bf16": "dit_fx bf16 + DBCache + compile + CUDA graphs",
    "dit_fx_fp8": "dit_fx fp8 + DBCache + compile + CUDA graphs",
    "cache_dit_bf16": "cache-dit bf16 + DBCache + torch.compile",
    "dit_fx_fp8_separate": "dit_fx fp8 + DBCache + compile + CUDA graphs, Linears separate (fuse_linears=False)",
    "dit_fx_fp8_calls": "dit_fx fp8 + DBCache + compile + CUDA graphs, steps counted (step_source='calls')",
    "dit_fx_fp8_autotune": "dit_fx fp8 + DBCache + compile + CUDA graphs, GEMMs autotuned (max_autotune_gemm)",
    "dit_fx_fp8_mod": "dit_fx fp8 + DBCache + compile + CUDA graphs, modulation Linears fp8 too (modulation=True)",
}
EXPERIMENTS = ("dit_fx_fp8_calls", "dit_fx_fp8_autotune", "dit_fx_fp8_mod")  # dit_fx fp8 variants, measured beside it
DEFAULT_ORDER = ["bf16_compile", "dit_fx_bf16", "dit_fx_fp8", "cache_dit_fp8", "torchao_fp8_compile", "cache_dit_bf16"]
FP8_SYSTEMS = {"torchao_fp8_compile", "cache_dit_fp8", "dit_fx_fp8", "dit_fx_fp8_separate", *EXPERIMENTS}
CACHE_SYSTEMS = {"cache_dit_fp8", "dit_fx_bf16", "dit_fx_fp8", "cache_dit_bf16", "dit_fx_fp8_separate", *EXPERIMENTS}
BF16_SYSTEMS = {"bf16_compile", "dit_fx_bf16", "cache_dit_bf16"}  # leave the shared bf16 model as built

PRESETS: Dict[str, Dict[str, Any]] = {
    "full": dict(FLUX_DEV_CONFIG),                                   # 19 + 38 blocks, 11.9 B parameters
    "small": dict(FLUX_DEV_CONFIG, num_layers=5, num_single_layers=10),  # FLUX widths, 5 + 10 blocks
    "tiny": dict(TINY_FLUX_CONFIG),                                  # CPU smoke run
}
# Wan 2.1 T2V 14B (common.WAN_14B_CONFIG) and its scaled-down presets.
WAN_PRESETS: Dict[str, Dict[str, Any]] = {
    "full": dict(WAN_14B_CONFIG),                                      # 40 blocks, 14.3 B parameters
    "small": dict(WAN_14B_CONFIG, num_layers=10),                      # Wan widths, 10 blocks
    "tiny": dict(WAN_14B_CONFIG, num_layers=2, num_attention_heads=2, attention_head_dim=16, text_dim=32,
                 freq_dim=32, ffn_dim=64),                             # CPU smoke run
}
WAN_BLOCK_LISTS = ("blocks",)
# Video shape per preset: (height px, width px, latent frames); VAE /8 spatially, /4 in time.
WAN_SHAPES = {"full": (480, 832, 5), "small": (480, 832, 2), "tiny": (32, 32, 1)}
# Minimum seconds a system needs on one H200 at 1024² (build, first run with its compiles, warm and
# timed loops): below this much budget left it is skipped. Lower bounds, not estimates of the mean.
MIN_SECONDS = {
    "full": {"bf16_compile": 30, "dit_fx_bf16": 25, "dit_fx_fp8": 35, "cache_dit_fp8": 20,
             "torchao_fp8_compile": 20, "cache_dit_bf16": 20, "dit_fx_fp8_separate": 35,
             "dit_fx_fp8_calls": 35, "dit_fx_fp8_autotune": 60, "dit_fx_fp8_mod": 35},  # warm-cache H200 times (cold: up to ~2x)
    "small": {k: 20 for k in SYSTEMS},
    "tiny": {k: 1 for k in SYSTEMS},
}
# The same for Wan at 480x832 x 5 latent frames (7800 tokens), 3 timed loops: estimates from the FLUX
# run's step times scaled by the FLOPs (a computed bf16 step ~3.2x FLUX's), lower bounds again.
WAN_MIN_SECONDS = {
    "full": {"bf16_compile": 60, "dit_fx_bf16": 45, "dit_fx_fp8": 55, "cache_dit_fp8": 40,
             "torchao_fp8_compile": 50, "cache_dit_bf16": 40, "dit_fx_fp8_separate": 55, "dit_fx_fp8_calls": 55,
             "dit_fx_fp8_autotune": 90, "dit_fx_fp8_mod": 55},
    "small": {k: 20 for k in SYSTEMS},
    "tiny": {k: 1 for k in SYSTEMS},
}
# Inductor settings torchao's quantize_ changes process wide (recommended_inductor_config_setter).
INDUCTOR_KEYS = ("coordinate_descent_tuning", "coordinate_descent_check_all_directions",
                 "force_fuse_int_mm_with_mul", "fx_graph_cache", "triton.unique_kernel_names")
TUNING_OFF = {"coordinate_descent_tuning": False, "coordinate_descent_check_all_directions": False}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f}s] {msg}", flush=True)


def short(exc: BaseException, n: int = 600) -> str:
    return f"{type(exc).__name__}: {str(exc)[:n]}"


# ------------------------------------------------------------------------------ state helpers


def _get_cfg(path: str) -> Any:
    return functools.reduce(getattr, path.split("."), torch._inductor.config)


def _set_cfg(path: str, value: Any) -> None:
    *head, last = path.split(".")
    setattr(functools.reduce(getattr, head, torch._inductor.config), last, value)


def inductor_snapshot() -> Dict[str, Any]:
    return {k: _get_cfg(k) for k in INDUCTOR_KEYS}


def inductor_restore(snap: Dict[str, Any]) -> None:
    for k, v in snap.items():
        _set_cfg(k, v)


class TorchaoScalePatch:
    """cache-dit's quantization replaces torchao's ``_choose_scale_float8`` (zero scales -> 1)
    process wide; this keeps the original and puts it back."""

    MODULES = ("torchao.quantization.quant_primitives", "torchao.quantization.quantize_.workflows.float8.float8_tensor")

    def __init__(self):
        self.saved: List[Tuple[Any, Dict[str, Any]]] = []
        for name in self.MODULES:
            try:
                mod = importlib.import_module(name)
            except Exception:  # noqa: BLE001
                continue
            self.saved.append((mod, {k: getattr(mod, k) for k in ("_choose_scale_float8", "_cache_dit_zero_scale_patched")
                                     if hasattr(mod, k)}))

    def restore(self) -> bool:
        changed = False
        for mod, attrs in self.saved:
            if hasattr(mod, "_cache_dit_zero_scale_patched") and "_cache_dit_zero_scale_patched" not in attrs:
                delattr(mod, "_cache_dit_zero_scale_patched")
                changed = True
            for k, v in attrs.items():
                if getattr(mod, k, None) is not v:
                    setattr(mod, k, v)
                    changed = True
        return changed


def _is_subclass(t: Any) -> bool:
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    return is_traceable_wrapper_subclass(t)


def _tensor_bytes(t: torch.Tensor, seen: set) -> int:
    if _is_subclass(t):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n), seen) for n in names)
    try:
        st = t.untyped_storage()
        key = (st.data_ptr(), st.nbytes(), str(t.device))
    except Exception:  # noqa: BLE001
        return t.numel() * t.element_size()
    if key in seen:
        return 0
    seen.add(key)
    return st.nbytes()


def weight_stats(model: nn.Module) -> Dict[str, Any]:
    """Bytes of parameters and buffers (subclasses by their inner storages) and the Linears whose
    weight is a torchao tensor."""
    seen: set = set()
    total = sum(_tensor_bytes(p, seen) for p in model.parameters())
    total += sum(_tensor_bytes(b, seen) for b in model.buffers())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    quantized = [m for m in linears if type(m.weight).__module__.split(".")[0] == "torchao"]
    kinds = sorted({type(m.weight).__name__ for m in quantized})
    return dict(weight_bytes=total, weight_gib=round(total / 2**30, 3), linears=len(linears),
                quantized_linears=len(quantized), weight_types=kinds)


@torch.no_grad()
def weights_checksum(model: nn.Module) -> float:
    """A cheap fingerprint of the built weights (before any quantization): equal builds, equal sums."""
    if not hasattr(model, "transformer_blocks"):  # Wan
        parts = [model.proj_out.weight, model.blocks[0].attn1.to_q.weight, model.blocks[-1].ffn.net[-1].weight]
        return float(sum(p.float().sum().item() for p in parts))
    parts = [model.proj_out.weight, model.transformer_blocks[0].attn.to_q.weight]
    if len(model.single_transformer_blocks):
        parts.append(model.single_transformer_blocks[-1].proj_out.weight)
    return float(sum(p.float().sum().item() for p in parts))


def quality(out: torch.Tensor, ref: torch.Tensor) -> Dict[str, Any]:
    """Float64: PSNR with the reference's value range as the peak, relative L1, max |diff|."""
    a, b = out.double(), ref.double()
    mse = float((a - b).square().mean())
    peak = float(b.max() - b.min())
    psnr = math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)
    return dict(psnr_db=(round(psnr, 3) if math.isfinite(psnr) else "inf"),
                rel_l1=round(float((a - b).abs().mean() / b.abs().mean()), 6),
                max_abs_diff=round(float((a - b).abs().max()), 5), finite=bool(torch.isfinite(out).all()))


def fp8_capable(device: torch.device) -> Tuple[bool, str]:
    if device.type != "cuda":
        return False, f"fp8 dynamic quantization needs a CUDA GPU of capability >= 8.9 (device is {device.type}); torchao 0.18 has no CPU kernels for it"
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 9):
        return False, f"fp8 needs CUDA capability >= 8.9, this GPU has {cap[0]}.{cap[1]}"
    return True, ""


def inductor_cache_state() -> Dict[str, Any]:
    """Where Inductor caches compiled code, and whether it held anything when the script started
    (a warm cache makes first calls faster)."""
    try:
        from torch._inductor.runtime.runtime_utils import cache_dir

        path = cache_dir()
    except Exception:  # noqa: BLE001
        path = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    entries = len(os.listdir(path)) if path and os.path.isdir(path) else 0
    return dict(dir=path, entries_at_start=entries, warm=entries > 0)


def dynamo_graphs() -> int:
    try:
        return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001
        return -1


# ------------------------------------------------------------------------------ Wan model and inputs


# ------------------------------------------------------------------------------ the benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.timer = Timer(self.device)
        self.wan = args.model == "wan"
        self.cfg = (WAN_PRESETS if self.wan else PRESETS)[args.preset]
        self.block_lists = WAN_BLOCK_LISTS if self.wan else FLUX_BLOCK_LISTS
        self.min_seconds = WAN_MIN_SECONDS if self.wan else MIN_SECONDS
        self.lock = threading.RLock()
        self.phase = "start"
        self.current: Optional[str] = None
        self.finished = False
        self.deadline = _START + args.budget_s
        self.spare: Optional[nn.Module] = None  # the bf16 model, left as built by the bf16 systems
        self.reference: Optional[torch.Tensor] = None
        self.mask = self.make_mask(args.steps)
        self.cached_steps = [i for i, m in enumerate(self.mask) if not m]

        text = args.text_tokens if args.preset != "tiny" else 8
        self.video: Optional[Dict[str, Any]] = None
        if self.wan:
            self.video = wan_shape(self.cfg, args.height, args.width, args.frames)
            size = [args.height, args.width]
            fixed = wan_inputs(self.video, self.cfg, text, self.device, self.dtype, seed=0)
            latents = fixed.pop("hidden_states")
            self.sampler = flow_sampler(latents, fixed, args.steps, self.device, t_scale=1.0)  # Wan takes t in 0..1000
            self.image_tokens, self.text_tokens = self.video["video_tokens"], text
        else:
            size = args.size if args.preset != "tiny" else 64
            fixed = flux_inputs(size, self.cfg, text, self.device, self.dtype, seed=0)
            latents = fixed.pop("hidden_states")
            fixed.pop("timestep")
            self.sampler = flow_sampler(latents, fixed, args.steps, self.device, t_scale=1.0 / 1000)
            self.image_tokens, self.text_tokens = latents.shape[1], text

        cuda = self.device.type == "cuda"
        self.result: Dict[str, Any] = dict(
            benchmark="quantize", model=args.model, preset=args.preset,
            config={k: (list(v) if isinstance(v, tuple) else v) for k, v in self.cfg.items()},
            size=size, image_tokens=self.image_tokens, text_tokens=text, steps=args.steps,
            mask=self.mask, computed_steps=sum(self.mask), cached_steps=self.cached_steps,
            fn_blocks=args.fn, bn_blocks=0, policy="static", dtype=args.dtype,
            compile=not args.no_compile, baseline_compile=args.baseline_compile,
            inductor_tuning=args.inductor_tuning, rounds=args.rounds, budget_s=args.budget_s,
            order=list(args.systems),
            env=dict(environment(self.device), torchao=_version("torchao"),
                     gpu_mem_free_gib_at_start=(round(torch.cuda.mem_get_info(self.device)[0] / 2**30, 1) if cuda else None)),
            inductor_config_at_start=inductor_snapshot(), inductor_cache=inductor_cache_state(),
            notes=[
                "computed_ms / cached_ms: per-step CUDA events around the model call and the latent update, medians over the timed loops",
                "e2e_s: events around the whole loop, no sync inside it; median of the timed loops, each after a warm loop",
                "quality: float64 over the final latents vs the eager bf16 uncached run of the same loop and inputs; "
                "psnr_db = 10 log10((max(ref) - min(ref))^2 / MSE)",
                "first_call_s includes quantization (dit_fx: at the first call) and the compiles of that call; "
                "first_run_s adds the rest of the first loop (cached-step graphs, CUDA-graph captures)",
                "systems run one after another in one process (each frees its model); first calls after the first "
                "system may hit Inductor/Triton caches that earlier systems filled",
            ],
            systems={}, skipped={})
        self.result["systems_planned"] = {k: SYSTEMS[k] for k in args.systems}
        if self.wan:
            self.result["video"] = dict(self.video)
            self.result["notes"].append(
                "Wan: image_tokens is the video token count (latent frames x (H/16) x (W/16)); size is [height, width] "
                "px; timesteps sigma * 1000 (WanPipeline's scale); parameters bf16 (from_pretrained would keep "
                "time_embedder, norms and scale_shift_table fp32), RoPE tables fp32")

    # ---------------------------------------------------------------- bookkeeping
    @staticmethod
    def make_mask(steps: int) -> List[int]:
        """4 computed, then compute one of three, the last computed (bench_compiled.py's schedule),
        made by ``dit_fx.steps_mask`` from its run lengths."""
        expected = ([1, 1, 1, 1] + [1, 0, 0] * steps)[:steps]
        expected[-1] = 1
        runs: List[List[int]] = [[], []]  # compute_bins, cache_bins
        value, length = expected[0], 0
        for m in expected + [None]:
            if m == value:
                length += 1
                continue
            runs[0 if value == 1 else 1].append(length)
            value, length = m, 1
        mask = dit_fx.steps_mask(compute_bins=runs[0], cache_bins=runs[1])
        if mask != expected:
            raise AssertionError(f"dit_fx.steps_mask gave {mask}, expected {expected}")
        return mask

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        log(f"  [{self.current}] {phase}" if self.current else phase)

    def save(self) -> None:
        with self.lock:
            write_json(self.args.out, self.result)

    def record(self, key: str, rec: Dict[str, Any]) -> None:
        with self.lock:
            self.result["systems"][key] = rec
            self.save()

    def free(self, *, keep_spare: bool = True) -> None:
        if not keep_spare:
            self.spare = None
        gc.collect()
        torch._dynamo.reset()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    def loop(self, fn: Callable) -> Tuple[float, List[float], torch.Tensor]:
        """One end-to-end loop: (seconds, per-step ms, final latents). CUDA: ``Timer.sample``
        (events per step and around the loop, no sync inside); CPU: ``perf_counter`` per step."""
        if self.device.type == "cuda":
            return self.timer.sample(self.sampler, fn)
        sampler = self.sampler
        x = sampler.latents.clone()
        steps = []
        t0 = time.perf_counter()
        for i in range(len(sampler)):
            t = time.perf_counter()
            x = x + sampler.dts[i] * sampler.call(fn, x, i).to(x.dtype)
            steps.append((time.perf_counter() - t) * 1e3)
        return time.perf_counter() - t0, steps, x

    def allocated(self) -> float:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0.0

    # ---------------------------------------------------------------- models
    def build(self) -> nn.Module:
        t = time.perf_counter()
        model = (build_wan if self.wan else build_flux)(self.cfg, self.device, self.dtype, seed=0)
        self.build_s = time.perf_counter() - t
        return model

    def bf16_model(self) -> nn.Module:
        if self.spare is not None:
            model, self.spare = self.spare, None
            self.build_s = 0.0
            return model
        return self.build()

    def run_reference(self) -> None:
        self.current = None
        self.set_phase("reference: eager bf16, no cache")
        model = self.bf16_model()
        t = time.perf_counter()
        with torch.no_grad():
            self.timer.wall(lambda: self.sampler.call(model, self.sampler.latents, 0))  # warm-up call
            total, steps, out = self.loop(model)
        self.reference = out.float()
        self.result["reference"] = dict(system="eager bf16, no cache", e2e_s=round(total, 4),
                                        step_ms=(round(median(steps), 3) if steps else None),
                                        seconds=round(time.perf_counter() - t, 2), build_s=round(self.build_s, 2),
                                        weights_checksum=weights_checksum(model), **weight_stats(model),
                                        finite=bool(torch.isfinite(out).all()))
        self.spare = model
        self.save()

    # ---------------------------------------------------------------- one system
    def run_system(self, key: str, setup: Optional[Callable] = None, carry: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Build, set up (``setup`` or ``setup_<key>``), measure, tear down, free. Never raises."""
        args = self.args
        need = self.min_seconds[args.preset].get(key, 30)
        if key in FP8_SYSTEMS:
            ok, why = fp8_capable(self.device)
            if not ok:
                return self.skip(key, f"unsupported here: {why}")
        if self.remaining() < need:
            return self.skip(key, f"time budget: {self.remaining():.0f} s left of --budget-s {args.budget_s:.0f}, "
                                  f"this system needs at least ~{need} s")
        self.current = key
        rec: Dict[str, Any] = dict(system=SYSTEMS[key], status="running", started_at_s=round(time.perf_counter() - _START, 1))
        rec.update(carry or {})
        self.record(key, rec)
        snap = inductor_snapshot()
        scale_patch = TorchaoScalePatch() if key.startswith("cache_dit") else None
        model = None
        ctx: Dict[str, Any] = {}
        teardown: List[Callable[[], None]] = []
        try:
            if key not in BF16_SYSTEMS:
                self.free(keep_spare=False)  # quantized systems change the weights: the spare bf16 model goes
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            base = self.allocated()
            graphs0 = dynamo_graphs()
            self.set_phase("build")
            if key in BF16_SYSTEMS and self.spare is not None and self.device.type == "cuda":
                base -= weight_stats(self.spare)["weight_bytes"]  # its weights count as this system's
            model = self.bf16_model() if key in BF16_SYSTEMS else self.build()
            rec["build_s"] = round(self.build_s, 2)
            rec["weights_checksum"] = weights_checksum(model)
            self.set_phase("setup")
            t = time.perf_counter()
            ctx["fn"], ctx["before"], ctx["check"] = (setup or getattr(self, f"setup_{key}"))(model, rec, teardown)
            self.timer.sync()
            rec["setup_s"] = round(time.perf_counter() - t, 3)
            self.save()
            self.measure(key, ctx, rec)
            rec["inductor_config"] = inductor_snapshot()  # process wide, as left after the first loop's compiles
            patched = rec.get("dit_fx", {}).get("inductor_options", {})  # dit_fx's per-compile patch wins
            rec["coordinate_descent_tuning_effective"] = bool(patched.get("coordinate_descent_tuning",
                                                                          rec["inductor_config"]["coordinate_descent_tuning"]))
            rec["dynamo_unique_graphs"] = dynamo_graphs() - graphs0 if graphs0 >= 0 else None
            rec.update(weight_stats(model))
            if self.device.type == "cuda":
                rec["memory_allocated_gib"] = round((self.allocated() - base) / 2**30, 3)
                rec["peak_gib"] = round((torch.cuda.max_memory_allocated(self.device) - base) / 2**30, 3)
            rec["status"] = "ok" if rec.get("rounds_timed") else "partial"
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rec["status"] = "error"
            rec["error"] = short(exc)
            rec["error_phase"] = self.phase
        finally:
            ctx.clear()
            for undo in reversed(teardown):
                try:
                    undo()
                except Exception as exc:  # noqa: BLE001
                    rec.setdefault("teardown_errors", []).append(short(exc, 200))
            inductor_restore(snap)
            if scale_patch is not None and scale_patch.restore():
                rec["restored_torchao_choose_scale_float8"] = True
            rec["seconds"] = round(time.perf_counter() - _START - rec["started_at_s"], 1)
            if (key in BF16_SYSTEMS and model is not None and rec.pop("restored_model", False)
                    and rec["status"] in ("ok", "partial") and not rec.get("teardown_errors")):
                self.spare = model  # left as built: the next bf16 system takes it
            rec.pop("restored_model", None)
            model = None
            self.current = None
            self.free()
            self.record(key, rec)
            log(f"  [{key}] {rec['status']}: " + ", ".join(
                f"{k}={rec[k]}" for k in ("seconds", "first_call_s", "first_run_s", "computed_ms", "cached_ms", "e2e_s",
                                          "weight_gib", "psnr_db", "matches_mask", "error") if k in rec))
        return rec

    def skip(self, key: str, reason: str) -> Dict[str, Any]:
        log(f"  [{key}] skipped: {reason}")
        rec = dict(system=SYSTEMS[key], status="skipped", reason=reason)
        with self.lock:
            self.result["systems"][key] = rec
            self.result["skipped"][key] = reason
            self.save()
        return rec

    def measure(self, key: str, ctx: Dict[str, Any], rec: Dict[str, Any]) -> None:
        """The first loop (per-step wall clock), one warm loop, then timed loops."""
        fn, before, check = ctx["fn"], ctx["before"], ctx["check"]
        sampler, timer = self.sampler, self.timer
        with torch.no_grad(), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            self.set_phase("first call + first loop (quantize, capture, compiles)")
            before()
            x = sampler.latents.clone()
            walls = []
            for i in range(len(sampler)):
                t = time.perf_counter()
                x = x + sampler.dts[i] * sampler.call(fn, x, i).to(x.dtype)
                timer.sync()
                walls.append(time.perf_counter() - t)
                if i == 0:
                    rec["first_call_s"] = round(walls[0], 3)
                    self.save()
                    self.set_phase(f"first loop, steps 1..{len(sampler) - 1}")
            rec["first_run_s"] = round(sum(walls), 3)
            rec["first_run_slow_steps_s"] = {str(i): round(w, 2) for i, w in enumerate(walls) if i and w > 0.5}
            self.save()

            self.set_phase("warm loop")
            before()
            warm_s, _, _ = self.loop(fn)
            rec["warm_e2e_s"] = round(warm_s, 4)
            totals, per_step, outs = [], [], []
            for r in range(self.args.rounds):
                if self.remaining() < 3 * warm_s + 5:
                    rec["rounds_note"] = f"stopped after {r} timed loops: time budget"
                    break
                self.set_phase(f"timed loop {r + 1}/{self.args.rounds}")
                before()
                total, steps, out = self.loop(fn)
                totals.append(total)
                per_step.append(steps)
                outs.append(out)
        caught = list(dict.fromkeys(f"{w.category.__name__}: {str(w.message)[:300]}" for w in seen))
        if caught:
            rec["warnings"] = caught[:12]
        rec["rounds_timed"] = len(totals)
        rec["e2e_s"] = round(median(totals), 4) if totals else None
        rec["e2e_runs_s"] = [round(t, 4) for t in totals]
        flat = [(ms, m) for steps in per_step for ms, m in zip(steps, self.mask)]
        if flat:
            if key in CACHE_SYSTEMS:
                rec["computed_ms"] = round(median(ms for ms, m in flat if m), 3)
                rec["cached_ms"] = round(median(ms for ms, m in flat if not m), 3) if self.cached_steps else None
            else:  # no cache: every step computes
                rec["computed_ms"] = round(median(ms for ms, _ in flat), 3)
                rec["cached_ms"] = None
            rec["step_ms"] = round(median(ms for ms, _ in flat), 3)
        final = (outs[-1] if outs else x).float()
        rec.update(quality(final, self.reference))
        if len(outs) > 1:
            rec["timed_loops_identical"] = bool(all(torch.equal(o, outs[0]) for o in outs[1:]))
        if check is not None:
            rec.update(check())
        self.save()

    # ---------------------------------------------------------------- compile helpers
    def compile_baseline(self, model: nn.Module, rec: Dict[str, Any], teardown: List[Callable]) -> Callable:
        if self.args.no_compile:
            rec["compile"] = "none (--no-compile): eager"
            return model
        kw = dict(fullgraph=True)
        if self.args.baseline_compile == "whole":
            rec["compile"] = f"torch.compile(model, {kw})"
            return torch.compile(model, **kw)
        blocks = all_blocks(model, self.block_lists)
        if hasattr(model, "compile_repeated_blocks"):
            model.compile_repeated_blocks(**kw)
            rec["compile"] = f"regional: model.compile_repeated_blocks({kw}) (diffusers)"
        else:
            for blk in blocks:
                blk.compile(**kw)
            rec["compile"] = f"regional: block.compile({kw}) for every block"

        def undo():
            for blk in blocks:
                blk._compiled_call_impl = None
        teardown.append(undo)
        return model

    def dit_fx_config(self, step_source: str = "timestep") -> "dit_fx.DBCacheConfig":
        return dit_fx.DBCacheConfig(fn_blocks=self.args.fn, bn_blocks=0, residual_diff_threshold=0.08,
                                    max_warmup_steps=0, steps_computation_mask=list(self.mask),
                                    steps_computation_policy="static", enable_separate_cfg=False,
                                    num_inference_steps=self.args.steps, step_source=step_source)

    def cache_dit_config(self):
        import cache_dit

        return cache_dit.DBCacheConfig(
            Fn_compute_blocks=self.args.fn, Bn_compute_blocks=0, residual_diff_threshold=0.08,
            max_warmup_steps=0, max_cached_steps=-1, max_continuous_cached_steps=-1, enable_separate_cfg=False,
            num_inference_steps=self.args.steps, steps_computation_mask=list(self.mask),
            steps_computation_policy="static")

    # ---------------------------------------------------------------- systems
    def setup_bf16_compile(self, model, rec, teardown):
        fn = self.compile_baseline(model, rec, teardown)
        rec["quantization"] = "none (bf16)"
        rec["restored_model"] = True
        return fn, lambda: None, None

    def setup_torchao_fp8_compile(self, model, rec, teardown):
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        kw = dict(granularity=PerRow())
        if self.args.inductor_tuning == "off":
            kw["set_inductor_config"] = False
        qcfg = Float8DynamicActivationFloat8WeightConfig(**kw)
        self.set_phase("torchao quantize_ (every Linear)")
        t = time.perf_counter()
        quantize_(model, qcfg)
        self.timer.sync()
        rec["quantize_s"] = round(time.perf_counter() - t, 3)
        rec["quantization"] = f"torchao.quantization.quantize_(model, {qcfg!r}) (default filter: every nn.Linear)"
        fn = self.compile_baseline(model, rec, teardown)
        return fn, lambda: None, None

    def setup_dit_fx_bf16(self, model, rec, teardown, quantize=None, fuse_linears=None, step_source="timestep",
                          inductor=None):
        cfg = self.dit_fx_config(step_source)
        kw: Dict[str, Any] = {} if fuse_linears is None else dict(fuse_linears=fuse_linears)
        if self.args.no_compile:
            kw.update(compile=False, cuda_graphs=False)
        if quantize is not None:
            kw["quantize"] = quantize
            if self.args.inductor_tuning == "off" and not self.args.no_compile and self.device.type == "cuda":
                # dit_fx's quantize runs torchao's quantize_ at the first call, which turns coordinate-descent
                # tuning on process wide; inductor_options patches it off for the region compiles
                # (they need compile=True spelled out; CUDA graphs stay at their default, on when compiled on CUDA)
                kw.update(compile=True, inductor_options=dict(TUNING_OFF))
        if inductor and not self.args.no_compile:
            kw.update(compile=True, inductor_options={**kw.get("inductor_options", {}), **inductor})
        dit_fx.optimize(model, cfg, **kw)
        teardown.append(lambda: dit_fx.disable(model))
        rec["dit_fx_call"] = f"dit_fx.optimize(model, {cfg!r}, {kw})"
        rec["quantization"] = f"dit_fx quantize={quantize!r} (at the first call)" if quantize else "none (bf16)"
        rec["restored_model"] = quantize is None

        def before():
            dit_fx.reset(model)

        def check():
            s = dit_fx.summary(model)
            seen = dit_fx.inspect(model)
            out = dict(cached_steps_seen=list(s.cached_steps), matches_mask=list(s.cached_steps) == self.cached_steps,
                       dit_fx=dict(compile=seen.options.compile, cuda_graphs=seen.options.cuda_graphs,
                                   inductor_options=dict(seen.options.inductor_options),
                                   captures=seen.captures_total, region_compiles=seen.regions.compiles,
                                   region_compile_s=round(sum(seen.regions.compile_seconds), 2),
                                   region_artifacts=seen.regions.artifacts,
                                   graph_captures=seen.cuda_graphs.captures, graph_recaptures=seen.cuda_graphs.recaptures,
                                   graph_replays=seen.cuda_graphs.replays,
                                   direct_call_hits=(seen.direct_calls.hits if seen.direct_calls else None),
                                   fallback_reason=seen.fallback_reason,
                                   capture_reason=(seen.captures[-1].reason if seen.captures else None)))
            if seen.captures and seen.captures[-1].options is not None:
                o = seen.captures[-1].options
                out["dit_fx"]["capture_compile"], out["dit_fx"]["capture_cuda_graphs"] = o.compile, o.cuda_graphs
                out["dit_fx"]["capture_fuse_linears"] = o.fuse_linears
            fused = seen.fused_linears
            out["dit_fx"]["fused_linears"] = fused.fused_linears if fused is not None else 0
            out["dit_fx"]["fused_groups"] = len(fused.groups) if fused is not None else 0
            return out

        return model, before, check

    def setup_dit_fx_fp8(self, model, rec, teardown):
        return self.setup_dit_fx_bf16(model, rec, teardown, quantize="fp8")

    def setup_dit_fx_fp8_separate(self, model, rec, teardown):
        return self.setup_dit_fx_bf16(model, rec, teardown, quantize="fp8", fuse_linears=False)

    def setup_dit_fx_fp8_calls(self, model, rec, teardown):
        return self.setup_dit_fx_bf16(model, rec, teardown, quantize="fp8", step_source="calls")

    def setup_dit_fx_fp8_autotune(self, model, rec, teardown):
        return self.setup_dit_fx_bf16(model, rec, teardown, quantize="fp8", inductor=dict(max_autotune_gemm=True))

    def setup_dit_fx_fp8_mod(self, model, rec, teardown):
        q = dit_fx.QuantizeConfig("fp8", modulation=True)
        return self.setup_dit_fx_bf16(model, rec, teardown, quantize=q)

    def _cache_dit_common(self, model, rec, teardown, quantize_config=None):
        import cache_dit

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        cache_dit.enable_cache(model, cache_config=self.cache_dit_config(), quantize_config=quantize_config)

        def undo():
            cache_dit.disable_cache(model)
            for mod in model.modules():  # cache-dit's patch functors leave instance forwards behind
                if "forward" in mod.__dict__:
                    del mod.forward
        teardown.append(undo)

    def _cache_dit_finish(self, model, rec, teardown):
        import cache_dit

        if self.args.inductor_tuning == "off":
            inductor_restore({**inductor_snapshot(), **TUNING_OFF})
        if self.args.no_compile:
            fn = model
            rec["compile"] = "none (--no-compile)"
        else:
            fn = torch.compile(model)
            rec["compile"] = "torch.compile(model) (after enable_cache, as bench_compiled.py)"

        def before():
            cache_dit.refresh_context(model, num_inference_steps=self.args.steps)

        def check():
            st = cache_dit.summary(model, logging=False)[0]
            cached = sorted(int(s) for s in (st.cached_steps or []))
            return dict(cached_steps_seen=cached, matches_mask=cached == self.cached_steps)

        return fn, before, check

    def setup_cache_dit_bf16(self, model, rec, teardown):
        self._cache_dit_common(model, rec, teardown)
        rec["quantization"] = "none (bf16)"
        rec["restored_model"] = True  # disable_cache + the forward cleanup leave it as built
        return self._cache_dit_finish(model, rec, teardown)

    def setup_cache_dit_fp8(self, model, rec, teardown, one_call: bool = True):
        """cache-dit's own fp8: ``enable_cache(..., quantize_config=...)`` (one call), or, when that
        fails (cache-dit 1.5.3 on a bare transformer: ``'list' object has no attribute
        'transformer'``), ``enable_cache`` then ``cache_dit.quantize(model, quantize_config)``."""
        import cache_dit

        qcfg = cache_dit.QuantizeConfig(quant_type="float8_per_row")
        t = time.perf_counter()
        try:
            if one_call:
                self.set_phase("cache_dit.enable_cache(model, cache_config=..., quantize_config=QuantizeConfig('float8_per_row'))")
                self._cache_dit_common(model, rec, teardown, quantize_config=qcfg)
                how = "enable_cache(model, cache_config=..., quantize_config=qcfg)"
            else:
                self.set_phase("cache_dit.enable_cache(model, cache_config=...), then cache_dit.quantize(model, quantize_config=qcfg)")
                self._cache_dit_common(model, rec, teardown)
                cache_dit.quantize(model, quantize_config=qcfg)
                how = "enable_cache(model, cache_config=...), then cache_dit.quantize(model, quantize_config=qcfg)"
            self.timer.sync()
            if not weight_stats(model)["quantized_linears"]:
                raise RuntimeError("cache-dit's quantization left every Linear unquantized")
        except Exception as exc:
            rec["cache_dit_quantize_error"] = short(exc)
            raise
        rec["quantize_s"] = round(time.perf_counter() - t, 3)
        rec["quantization"] = (f"cache-dit's own fp8: {how} with qcfg = cache_dit.QuantizeConfig(quant_type='float8_per_row'): "
                               f"regional (the model's repeated blocks), exclude_layers={qcfg.exclude_layers} "
                               f"(substrings), per-row fp8, KernelPreference.TORCH")
        return self._cache_dit_finish(model, rec, teardown)

    def setup_cache_dit_fp8_quantize_api(self, model, rec, teardown):
        return self.setup_cache_dit_fp8(model, rec, teardown, one_call=False)

    def setup_cache_dit_fp8_fallback(self, model, rec, teardown):
        """torchao per-row fp8 on the blocks' Linears, applied here, then cache-dit's cache alone."""
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        kw = dict(granularity=PerRow())
        if self.args.inductor_tuning == "off":
            kw["set_inductor_config"] = False
        qcfg = Float8DynamicActivationFloat8WeightConfig(**kw)
        prefixes = tuple(f"{name}." for name in self.block_lists)
        self.set_phase("fallback: torchao quantize_ on the blocks' Linears, then cache_dit.enable_cache")
        t = time.perf_counter()
        quantize_(model, qcfg, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn.startswith(prefixes))
        self.timer.sync()
        rec["quantize_s"] = round(time.perf_counter() - t, 3)
        rec["quantization"] = (f"FALLBACK (cache-dit's fp8 paths failed, see earlier_attempts): torchao "
                               f"quantize_(model, {qcfg!r}) on the blocks' Linears by this benchmark, then "
                               f"cache_dit.enable_cache without quantize_config")
        self._cache_dit_common(model, rec, teardown)
        return self._cache_dit_finish(model, rec, teardown)

    # ---------------------------------------------------------------- whole run
    def run(self) -> None:
        with torch.no_grad():
            try:
                self.run_reference()
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                self.result["reference_error"] = short(exc)
                log(f"reference failed: {short(exc)}; nothing can be compared")
                self.finish()
                return
            for key in self.args.systems:
                rec = self.run_system(key)
                if key != "cache_dit_fp8":
                    continue
                attempts = []
                for name, setup in (("enable_cache then cache_dit.quantize", self.setup_cache_dit_fp8_quantize_api),
                                    ("torchao quantize_ by this benchmark + enable_cache", self.setup_cache_dit_fp8_fallback)):
                    failed_early = rec.get("status") == "error" and (
                        "cache_dit_quantize_error" in rec or rec.get("error_phase", "").startswith("first call"))
                    if not failed_early:
                        break
                    attempts.append({k: rec[k] for k in ("quantization", "error", "error_phase", "cache_dit_quantize_error", "seconds")
                                     if k in rec})
                    log(f"  [cache_dit_fp8] that fp8 path failed; next: {name}")
                    rec = self.run_system(key, setup=setup, carry=dict(earlier_attempts=list(attempts)))
        self.finish()

    # ---------------------------------------------------------------- summary
    def ratios(self, res: Dict[str, Any]) -> Dict[str, Any]:
        s = res["systems"]

        def get(k, f):
            v = s.get(k, {}).get(f)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        def ratio(a, fa, b, fb):
            x, y = get(a, fa), get(b, fb)
            return round(x / y, 4) if x is not None and y else None

        r = dict(
            dit_fx_fp8_over_bf16_computed_step=ratio("dit_fx_fp8", "computed_ms", "dit_fx_bf16", "computed_ms"),
            dit_fx_fp8_over_bf16_cached_step=ratio("dit_fx_fp8", "cached_ms", "dit_fx_bf16", "cached_ms"),
            dit_fx_fp8_over_bf16_e2e=ratio("dit_fx_fp8", "e2e_s", "dit_fx_bf16", "e2e_s"),
            dit_fx_fp8_over_cache_dit_fp8_e2e=ratio("dit_fx_fp8", "e2e_s", "cache_dit_fp8", "e2e_s"),
            dit_fx_fp8_over_cache_dit_fp8_computed_step=ratio("dit_fx_fp8", "computed_ms", "cache_dit_fp8", "computed_ms"),
            dit_fx_fp8_over_cache_dit_fp8_cached_step=ratio("dit_fx_fp8", "cached_ms", "cache_dit_fp8", "cached_ms"),
            torchao_fp8_over_bf16_compile_step=ratio("torchao_fp8_compile", "computed_ms", "bf16_compile", "computed_ms"),
            dit_fx_bf16_over_bf16_compile_computed_step=ratio("dit_fx_bf16", "computed_ms", "bf16_compile", "computed_ms"),
            dit_fx_bf16_over_cache_dit_bf16_e2e=ratio("dit_fx_bf16", "e2e_s", "cache_dit_bf16", "e2e_s"),
            dit_fx_bf16_over_cache_dit_bf16_cached_step=ratio("dit_fx_bf16", "cached_ms", "cache_dit_bf16", "cached_ms"),
            dit_fx_fp8_over_bf16_weight_bytes=ratio("dit_fx_fp8", "weight_bytes", "dit_fx_bf16", "weight_bytes"),
            dit_fx_fp8_over_separate_computed_step=ratio("dit_fx_fp8", "computed_ms", "dit_fx_fp8_separate", "computed_ms"),
            dit_fx_fp8_over_separate_e2e=ratio("dit_fx_fp8", "e2e_s", "dit_fx_fp8_separate", "e2e_s"),
            **{f"{k}_over_cache_dit_fp8_e2e": ratio(k, "e2e_s", "cache_dit_fp8", "e2e_s") for k in EXPERIMENTS},
            **{f"{k}_over_dit_fx_fp8_e2e": ratio(k, "e2e_s", "dit_fx_fp8", "e2e_s") for k in EXPERIMENTS},
            **{f"{k}_over_dit_fx_fp8_computed_step": ratio(k, "computed_ms", "dit_fx_fp8", "computed_ms") for k in EXPERIMENTS},
        )
        first = get("dit_fx_fp8", "first_call_s")
        targets = dict(
            dit_fx_fp8_computed_step_le_0_75x_bf16=(r["dit_fx_fp8_over_bf16_computed_step"] <= 0.75
                                                    if r["dit_fx_fp8_over_bf16_computed_step"] is not None else None),
            dit_fx_fp8_e2e_le_0_97x_cache_dit_fp8=(r["dit_fx_fp8_over_cache_dit_fp8_e2e"] <= 0.97
                                                   if r["dit_fx_fp8_over_cache_dit_fp8_e2e"] is not None else None),
            dit_fx_fp8_first_call_le_60s=(first <= 60 if first is not None else None),
        )
        return dict(ratios=r, targets=targets)

    @staticmethod
    def model_title(res: Dict[str, Any], plot: bool = False) -> str:
        c = res["config"]
        if res.get("model") == "wan":
            v = res["video"]
            return (f"Wan 2.1 14B-sized {res['preset']} ({c['num_layers']} blocks, {c['num_attention_heads']} x "
                    f"{c['attention_head_dim']}) {v['height_px']}x{v['width_px']} px x {v['latent_frames']} latent frame{'s' * (v['latent_frames'] != 1)} "
                    f"({res['image_tokens']} video + {res['text_tokens']} text tokens)")
        if plot:
            return f"FLUX {res['preset']} ({c['num_layers']} + {c['num_single_layers']} blocks) {res['size']}²"
        return (f"FLUX ({res['preset']}: {c['num_layers']} + {c['num_single_layers']} blocks) "
                f"{res['size']}² ({res['image_tokens']} + {res['text_tokens']} tokens)")

    def markdown(self, res: Dict[str, Any]) -> str:
        env = res["env"]
        lines = [f"{self.model_title(res)}, {res['steps']} steps "
                 f"({res['computed_steps']} computed, static mask, F{res['fn_blocks']}B0), {env.get('gpu', 'cpu')}, "
                 f"torch {env['torch']}, torchao {env.get('torchao')}, cache-dit {env.get('cache_dit')}",
                 "",
                 f"no-cache rows: {res['baseline_compile']} torch.compile; Inductor coordinate-descent tuning: "
                 f"{res['inductor_tuning']}; compile: {res['compile']}; Inductor cache warm at start: "
                 f"{res.get('inductor_cache', {}).get('warm')}; {res.get('total_s')} s"
                 + ("; PARTIAL (time budget)" if res.get("partial") else ""),
                 "",
                 "| system | status | first call s | first loop s | computed ms | cached ms | e2e s | weights GiB | PSNR dB | rel L1 | mask ok |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        ref = res.get("reference")
        if ref:
            lines.append(f"| eager bf16, no cache (reference) | ok | | | {ref.get('step_ms') or ''} | | {ref['e2e_s']} | "
                         f"{ref['weight_gib']} | ref | ref | |")
        for key in res["order"]:
            r = res["systems"].get(key)
            if r is None:
                lines.append(f"| {SYSTEMS[key]} | not run | | | | | | | | | |")
                continue
            status = r.get("status", "")
            if status in ("skipped", "error", "cut off"):
                why = (r.get("reason") or r.get("error") or "")[:90].replace("|", "/")
                status = f"{status}: {why}"
            def g(k):
                v = r.get(k)
                return "" if v is None else v
            lines.append(f"| {SYSTEMS[key]} | {status} | {g('first_call_s')} | {g('first_run_s')} | {g('computed_ms')} | "
                         f"{g('cached_ms')} | {g('e2e_s')} | {g('weight_gib')} | {g('psnr_db')} | {g('rel_l1')} | "
                         f"{g('matches_mask')} |")
        rt = res.get("ratios", {})
        if rt:
            lines += ["", "| ratio | value |", "|---|---:|"]
            lines += [f"| {k} | {'' if v is None else v} |" for k, v in rt.items()]
            lines += ["", "| target | met |", "|---|---|"]
            lines += [f"| {k} | {'' if v is None else v} |" for k, v in res.get("targets", {}).items()]
        return "\n".join(lines)

    def plot(self, res: Dict[str, Any], path: str) -> Optional[str]:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except Exception as exc:  # noqa: BLE001
            return f"no plot: {short(exc, 200)}"
        keys = list(res["order"])
        labels = [SYSTEMS[k].replace(" + ", "\n+ ").replace(", no cache", "\nno cache") for k in keys]
        palette = {"bf16_compile": "#9e9e9e", "torchao_fp8_compile": "#1f77b4", "cache_dit_fp8": "#2ca02c",
                   "cache_dit_bf16": "#98df8a", "dit_fx_bf16": "#ff9896", "dit_fx_fp8": "#d62728"}
        colors = [palette.get(k, "#7f7f7f") for k in keys]
        panels = [("e2e_s", "end to end, s (median)"), ("computed_ms", "computed step, ms"), ("cached_ms", "cached step, ms"),
                  ("first_call_s", "first call, s (quantize + compile)"), ("weight_gib", "weights, GiB"),
                  ("psnr_db", "PSNR vs eager bf16 uncached, dB")]
        fig, axes = plt.subplots(2, 3, figsize=(18, 9))
        for ax, (field, title) in zip(axes.flat, panels):
            vals, texts = [], []
            for k in keys:
                r = res["systems"].get(k, {})
                v = r.get(field)
                num = isinstance(v, (int, float)) and not isinstance(v, bool)
                vals.append(float(v) if num else 0.0)
                texts.append(f"{v:.4g}" if num else (r.get("status", "not run") if r.get("status") not in ("ok", "partial") else "-"))
            bars = ax.bar(range(len(keys)), vals, color=colors)
            for bar, txt in zip(bars, texts):
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), txt, ha="center", va="bottom", fontsize=8)
            ax.set_xticks(range(len(keys)))
            ax.set_xticklabels(labels, fontsize=7)
            ax.set_title(title, fontsize=10)
        env = res["env"]
        fig.suptitle(f"{self.model_title(res, plot=True)}, {res['steps']} steps ({res['computed_steps']} computed, static mask, F{res['fn_blocks']}B0), "
                     f"{env.get('gpu', 'cpu')}, torch {env['torch']}, torchao {env.get('torchao')}, cache-dit {env.get('cache_dit')}"
                     + ("  [PARTIAL: time budget]" if res.get("partial") else ""), fontsize=10)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return None

    def snapshot(self) -> Dict[str, Any]:
        """A copy of the result (the main thread may be changing a record while the watchdog reads)."""
        for _ in range(20):
            try:
                return copy.deepcopy(self.result)
            except RuntimeError:
                time.sleep(0.05)
        return json.loads(json.dumps(self.result, default=str))

    def finish(self, partial: bool = False) -> None:
        with self.lock:
            if self.finished:
                return
            self.finished = True
            res = self.snapshot()
            res["partial"] = partial
            res["total_s"] = round(time.perf_counter() - _START, 1)
            res.update(self.ratios(res))
            res["markdown"] = self.markdown(res)
            if self.args.plot:
                err = self.plot(res, self.args.plot)
                res["plot"] = self.args.plot if err is None else err
            write_json(self.args.out, res)
            self.result = res
        print(res["markdown"], flush=True)
        log(f"wrote {self.args.out}" + (f" and {self.args.plot}" if self.args.plot else ""))

    def on_deadline(self) -> None:
        """The watchdog: the budget is spent. Record the system in flight, write everything, exit."""
        if self.finished:
            return
        try:
            key, phase = self.current, self.phase
            log(f"BUDGET: --budget-s {self.args.budget_s:.0f} reached during {key or '-'}: {phase}; writing and exiting")
            with self.lock:
                if key is not None:
                    rec = self.result["systems"].setdefault(key, dict(system=SYSTEMS[key]))
                    rec["status"] = "cut off"
                    rec["error"] = f"--budget-s {self.args.budget_s:.0f} reached during '{phase}'"
                    rec["seconds"] = round(time.perf_counter() - _START - rec.get("started_at_s", 0), 1)
                for k in self.args.systems:
                    if k not in self.result["systems"]:
                        self.result["systems"][k] = dict(system=SYSTEMS[k], status="skipped", reason="time budget: not started")
                        self.result["skipped"][k] = "time budget: not started"
            self.finish(partial=True)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except Exception:  # noqa: BLE001
        return None


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["flux", "wan"], default="flux",
                    help="flux: FLUX.1-dev-sized image transformer; wan: Wan-2.1-14B-sized video transformer")
    ap.add_argument("--preset", choices=list(PRESETS), default="full",
                    help="full: FLUX.1-dev-sized (19 + 38 blocks) / Wan 2.1 14B (40 blocks); small: FLUX widths, "
                         "5 + 10 blocks / Wan widths, 10 blocks; tiny: CPU smoke")
    ap.add_argument("--systems", nargs="+", default=list(DEFAULT_ORDER), choices=list(SYSTEMS),
                    help="systems to run, in this order")
    ap.add_argument("--size", type=int, default=None, help="FLUX: pixels (image tokens = (size/16)^2), default 1024; tiny: 64")
    ap.add_argument("--height", type=int, default=None, help="Wan: video height px, a multiple of 16 (default 480; tiny: 32)")
    ap.add_argument("--width", type=int, default=None, help="Wan: video width px, a multiple of 16 (default 832; tiny: 32)")
    ap.add_argument("--frames", type=int, default=None,
                    help="Wan: latent frames F (4(F-1)+1 video frames; tokens F x H/16 x W/16): default full 5 "
                         "(7800 tokens at 480x832), small 2, tiny 1")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--fn", type=int, default=None, help="Fn compute blocks (default 8; small 2; tiny 1)")
    ap.add_argument("--rounds", type=int, default=None, help="timed loops per system after one warm loop (default 5; wan: 3)")
    ap.add_argument("--baseline-compile", choices=["regional", "whole"], default="regional",
                    help="torch.compile of the no-cache rows: diffusers' compile_repeated_blocks or whole graph")
    ap.add_argument("--inductor-tuning", choices=["library", "off"], default="off",
                    help="off (default): Inductor's coordinate-descent tuning off for every system (torch's default); "
                         "library: what each library sets: torchao's quantize_ (also inside dit_fx and cache-dit) turns it "
                         "on process wide, and the fp8 first calls then take minutes each (dit_fx fp8 at --preset small: "
                         "over 266 s on an H200)")
    ap.add_argument("--no-compile", action="store_true", help="no torch.compile / dit_fx eager lowering (CPU smoke run)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds from the script's start; then it writes and exits (default 520; wan: 500)")
    ap.add_argument("--device", default=None, help="default cuda (tiny: cpu)")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None, help="default bf16 (tiny on cpu: fp32)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny on cpu: 2)")
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/quantize_h200_flux_1024.json; "
                                                  "wan: benchmarks/results/quantize_h200_wan.json)")
    ap.add_argument("--plot", default=None, help="PNG (default: --out with .png); '' for none")
    a = ap.parse_args(argv)
    wan = a.model == "wan"
    if wan:
        if a.size is not None:
            ap.error("--size is FLUX's; for --model wan use --height / --width / --frames")
        h, w, f = WAN_SHAPES[a.preset]
        a.height, a.width, a.frames = a.height or h, a.width or w, a.frames or f
        if a.height % 16 or a.width % 16 or a.frames < 1:
            ap.error("--height / --width: multiples of 16 (VAE /8, patch 2); --frames >= 1")
    else:
        if a.height is not None or a.width is not None or a.frames is not None:
            ap.error("--height / --width / --frames are Wan's (--model wan); FLUX takes --size")
        a.size = 1024 if a.size is None else a.size
    if a.rounds is None:
        a.rounds = 3 if wan else 5
    if a.budget_s is None:
        a.budget_s = 500.0 if wan else 520.0
    if a.out is None:
        a.out = os.path.join(RESULTS, "quantize_h200_wan.json" if wan else "quantize_h200_flux_1024.json")
    a.device = a.device or ("cpu" if a.preset == "tiny" else "cuda")
    a.dtype = a.dtype or ("fp32" if a.device == "cpu" else "bf16")
    if a.fn is None:
        a.fn = {"full": 8, "small": 2, "tiny": 1}[a.preset]
    if a.plot is None:
        a.plot = os.path.splitext(a.out)[0] + ".png"
    if a.device == "cpu":
        torch.set_num_threads(a.threads or 2)
    elif a.threads:
        torch.set_num_threads(a.threads)
    if len(set(a.systems)) != len(a.systems):
        ap.error("--systems: each system once")
    return a


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cpu" and not args.no_compile:
        log("note: compiling on the CPU is slow; --no-compile for a smoke run")
    bench = Bench(args)
    log(f"quantize benchmark: {'wan, ' if args.model == 'wan' else ''}preset {args.preset}, {args.device} {args.dtype}, systems {args.systems}, "
        f"budget {args.budget_s:.0f} s ({bench.remaining():.0f} s left), mask {bench.mask}")
    watchdog = threading.Timer(max(bench.remaining(), 0.0), bench.on_deadline)
    watchdog.daemon = True
    watchdog.start()
    try:
        bench.run()
    finally:
        watchdog.cancel()


if __name__ == "__main__":
    main()
