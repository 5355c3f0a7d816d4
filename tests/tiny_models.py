"""Tiny random-weight diffusers transformers and per-step input factories for tests.

Every model is fp32, in eval mode and built right after ``torch.manual_seed(seed)``.
``make_inputs(step_seed, timestep, batch=1)`` is deterministic in ``step_seed`` (it uses a
private ``torch.Generator``); ``timestep`` is a scheduler-scale value in ``[0, 1000]`` that
each factory converts the way the matching diffusers pipeline does (Flux/QwenImage pass
``t / 1000``, Wan/SD3 pass ``t``). Image and text token counts always differ.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

__all__ = [
    "TinyModel",
    "MODELS",
    "output_tensor",
    "make_trajectory",
    "trajectory_timesteps",
    "TRAJECTORY_DRIFT",
]


@dataclasses.dataclass(frozen=True)
class TinyModel:
    """A tiny model recipe: builder, input factory and block lists in forward order."""

    name: str
    build: Callable[..., torch.nn.Module]
    make_inputs: Callable[..., dict]
    block_lists: tuple  # ((attribute name, number of blocks), ...)

    @property
    def num_blocks(self) -> int:
        return sum(n for _, n in self.block_lists)


def output_tensor(out) -> torch.Tensor:
    """First tensor of a model output (tuple / list / ModelOutput / tensor)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    for item in out:
        if isinstance(item, torch.Tensor):
            return item
    raise TypeError(f"no tensor in model output of type {type(out).__name__}")


def _gen(step_seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(step_seed))


def _randn(gen: torch.Generator, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def _finish(model: torch.nn.Module) -> torch.nn.Module:
    # Built under the default fp32 dtype; .to(float32) would only trigger a diffusers warning.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return model.eval()


def _ts(timestep: float, batch: int, scale: float = 1.0) -> torch.Tensor:
    return torch.full((batch,), float(timestep) * scale, dtype=torch.float32)


# ----------------------------------------------------------------------------- Flux

FLUX_IMG_HW = (4, 4)  # 16 image tokens
FLUX_TXT_TOKENS = 8


def _build_flux(seed: int = 0, num_layers: int = 2, num_single_layers: int = 3):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return _finish(
        FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        )
    )


def _flux_inputs(step_seed: int, timestep: float, batch: int = 1) -> dict:
    g = _gen(step_seed)
    h, w = FLUX_IMG_HW
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] += torch.arange(h)[:, None]
    img_ids[..., 2] += torch.arange(w)[None, :]
    return dict(
        hidden_states=_randn(g, batch, h * w, 4),
        encoder_hidden_states=_randn(g, batch, FLUX_TXT_TOKENS, 32),
        pooled_projections=_randn(g, batch, 32),
        timestep=_ts(timestep, batch, 1.0 / 1000.0),  # FluxPipeline passes t / 1000
        img_ids=img_ids.reshape(h * w, 3),
        txt_ids=torch.zeros(FLUX_TXT_TOKENS, 3),
        return_dict=False,
    )


# ----------------------------------------------------------------------------- Wan


def _build_wan(seed: int = 0, num_layers: int = 3):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return _finish(
        WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=4,
            out_channels=4,
            text_dim=16,
            freq_dim=256,
            ffn_dim=32,
            num_layers=num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
    )


def _wan_inputs(step_seed: int, timestep: float, batch: int = 1) -> dict:
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 2, 16, 16),  # 2*8*8 = 128 image tokens
        encoder_hidden_states=_randn(g, batch, 12, 16),  # 12 text tokens
        timestep=_ts(timestep, batch),  # WanPipeline passes t.expand(B)
        return_dict=False,
    )


# ----------------------------------------------------------------------------- QwenImage

QWEN_IMG_HW = (4, 4)  # 16 packed image tokens (2x2 patches of a 8x8x4 latent)
QWEN_TXT_TOKENS = 12


def _build_qwenimage(seed: int = 0, num_layers: int = 4):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return _finish(
        QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=num_layers,
            attention_head_dim=16,
            num_attention_heads=4,
            joint_attention_dim=16,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        )
    )


def _qwenimage_inputs(step_seed: int, timestep: float, batch: int = 1, masked: bool = False) -> dict:
    """QwenImagePipeline-style kwargs; it drops an all-ones mask, so default mask is None."""
    g = _gen(step_seed)
    h, w = QWEN_IMG_HW
    mask = None
    if masked:  # last 3 text tokens are padding
        mask = torch.ones(batch, QWEN_TXT_TOKENS, dtype=torch.bool)
        mask[:, -3:] = False
    return dict(
        hidden_states=_randn(g, batch, h * w, 16),
        encoder_hidden_states=_randn(g, batch, QWEN_TXT_TOKENS, 16),
        encoder_hidden_states_mask=mask,
        timestep=_ts(timestep, batch, 1.0 / 1000.0),  # QwenImagePipeline passes t / 1000
        img_shapes=[(1, h, w)] * batch,
        return_dict=False,
    )


def _qwenimage_masked_inputs(step_seed: int, timestep: float, batch: int = 1) -> dict:
    return _qwenimage_inputs(step_seed, timestep, batch, masked=True)


# ----------------------------------------------------------------------------- SD3


def _build_sd3(seed: int = 0, num_layers: int = 4):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return _finish(
        SD3Transformer2DModel(
            sample_size=32,
            patch_size=1,
            in_channels=4,
            num_layers=num_layers,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
        )
    )


def _sd3_inputs(step_seed: int, timestep: float, batch: int = 1) -> dict:
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),  # 64 image tokens
        encoder_hidden_states=_randn(g, batch, 12, 32),  # 12 text tokens
        pooled_projections=_randn(g, batch, 64),
        timestep=_ts(timestep, batch),  # StableDiffusion3Pipeline passes t.expand(B)
        return_dict=False,
    )


