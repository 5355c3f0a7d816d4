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
    # Inputs every call shares that depend on the built model (a KV cache its reference pass fills,
    # as the pipeline runs it before denoising): prepare(model) -> dict, called once per model.
    prepare: Optional[Callable[[torch.nn.Module], dict]] = None

    @property
    def num_blocks(self) -> int:
        return sum(n for _, n in self.block_lists)


UNCOND_SEED = 100_003


def uncond_inputs(spec: ZooSpec, step_seed: int, timestep: float, batch: int = 1) -> dict:
    """The separate-CFG "uncond" call of a step: other conditioning, same latents and timestep."""
    cond = spec.make_inputs(step_seed, timestep, batch)
    other = spec.make_inputs(step_seed + UNCOND_SEED, timestep, batch)
    return {**cond, **{k: other[k] for k in spec.cond_keys}}


def _gen(step_seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(step_seed))


def _randn(gen: torch.Generator, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def _ts(timestep: float, batch: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    return torch.full((batch,), offset + float(timestep) * scale, dtype=torch.float32)


def _seeded(cls_name: str, fill_zeros: bool = False, fill_empty: Tuple[str, ...] = (), **config) -> Callable[[], torch.nn.Module]:
    """``fill_zeros``: give zero-initialised weights (adaLN-zero modulations, which make every block
    the identity at init) small random values, as a trained model has. ``fill_empty``: parameters
    (by name suffix) the model leaves uninitialised (``torch.empty``), given random values too."""

    def build() -> torch.nn.Module:
        import diffusers

        torch.manual_seed(0)
        model = getattr(diffusers, cls_name)(**config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(fill_empty) if fill_empty else False:
                    p.normal_(0.0, 0.1)
                elif fill_zeros and not p.any():
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


def _prompt_mask(step_seed, batch, length):
    """A tokenizer's padding mask: the prompt (seeds below UNCOND_SEED) has 1 pad token, the
    negative prompt (``uncond_inputs`` rebuilds the conditioning from seed + UNCOND_SEED) 3."""
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, length - (3 if step_seed >= UNCOND_SEED else 1):] = False
    return mask


def _lumina2_inputs(step_seed, timestep, batch=1):
    # Lumina2Pipeline pads prompts and passes their masks; the model joins the valid caption tokens
    # to the image tokens, so cond and uncond calls carry hidden streams of different lengths.
    g = _gen(step_seed)
    return dict(
        hidden_states=_randn(g, batch, 4, 8, 8),  # 16 tokens
        timestep=_ts(timestep, batch, -1.0 / 1000.0, 1.0),  # Lumina2Pipeline passes 1 - t / 1000
        encoder_hidden_states=_randn(g, batch, 6, 8),
        encoder_attention_mask=_prompt_mask(step_seed, batch, 6),
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
        encoder_attention_mask=_prompt_mask(step_seed, batch, 6).long(),
        encoder_hidden_states_2=_randn(g, batch, 4, 8),
        encoder_attention_mask_2=_prompt_mask(step_seed, batch, 4).long(),
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
            _lumina2_inputs, (("noise_refiner", 1), ("context_refiner", 1), ("layers", 4)), True, scope="layers",
            cond_keys=("encoder_hidden_states", "encoder_attention_mask")),
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
                    num_single_layers=4, attention_head_dim=8, num_attention_heads=4, caption_channels=[8, 4],
                    text_emb_dim=8, num_routed_experts=2, num_activated_experts=2, axes_dims_rope=(4, 2, 2),
                    max_resolution=(32, 32), llama_layers=(0, 1, 0, 1, 0, 1)),
            _hidream_inputs, (("double_stream_blocks", 2), ("single_stream_blocks", 4), ("caption_projection", 7)), False,
            scope="single_stream_blocks"),
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

# ----------------------------------------------------------------------------- diffusers 0.42's newer classes
# (one per transformer class with a block list that the seed's list lacked; same conventions as above)

_STB = "single_transformer_blocks"
_NEWER: list = []
def _bria_fibo_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    enc = _randn(g, batch, 8, 32)
    return dict(hidden_states=_randn(g, batch, 16, 4), encoder_hidden_states=enc,
                text_encoder_layers=[_randn(g, batch, 8, 16) for _ in range(5)],
                timestep=_ts(timestep, batch, 1.0 / 1000.0), img_ids=_image_ids(4, 4), txt_ids=_text_ids(8),
                return_dict=False)
