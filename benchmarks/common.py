"""What the benchmark scripts share: model builders, inputs, the sampler loop, timers, JSON output.

Run a script as ``python benchmarks/<script>.py``: Python puts ``benchmarks/`` on ``sys.path`` and
this module puts the repository root there too, so ``import dit_fx`` finds the checkout. Only
``dit_fx``'s public API (the names ``dit_fx/__init__.py`` exports) is used by the benchmarks.

- Models (random weights from diffusers configs, no download): ``build_flux`` (FLUX.1-dev-sized
  ``FLUX_DEV_CONFIG``, 11.9 B parameters, every parameter scaled by 0.5 so activations stay
  finite; ``TINY_FLUX_CONFIG`` for CPU smoke runs), ``build_pixart`` (``PIXART_SIGMA_CONFIG``,
  611 M; ``TINY_PIXART_CONFIG``), ``truncated_blocks`` (the "ideal": the same model with only its
  first Fn blocks).
- Inputs: ``flux_inputs`` (pipeline-shaped: (size/16)^2 image tokens), ``pixart_inputs``.
- The sampler loop: ``Sampler`` (``x += dt_i * model(x, t_i)`` over fixed timesteps, optional
  per-step CUDA events), ``flow_sampler`` (flow-matching Euler steps from sigma 1 to 0),
  ``profile_sampler`` (the step profiles' fixed-dt loop), ``flux_sampler_setup`` (the FLUX.1-dev-sized model with its latents and fixed inputs).
- Timers: ``Timer`` (CUDA events on a GPU, ``perf_counter`` on the CPU), ``median``,
  ``percentile``, ``interleaved_rounds`` (A/B rounds in one process, with paired ratios).
- Output: ``environment`` (host, Python, torch, diffusers, cache-dit, GPU, git HEAD),
  ``write_json`` (atomic, creates the folder).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

# cache-dit logs every enable/disable at INFO; keep logs readable (a script may override this).
os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")

import torch  # noqa: E402
from torch import nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """A line with the seconds since the script started."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# ----------------------------------------------------------------------------------------- models

FLUX_DEV_CONFIG: Dict[str, Any] = dict(
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    in_channels=64,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)

TINY_FLUX_CONFIG: Dict[str, Any] = dict(
    patch_size=1,
    in_channels=4,
    num_layers=2,
    num_single_layers=3,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    guidance_embeds=True,
    axes_dims_rope=[4, 4, 8],
)

PIXART_SIGMA_CONFIG: Dict[str, Any] = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
    cross_attention_dim=1152, caption_channels=4096, sample_size=64, patch_size=2,
    norm_type="ada_norm_single", use_additional_conditions=False,
)
TINY_PIXART_CONFIG: Dict[str, Any] = dict(
    PIXART_SIGMA_CONFIG, num_attention_heads=2, attention_head_dim=8, num_layers=4, cross_attention_dim=16,
    caption_channels=32, sample_size=8,
)

FLUX_BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")
PIXART_BLOCK_LISTS = ("transformer_blocks",)


def build_on_device(cls, cfg: Dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0,
                    cast_buffers: bool = True) -> nn.Module:
    """``cls(**cfg)`` built directly on ``device`` with ``dtype`` parameters (no fp32 CPU copy of
    billions of parameters), eval mode, no grad, every parameter scaled by 0.5. ``cast_buffers``
    False keeps buffers as built (Wan's RoPE tables, computed in float64 at construction, stay fp32)."""
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    try:
        try:
            torch.set_default_dtype(dtype)
        except (TypeError, RuntimeError) as e:
            # fallback: fp32 on the device, converted parameter by parameter below
            log(f"set_default_dtype({dtype}) failed ({e}); building in {prev} and casting")
        with torch.device(device):
            model = cls(**cfg)
    finally:
        torch.set_default_dtype(prev)
    model.to(device=device, dtype=dtype) if cast_buffers else model.to(device)
    model.eval().requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype != dtype:  # no-op unless something ignored the default dtype
                p.data = p.data.to(dtype)
            p.mul_(0.5)
    return model