# ----------------------------------------------------------------------------- HunyuanVideo


def _build_hunyuanvideo(seed: int = 0, num_layers: int = 4, num_single_layers: int = 6):
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    return _finish(
        HunyuanVideoTransformer3DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=10,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            num_refiner_layers=1,
            patch_size=1,
            patch_size_t=1,
            guidance_embeds=True,
            text_embed_dim=16,
            pooled_projection_dim=8,
            rope_axes_dim=(2, 4, 4),
        )
    )


def _hunyuanvideo_inputs(step_seed: int, timestep: float, batch: int = 1) -> dict:
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 1, 4, 4),  # 16 video tokens
        timestep=_ts(timestep, batch),
        encoder_hidden_states=_randn(g, batch, 6, 16),
        pooled_projections=_randn(g, batch, 8),
        encoder_attention_mask=torch.ones(batch, 6),
        guidance=torch.full((batch,), 3000.0),  # embedded guidance (batched CFG is one branch)
        return_dict=False,
    )


# ----------------------------------------------------------------------------- registry


def _variant(fn, **fixed):
    def build(seed: int = 0):
        return fn(seed, **fixed)

    build.__name__ = fn.__name__
    return build


MODELS: dict[str, TinyModel] = {
    "flux": TinyModel(
        "flux",
        _variant(_build_flux, num_layers=2, num_single_layers=3),
        _flux_inputs,
        (("transformer_blocks", 2), ("single_transformer_blocks", 3)),
    ),
    "flux_deep": TinyModel(
        "flux_deep",
        _variant(_build_flux, num_layers=4, num_single_layers=6),
        _flux_inputs,
        (("transformer_blocks", 4), ("single_transformer_blocks", 6)),
    ),
    "wan": TinyModel("wan", _variant(_build_wan, num_layers=3), _wan_inputs, (("blocks", 3),)),
    "wan_deep": TinyModel("wan_deep", _variant(_build_wan, num_layers=6), _wan_inputs, (("blocks", 6),)),
    "qwenimage": TinyModel(
        "qwenimage",
        _variant(_build_qwenimage, num_layers=4),
        _qwenimage_inputs,
        (("transformer_blocks", 4),),
    ),
    "qwenimage_masked": TinyModel(
        "qwenimage_masked",
        _variant(_build_qwenimage, num_layers=4),
        _qwenimage_masked_inputs,
        (("transformer_blocks", 4),),
    ),
    "sd3": TinyModel("sd3", _variant(_build_sd3, num_layers=4), _sd3_inputs, (("transformer_blocks", 4),)),
    "hunyuanvideo": TinyModel(
        "hunyuanvideo",
        _variant(_build_hunyuanvideo, num_layers=4, num_single_layers=6),
        _hunyuanvideo_inputs,
        (("transformer_blocks", 4), ("single_transformer_blocks", 6)),
    ),
}


# ----------------------------------------------------------------------------- trajectories

# Per-model default ``drift`` (total rotation angle, radians) for ``make_trajectory``: chosen
# so that cache-dit's Fn=1/2 residual diff between steps k apart is ~0.1 * k for small k,
# all along the trajectory (threshold ~0.15 -> every other step cached, ~0.22 -> two of three).
TRAJECTORY_DRIFT: dict[str, float] = {
    "flux": 2.5,
    "flux_deep": 2.5,
    "wan": 6.0,
    "wan_deep": 6.0,
    "qwenimage": 2.5,
    "qwenimage_masked": 2.5,
    "sd3": 7.0,
    "hunyuanvideo": 3.0,
}


def trajectory_timesteps(steps: int, t_start: float = 1000.0, t_span: float = 5.0) -> list[float]:
    """Decreasing scheduler timesteps ``t_start - t_span * k / steps``, k = 0..steps-1."""
    return [t_start - t_span * k / steps for k in range(steps)]


def make_trajectory(
    model_name: str,
    steps: int,
    drift: float | None = None,
    *,
    t_span: float = 5.0,
    t_start: float = 1000.0,
    seed: int = 0,
    batch: int = 1,
) -> list[dict]:
    """Per-step kwargs for a denoising-like loop (shared conditioning, smoothly moving latents).

    Step k uses ``make_inputs(seed, t_k)`` (text/pooled/ids identical every step), ``t_k``
    from ``trajectory_timesteps`` and latents rotated at constant speed in the plane of
    ``base`` and a fixed random ``direction``::

        hidden_states_k = cos(a_k) * base + sin(a_k) * direction,  a_k = drift * k / steps

    so their norm stays constant and consecutive steps differ by the same amount. The
    timestep span is small on purpose: with random weights the sinusoidal time embedding
    turns any sizeable timestep change into noise (diffs ~0.2-0.4 whatever the distance).
    With this recipe cache-dit's residual diff grows ~linearly with the distance to the last
    computed step, giving a regular mix of cached and computed steps.
    ``drift=None`` uses ``TRAJECTORY_DRIFT[model_name]``.
    """
    spec = MODELS[model_name]
    if drift is None:
        drift = TRAJECTORY_DRIFT.get(model_name, 3.0)
    direction = None
    out = []
    for k, t in enumerate(trajectory_timesteps(steps, t_start, t_span)):
        inputs = spec.make_inputs(seed, t, batch)
        if direction is None:
            direction = _randn(_gen(seed + 7919), *inputs["hidden_states"].shape)
        angle = drift * k / steps
        inputs["hidden_states"] = math.cos(angle) * inputs["hidden_states"] + math.sin(angle) * direction
        out.append(inputs)
    return out