_NEWER.append(ZooSpec("bria_fibo", "Bria FIBO", "BriaFiboTransformer2DModel",
    _seeded("BriaFiboTransformer2DModel", patch_size=1, in_channels=4, num_layers=1, num_single_layers=4,
            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32, text_encoder_dim=16,
            pooled_projection_dim=None, axes_dims_rope=[0, 4, 4]),
    _bria_fibo_inputs, ((_TB, 1), (_STB, 4), ("caption_projection", 5)), False, scope=_STB,
    cond_keys=("encoder_hidden_states", "text_encoder_layers")))

def _glm_image_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    uncond = step_seed >= UNCOND_SEED
    return dict(hidden_states=_randn(g, batch, 4, 8, 8), encoder_hidden_states=_randn(g, batch, 12, 32),
                prior_token_id=torch.randint(0, 64, (batch, 16), generator=_gen(7)),
                prior_token_drop=torch.full((batch, 16), uncond, dtype=torch.bool),
                timestep=_ts(timestep, batch, offset=-1.0), target_size=torch.tensor([[64.0, 64.0]] * batch),
                crop_coords=torch.zeros(batch, 2), return_dict=False)
_NEWER.append(ZooSpec("glm_image", "GLM-Image", "GlmImageTransformer2DModel",
    _seeded("GlmImageTransformer2DModel", patch_size=2, in_channels=4, out_channels=4, num_layers=4,
            attention_head_dim=8, num_attention_heads=2, text_embed_dim=32, time_embed_dim=16, condition_dim=8,
            prior_vq_quantizer_codebook_size=64),
    _glm_image_inputs, ((_TB, 4),), True, cond_keys=("encoder_hidden_states", "prior_token_drop")))

def _kandinsky6_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 1, 8, 8, 9), encoder_hidden_states=_randn(g, batch, 6, 8),
                pooled_projections=_randn(g, batch, 8), timestep=_ts(timestep, batch), return_dict=False)
_NEWER.append(ZooSpec("kandinsky6", "Kandinsky 6", "Kandinsky6Transformer3DModel",
    _seeded("Kandinsky6Transformer3DModel", fill_zeros=True, in_visual_dim=4, out_visual_dim=4, in_text_dim=8, in_text_dim2=8,
            time_dim=16, patch_size=(1, 2, 2), model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=4,
            axes_dims=(4, 2, 2), in_audio_dim=4, out_audio_dim=4),
    _kandinsky6_inputs, (("video_text_transformer_blocks", 1), ("audio_text_transformer_blocks", 1), ("visual_transformer_blocks", 4)), True,
    scope="visual_transformer_blocks", cond_keys=("encoder_hidden_states", "pooled_projections")))

def _qwenimage21_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    text_len, h, w = 4, 4, 4
    img_mask = torch.zeros(batch, text_len + h * w // 4, dtype=torch.bool)
    img_mask[:, text_len:] = True
    return dict(hidden_states=_randn(g, batch, h * w, 4), encoder_hidden_states=_randn(g, batch, text_len, 8),
                timestep=_ts(timestep, batch, 1.0 / 1000.0), img_shapes=[[(1, h, w)]] * batch, img_mask=img_mask,
                encoder_hidden_states_mask=_prompt_mask(step_seed, batch, text_len).long(), return_dict=False)
_NEWER.append(ZooSpec("qwenimage21", "Qwen-Image 2.1", "QwenImage21Transformer2DModel",
    _seeded("QwenImage21Transformer2DModel", patch_size=1, in_channels=4, out_channels=4, num_layers=4,
            attention_head_dim=16, num_attention_heads=2, context_in_dim=8, mlp_ratio=2, axes_dims_rope=(4, 6, 6)),
    _qwenimage21_inputs, ((_TB, 4),), True, cond_keys=("encoder_hidden_states", "encoder_hidden_states_mask")))

def _wanlike(step_seed, timestep, batch=1, frames_first=False, channels=4, text_dim=16):
    g = _gen(step_seed)
    x = _randn(g, batch, 2, channels, 8, 8) if frames_first else _randn(g, batch, channels, 2, 8, 8)
    return dict(hidden_states=x, encoder_hidden_states=_randn(g, batch, 8, text_dim), timestep=_ts(timestep, batch),
                return_dict=False)

_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=256, ffn_dim=32, num_layers=4)

def _anyflow_inputs(step_seed, timestep, batch=1):
    x = _wanlike(step_seed, timestep, batch, frames_first=True)
    x["timestep"] = x["timestep"][:, None].repeat(1, 2)  # per frame: (B, F)
    x["r_timestep"] = _ts(max(timestep - 41.0, 0.0), batch)[:, None].repeat(1, 2)
    return x
_NEWER.append(ZooSpec("anyflow", "AnyFlow", "AnyFlowTransformer3DModel",
    _seeded("AnyFlowTransformer3DModel", rope_max_seq_len=32, **_WAN), _anyflow_inputs, (("blocks", 4),), False))