def build_flux(cfg: Dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """A ``FluxTransformer2DModel`` built by ``build_on_device``."""
    from diffusers import FluxTransformer2DModel

    return build_on_device(FluxTransformer2DModel, cfg, device, dtype, seed)


def build_pixart(cfg: Dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """A ``PixArtTransformer2DModel`` on ``device`` in ``dtype`` (default initialization, unscaled)."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    with torch.device(device):
        return PixArtTransformer2DModel(**cfg).to(dtype).eval().requires_grad_(False)


# Wan 2.1 T2V 14B: diffusers' WanTransformer3DModel defaults, spelled out (quantize.py, parallel_scaling.py).
WAN_14B_CONFIG: Dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
)

def build_wan(cfg: Dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """A ``WanTransformer3DModel`` built like ``common.build_flux`` (``common.build_on_device``),
    its RoPE tables (buffers, computed in float64 at construction) left fp32."""
    from diffusers import WanTransformer3DModel

    return build_on_device(WanTransformer3DModel, cfg, device, dtype, seed, cast_buffers=False)


def wan_shape(cfg: Dict[str, Any], height: int, width: int, frames: int) -> Dict[str, Any]:
    """Latent shape and token counts of a ``height`` x ``width`` px video with ``frames`` latent frames."""
    pt, ph, pw = cfg["patch_size"]
    lat = [1, cfg["in_channels"], frames, height // 8, width // 8]
    per_frame = (lat[3] // ph) * (lat[4] // pw)
    return dict(height_px=height, width_px=width, latent_frames=frames, video_frames=4 * (frames - 1) + 1,
                latent_shape=lat, patch_size=list(cfg["patch_size"]), tokens_per_latent_frame=per_frame,
                video_tokens=(frames // pt) * per_frame)


def wan_inputs(shape: Dict[str, Any], cfg: Dict[str, Any], text_tokens: int, device: torch.device,
               dtype: torch.dtype, seed: int = 0) -> Dict[str, Any]:
    """``WanPipeline``-shaped inputs but the timestep: latents [1, 16, F, H/8, W/8], text
    embeddings [1, text_tokens, text_dim] (random, like the FLUX inputs)."""
    g = torch.Generator(device="cpu").manual_seed(seed + shape["height_px"] * 7 + shape["width_px"])

    def rnd(*s):
        return torch.randn(*s, generator=g).to(device=device, dtype=dtype)

    return dict(hidden_states=rnd(*shape["latent_shape"]), encoder_hidden_states=rnd(1, text_tokens, cfg["text_dim"]),
                return_dict=False)


def flux_inputs(size: int, cfg: Dict[str, Any], text_tokens: int, device: torch.device,
                dtype: torch.dtype, seed: int = 0) -> Dict[str, Any]:
    """FLUX pipeline-shaped inputs: VAE /8 then 2x2 packing -> (size/16)^2 image tokens."""
    h = w = size // 16
    n = h * w
    g = torch.Generator(device="cpu").manual_seed(seed + size)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    return dict(
        hidden_states=rnd(1, n, cfg["in_channels"]),
        encoder_hidden_states=rnd(1, text_tokens, cfg["joint_attention_dim"]),
        pooled_projections=rnd(1, cfg["pooled_projection_dim"]),
        timestep=torch.full((1,), 0.5, device=device, dtype=dtype),  # pipeline passes t / 1000
        img_ids=img_ids.reshape(n, 3).to(device=device, dtype=dtype),
        txt_ids=torch.zeros(text_tokens, 3, device=device, dtype=dtype),
        guidance=torch.full((1,), 3.5, device=device, dtype=torch.float32),
        return_dict=False,
    )


def pixart_inputs(side: int, cfg: Dict[str, Any], text_tokens: int, device: torch.device,
                  dtype: torch.dtype, seed: int = 1) -> Dict[str, Any]:
    """PixArt inputs: latents (1, C, side, side), caption embeddings, no extra conditions."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, cfg["in_channels"], side, side, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, text_tokens, cfg["caption_channels"], generator=g).to(device, dtype),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        return_dict=False,
    )


def first_tensor(out: Any) -> torch.Tensor:
    """The prediction in a transformer's output (tensor, tuple or ``.sample``)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    if hasattr(out, "sample"):
        return out.sample
    raise TypeError(f"cannot find output tensor in {type(out).__name__}")


def block_list_names(model: nn.Module) -> Tuple[str, ...]:
    return tuple(name for name in FLUX_BLOCK_LISTS if isinstance(getattr(model, name, None), nn.ModuleList))


def all_blocks(model: nn.Module, lists: Optional[Sequence[str]] = None) -> List[nn.Module]:
    return [blk for name in (lists or block_list_names(model)) for blk in getattr(model, name)]


@contextlib.contextmanager
def truncated_blocks(model: nn.Module, keep: int, lists: Optional[Sequence[str]] = None):
    """Temporarily keep only the first ``keep`` blocks, counted over ``lists`` in order (FLUX:
    ``keep`` <= 19 keeps that many double blocks and no single block). The same block objects,
    no copy; always restored. This is the "ideal" cached step: Fn blocks and nothing else."""
    lists = tuple(lists or block_list_names(model))
    saved = {name: getattr(model, name) for name in lists}
    try:
        left = keep
        for name in lists:
            blocks = list(saved[name])
            setattr(model, name, nn.ModuleList(blocks[:left]))
            left = max(0, left - len(blocks))
        yield model
    finally:
        for name, blocks in saved.items():
            setattr(model, name, blocks)


# ---------------------------------------------------------------------------------------- sampler


class Sampler:
    """The denoising loop every system runs: ``x = x + dt_i * model(x, t_i)`` over fixed
    timesteps, the other inputs fixed across steps, no sync inside the loop.

    ``events``: a list of (start, end) CUDA event pairs, one per step run, recorded around each
    step (model call + update). ``out_channels``: keep only the first channels of a 4-D
    prediction (PixArt predicts the learned sigma in the other half)."""

    def __init__(self, latents: torch.Tensor, fixed: Dict[str, Any], timesteps: Sequence[torch.Tensor],
                 dts: Sequence[float], out_channels: Optional[int] = None):
        assert len(timesteps) == len(dts)
        self.latents, self.fixed = latents, fixed
        self.timesteps, self.dts = list(timesteps), list(dts)
        self.out_channels = out_channels

    def __len__(self) -> int:
        return len(self.timesteps)

    def call(self, fn: Callable, x: torch.Tensor, i: int) -> torch.Tensor:
        """The prediction of step ``i`` at latents ``x``."""
        out = first_tensor(fn(hidden_states=x, timestep=self.timesteps[i], **self.fixed))
        if self.out_channels is not None and out.dim() == 4:
            out = out[:, : self.out_channels]
        return out

    def run(self, fn: Callable, x: Optional[torch.Tensor] = None, start: int = 0, stop: Optional[int] = None,
            events: Optional[List] = None) -> torch.Tensor:
        """Steps ``start..stop-1`` from ``x`` (default: the starting latents); returns the latents."""
        x = (self.latents if x is None else x).clone()
        for k, i in enumerate(range(start, len(self) if stop is None else stop)):
            if events is not None:
                events[k][0].record()
            x = x + self.dts[i] * self.call(fn, x, i).to(x.dtype)
            if events is not None:
                events[k][1].record()
        return x


def flow_sampler(latents: torch.Tensor, fixed: Dict[str, Any], steps: int, device: torch.device,
                 t_scale: float = 1.0, out_channels: Optional[int] = None) -> Sampler:
    """Flow-matching Euler steps from sigma 1 to 0: timesteps ``sigma * 1000 * t_scale`` (fp32,
    distinct), ``dt = sigma_{i+1} - sigma_i``. FLUX takes ``t / 1000`` (``t_scale=1/1000``)."""
    sigmas = [1.0 - i / steps for i in range(steps + 1)]
    timesteps = [torch.full((1,), s * 1000 * t_scale, device=device) for s in sigmas[:-1]]
    dts = [sigmas[i + 1] - sigmas[i] for i in range(steps)]
    return Sampler(latents, fixed, timesteps, dts, out_channels)


def profile_sampler(latents: torch.Tensor, fixed: Dict[str, Any], steps: int, device: torch.device,
                    dt: float = 0.01) -> Sampler:
    """The loop of the step profiles (``profile_compiled_step.py``, ``inductor_modes.py``):
    timesteps ``1 - i/steps`` (fp32), a fixed ``latents += dt * prediction``."""
    timesteps = [torch.full((1,), 1.0 - i / steps, device=device) for i in range(steps)]
    return Sampler(latents, fixed, timesteps, [dt] * steps)


def flux_sampler_setup(size: int, device: torch.device, dtype: torch.dtype = torch.bfloat16, text_tokens: int = 512):
    """The FLUX.1-dev-sized model, its starting latents and the inputs fixed across steps."""
    model = build_flux(FLUX_DEV_CONFIG, device, dtype, seed=0)
    fixed = flux_inputs(size, FLUX_DEV_CONFIG, text_tokens, device, dtype, seed=0)
    latents = fixed.pop("hidden_states")
    fixed.pop("timestep")
    return model, latents, fixed


# ----------------------------------------------------------------------------------------- timing


def median(xs: Iterable[float]) -> Optional[float]:
    xs = list(xs)
    return statistics.median(xs) if xs else None


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (``q`` in 0..1)."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Timer:
    """CUDA events on a GPU (a synchronize after each timed call), ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def wall(self, fn: Callable) -> float:
        """Seconds of ``fn()``, synchronized before and after."""
        self.sync()
        t = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t

    def call(self, fn: Callable) -> Tuple[float, float, Any]:
        """One timed call: (ms by the device's timer, wall-clock ms, output)."""
        if not self.cuda:
            t0 = time.perf_counter()
            out = fn()
            ms = (time.perf_counter() - t0) * 1e3
            return ms, ms, out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end), (time.perf_counter() - t0) * 1e3, out

    def median_ms(self, fn: Callable, reps: int = 30, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        return statistics.median(self.call(fn)[0] for _ in range(reps))

    def step_events(self, n: int) -> Optional[List[Tuple[Any, Any]]]:
        """``n`` (start, end) CUDA event pairs for ``Sampler.run`` (None on the CPU)."""
        if not self.cuda:
            return None
        return [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]

    def sample(self, sampler: Sampler, fn: Callable) -> Tuple[float, List[float], torch.Tensor]:
        """One end-to-end run: (total seconds, per-step ms (CUDA only, else []), final latents).
        On a GPU the total is timed with events around the whole loop (no sync inside it)."""
        if not self.cuda:
            t = time.perf_counter()
            out = sampler.run(fn)
            return time.perf_counter() - t, [], out
        events = self.step_events(len(sampler))
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.sync()
        start.record()
        out = sampler.run(fn, events=events)
        end.record()
        self.sync()
        return start.elapsed_time(end) / 1000, [a.elapsed_time(b) for a, b in events], out


@dataclass
class Rounds:
    """Results of A/B rounds run alternately in one process: ``a[i]`` and ``b[i]`` are round i's."""

    a: List[Any]
    b: List[Any]
    key: Optional[Callable[[Any], float]] = None

    def values(self, side: List[Any]) -> List[float]:
        return [self.key(r) if self.key else r for r in side]

    @property
    def ratios(self) -> List[float]:
        """Paired ratios b/a, one per round: drift and host noise hit both sides of a pair alike."""
        return [vb / va for va, vb in zip(self.values(self.a), self.values(self.b))]

    @property
    def median_a(self) -> float:
        return statistics.median(self.values(self.a))

    @property
    def median_b(self) -> float:
        return statistics.median(self.values(self.b))

    @property
    def median_ratio(self) -> float:
        """Median of the paired ratios b/a."""
        return statistics.median(self.ratios)

    @property
    def ratio_of_medians(self) -> float:
        return self.median_b / self.median_a

    def as_dict(self, nd: int = 4) -> Dict[str, Any]:
        return dict(a=[round(v, nd) for v in self.values(self.a)], b=[round(v, nd) for v in self.values(self.b)],
                    ratios_b_over_a=[round(r, nd) for r in self.ratios], median_a=round(self.median_a, nd),
                    median_b=round(self.median_b, nd), median_ratio=round(self.median_ratio, nd))


def interleaved_rounds(rounds: int, run_a: Callable[[int], Any], run_b: Callable[[int], Any], *,
                       key: Optional[Callable[[Any], float]] = None, alternate_order: bool = False) -> Rounds:
    """``rounds`` rounds of A then B (``alternate_order``: B first in odd rounds); each
    ``run_x(round)`` returns a number, or a result ``key`` turns into one."""
    a, b = [], []
    for r in range(rounds):
        if alternate_order and r % 2:
            b.append(run_b(r))
            a.append(run_a(r))
        else:
            a.append(run_a(r))
            b.append(run_b(r))
    return Rounds(a, b, key)


# ----------------------------------------------------------------------------------------- output


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_head() -> Optional[str]:
    """The commit measured: ``DIT_FX_REV`` when set (the GPU machine gets a copy of the working
    tree whose .git may lag behind), else ``git rev-parse HEAD``."""
    if os.environ.get("DIT_FX_REV"):
        return os.environ["DIT_FX_REV"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def environment(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """Host, software and GPU of this run (package versions from their metadata: nothing imported)."""
    device = torch.device(device) if device is not None else None
    info: Dict[str, Any] = dict(
        host=platform.node(),
        platform=platform.platform(),
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        python=sys.version.split()[0],
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        torch_num_threads=torch.get_num_threads(),
        diffusers=_version("diffusers"),
        cache_dit=_version("cache-dit") or "unavailable",
        git_head=git_head(),
        device=str(device) if device is not None else None,
    )
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        cap = torch.cuda.get_device_capability(device)
        info["gpu_capability"] = f"{cap[0]}.{cap[1]}"
        info["gpu_mem_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
        info["cudnn"] = torch.backends.cudnn.version()
        info["sdp_flash"] = torch.backends.cuda.flash_sdp_enabled()
        info["sdp_mem_efficient"] = torch.backends.cuda.mem_efficient_sdp_enabled()
        info["sdp_cudnn"] = getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)()
    return info


def write_json(path: Optional[str], data: Any, indent: int = 2) -> None:
    """Write ``data`` to ``path`` (nothing when None) atomically; non-JSON values as ``str``."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=indent, default=str)
    os.replace(tmp, path)
