"""Real diffusers pipelines built from tiny random-weight components, for tests (no downloads).

Each entry of ``PIPELINES`` is ``name: (build_fn, kwargs_fn)``:

* ``build_<name>(seed=0)`` returns a real diffusers pipeline (fp32, CPU, eval mode, progress bar
  off) whose ``tokenizer*`` / ``text_encoder*`` components are ``None``; every module is built
  right after ``torch.manual_seed`` of a seed derived from ``seed`` (so two builds with the same
  seed have bit-identical weights). No ``from_pretrained`` anywhere.
* ``<name>_call_kwargs(height, width, num_inference_steps, seed)`` returns the ``pipe(**kwargs)``
  arguments: prompt embeddings (and masks / pooled embeddings) drawn from a private
  ``torch.Generator().manual_seed(seed)``, ``generator=torch.Generator().manual_seed(seed)`` for the
  initial noise, and ``output_type="latent"`` (keyword ``output_type="pt"`` also works for every
  pipeline and runs the tiny VAE decoder; see below). Output: ``pipe(**kw)[0]`` or
  ``.images`` / ``.frames``.

Verified with diffusers 0.42.1 / torch 2.13 CPU (``python tests/tiny_pipelines.py`` re-checks it):
two calls with the same seed give ``torch.equal`` outputs, at 16x16 and 32x32, with
``output_type`` "latent" and "pt". Transformer forward calls per pipeline call, for
``num_inference_steps = N``:

================  ============================================  ==========================================
name              pipeline / CFG                                forward calls per pipeline call
================  ============================================  ==========================================
``flux``          FluxPipeline, no CFG (guidance_embeds=False,  ``transformer``: N (one "cond" call/step)
                  no negative embeds -> true CFG off)
``wan``           WanPipeline, guidance_scale=5.0 with          ``transformer``: 2N ("cond" then "uncond"
                  negative_prompt_embeds                        each step)
``qwenimage``     QwenImagePipeline, true_cfg_scale=4.0 with    ``transformer``: 2N ("cond" then "uncond"
                  negative embeds + masks                       each step)
``wan22``         WanPipeline, transformer + transformer_2,     ``transformer``: 2*H, ``transformer_2``:
                  boundary_ratio=0.8, guidance_scale=5.0,       2*(N-H), H = #steps with t >= 800
                  guidance_scale_2=3.0                          (N=4: t=999,900 | 750,500 -> 4 and 4;
                                                                N=5: 3|2 -> 6 and 4; N=6: 3|3 -> 6 and 6)
================  ============================================  ==========================================

(``flux_call_kwargs(..., negative_prompt_embeds=..., negative_pooled_prompt_embeds=...,
true_cfg_scale=2.0)`` turns on Flux true CFG: 2N calls, "cond" then "uncond".)

CFG is never batched in these pipelines: cond and uncond are two separate forward calls of
batch size 1 (same ``hidden_states`` and ``timestep``, different ``encoder_hidden_states``),
the first inside ``transformer.cache_context("cond")``, the second inside
``cache_context("uncond")``. Wan additionally passes ``step_index=i``,
``sigma=float(scheduler.sigmas[i])`` and ``num_inference_steps`` to ``cache_context``;
Flux/QwenImage pass the name only. For Wan 2.2 the expert is picked per step
(``t >= boundary_ratio * 1000`` -> ``transformer`` with ``guidance_scale``, else
``transformer_2`` with ``guidance_scale_2``), so each expert sees one contiguous range of
steps, high noise first; its "cond"/"uncond" contexts are its own. (With the default
``boundary_ratio=0.5`` suggested for Wan 2.2 tests and ``flow_shift=3.0`` UniPC, N=4 gives
t = 999, 900, 750, 500, all >= 500, so ``transformer_2`` would never run; hence 0.8.)

Scheduler and timestep, per pipeline (read from the diffusers 0.42.1 sources and checked here):

* Every pipeline calls ``self.scheduler.set_timesteps(...)`` exactly once per pipeline call
  (Flux/QwenImage via ``retrieve_timesteps(..., sigmas=..., mu=...)``, which inspects the
  signature for ``sigmas``; Wan directly as ``set_timesteps(num_inference_steps, device=...)``),
  then ``scheduler.set_begin_index(0)``.
* Flux / QwenImage (``FlowMatchEulerDiscreteScheduler``, dynamic shifting with ``mu``): the
  transformer gets ``timestep = t.expand(B).to(latents.dtype) / 1000``, a float32 tensor of
  shape ``(1,)`` in (0, 1].
* Wan / Wan 2.2 (``UniPCMultistepScheduler``, flow sigmas, as the released Wan checkpoints
  use): ``timestep = t.expand(B)``, shape ``(1,)``, **int64** (UniPC's timesteps are int64),
  on the 0..1000 scale and not divided. With ``scheduler="euler"`` (``FlowMatchEulerDiscrete``,
  shift=7.0, as diffusers' Wan tests use) it is a float32 tensor instead.

Shapes (batch 1; ``H, W`` = image height/width): Flux VAE factor 2 -> latents packed as
``(1, (H/4)*(W/4), 4)`` (16 tokens at 16x16, 64 at 32x32), 12 text tokens, img_ids/txt_ids 2-D.
Wan VAE factor 4 (spatial) / 2 (temporal), ``num_frames=5`` -> latents ``(1, 16, 3, H/4, W/4)``,
patch (1, 2, 2) -> 12 tokens at 16x16, 48 at 32x32; text 10 tokens (cond 7 / uncond 4 valid,
zero-padded after them like WanPipeline's UMT5 output; "pt" output is ``(1, 5, 3, H, W)``).
QwenImage VAE factor 4 -> packed latents ``(1, (H/8)*(W/8), 16)`` (4 tokens at 16x16, 16 at
32x32); cond 10 / uncond 6 text tokens. The all-ones masks are
dropped to ``None`` by ``QwenImagePipeline.encode_prompt`` (``if mask.all(): mask = None``),
so the transformer receives ``encoder_hidden_states_mask=None``.

Sizes: height/width must be multiples of 4 (flux), 16 (wan, wan22) and 8 (qwenimage).

Timing (2-core CPU box, 16x16 or 32x32, 4-6 steps, "latent" or "pt"): 15-25 ms per call for
flux, 25-55 ms for wan / qwenimage / wan22 (build: ~0.03-0.1 s, plus ~2.5 s for the first
diffusers import). Caveat: with ``torch.set_num_threads(2)`` while another process keeps the
cores busy, the same calls took 0.6-3 s (OpenMP threads oversubscribed); with one thread they
stayed at 20-55 ms under the same load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

__all__ = [
    "PIPELINES",
    "TRANSFORMER_NAMES",
    "build_flux",
    "flux_call_kwargs",
    "build_wan",
    "wan_call_kwargs",
    "build_qwenimage",
    "qwenimage_call_kwargs",
    "build_wan22",
    "wan22_call_kwargs",
    "count_forward_calls",
    "pipeline_output",
]

# Which transformer components each pipeline has (in the order the loop first uses them).
TRANSFORMER_NAMES: dict[str, tuple[str, ...]] = {
    "flux": ("transformer",),
    "wan": ("transformer",),
    "qwenimage": ("transformer",),
    "wan22": ("transformer", "transformer_2"),
}


def _seeded(seed: int, fn: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(seed)
    module = fn()
    assert all(p.dtype == torch.float32 for p in module.parameters())
    return module.eval()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed))


def _randn(gen: torch.Generator, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def _finish(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- Flux

FLUX_TXT_TOKENS = 12
FLUX_TXT_DIM = 32
FLUX_POOLED_DIM = 32


def _flux_transformer():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,  # 4 * vae latent_channels (2x2 packing)
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=FLUX_TXT_DIM,
        pooled_projection_dim=FLUX_POOLED_DIM,
        guidance_embeds=False,
        axes_dims_rope=[4, 4, 8],
    )


def _flux_vae():
    from diffusers import AutoencoderKL

    # Two levels -> vae_scale_factor 2 (diffusers' Flux test uses one level, factor 1).
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(4, 4),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def build_flux(seed: int = 0):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    transformer = _seeded(seed, _flux_transformer)
    vae = _seeded(seed + 1, _flux_vae)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return _finish(
        FluxPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            transformer=transformer,
        )
    )


def flux_call_kwargs(height: int = 16, width: int = 16, num_inference_steps: int = 4, seed: int = 0, **overrides):
    g = _gen(seed)
    kwargs = dict(
        prompt_embeds=_randn(g, 1, FLUX_TXT_TOKENS, FLUX_TXT_DIM),
        pooled_prompt_embeds=_randn(g, 1, FLUX_POOLED_DIM),
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=3.5,  # ignored: guidance_embeds=False
        generator=_gen(seed),
        output_type="latent",
    )
    kwargs.update(overrides)
    return kwargs


# ----------------------------------------------------------------------------- Wan (2.1 and 2.2)

WAN_TXT_TOKENS = 10
WAN_TXT_DIM = 32
WAN_NUM_FRAMES = 5
WAN_Z_DIM = 16


def _wan_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=WAN_Z_DIM,
        out_channels=WAN_Z_DIM,
        text_dim=WAN_TXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=6,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _wan_vae():
    from diffusers import AutoencoderKLWan

    # diffusers' WanPipeline test VAE (base_dim=3, one res block) with one level less: spatial
    # factor 4 and temporal 2 instead of 8 and 4, so that a 16x16x5 video has more image tokens
    # (2x2 patches x 3 latent frames = 12) than the 10 text tokens. The factors are declared in
    # scale_factor_* because WanPipeline reads them from the config.
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=WAN_Z_DIM,
        dim_mult=[1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        scale_factor_spatial=4,
        scale_factor_temporal=2,
    )


def _wan_scheduler(scheduler: str, flow_shift: float):
    if scheduler == "unipc":
        from diffusers import UniPCMultistepScheduler

        return UniPCMultistepScheduler(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=flow_shift,
        )
    if scheduler == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(shift=7.0)
    raise ValueError(f"scheduler must be 'unipc' or 'euler', not {scheduler!r}")


def _build_wan_pipe(seed: int, two_experts: bool, scheduler: str, boundary_ratio: float | None, flow_shift: float):
    from diffusers import WanPipeline

    transformer = _seeded(seed, _wan_transformer)
    transformer_2 = _seeded(seed + 1000, _wan_transformer) if two_experts else None
    vae = _seeded(seed + 1, _wan_vae)
    return _finish(
        WanPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=vae,
            scheduler=_wan_scheduler(scheduler, flow_shift),
            transformer=transformer,
            transformer_2=transformer_2,
            boundary_ratio=boundary_ratio if two_experts else None,
        )
    )


def build_wan(seed: int = 0, scheduler: str = "unipc"):
    return _build_wan_pipe(seed, False, scheduler, None, flow_shift=3.0)


def build_wan22(seed: int = 0, scheduler: str = "unipc", boundary_ratio: float = 0.8):
    return _build_wan_pipe(seed, True, scheduler, boundary_ratio, flow_shift=3.0)


def _t5_like_embeds(gen: torch.Generator, valid: int) -> torch.Tensor:
    """(1, WAN_TXT_TOKENS, WAN_TXT_DIM), zero after ``valid`` tokens (as WanPipeline pads UMT5 output)."""
    emb = _randn(gen, 1, WAN_TXT_TOKENS, WAN_TXT_DIM)
    emb[:, valid:] = 0
    return emb


def wan_call_kwargs(height: int = 16, width: int = 16, num_inference_steps: int = 4, seed: int = 0, **overrides):
    g = _gen(seed)
    kwargs = dict(
        prompt_embeds=_t5_like_embeds(g, 7),
        negative_prompt_embeds=_t5_like_embeds(g, 4),
        height=height,
        width=width,
        num_frames=WAN_NUM_FRAMES,
        num_inference_steps=num_inference_steps,
        guidance_scale=5.0,
        generator=_gen(seed),
        output_type="latent",
    )
    kwargs.update(overrides)
    return kwargs


def wan22_call_kwargs(height: int = 16, width: int = 16, num_inference_steps: int = 4, seed: int = 0, **overrides):
    kwargs = wan_call_kwargs(height, width, num_inference_steps, seed)
    kwargs["guidance_scale_2"] = 3.0
    kwargs.update(overrides)
    return kwargs


# ----------------------------------------------------------------------------- QwenImage

QWEN_TXT_DIM = 16
QWEN_COND_TOKENS = 10
QWEN_UNCOND_TOKENS = 6
QWEN_Z_DIM = 4


def _qwen_transformer():
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * QWEN_Z_DIM,
        out_channels=QWEN_Z_DIM,
        num_layers=4,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=QWEN_TXT_DIM,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def _qwen_vae():
    from diffusers import AutoencoderKLQwenImage

    # diffusers' own QwenImagePipeline test VAE (spatial factor 4).
    return AutoencoderKLQwenImage(
        base_dim=QWEN_Z_DIM * 6,
        z_dim=QWEN_Z_DIM,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * QWEN_Z_DIM,
        latents_std=[1.0] * QWEN_Z_DIM,
    )


def build_qwenimage(seed: int = 0):
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    transformer = _seeded(seed, _qwen_transformer)
    vae = _seeded(seed + 1, _qwen_vae)
    # The released Qwen-Image scheduler config.
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    return _finish(
        QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer)
    )


def qwenimage_call_kwargs(height: int = 16, width: int = 16, num_inference_steps: int = 4, seed: int = 0, **overrides):
    g = _gen(seed)
    kwargs = dict(
        prompt_embeds=_randn(g, 1, QWEN_COND_TOKENS, QWEN_TXT_DIM),
        prompt_embeds_mask=torch.ones(1, QWEN_COND_TOKENS, dtype=torch.long),
        negative_prompt_embeds=_randn(g, 1, QWEN_UNCOND_TOKENS, QWEN_TXT_DIM),
        negative_prompt_embeds_mask=torch.ones(1, QWEN_UNCOND_TOKENS, dtype=torch.long),
        true_cfg_scale=4.0,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        generator=_gen(seed),
        output_type="latent",
    )
    kwargs.update(overrides)
    return kwargs


# ----------------------------------------------------------------------------- registry and helpers

PIPELINES: dict[str, tuple[Callable, Callable]] = {
    "flux": (build_flux, flux_call_kwargs),
    "wan": (build_wan, wan_call_kwargs),
    "qwenimage": (build_qwenimage, qwenimage_call_kwargs),
    "wan22": (build_wan22, wan22_call_kwargs),
}


def pipeline_output(result) -> torch.Tensor:
    """The tensor a pipeline call returned (``return_dict`` True or False)."""
    if isinstance(result, tuple):
        return result[0]
    for attr in ("images", "frames"):
        if hasattr(result, attr):
            return getattr(result, attr)
    raise TypeError(f"unexpected pipeline output {type(result).__name__}")


@contextlib.contextmanager
def count_forward_calls(pipe, record_kwargs: bool = False):
    """Record each transformer component's forward calls inside the block (pre-hooks, removed after).

    Yields ``calls = {"transformer": [...], "transformer_2": [...]}`` (only the components the
    pipeline has): one entry per forward call, ``None`` or, with ``record_kwargs``, a shallow copy
    of the call's kwargs (the pipelines pass everything by keyword). ``len(calls[name])`` is the
    call count.
    """
    calls: dict[str, list] = {}
    handles = []
    for name in ("transformer", "transformer_2"):
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        calls[name] = []

        def hook(mod, args, kwargs, _name=name):
            calls[_name].append(dict(kwargs) if record_kwargs else None)

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------------- self-check


def _self_check(steps: int = 4) -> None:  # pragma: no cover - run by hand
    import time

    torch.set_num_threads(min(2, torch.get_num_threads()))
    for name, (build, make_kwargs) in PIPELINES.items():
        pipe = build(0)
        for hw in (16, 32):
            for output_type in ("latent", "pt"):
                outs, times = [], []
                for _ in range(2):
                    with count_forward_calls(pipe, record_kwargs=True) as calls:
                        t0 = time.perf_counter()
                        out = pipeline_output(pipe(**make_kwargs(hw, hw, steps, 0, output_type=output_type)))
                        times.append(time.perf_counter() - t0)
                    outs.append(out)
                assert torch.equal(outs[0], outs[1]), (name, hw, output_type)
                counts = {k: len(v) for k, v in calls.items()}
                ts = {k: [round(float(c["timestep"][0]), 3) for c in v] for k, v in calls.items()}
                dtypes = {k: {str(c["timestep"].dtype) for c in v} for k, v in calls.items()}
                print(
                    f"{name:10s} {hw}x{hw} {output_type:6s} out={tuple(outs[0].shape)} calls={counts} "
                    f"time={min(times):.3f}s timestep dtypes={dtypes} timesteps={ts}"
                )


if __name__ == "__main__":  # pragma: no cover
    _self_check()