_NEWER.append(ZooSpec("helios", "Helios", "HeliosTransformer3DModel",
    _seeded("HeliosTransformer3DModel", rope_dim=(4, 4, 4), **_WAN), _wanlike, (("blocks", 4),), True))

def _ernie_image_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    n = 4 if step_seed >= UNCOND_SEED else 6
    return dict(hidden_states=_randn(g, batch, 4, 8, 8), timestep=_ts(timestep, batch),
                text_bth=_randn(g, batch, 6, 16), text_lens=torch.full((batch,), n, dtype=torch.int64),
                return_dict=False)
_NEWER.append(ZooSpec("ernie_image", "ERNIE-Image", "ErnieImageTransformer2DModel",
    _seeded("ErnieImageTransformer2DModel", fill_zeros=True, hidden_size=16, num_attention_heads=2, num_layers=4, ffn_hidden_size=32,
            in_channels=4, out_channels=4, patch_size=2, text_in_dim=16, rope_axes_dim=(2, 2, 4)),
    _ernie_image_inputs, (("layers", 4),), False, cond_keys=("text_bth", "text_lens")))

def _joyimage_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 4, 1, 8, 8), timestep=_ts(timestep, batch),
                encoder_hidden_states=_randn(g, batch, 6, 16), return_dict=False)
_NEWER.append(ZooSpec("joyimage_edit", "JoyImage-Edit", "JoyImageEditTransformer3DModel",
    _seeded("JoyImageEditTransformer3DModel", in_channels=4, out_channels=4, hidden_size=16, num_attention_heads=2,
            text_dim=16, num_layers=4, rope_dim_list=[2, 2, 4]),
    _joyimage_inputs, (("double_blocks", 4),), True))

def _joyimage_plus_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 16, 4, 1, 2, 2), timestep=_ts(timestep, batch),
                encoder_hidden_states=_randn(g, batch, 6, 16),
                encoder_hidden_states_mask=_prompt_mask(step_seed, batch, 6).long(),
                shape_list=[[(1, 4, 4)]] * batch, return_dict=False)
_NEWER.append(ZooSpec("joyimage_edit_plus", "JoyImage-Edit Plus", "JoyImageEditPlusTransformer3DModel",
    _seeded("JoyImageEditPlusTransformer3DModel", in_channels=4, out_channels=4, hidden_size=16, num_attention_heads=2,
            text_dim=16, num_layers=4, rope_dim_list=[2, 2, 4]),
    _joyimage_plus_inputs, (("double_blocks", 4),), False))

def _flux3_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    img_ids = torch.zeros(16, 4); img_ids[:, 1] = torch.arange(4).repeat_interleave(4); img_ids[:, 2] = torch.arange(4).repeat(4)
    txt_ids = torch.zeros(8, 4); txt_ids[:, 3] = torch.arange(8)
    return dict(hidden_states=_randn(g, batch, 16, 4), encoder_hidden_states=_randn(g, batch, 8, 32),
                timestep=_ts(timestep, batch, 1.0 / 1000.0), img_ids=img_ids, txt_ids=txt_ids, return_dict=False)
_NEWER.append(ZooSpec("flux3", "FLUX.3", "Flux3Transformer2DModel",
    _seeded("Flux3Transformer2DModel", in_channels=4, cond_in_channels=4, num_layers=1, num_single_layers=4,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, timestep_channels=16,
            axes_dims_rope=(4, 4, 4, 4)),
    _flux3_inputs, (("txt_mode_blocks", 1), (_STB, 4)), False, scope=_STB))

def _ideogram4_inputs(step_seed, timestep, batch=1):
    from diffusers.models.transformers.transformer_ideogram4 import IMAGE_POSITION_OFFSET, LLM_TOKEN_INDICATOR, OUTPUT_IMAGE_INDICATOR
    g = _gen(step_seed)
    nt, ni = 4, 16
    seq = nt + ni
    hidden = torch.zeros(batch, seq, 4); hidden[:, nt:] = _randn(g, batch, ni, 4)
    enc = torch.zeros(batch, seq, 24); enc[:, :nt] = _randn(g, batch, nt, 24)
    pos = torch.zeros(batch, seq, 3, dtype=torch.long)
    pos[:, :nt] = torch.arange(nt)[:, None]
    pos[:, nt:, 0] = IMAGE_POSITION_OFFSET
    pos[:, nt:, 1] = torch.arange(4).repeat_interleave(4) + IMAGE_POSITION_OFFSET
    pos[:, nt:, 2] = torch.arange(4).repeat(4) + IMAGE_POSITION_OFFSET
    ind = torch.empty(batch, seq, dtype=torch.long); ind[:, :nt] = LLM_TOKEN_INDICATOR; ind[:, nt:] = OUTPUT_IMAGE_INDICATOR
    return dict(hidden_states=hidden, timestep=_ts(timestep, batch, 1.0 / 1000.0), encoder_hidden_states=enc,
                position_ids=pos, segment_ids=torch.ones(batch, seq, dtype=torch.long), indicator=ind, return_dict=False)
