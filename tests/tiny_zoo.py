"""A tiny random-weight model of every diffusers DiT family that ``dit_fx.matrix`` lists.

Each ``ZooSpec`` holds a builder (fp32, eval, built right after ``torch.manual_seed(0)``), an
input factory ``make_inputs(step_seed, timestep, batch=1)`` that passes what the family's pipeline
passes (``timestep`` is a scheduler-scale value in ``[0, 1000]``, converted the way the pipeline
does), the block lists the planner should find, whether the pipeline runs CFG as two separate
transformer calls per step, and the Fn/Bn used by ``tests/test_model_coverage.py``.

For separate-CFG families ``uncond_inputs`` rebuilds the conditioning inputs (``cond_keys``) from
another seed and keeps everything else, as a pipeline passes the negative prompt's embeddings with
the same latents and timestep. Every model is sized so a forward takes a few milliseconds on CPU
and every cached stack has at least 4 blocks (Fn=1 and Bn<=1 leave a middle).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import torch

from tiny_models import (
    _build_flux,
    _build_hunyuanvideo,
    _build_qwenimage,
    _build_sd3,
    _build_wan,
    _flux_inputs,
    _hunyuanvideo_inputs,
    _qwenimage_inputs,
    _sd3_inputs,
    _wan_inputs,
)

__all__ = ["ZooSpec", "ZOO", "uncond_inputs"]


@dataclasses.dataclass(frozen=True)
class ZooSpec:
    name: str  # key of the matching row in dit_fx.tools.matrix.MODEL_MATRIX
    family: str
    class_name: str
    build: Callable[[], torch.nn.Module]
    make_inputs: Callable[..., dict]
    block_lists: Tuple[Tuple[str, int], ...]
    separate_cfg: bool
    fn: int = 1
    bn: int = 1
    cond_keys: Tuple[str, ...] = ("encoder_hidden_states",)
    scope: Optional[str] = None  # cache only this block list (its own context); None: all lists joined

    @property
    def num_blocks(self) -> int:
        return sum(n for _, n in self.block_lists)


def uncond_inputs(spec: ZooSpec, step_seed: int, timestep: float, batch: int = 1) -> dict:
    """The separate-CFG "uncond" call of a step: other conditioning, same latents and timestep."""
    cond = spec.make_inputs(step_seed, timestep, batch)
    other = spec.make_inputs(step_seed + 100_003, timestep, batch)
    return {**cond, **{k: other[k] for k in spec.cond_keys}}


def _gen(step_seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(step_seed))


def _randn(gen: torch.Generator, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def _ts(timestep: float, batch: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    return torch.full((batch,), offset + float(timestep) * scale, dtype=torch.float32)


def _seeded(cls_name: str, fill_zeros: bool = False, **config) -> Callable[[], torch.nn.Module]:
    """``fill_zeros``: give zero-initialised weights (adaLN-zero modulations, which make every block
    the identity at init) small random values, as a trained model has."""

    def build() -> torch.nn.Module:
        import diffusers

        torch.manual_seed(0)
        model = getattr(diffusers, cls_name)(**config)
        if fill_zeros:
            with torch.no_grad():
                for p in model.parameters():
                    if not p.any():
                        p.normal_(0.0, 0.1)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        return model.eval()

    build.__name__ = f"build_{cls_name}"
    return build


def _fixed(fn, **kwargs):
    def build():
        return fn(0, **kwargs)

    return build


# ----------------------------------------------------------------------------- input factories


def _mochi_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 2, 8, 8),  # 2*4*4 = 32 tokens
        encoder_hidden_states=_randn(g, batch, 12, 16),
        timestep=_ts(timestep, batch),
        encoder_attention_mask=torch.ones(batch, 12, dtype=torch.bool),
        return_dict=False,
    )


def _cogvideox_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 2, 4, 8, 8),  # (B, F, C, H, W): 2*4*4 = 32 tokens
        encoder_hidden_states=_randn(g, batch, 8, 8),
        timestep=torch.full((batch,), int(timestep), dtype=torch.int64),
        return_dict=False,
    )


def _cogvideox15_inputs(step_seed, timestep, batch=1):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    g = _gen(step_seed)
    rope = get_3d_rotary_pos_embed(
        embed_dim=16, crops_coords=None, grid_size=(4, 4), temporal_size=2, grid_type="slice", max_size=(4, 4)
    )
    return dict(
        hidden_states=_randn(g, batch, 4, 4, 8, 8),  # p_t=2: 2*4*4 = 32 tokens
        encoder_hidden_states=_randn(g, batch, 8, 8),
        timestep=torch.full((batch,), int(timestep), dtype=torch.int64),
        image_rotary_emb=rope,
        return_dict=False,
    )


def _ltx_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 2 * 4 * 4, 4),
        encoder_hidden_states=_randn(g, batch, 8, 16),
        timestep=_ts(timestep, batch),
        encoder_attention_mask=torch.ones(batch, 8),
        num_frames=2,
        height=4,
        width=4,
        rope_interpolation_scale=(1.0, 1.0, 1.0),
        return_dict=False,
    )


def _allegro_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 2, 8, 8),  # 2*4*4 = 32 tokens
        encoder_hidden_states=_randn(g, batch, 8, 16),
        timestep=_ts(timestep, batch),
        return_dict=False,
    )


def _cogview_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),  # 16 tokens
        encoder_hidden_states=_randn(g, batch, 8, 8),
        timestep=_ts(timestep, batch),
        original_size=torch.tensor([[32.0, 32.0]] * batch),
        target_size=torch.tensor([[32.0, 32.0]] * batch),
        crop_coords=torch.tensor([[0.0, 0.0]] * batch),
        return_dict=False,
    )


def _cosmos_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 1, 16, 16),  # 64 tokens
        timestep=_ts(timestep, batch, 1.0 / 1000.0),
        encoder_hidden_states=_randn(g, batch, 12, 16),
        attention_mask=torch.ones(batch, 12),
        fps=30,
        return_dict=False,
    )


def _easyanimate_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 2, 8, 8),  # 2*4*4 = 32 tokens
        timestep=_ts(timestep, batch),
        encoder_hidden_states=_randn(g, batch, 12, 16),
        return_dict=False,
    )


def _consisid_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 1, 4, 8, 8),  # 16 tokens
        encoder_hidden_states=_randn(g, batch, 8, 8),
        timestep=torch.full((batch,), int(timestep), dtype=torch.int64),
        id_vit_hidden=[_randn(g, batch, 2, 2)],
        id_cond=_randn(g, batch, 2),
        return_dict=False,
    )


def _dit_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),
        timestep=torch.full((batch,), int(timestep), dtype=torch.int64),
        class_labels=torch.randint(0, 1000, (batch,), generator=g),
        return_dict=False,
    )


def _uvit_inputs(step_seed, timestep, batch=1):
    # aMUSEd passes no timestep: masked-token generation, every call is a step.
    g = _gen(step_seed)
    return dict(
        input_ids=torch.randint(0, 32, (batch, 8, 8), generator=g),
        encoder_hidden_states=_randn(g, batch, 6, 8),
        pooled_text_emb=_randn(g, batch, 8),
        micro_conds=torch.tensor([[32.0, 32.0, 0.0, 0.0, 6.0]] * batch),
    )


def _bria_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    img_ids = torch.zeros(4, 4, 3)
    img_ids[..., 1] += torch.arange(4)[:, None]
    img_ids[..., 2] += torch.arange(4)[None, :]
    return dict(
        hidden_states=_randn(g, batch, 16, 4),
        encoder_hidden_states=_randn(g, batch, 8, 32),
        timestep=_ts(timestep, batch),
        img_ids=img_ids.reshape(16, 3),
        txt_ids=torch.zeros(8, 3),
        return_dict=False,
    )


def _lumina2_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),  # 16 tokens
        timestep=_ts(timestep, batch, -1.0 / 1000.0, 1.0),  # Lumina2Pipeline passes 1 - t / 1000
        encoder_hidden_states=_randn(g, batch, 6, 8),
        encoder_attention_mask=torch.ones(batch, 6, dtype=torch.bool),
        return_dict=False,
    )


def _lumina_next_inputs(step_seed, timestep, batch=1):
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),
        timestep=_ts(timestep, batch, -1.0 / 1000.0, 1.0),  # LuminaPipeline passes 1 - t / 1000
        encoder_hidden_states=_randn(g, batch, 6, 32),
        encoder_mask=torch.ones(batch, 6),
        image_rotary_emb=get_2d_rotary_pos_embed_lumina(8, 384, 384),
        cross_attention_kwargs={},
        return_dict=False,
    )


def _omnigen_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    seq = 6 + 1 + 16  # text tokens + time token + 4x4 image tokens
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),
        timestep=_ts(timestep, batch, 1.0 / 1000.0),
        input_ids=torch.randint(1, 100, (batch, 6), generator=g),
        input_img_latents=[],
        input_image_sizes={},
        attention_mask=torch.ones(batch, seq, seq),
        position_ids=torch.arange(seq).repeat(batch, 1),
        return_dict=False,
    )


def _pixart_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),
        encoder_hidden_states=_randn(g, batch, 8, 32),
        timestep=_ts(timestep, batch),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        return_dict=False,
    )


def _sana_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 4, 4),  # 16 tokens
        encoder_hidden_states=_randn(g, batch, 8, 8),
        timestep=_ts(timestep, batch),
        return_dict=False,
    )


def _stable_audio_inputs(step_seed, timestep, batch=1):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    g = _gen(step_seed)
    rope = get_1d_rotary_pos_embed(2, 16 + 1, use_real=True, repeat_interleave_real=False)
    return dict(
        hidden_states=_randn(g, batch, 4, 16),  # (B, C, T)
        timestep=_ts(timestep, 1),  # StableAudioPipeline passes t.unsqueeze(0)
        encoder_hidden_states=_randn(g, batch, 6, 8),
        global_hidden_states=_randn(g, batch, 1, 8),
        rotary_embedding=rope,
        return_dict=False,
    )


def _auraflow_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),  # 16 tokens
        encoder_hidden_states=_randn(g, batch, 12, 32),
        timestep=_ts(timestep, batch, 1.0 / 1000.0),
        return_dict=False,
    )


def _chroma_inputs(step_seed, timestep, batch=1):
    inputs = _flux_inputs(step_seed, timestep, batch)
    inputs.pop("pooled_projections")
    return inputs


def _prior_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 8),
        timestep=torch.full((batch,), int(timestep), dtype=torch.int64),
        proj_embedding=_randn(g, batch, 8),
        encoder_hidden_states=_randn(g, batch, 7, 8),
        return_dict=False,
    )


def _hidream_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),  # 16 tokens
        timesteps=_ts(timestep, batch),
        encoder_hidden_states_t5=_randn(g, batch, 8, 8),
        encoder_hidden_states_llama3=_randn(g, 2, batch, 8, 4),
        pooled_embeds=_randn(g, batch, 8),
        return_dict=False,
    )


def _hunyuandit_inputs(step_seed, timestep, batch=1):
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),  # 16 tokens
        timestep=_ts(timestep, batch),
        encoder_hidden_states=_randn(g, batch, 4, 8),
        text_embedding_mask=torch.ones(batch, 4),
        encoder_hidden_states_t5=_randn(g, batch, 4, 8),
        text_embedding_mask_t5=torch.ones(batch, 4),
        image_meta_size=torch.tensor([[64.0, 64.0, 64.0, 64.0, 0.0, 0.0]] * batch),
        style=torch.zeros(batch, dtype=torch.int64),
        image_rotary_emb=get_2d_rotary_pos_embed(8, ((0, 0), (4, 4)), (4, 4)),
        return_dict=False,
    )


def _kandinsky5_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 1, 8, 8, 4),  # (B, T, H, W, C): 16 tokens
        encoder_hidden_states=_randn(g, batch, 6, 16),
        timestep=_ts(timestep, batch),
        pooled_projections=_randn(g, batch, 8),
        visual_rope_pos=[torch.arange(1), torch.arange(4), torch.arange(4)],
        text_rope_pos=torch.arange(6),
        return_dict=False,
    )


def _prx_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),  # 16 tokens
        timestep=_ts(timestep, batch, 1.0 / 1000.0),
        encoder_hidden_states=_randn(g, batch, 6, 32),
        return_dict=False,
    )


def _hunyuanimage_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 4, 4),  # 16 tokens
        timestep=_ts(timestep, batch),
        encoder_hidden_states=_randn(g, batch, 6, 16),
        encoder_attention_mask=torch.ones(batch, 6),
        return_dict=False,
    )


def _wan_vace_inputs(step_seed, timestep, batch=1):
    inputs = _wan_inputs(step_seed, timestep, batch)
    g = _gen(step_seed + 1)
    inputs["control_hidden_states"] = _randn(g, batch, 8, 2, 16, 16)
    inputs["control_hidden_states_scale"] = torch.ones(2)
    return inputs


def _sana_video_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 2, 8, 8),  # 2*4*4 = 32 tokens
        encoder_hidden_states=_randn(g, batch, 8, 8),
        timestep=_ts(timestep, batch),
        return_dict=False,
    )


def _flux2_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    img_ids = torch.zeros(4, 4, 4)
    img_ids[..., 1] += torch.arange(4)[:, None]
    img_ids[..., 2] += torch.arange(4)[None, :]
    return dict(
        hidden_states=_randn(g, batch, 16, 4),
        encoder_hidden_states=_randn(g, batch, 8, 32),
        timestep=_ts(timestep, batch, 1.0 / 1000.0),
        img_ids=img_ids.reshape(1, 16, 4).expand(batch, -1, -1),
        txt_ids=torch.zeros(batch, 8, 4),
        guidance=torch.full((batch,), 4.0),
        return_dict=False,
    )


def _zimage_inputs(step_seed, timestep, batch=1):
    # ZImagePipeline passes one (C, 1, H, W) latent and one (L, D) prompt embedding per sample (lists),
    # t' = (1000 - t) / 1000, and runs CFG batched in one call; the output is a list of (C, 1, H, W).
    g = _gen(step_seed)
    return dict(
        x=[_randn(g, 4, 1, 8, 8) for _ in range(batch)],  # 16 tokens (padded to 32)
        t=_ts(timestep, batch, -1.0 / 1000.0, 1.0),
        cap_feats=[_randn(g, 8, 16) for _ in range(batch)],
        return_dict=False,
    )


def _hunyuanvideo15_inputs(step_seed, timestep, batch=1):
    # HunyuanVideo15Pipeline (t2v): latents ++ zero cond latents ++ zero mask, all-zero image embeds.
    g = _gen(step_seed)
    latents = _randn(g, batch, 4, 1, 4, 4)  # 16 tokens
    return dict(
        hidden_states=torch.cat([latents, torch.zeros(batch, 5, 1, 4, 4)], dim=1),
        image_embeds=torch.zeros(batch, 3, 12),
        timestep=_ts(timestep, batch),
        encoder_hidden_states=_randn(g, batch, 6, 16),
        encoder_attention_mask=torch.ones(batch, 6, dtype=torch.int64),
        encoder_hidden_states_2=_randn(g, batch, 4, 8),
        encoder_attention_mask_2=torch.ones(batch, 4, dtype=torch.int64),
        return_dict=False,
    )


def _ltx2_inputs(step_seed, timestep, batch=1):
    # LTX2Pipeline: one batched cond/uncond call with precomputed video/audio RoPE coordinates.
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoRotaryPosEmbed

    g = _gen(step_seed)
    video_coords = LTX2AudioVideoRotaryPosEmbed(dim=16, modality="video").prepare_video_coords(
        batch, 2, 4, 4, torch.device("cpu"), fps=24.0
    )
    audio_coords = LTX2AudioVideoRotaryPosEmbed(dim=8, scale_factors=[4], modality="audio").prepare_audio_coords(
        batch, 5, torch.device("cpu")
    )
    t = _ts(timestep, batch)
    return dict(
        hidden_states=_randn(g, batch, 2 * 4 * 4, 4),  # 32 video tokens
        audio_hidden_states=_randn(g, batch, 5, 4),  # 5 audio tokens
        encoder_hidden_states=_randn(g, batch, 8, 16),
        audio_encoder_hidden_states=_randn(g, batch, 8, 16),
        timestep=t,
        sigma=t,
        encoder_attention_mask=torch.ones(batch, 8, dtype=torch.int64),
        audio_encoder_attention_mask=torch.ones(batch, 8, dtype=torch.int64),
        num_frames=2,
        height=4,
        width=4,
        fps=24.0,
        audio_num_frames=5,
        video_coords=video_coords,
        audio_coords=audio_coords,
        isolate_modalities=False,
        spatio_temporal_guidance_blocks=None,
        perturbation_mask=None,
        use_cross_timestep=True,
        return_dict=False,
    )


def _krea2_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    text_len, h, w = 4, 4, 4
    position_ids = torch.zeros(text_len + h * w, 3)  # text at the origin, image tokens at (0, h, w)
    position_ids[text_len:, 1] = torch.arange(h).repeat_interleave(w).float()
    position_ids[text_len:, 2] = torch.arange(w).repeat(h).float()
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    mask[:, -1] = False  # the pipeline pads the prompt
    return dict(
        hidden_states=_randn(g, batch, h * w, 16),
        encoder_hidden_states=_randn(g, batch, text_len, 3, 16),  # (B, L, tapped layers, D)
        timestep=_ts(timestep, batch, 1.0 / 1000.0),
        position_ids=position_ids,
        encoder_attention_mask=mask,
        return_dict=False,
    )


def _image_ids(h, w, offset=0.0, modality=0.0):
    ids = torch.zeros(h, w, 3)
    ids[..., 0] = modality
    ids[..., 1] += torch.arange(h)[:, None] + offset
    ids[..., 2] += torch.arange(w)[None, :] + offset
    return ids.reshape(h * w, 3)


def _text_ids(n):
    ids = torch.zeros(n, 3)
    ids[:, 1] = torch.arange(n)
    ids[:, 2] = torch.arange(n)
    return ids


def _ovis_image_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 16, 4),
        timestep=_ts(timestep, batch, 1.0 / 1000.0),
        encoder_hidden_states=_randn(g, batch, 8, 32),
        txt_ids=_text_ids(8),
        img_ids=_image_ids(4, 4),
        return_dict=False,
    )


def _longcat_image_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 16, 4),
        timestep=_ts(timestep, batch, 1.0 / 1000.0),
        guidance=None,
        encoder_hidden_states=_randn(g, batch, 8, 32),
        txt_ids=_text_ids(8),
        img_ids=_image_ids(4, 4, offset=8.0, modality=1.0),  # image ids start after the text (max length 8)
        return_dict=False,
    )


# ----------------------------------------------------------------------------- the zoo

_TB = "transformer_blocks"

ZOO_LIST = [
    ZooSpec("flux", "FLUX.1", "FluxTransformer2DModel", _fixed(_build_flux, num_layers=2, num_single_layers=3),
            _flux_inputs, ((_TB, 2), ("single_transformer_blocks", 3)), False),
    ZooSpec("mochi", "Mochi", "MochiTransformer3DModel",
            _seeded("MochiTransformer3DModel", patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=4,
                    pooled_projection_dim=16, in_channels=4, text_embed_dim=16, time_embed_dim=4,
                    max_sequence_length=12),
            _mochi_inputs, ((_TB, 4),), False),
    ZooSpec("cogvideox", "CogVideoX", "CogVideoXTransformer3DModel",
            _seeded("CogVideoXTransformer3DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
                    out_channels=4, time_embed_dim=2, text_embed_dim=8, num_layers=4, sample_width=8,
                    sample_height=8, sample_frames=5, patch_size=2, temporal_compression_ratio=4,
                    max_text_seq_length=8),
            _cogvideox_inputs, ((_TB, 4),), False),
    ZooSpec("cogvideox_1_5", "CogVideoX 1.5", "CogVideoXTransformer3DModel",
            _seeded("CogVideoXTransformer3DModel", num_attention_heads=2, attention_head_dim=16, in_channels=4,
                    out_channels=4, time_embed_dim=2, text_embed_dim=8, num_layers=4, sample_width=8,
                    sample_height=8, sample_frames=13, patch_size=2, patch_size_t=2,
                    temporal_compression_ratio=4, max_text_seq_length=8,
                    use_rotary_positional_embeddings=True),
            _cogvideox15_inputs, ((_TB, 4),), False),
    ZooSpec("wan", "Wan 2.1", "WanTransformer3DModel", _fixed(_build_wan, num_layers=4), _wan_inputs,
            (("blocks", 4),), True),
    ZooSpec("hunyuanvideo", "HunyuanVideo", "HunyuanVideoTransformer3DModel",
            _fixed(_build_hunyuanvideo, num_layers=2, num_single_layers=2), _hunyuanvideo_inputs,
            ((_TB, 2), ("single_transformer_blocks", 2)), False),
    ZooSpec("qwenimage", "Qwen-Image", "QwenImageTransformer2DModel", _fixed(_build_qwenimage, num_layers=4),
            _qwenimage_inputs, ((_TB, 4),), True),
    ZooSpec("ltx", "LTX-Video", "LTXVideoTransformer3DModel",
            _seeded("LTXVideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                    attention_head_dim=8, cross_attention_dim=16, num_layers=4, caption_channels=16),
            _ltx_inputs, ((_TB, 4),), False),
    ZooSpec("allegro", "Allegro", "AllegroTransformer3DModel",
            _seeded("AllegroTransformer3DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
                    out_channels=4, num_layers=4, cross_attention_dim=16, sample_width=8, sample_height=8,
                    sample_frames=8, caption_channels=16),
            _allegro_inputs, ((_TB, 4),), False),
    ZooSpec("cogview3plus", "CogView3Plus", "CogView3PlusTransformer2DModel",
            _seeded("CogView3PlusTransformer2DModel", patch_size=2, in_channels=4, num_layers=4,
                    attention_head_dim=4, num_attention_heads=2, out_channels=4, text_embed_dim=8,
                    time_embed_dim=8, condition_dim=2, pos_embed_max_size=8, sample_size=8),
            _cogview_inputs, ((_TB, 4),), False),
    ZooSpec("cogview4", "CogView4", "CogView4Transformer2DModel",
            _seeded("CogView4Transformer2DModel", patch_size=2, in_channels=4, num_layers=4, attention_head_dim=4,
                    num_attention_heads=4, out_channels=4, text_embed_dim=8, time_embed_dim=8, condition_dim=4),
            _cogview_inputs, ((_TB, 4),), True),
    ZooSpec("cosmos", "Cosmos", "CosmosTransformer3DModel",
            _seeded("CosmosTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                    attention_head_dim=12, num_layers=4, mlp_ratio=2, text_embed_dim=16, adaln_lora_dim=4,
                    max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
                    concat_padding_mask=False, extra_pos_embed_type="learnable"),
            _cosmos_inputs, ((_TB, 4),), True),
    ZooSpec("easyanimate", "EasyAnimate", "EasyAnimateTransformer3DModel",
            _seeded("EasyAnimateTransformer3DModel", attention_head_dim=16, num_attention_heads=2, in_channels=4,
                    mmdit_layers=4, num_layers=4, out_channels=4, patch_size=2, sample_height=60,
                    sample_width=90, text_embed_dim=16, time_embed_dim=8, time_position_encoding_type="3d_rope"),
            _easyanimate_inputs, ((_TB, 4),), False),
    ZooSpec("skyreels_v2", "SkyReels-V2", "SkyReelsV2Transformer3DModel",
            _seeded("SkyReelsV2Transformer3DModel", patch_size=(1, 2, 2), num_attention_heads=2,
                    attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32,
                    num_layers=4, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
            _wan_inputs, (("blocks", 4),), True),
    ZooSpec("sd3", "SD3", "SD3Transformer2DModel", _fixed(_build_sd3, num_layers=4), _sd3_inputs, ((_TB, 4),),
            False),
    ZooSpec("consisid", "ConsisID", "ConsisIDTransformer3DModel",
            _seeded("ConsisIDTransformer3DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
                    out_channels=4, time_embed_dim=2, text_embed_dim=8, num_layers=4, sample_width=8,
                    sample_height=8, sample_frames=8, patch_size=2, temporal_compression_ratio=4,
                    max_text_seq_length=8, cross_attn_interval=2, is_kps=False, is_train_face=True,
                    cross_attn_dim_head=1, cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2, LFE_depth=5,
                    LFE_dim_head=8, LFE_num_heads=2, LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=10,
                    LFE_ff_mult=1, LFE_num_scale=1),
            _consisid_inputs, ((_TB, 4), ("perceiver_cross_attention", 2)), False),
    ZooSpec("dit", "DiT", "DiTTransformer2DModel",
            _seeded("DiTTransformer2DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
                    out_channels=8, num_layers=4, norm_num_groups=4, sample_size=8, patch_size=2),
            _dit_inputs, ((_TB, 4),), False),
    ZooSpec("amused", "aMUSEd", "UVit2DModel",
            _seeded("UVit2DModel", hidden_size=8, use_bias=False, cond_embed_dim=8, micro_cond_encode_dim=2,
                    micro_cond_embed_dim=10, encoder_hidden_size=8, vocab_size=32, codebook_size=8, in_channels=8,
                    block_out_channels=8, num_res_blocks=1, downsample=True, upsample=True, block_num_heads=1,
                    num_hidden_layers=4, num_attention_heads=1, intermediate_size=8),
            _uvit_inputs, (("transformer_layers", 4),), False),
    ZooSpec("bria", "Bria", "BriaTransformer2DModel",
            _seeded("BriaTransformer2DModel", patch_size=1, in_channels=4, num_layers=2, num_single_layers=3,
                    attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[0, 4, 4]),
            _bria_inputs, ((_TB, 2), ("single_transformer_blocks", 3)), False),
    ZooSpec("lumina2", "Lumina2", "Lumina2Transformer2DModel",
            _seeded("Lumina2Transformer2DModel", sample_size=8, patch_size=2, in_channels=4, hidden_size=24,
                    num_layers=4, num_refiner_layers=1, num_attention_heads=3, num_kv_heads=1, multiple_of=2,
                    axes_dim_rope=(4, 2, 2), axes_lens=(128, 128, 128), cap_feat_dim=8),
            _lumina2_inputs, (("noise_refiner", 1), ("context_refiner", 1), ("layers", 4)), True),
    ZooSpec("lumina_next", "Lumina-Next", "LuminaNextDiT2DModel",
            _seeded("LuminaNextDiT2DModel", sample_size=8, patch_size=2, in_channels=4, hidden_size=24,
                    num_layers=4, num_attention_heads=3, num_kv_heads=1, multiple_of=16, learn_sigma=False,
                    qk_norm=True, cross_attention_dim=32),
            _lumina_next_inputs, (("layers", 4),), False, cond_keys=("encoder_hidden_states",)),
    ZooSpec("omnigen", "OmniGen", "OmniGenTransformer2DModel",
            _seeded("OmniGenTransformer2DModel", hidden_size=16, num_attention_heads=4, num_key_value_heads=4,
                    intermediate_size=32, num_layers=4, pad_token_id=0, vocab_size=1000, in_channels=4,
                    time_step_dim=4, rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]}),
            _omnigen_inputs, (("layers", 4),), False),
    ZooSpec("pixart", "PixArt", "PixArtTransformer2DModel",
            _seeded("PixArtTransformer2DModel", sample_size=8, num_layers=4, patch_size=2, attention_head_dim=8,
                    num_attention_heads=3, caption_channels=32, in_channels=4, cross_attention_dim=24,
                    out_channels=8, norm_num_groups=1),
            _pixart_inputs, ((_TB, 4),), False),
    ZooSpec("sana", "Sana", "SanaTransformer2DModel",
            _seeded("SanaTransformer2DModel", patch_size=1, in_channels=4, out_channels=4, num_layers=4,
                    attention_head_dim=4, num_attention_heads=2, num_cross_attention_heads=2,
                    cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8, sample_size=4),
            _sana_inputs, ((_TB, 4),), False),
    ZooSpec("stable_audio", "Stable Audio", "StableAudioDiTModel",
            _seeded("StableAudioDiTModel", sample_size=16, in_channels=4, num_layers=4, attention_head_dim=4,
                    num_attention_heads=2, num_key_value_attention_heads=2, out_channels=4, cross_attention_dim=4,
                    time_proj_dim=8, global_states_input_dim=8, cross_attention_input_dim=8),
            _stable_audio_inputs, ((_TB, 4),), False),
    ZooSpec("auraflow", "AuraFlow", "AuraFlowTransformer2DModel",
            _seeded("AuraFlowTransformer2DModel", sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=2,
                    num_single_dit_layers=4, attention_head_dim=8, num_attention_heads=2,
                    caption_projection_dim=16, joint_attention_dim=32, out_channels=4, pos_embed_max_size=64),
            _auraflow_inputs, (("joint_transformer_blocks", 2), ("single_transformer_blocks", 4)), False,
            scope="single_transformer_blocks"),
    ZooSpec("chroma", "Chroma", "ChromaTransformer2DModel",
            _seeded("ChromaTransformer2DModel", patch_size=1, in_channels=4, num_layers=2, num_single_layers=4,
                    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[4, 4, 8],
                    approximator_num_channels=8, approximator_hidden_dim=16, approximator_layers=1),
            _chroma_inputs, ((_TB, 2), ("single_transformer_blocks", 4)), True, scope="single_transformer_blocks"),
    ZooSpec("shap_e", "Shap-E (prior)", "PriorTransformer",
            _seeded("PriorTransformer", num_attention_heads=2, attention_head_dim=4, num_layers=4, embedding_dim=8,
                    num_embeddings=7, additional_embeddings=4),
            _prior_inputs, ((_TB, 4),), False),
    ZooSpec("hidream", "HiDream-I1", "HiDreamImageTransformer2DModel",
            _seeded("HiDreamImageTransformer2DModel", patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                    num_single_layers=2, attention_head_dim=8, num_attention_heads=4, caption_channels=[8, 4],
                    text_emb_dim=8, num_routed_experts=2, num_activated_experts=2, axes_dims_rope=(4, 2, 2),
                    max_resolution=(32, 32), llama_layers=(0, 1, 0, 1)),
            _hidream_inputs, (("double_stream_blocks", 2), ("single_stream_blocks", 2), ("caption_projection", 5)), False),
    ZooSpec("hunyuandit", "HunyuanDiT", "HunyuanDiT2DModel",
            _seeded("HunyuanDiT2DModel", sample_size=8, patch_size=2, in_channels=4, num_layers=6,
                    attention_head_dim=8, num_attention_heads=2, cross_attention_dim=8, cross_attention_dim_t5=8,
                    pooled_projection_dim=4, hidden_size=16, text_len=4, text_len_t5=4),
            _hunyuandit_inputs, (("blocks", 6),), False),
    ZooSpec("kandinsky5", "Kandinsky 5", "Kandinsky5Transformer3DModel",
            _seeded("Kandinsky5Transformer3DModel", fill_zeros=True, in_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16,
                    out_visual_dim=4, patch_size=(1, 2, 2), model_dim=16, ff_dim=32, num_text_blocks=1,
                    num_visual_blocks=4, axes_dims=(4, 2, 2)),
            _kandinsky5_inputs, (("text_transformer_blocks", 1), ("visual_transformer_blocks", 4)), True, scope="visual_transformer_blocks",
            cond_keys=("encoder_hidden_states", "pooled_projections")),
    ZooSpec("prx", "PRX", "PRXTransformer2DModel",
            _seeded("PRXTransformer2DModel", fill_zeros=True, in_channels=4, patch_size=2, context_in_dim=32, hidden_size=32,
                    mlp_ratio=2.0, num_heads=2, depth=4, axes_dim=[8, 8]),
            _prx_inputs, (("blocks", 4),), False),
    ZooSpec("hunyuanimage", "HunyuanImage 2.1", "HunyuanImageTransformer2DModel",
            _seeded("HunyuanImageTransformer2DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                    attention_head_dim=8, num_layers=2, num_single_layers=2, num_refiner_layers=1, patch_size=(1, 1),
                    text_embed_dim=16, rope_axes_dim=(4, 4)),
            _hunyuanimage_inputs, ((_TB, 2), ("single_transformer_blocks", 2)), True),
    ZooSpec("chronoedit", "ChronoEdit", "ChronoEditTransformer3DModel",
            _seeded("ChronoEditTransformer3DModel", patch_size=(1, 2, 2), num_attention_heads=2,
                    attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32,
                    num_layers=4, rope_max_seq_len=32),
            _wan_inputs, (("blocks", 4),), True),
    ZooSpec("wan_vace", "Wan VACE", "WanVACETransformer3DModel",
            _seeded("WanVACETransformer3DModel", patch_size=(1, 2, 2), num_attention_heads=2,
                    attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32,
                    num_layers=4, rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=8),
            _wan_vace_inputs, (("blocks", 4), ("vace_blocks", 2)), True, scope="blocks",
            cond_keys=("encoder_hidden_states",)),
    ZooSpec("sana_video", "Sana-Video", "SanaVideoTransformer3DModel",
            _seeded("SanaVideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                    attention_head_dim=4, num_layers=4, num_cross_attention_heads=2, cross_attention_head_dim=4,
                    cross_attention_dim=8, caption_channels=8, sample_size=8),
            _sana_video_inputs, ((_TB, 4),), False),
    ZooSpec("flux2", "FLUX.2", "Flux2Transformer2DModel",
            _seeded("Flux2Transformer2DModel", patch_size=1, in_channels=4, num_layers=2, num_single_layers=4,
                    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                    timestep_guidance_channels=16, axes_dims_rope=(4, 4, 4, 4)),
            _flux2_inputs, ((_TB, 2), ("single_transformer_blocks", 4)), False, scope="single_transformer_blocks"),
    ZooSpec("zimage", "Z-Image", "ZImageTransformer2DModel",
            _seeded("ZImageTransformer2DModel", all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=16,
                    n_layers=4, n_refiner_layers=1, n_heads=1, n_kv_heads=1, qk_norm=True, cap_feat_dim=16,
                    axes_dims=[8, 4, 4], axes_lens=[256, 32, 32]),
            _zimage_inputs, (("noise_refiner", 1), ("context_refiner", 1), ("layers", 4)), False, scope="layers",
            cond_keys=("cap_feats",)),
    ZooSpec("hunyuanvideo_1_5", "HunyuanVideo 1.5", "HunyuanVideo15Transformer3DModel",
            _seeded("HunyuanVideo15Transformer3DModel", in_channels=9, out_channels=4, num_attention_heads=2,
                    attention_head_dim=8, num_layers=4, num_refiner_layers=1, mlp_ratio=2.0, text_embed_dim=16,
                    text_embed_2_dim=8, image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16,
                    task_type="t2v"),
            _hunyuanvideo15_inputs, ((_TB, 4),), True,
            cond_keys=("encoder_hidden_states", "encoder_attention_mask", "encoder_hidden_states_2",
                       "encoder_attention_mask_2")),
    ZooSpec("ltx2", "LTX-2", "LTX2VideoTransformer3DModel",
            _seeded("LTX2VideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                    attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
                    audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
                    num_layers=3, caption_channels=16, rope_double_precision=False),
            _ltx2_inputs, ((_TB, 3),), False, bn=0),  # 3 blocks, Bn=0 leaves a middle: keeps it fast
    ZooSpec("krea2", "Krea 2", "Krea2Transformer2DModel",
            _seeded("Krea2Transformer2DModel", in_channels=16, num_layers=4, attention_head_dim=8,
                    num_attention_heads=4, num_key_value_heads=2, intermediate_size=32, timestep_embed_dim=8,
                    text_hidden_dim=16, num_text_layers=3, text_num_attention_heads=2, text_num_key_value_heads=1,
                    text_intermediate_size=16, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
                    axes_dims_rope=(4, 2, 2)),
            _krea2_inputs, ((_TB, 4),), True, cond_keys=("encoder_hidden_states", "encoder_attention_mask")),
    ZooSpec("ovis_image", "Ovis-Image", "OvisImageTransformer2DModel",
            _seeded("OvisImageTransformer2DModel", patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                    num_single_layers=3, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                    axes_dims_rope=(4, 4, 8)),
            _ovis_image_inputs, ((_TB, 1), ("single_transformer_blocks", 3)), True),
    ZooSpec("longcat_image", "LongCat-Image", "LongCatImageTransformer2DModel",
            _seeded("LongCatImageTransformer2DModel", patch_size=1, in_channels=4, num_layers=1, num_single_layers=3,
                    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                    axes_dims_rope=[4, 4, 8]),
            _longcat_image_inputs, ((_TB, 1), ("single_transformer_blocks", 3)), True),
]

ZOO = {spec.name: spec for spec in ZOO_LIST}