_NEWER.append(ZooSpec("ideogram4", "Ideogram 4", "Ideogram4Transformer2DModel",
    _seeded("Ideogram4Transformer2DModel", in_channels=4, num_layers=4, attention_head_dim=8, num_attention_heads=2,
            intermediate_size=32, adaln_dim=16, llm_features_dim=24, rope_theta=10000, mrope_section=(2, 1, 1)),
    _ideogram4_inputs, (("layers", 4),), False))

def _wan_animate_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 12, 5, 8, 8), timestep=_ts(timestep, batch),
                encoder_hidden_states=_randn(g, batch, 8, 16), encoder_hidden_states_image=_randn(g, batch, 4, 16),
                pose_hidden_states=_randn(g, batch, 4, 4, 8, 8), face_pixel_values=_randn(g, batch, 3, 9, 16, 16),
                return_dict=False)
_NEWER.append(ZooSpec("wan_animate", "Wan Animate", "WanAnimateTransformer3DModel",
    _seeded("WanAnimateTransformer3DModel", patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
            in_channels=12, latent_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=4,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", image_dim=16, rope_max_seq_len=32,
            motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16, motion_style_dim=8,
            motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
            inject_face_latents_blocks=2),
    _wan_animate_inputs, (("blocks", 4), ("face_adapter", 2)), True, scope="blocks"))

def _stable_audio3_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 8, 16), timestep=_ts(timestep, batch, 1.0 / 1000.0),
                encoder_hidden_states=_randn(g, batch, 6, 8), global_hidden_states=_randn(g, batch, 8), return_dict=False)
_NEWER.append(ZooSpec("stable_audio3", "Stable Audio 3", "StableAudio3DiTModel",
    _seeded("StableAudio3DiTModel", io_channels=8, embed_dim=16, depth=4, num_heads=2, cond_token_dim=8,
            global_cond_dim=8, local_add_cond_dim=4, timestep_features_dim=16, num_memory_tokens=2),
    _stable_audio3_inputs, ((_TB, 4),), False))

def _minimax_music3_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 8, 16), timestep=_ts(timestep, batch, 1.0 / 1000.0),
                encoder_hidden_states=_randn(g, batch, 16, 8), return_dict=False)
_NEWER.append(ZooSpec("minimax_music3", "MiniMax Music 3", "MiniMaxMusic3Transformer1DModel",
    _seeded("MiniMaxMusic3Transformer1DModel", in_channels=8, condition_dim=8, num_layers=4, num_attention_heads=2,
            attention_head_dim=8, ff_inner_dim=32, rotary_dim=4, fourier_embedding_dim=16),
    _minimax_music3_inputs, ((_TB, 4),), True))

def _longcat_audio_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 16, 8), encoder_hidden_states=_randn(g, batch, 6, 16),
                encoder_attention_mask=_prompt_mask(step_seed, batch, 6), timestep=_ts(timestep, batch, 1.0 / 1000.0),
                return_dict=False)
_NEWER.append(ZooSpec("longcat_audio_dit", "LongCat-AudioDiT", "LongCatAudioDiTTransformer",
    _seeded("LongCatAudioDiTTransformer", fill_zeros=True, dit_dim=16, dit_depth=4, dit_heads=2, dit_text_dim=16, latent_dim=8),
    _longcat_audio_inputs, (("blocks", 4), ("text_conv_layer", 4)), True, scope="blocks",
    cond_keys=("encoder_hidden_states", "encoder_attention_mask")))

def _motif_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 4, 1, 8, 8), timestep=_ts(timestep, batch),
                encoder_hidden_states=_randn(g, batch, 6, 16), encoder_attention_mask=_prompt_mask(step_seed, batch, 6).long(),
                return_dict=False)
_NEWER.append(ZooSpec("motif_video", "Motif-Video", "MotifVideoTransformer3DModel",
    _seeded("MotifVideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
            num_layers=2, num_single_layers=2, text_embed_dim=16, rope_axes_dim=(2, 2, 4)),
    _motif_inputs, ((_TB, 2), (_STB, 2)), False))

def _latte_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 4, 2, 8, 8), timestep=torch.full((batch,), int(timestep), dtype=torch.int64),
                encoder_hidden_states=_randn(g, batch, 6, 16), return_dict=False)
_NEWER.append(ZooSpec("latte", "Latte", "LatteTransformer3DModel",
    _seeded("LatteTransformer3DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
            num_layers=4, cross_attention_dim=16, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
            norm_type="ada_norm_single", caption_channels=16, video_length=2),
    _latte_inputs, (("transformer_blocks", 4), ("temporal_transformer_blocks", 4)), False, scope="transformer_blocks"))

def _t2d_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 4, 8, 8), timestep=torch.full((batch,), int(timestep), dtype=torch.int64),
                class_labels=torch.randint(0, 10, (batch,), generator=_gen(3)), return_dict=False)
_NEWER.append(ZooSpec("transformer_2d", "Transformer2D (DiT-style)", "Transformer2DModel",
    _seeded("Transformer2DModel", fill_zeros=True, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
            num_layers=4, sample_size=8, patch_size=2, num_embeds_ada_norm=10, norm_type="ada_norm_zero",
            norm_num_groups=4),
    _t2d_inputs, ((_TB, 4),), False))

def _temporal_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch * 2, 8, 4, 4), num_frames=2, return_dict=False)
_NEWER.append(ZooSpec("transformer_temporal", "TransformerTemporal (video UNets)", "TransformerTemporalModel",
    _seeded("TransformerTemporalModel", num_attention_heads=2, attention_head_dim=4, in_channels=8, num_layers=4,
            norm_num_groups=4),
    _temporal_inputs, ((_TB, 4),), False))

def _dreamlite_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 8, 4, 4), encoder_hidden_states=_randn(g, batch, 6, 16), return_dict=False)
_NEWER.append(ZooSpec("dreamlite", "DreamLite (UNet transformer)", "DreamLiteTransformer2DModel",
    _seeded("DreamLiteTransformer2DModel", num_attention_heads=2, attention_head_dim=4, in_channels=8, num_layers=4,
            norm_num_groups=4, cross_attention_dim=16),
    _dreamlite_inputs, ((_TB, 4),), False))

def _t5film_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(encodings_and_masks=[(_randn(g, batch, 6, 16), torch.ones(batch, 6, dtype=torch.bool))],
                decoder_input_tokens=_randn(g, batch, 8, 4), decoder_noise_time=_ts(timestep, batch, 1.0 / 1000.0))
_NEWER.append(ZooSpec("t5_film", "Spectrogram diffusion (T5-FiLM)", "T5FilmDecoder",
    _seeded("T5FilmDecoder", input_dims=4, targets_length=8, d_model=16, num_layers=4, num_heads=2, d_kv=8, d_ff=32,
            dropout_rate=0.0),
    _t5film_inputs, (("decoders", 4),), False))

def _framepack_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 4, 2, 8, 8), timestep=_ts(timestep, batch),
                encoder_hidden_states=_randn(g, batch, 6, 16), encoder_attention_mask=torch.ones(batch, 6),
                pooled_projections=_randn(g, batch, 8), image_embeds=_randn(g, batch, 4, 16),
                indices_latents=torch.arange(2), guidance=torch.full((batch,), 6000.0),
                latents_clean=_randn(_gen(11), batch, 4, 1, 8, 8), indices_latents_clean=torch.arange(2, 3),
                latents_history_2x=_randn(_gen(12), batch, 4, 1, 8, 8), indices_latents_history_2x=torch.arange(3, 4),
                latents_history_4x=_randn(_gen(13), batch, 4, 4, 8, 8), indices_latents_history_4x=torch.arange(4, 8),
                return_dict=False)
_NEWER.append(ZooSpec("hunyuanvideo_framepack", "HunyuanVideo FramePack", "HunyuanVideoFramepackTransformer3DModel",
    _seeded("HunyuanVideoFramepackTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
            attention_head_dim=10, num_layers=2, num_single_layers=2, num_refiner_layers=1, patch_size=2, patch_size_t=1,
            guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
            image_condition_type=None, has_image_proj=True, image_proj_dim=16, has_clean_x_embedder=True),
    _framepack_inputs, ((_TB, 2), (_STB, 2)), False))

def _nucleus_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 16, 16), img_shapes=[(1, 4, 4)] * batch,
                encoder_hidden_states=_randn(g, batch, 8, 16),
                encoder_hidden_states_mask=_prompt_mask(step_seed, batch, 8).long(),
                timestep=_ts(timestep, batch, 1.0 / 1000.0), return_dict=False)
_NEWER.append(ZooSpec("nucleusmoe_image", "NucleusMoE-Image", "NucleusMoEImageTransformer2DModel",
    _seeded("NucleusMoEImageTransformer2DModel", fill_empty=("gate_up_proj", "down_proj"), patch_size=2, in_channels=16, out_channels=4, num_layers=6,
            attention_head_dim=32, num_attention_heads=2, joint_attention_dim=16, axes_dims_rope=(16, 8, 8),
            num_experts=4, moe_intermediate_dim=16, capacity_factors=2.0),
    _nucleus_inputs, ((_TB, 6),), True, cond_keys=("encoder_hidden_states", "encoder_hidden_states_mask")))

def _k6sr_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 1, 8, 8, 9), timestep=_ts(timestep, batch), return_dict=False)
_NEWER.append(ZooSpec("kandinsky6_sr", "Kandinsky 6 SR", "Kandinsky6SRTransformer3DModel",
    _seeded("Kandinsky6SRTransformer3DModel", fill_zeros=True, in_visual_dim=4, out_visual_dim=4, time_dim=16,
            model_dim=16, ff_dim=32, num_visual_blocks=4, axes_dims=(4, 2, 2), nabla_window=(3, 3, 3)),
    _k6sr_inputs, (("visual_transformer_blocks", 4),), False))

def _ace_step_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    t = _ts(timestep, batch, 1.0 / 1000.0)
    return dict(hidden_states=_randn(g, batch, 16, 4), timestep=t, timestep_r=t.clone(),
                encoder_hidden_states=_randn(g, batch, 6, 16), context_latents=_randn(_gen(5), batch, 16, 8),
                return_dict=False)
_NEWER.append(ZooSpec("ace_step", "ACE-Step", "AceStepTransformer1DModel",
    _seeded("AceStepTransformer1DModel", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, in_channels=12, audio_acoustic_hidden_dim=4,
            patch_size=2, sliding_window=4, encoder_hidden_size=16),
    _ace_step_inputs, (("layers", 4),), True))

def _fibo2_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=_randn(g, batch, 4, 8, 8), timestep=_ts(timestep, batch, 1.0 / 1000.0),
                encoder_hidden_states=_randn(g, batch, 2, 6, 24), return_dict=False)
_NEWER.append(ZooSpec("bria_fibo2", "Bria FIBO 2", "BriaFibo2Transformer2DModel",
    _seeded("BriaFibo2Transformer2DModel", in_channels=4, patch_size=2, dim=32, n_layers=4, n_refiner_layers=1,
            n_heads=2, cap_feat_dim=24, injection_layer_ids=(1,), perceiver_num_layers=1, min_num_gist_tokens=4,
            max_num_gist_tokens=8, gist_step=4, gist_min_text_len=4, gist_max_text_len=16, axes_dims=(4, 6, 6),
            axes_lens=(16, 16, 16)),
    _fibo2_inputs, (("noise_refiner", 1), ("layers", 4)), True, scope="layers"))

def _cosmos3_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    h = w = 4
    nv = h * w
    seq = 4 + nv
    vis = torch.arange(4, seq)
    ids = torch.randint(1, 32, (4,), generator=_gen(step_seed + 1))
    return dict(input_ids=ids, text_indexes=torch.arange(4), position_ids=torch.zeros(3, seq, dtype=torch.long),
                und_len=4, sequence_length=seq, vision_tokens=[_randn(g, 1, 2, 1, h, w)], vision_token_shapes=[(1, h, w)],
                vision_sequence_indexes=vis, vision_mse_loss_indexes=vis,
                vision_timesteps=torch.full((nv,), float(timestep) / 1000.0), vision_noisy_frame_indexes=[torch.tensor([0])],
                return_dict=False)
_NEWER.append(ZooSpec("cosmos3", "Cosmos 3 (Omni)", "Cosmos3OmniTransformer",
    _seeded("Cosmos3OmniTransformer", head_dim=6, hidden_act="relu2", hidden_size=12, intermediate_size=24,
            latent_channel=2, latent_patch_size=1, num_attention_heads=2, num_hidden_layers=4, num_key_value_heads=1,
            patch_latent_dim=2, qk_norm_for_text=False, rope_axes_dim=[1, 1, 1], rope_theta=1e8, vocab_size=32),
    _cosmos3_inputs, (("layers", 4),), True, cond_keys=("input_ids",)))

def _minimax_h3_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    nt, na, nv = 4, 6, 8
    seq = nt + na + nv
    ti, ai, vi = torch.arange(nt), torch.arange(nt, nt + na), torch.arange(nt + na, seq)
    tags = torch.empty(seq, dtype=torch.long); tags[ti] = 1; tags[ai] = 2; tags[vi] = 0
    tidx = torch.zeros(seq, dtype=torch.long); tidx[ai] = 1
    pos = torch.zeros(seq, 3); pos[:, 0] = torch.arange(seq).float(); pos[vi, 1] = (torch.arange(nv) % 4).float(); pos[vi, 2] = (torch.arange(nv) % 2).float()
    t = float(timestep) / 1000.0
    return dict(hidden_states=_randn(g, batch, nv, 16), audio_hidden_states=_randn(g, batch, na, 6),
                encoder_hidden_states=_randn(g, batch, nt, 8), timestep=torch.tensor([t, max(t - 0.1, 0.0)]),
                timestep_indices=tidx, token_tags=tags, position_ids=pos, video_indices=vi, audio_indices=ai,
                text_indices=ti, return_dict=False)
_NEWER.append(ZooSpec("minimax_h3", "MiniMax-H3", "MiniMaxH3Transformer3DModel",
    _seeded("MiniMaxH3Transformer3DModel", num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=4,
            num_refiner_layers=1, ffn_dim=32, in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=8,
            freq_dim=8, time_embed_hidden_dim=24, time_embed_dim=16, rope_freq_dim=2),
    _minimax_h3_inputs, ((_TB, 4),), False))

def _sana_wm_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    f, h, w = 4, 4, 4
    c2w = torch.eye(4).repeat(batch, f, 1, 1); c2w[..., 2, 3] = torch.arange(f, dtype=torch.float32) * 0.1
    intr = torch.tensor([float(w), float(h), w / 2, h / 2]).expand(batch, f, 4)
    return dict(hidden_states=_randn(g, batch, 4, f, h, w), timestep=torch.full((batch, 1, f), float(timestep)),
                encoder_hidden_states=_randn(g, batch, 1, 8, 8), encoder_attention_mask=torch.ones(batch, 8, dtype=torch.long),
                camera_conditions=torch.cat([c2w.flatten(start_dim=-2), intr], dim=-1),
                chunk_plucker=_randn(_gen(9), batch, 8, f, h, w), return_dict=False)
_NEWER.append(ZooSpec("sana_wm", "SANA-WM", "SanaWMTransformer3DModel",
    _seeded("SanaWMTransformer3DModel", fill_zeros=True, in_channels=4, num_layers=4, hidden_size=32, num_attention_heads=2,
            patch_size=(1, 1, 1), softmax_every_n=2, linear_head_dim=16, t_kernel_size=3, conv_kernel_size=4,
            caption_channels=8, mlp_ratio=2.0, chunk_plucker_channels=8,
            chunk_plucker_post_attn_blocks=4),
    _sana_wm_inputs, (("blocks", 4),), False))

def _sana_wm_refiner_inputs(step_seed, timestep, batch=1):
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMLTX2AudioVideoRotaryPosEmbed
    g = _gen(step_seed)
    rope = SanaWMLTX2AudioVideoRotaryPosEmbed(dim=16, patch_size=1, patch_size_t=1, base_num_frames=20,
                                             base_height=2048, base_width=2048, scale_factors=(8, 32, 32),
                                             modality="video", double_precision=False, num_attention_heads=2)
    coords = rope.prepare_video_coords(batch, 2, 4, 4, device=torch.device("cpu"), fps=24.0)
    return dict(hidden_states=_randn(g, batch, 32, 4), encoder_hidden_states=_randn(g, batch, 8, 16),
                timestep=torch.full((batch, 32), float(timestep)), video_rotary_emb=rope(coords, device=torch.device("cpu")),
                encoder_attention_mask=torch.ones(batch, 8), return_dict=False)
_NEWER.append(ZooSpec("sana_wm_refiner", "SANA-WM refiner (LTX-2)", "SanaWMLTX2RefinerTransformer3DModel",
    _seeded("SanaWMLTX2RefinerTransformer3DModel", in_channels=4, out_channels=4, patch_size=1, patch_size_t=1,
            num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4,
            audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
            num_layers=4, qk_norm="rms_norm_across_heads", caption_channels=16, rope_double_precision=False),
    _sana_wm_refiner_inputs, ((_TB, 4),), False))

_WA2 = dict(patch_size=(1, 2, 2), text_len=8, in_dim=4 + 8, dim=32, ffn_dim=64, freq_dim=16, text_dim=16, out_dim=4,
            num_heads=2, num_layers=4, cross_attn_norm=True, use_img_emb=False)

def _wa2_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    return dict(hidden_states=[_randn(g, 4, 3, 4, 4)], timestep=torch.tensor([float(timestep)]),
                encoder_hidden_states=[_randn(g, 8, 16)], condition_latents=[_randn(_gen(21), 8, 3, 4, 4)],
                kv_cache_mode="cached", seq_len=3 * 4, reference_grid_sizes=torch.tensor([[2, 2, 2]]),
                origin_len=5, origin_area=[32, 32], return_dict=False)

def _wa2_prepare(model):
    """The reference pass the pipeline runs once per segment before denoising: fills the KV cache."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache
    g = _gen(31)
    cache = WanAnimate2KVCache(len(model.blocks))
    with torch.no_grad():
        model(hidden_states=[_randn(g, 4, 2, 4, 4)], timestep=torch.tensor([1.0]), encoder_hidden_states=[_randn(g, 8, 16)],
              condition_latents=[_randn(g, 8, 2, 4, 4)], kv_cache=cache, kv_cache_mode="extract", seq_len=2 * 4,
              offset_grid_sizes=torch.tensor([[2, 2, 2]]))
    return dict(kv_cache=cache)
_NEWER.append(ZooSpec("wan_animate_2", "Wan Animate 2", "WanAnimate2Transformer3DModel",
    _seeded("WanAnimate2Transformer3DModel", **_WA2), _wa2_inputs, (("blocks", 4),), True, prepare=_wa2_prepare))

def _rfd4_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    n = 8
    t = torch.full((batch,), 1.0 - float(timestep) / 1000.0)
    return dict(bb_ca=_randn(g, batch, n, 3), local_latents=_randn(g, batch, n, 4), bb_ca_time=t, local_latents_time=t.clone(),
                padding_mask=torch.ones(batch, n, dtype=torch.bool),
                conditioning={"is_in_context_conditioning": torch.zeros(batch, n, dtype=torch.bool),
                              "supports_local_latent": torch.ones(batch, n, dtype=torch.bool)}, return_dict=False)
_NEWER.append(ZooSpec("rfd4_proteina", "RFD4 Proteina", "RFD4ProteinaTransformer",
    _seeded("RFD4ProteinaTransformer", nlayers=4, token_dim=16, nheads=2, dim_cond=8, pair_repr_dim=8, latent_dim=4,
            token_type_emb_dim=4, cath_emb_dim=4, t_emb_dim=8, seq_sep_dim=4, xt_pair_dist_dim=4,
            feats_seq=("xt_bb_ca", "xt_local_latents"), feats_cond_seq=("time_emb_bb_ca", "time_emb_local_latents"),
            feats_pair_repr=("xt_bb_ca_pair_dists",), feats_pair_cond=("time_emb_bb_ca",), tri_mult_c=8),
    _rfd4_inputs, (("transformer_layers", 4),), False, scope="transformer_layers"))

_FAR = dict(patch_size=(1, 2, 2), compressed_patch_size=(1, 4, 4), full_chunk_limit=3, num_attention_heads=2,
            attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=4,
            rope_max_seq_len=32, chunk_partition=(1, 1, 1))

def _far_inputs(step_seed, timestep, batch=1):
    g = _gen(step_seed)
    t = torch.full((batch, 1), float(timestep))
    return dict(hidden_states=_randn(g, batch, 1, 4, 8, 8), timestep=t, r_timestep=t.clone(),
                encoder_hidden_states=_randn(g, batch, 8, 16), chunk_partition=[1, 1], return_dict=False)

def _far_cache(model, batch=1):
    cfg = model.config
    return {i: {"full_cache": torch.zeros(2, batch, cfg.num_attention_heads, cfg.full_chunk_limit * 16, cfg.attention_head_dim),
                "compressed_cache": torch.zeros(2, batch, cfg.num_attention_heads, (3 - cfg.full_chunk_limit + 1) * 4,
                                                cfg.attention_head_dim)}
            for i in range(cfg.num_layers)}

def _far_prefill_inputs(model, cache, batch=1):
    """The pipeline's cache step after chunk 0: writes every block's keys and values into ``cache``."""
    g = _gen(41)
    t = torch.zeros(batch, 1)
    mask = model.build_attention_mask(chunk_partition=[1], height=8, width=8, device=torch.device("cpu"), mode="cache")
    return dict(hidden_states=_randn(g, batch, 1, 4, 8, 8), chunk_partition=[1], timestep=t, r_timestep=t.clone(),
                encoder_hidden_states=_randn(g, batch, 8, 16), attention_mask=mask, return_dict=False, kv_cache=cache,
                kv_cache_flag={"num_cached_chunks": 0, "is_cache_step": True})

def _far_prepare(model):
    cache = _far_cache(model)
    with torch.no_grad():
        model(**_far_prefill_inputs(model, cache))
    return dict(kv_cache=cache, kv_cache_flag={"num_cached_chunks": 1, "is_cache_step": False})
_NEWER.append(ZooSpec("anyflow_far", "AnyFlow-FAR", "AnyFlowFARTransformer3DModel",
    _seeded("AnyFlowFARTransformer3DModel", **_FAR), _far_inputs, (("blocks", 4),), False, prepare=_far_prepare))

ZOO_LIST += _NEWER

ZOO = {spec.name: spec for spec in ZOO_LIST}
