"""Which diffusers DiT families dit_fx caches, as verified by ``tests/test_model_coverage.py``.

Each row is what that test asserts against a tiny random-weight model of the family (built from
a diffusers test-sized config, run with the inputs its pipeline passes): the block lists the
planner finds (in execution order), the Pattern_0-5 labels of the blocks it caches, whether the
family's pipeline runs CFG as separate transformer calls, and the status: ``"cached"`` (exact with
caching off, middle blocks skipped with caching on) or the reason dit_fx runs the model unmodified
(the text of its one ``RuntimeWarning``). The test fails if a row drifts from the live plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["ModelRow", "MODEL_MATRIX", "supported_models", "markdown_table"]

CACHED = "cached"


@dataclass(frozen=True)
class ModelRow:
    key: str  # name of the tiny model in tests/tiny_zoo.py
    family: str
    class_name: str
    block_lists: Tuple[str, ...]  # block lists of the model (shallowest indexed containers), module order
    patterns: Tuple[Tuple[str, Tuple[int, ...]], ...]  # cached list -> Pattern numbers of its blocks, in order
    separate_cfg: bool  # its pipeline calls the transformer twice per step (cond, uncond)
    status: str  # CACHED, or why the model runs unmodified
    scope: Optional[str] = None  # cache only this list (config {scope: DBCacheConfig(...)}); None: all lists

    @property
    def cached(self) -> bool:
        return self.status == CACHED


_TB, _STB = "transformer_blocks", "single_transformer_blocks"


def _row(key, family, cls, lists, patterns, cfg, status=CACHED, scope=None) -> ModelRow:
    return ModelRow(key, family, cls, tuple(lists), tuple((k, tuple(v)) for k, v in patterns), cfg, status, scope)


MODEL_MATRIX: Tuple[ModelRow, ...] = (
    _row("flux", "FLUX.1", "FluxTransformer2DModel", [_TB, _STB], [(_TB, [1]), (_STB, [1])], False),
    _row("mochi", "Mochi", "MochiTransformer3DModel", [_TB], [(_TB, [0])], False),
    _row("cogvideox", "CogVideoX", "CogVideoXTransformer3DModel", [_TB], [(_TB, [0])], False),
    _row("cogvideox_1_5", "CogVideoX 1.5", "CogVideoXTransformer3DModel", [_TB], [(_TB, [0])], False),
    _row("wan", "Wan 2.1", "WanTransformer3DModel", ["blocks"], [("blocks", [2])], True),
    _row("hunyuanvideo", "HunyuanVideo", "HunyuanVideoTransformer3DModel", [_TB, _STB], [(_TB, [0]), (_STB, [0])], False),
    _row("qwenimage", "Qwen-Image", "QwenImageTransformer2DModel", [_TB], [(_TB, [1])], True),
    _row("ltx", "LTX-Video", "LTXVideoTransformer3DModel", [_TB], [(_TB, [2])], False),
    _row("allegro", "Allegro", "AllegroTransformer3DModel", [_TB], [(_TB, [2])], False),
    _row("cogview3plus", "CogView3Plus", "CogView3PlusTransformer2DModel", [_TB], [(_TB, [0])], False),
    _row("cogview4", "CogView4", "CogView4Transformer2DModel", [_TB], [(_TB, [0])], True),
    _row("cosmos", "Cosmos", "CosmosTransformer3DModel", [_TB], [(_TB, [0])], True),
    _row("easyanimate", "EasyAnimate", "EasyAnimateTransformer3DModel", [_TB], [(_TB, [0])], False),
    _row("skyreels_v2", "SkyReels-V2", "SkyReelsV2Transformer3DModel", ["blocks"], [("blocks", [2])], True),
    _row("sd3", "SD3", "SD3Transformer2DModel", [_TB], [(_TB, [1])], False),
    _row(
        "consisid", "ConsisID", "ConsisIDTransformer3DModel", [_TB, "perceiver_cross_attention"],
        [(_TB, [0]), ("perceiver_cross_attention", [3])], False,
    ),
    _row("dit", "DiT", "DiTTransformer2DModel", [_TB], [(_TB, [3])], False),
    _row("amused", "aMUSEd", "UVit2DModel", ["transformer_layers"], [("transformer_layers", [2])], False),
    _row("bria", "Bria", "BriaTransformer2DModel", [_TB, _STB], [(_TB, [1]), (_STB, [1])], False),
    _row(
        "lumina2", "Lumina2", "Lumina2Transformer2DModel", ["noise_refiner", "context_refiner", "layers"],
        [("layers", [3])], True, scope="layers",
    ),
    _row("lumina_next", "Lumina-Next", "LuminaNextDiT2DModel", ["layers"], [("layers", [2])], False),
    _row("omnigen", "OmniGen", "OmniGenTransformer2DModel", ["layers"], [("layers", [3])], False),
    _row("pixart", "PixArt", "PixArtTransformer2DModel", [_TB], [(_TB, [2])], False),
    _row("sana", "Sana", "SanaTransformer2DModel", [_TB], [(_TB, [2])], False),
    _row("stable_audio", "Stable Audio", "StableAudioDiTModel", [_TB], [(_TB, [2])], False),
    _row(
        "auraflow", "AuraFlow", "AuraFlowTransformer2DModel", ["joint_transformer_blocks", _STB], [(_STB, [3])], False,
        scope=_STB,
    ),
    _row("chroma", "Chroma", "ChromaTransformer2DModel", [_TB, _STB], [(_STB, [2])], True, scope=_STB),
    _row("shap_e", "Shap-E (prior)", "PriorTransformer", [_TB], [(_TB, [3])], False),
    _row(
        "hidream", "HiDream-I1", "HiDreamImageTransformer2DModel",
        ["double_stream_blocks", "single_stream_blocks", "caption_projection"], [("single_stream_blocks", [3])], False,
        scope="single_stream_blocks",
    ),
    _row("hunyuandit", "HunyuanDiT", "HunyuanDiT2DModel", ["blocks"], [("blocks", [2])], False),
    _row(
        "kandinsky5", "Kandinsky 5", "Kandinsky5Transformer3DModel",
        ["text_transformer_blocks", "visual_transformer_blocks"], [("visual_transformer_blocks", [3, 2, 2, 2])], True,
        scope="visual_transformer_blocks",
    ),
    _row("prx", "PRX", "PRXTransformer2DModel", ["blocks"], [("blocks", [2])], False),
    _row(
        "hunyuanimage", "HunyuanImage 2.1", "HunyuanImageTransformer2DModel", [_TB, _STB], [(_TB, [0]), (_STB, [0])],
        True,
    ),
    _row("chronoedit", "ChronoEdit", "ChronoEditTransformer3DModel", ["blocks"], [("blocks", [2])], True),
    _row(
        "wan_vace", "Wan VACE", "WanVACETransformer3DModel", ["blocks", "vace_blocks"], [("blocks", [2])], True,
        scope="blocks",
    ),
    _row("sana_video", "Sana-Video", "SanaVideoTransformer3DModel", [_TB], [(_TB, [2])], False),
    _row("flux2", "FLUX.2", "Flux2Transformer2DModel", [_TB, _STB], [(_STB, [2])], False, scope=_STB),
    _row(
        "zimage", "Z-Image", "ZImageTransformer2DModel", ["noise_refiner", "context_refiner", "layers"],
        [("layers", [3])], False, scope="layers",
    ),
    _row("hunyuanvideo_1_5", "HunyuanVideo 1.5", "HunyuanVideo15Transformer3DModel", [_TB], [(_TB, [0])], True),
    _row("ltx2", "LTX-2", "LTX2VideoTransformer3DModel", [_TB], [(_TB, [0])], False),
    _row("krea2", "Krea 2", "Krea2Transformer2DModel", [_TB], [(_TB, [2])], True),
    _row("ovis_image", "Ovis-Image", "OvisImageTransformer2DModel", [_TB, _STB], [(_TB, [1]), (_STB, [1])], True),
    _row(
        "longcat_image", "LongCat-Image", "LongCatImageTransformer2DModel", [_TB, _STB], [(_TB, [1]), (_STB, [1])],
        True,
    ),
    # diffusers 0.42's newer classes
    _row(
        "bria_fibo", "Bria FIBO", "BriaFiboTransformer2DModel",
        ["transformer_blocks", "single_transformer_blocks", "caption_projection"],
        [("single_transformer_blocks", [2])], False, scope="single_transformer_blocks",
    ),
    _row(
        "glm_image", "GLM-Image", "GlmImageTransformer2DModel", ["transformer_blocks"],
        [("transformer_blocks", [0])], True,
    ),
    _row(
        "kandinsky6", "Kandinsky 6", "Kandinsky6Transformer3DModel",
        ["video_text_transformer_blocks", "audio_text_transformer_blocks", "visual_transformer_blocks"],
        [("visual_transformer_blocks", [4, 0, 0, 0])], True, scope="visual_transformer_blocks",
    ),
    _row(
        "qwenimage21", "Qwen-Image 2.1", "QwenImage21Transformer2DModel", ["transformer_blocks"],
        [("transformer_blocks", [3])], True,
    ),
    _row("anyflow", "AnyFlow", "AnyFlowTransformer3DModel", ["blocks"], [("blocks", [2])], False),
    _row("helios", "Helios", "HeliosTransformer3DModel", ["blocks"], [("blocks", [2])], True),
    _row("ernie_image", "ERNIE-Image", "ErnieImageTransformer2DModel", ["layers"], [("layers", [2])], False),
    _row(
        "joyimage_edit", "JoyImage-Edit", "JoyImageEditTransformer3DModel", ["double_blocks"],
        [("double_blocks", [0])], True,
    ),
    _row(
        "joyimage_edit_plus", "JoyImage-Edit Plus", "JoyImageEditPlusTransformer3DModel", ["double_blocks"],
        [("double_blocks", [0])], False,
    ),
    _row(
        "flux3", "FLUX.3", "Flux3Transformer2DModel", ["txt_mode_blocks", "single_transformer_blocks"],
        [("single_transformer_blocks", [1])], False, scope="single_transformer_blocks",
    ),
    _row("ideogram4", "Ideogram 4", "Ideogram4Transformer2DModel", ["layers"], [("layers", [3])], False),
    _row(
        "wan_animate", "Wan Animate", "WanAnimateTransformer3DModel", ["blocks", "face_adapter"], [("blocks", [2])],
        True, scope="blocks",
    ),
    _row(
        "stable_audio3", "Stable Audio 3", "StableAudio3DiTModel", ["transformer_blocks"],
        [("transformer_blocks", [2])], False,
    ),
    _row(
        "minimax_music3", "MiniMax Music 3", "MiniMaxMusic3Transformer1DModel", ["transformer_blocks"],
        [("transformer_blocks", [3])], True,
    ),
    _row(
        "longcat_audio_dit", "LongCat-AudioDiT", "LongCatAudioDiTTransformer", ["blocks", "text_conv_layer"],
        [("blocks", [2])], True, scope="blocks",
    ),
    _row(
        "motif_video", "Motif-Video", "MotifVideoTransformer3DModel",
        ["transformer_blocks", "single_transformer_blocks"],
        [("transformer_blocks", [0]), ("single_transformer_blocks", [0])], False,
    ),
    _row(
        "latte", "Latte", "LatteTransformer3DModel", ["transformer_blocks", "temporal_transformer_blocks"],
        [("transformer_blocks", [2])], False, scope="transformer_blocks",
    ),
    _row(
        "transformer_2d", "Transformer2D (DiT-style)", "Transformer2DModel", ["transformer_blocks"],
        [("transformer_blocks", [3])], False,
    ),
    _row(
        "transformer_temporal", "TransformerTemporal (video UNets)", "TransformerTemporalModel",
        ["transformer_blocks"], [("transformer_blocks", [3])], False,
    ),
    _row(
        "dreamlite", "DreamLite (UNet transformer)", "DreamLiteTransformer2DModel", ["transformer_blocks"],
        [("transformer_blocks", [2])], False,
    ),
    _row("t5_film", "Spectrogram diffusion (T5-FiLM)", "T5FilmDecoder", ["decoders"], [("decoders", [3])], False),
    _row(
        "hunyuanvideo_framepack", "HunyuanVideo FramePack", "HunyuanVideoFramepackTransformer3DModel",
        ["transformer_blocks", "single_transformer_blocks"], [], False,
        "with the sizes it reads from tensors kept symbolic, no hidden stream entering the middle found; "
        "with graph breaks allowed, no graph holds the block stack (graph break: step_unsupported)",
    ),
    _row(
        "nucleusmoe_image", "NucleusMoE-Image", "NucleusMoEImageTransformer2DModel", ["transformer_blocks"],
        [("transformer_blocks", [2])], True,
    ),
    _row(
        "kandinsky6_sr", "Kandinsky 6 SR", "Kandinsky6SRTransformer3DModel", ["visual_transformer_blocks"],
        [("visual_transformer_blocks", [3])], False,
    ),
    _row("ace_step", "ACE-Step", "AceStepTransformer1DModel", ["layers"], [("layers", [2])], True),
    _row(
        "bria_fibo2", "Bria FIBO 2", "BriaFibo2Transformer2DModel", ["noise_refiner", "layers"],
        [("layers", [3, 2, 3, 3])], True, scope="layers",
    ),
    _row(
        "cosmos3", "Cosmos 3 (Omni)", "Cosmos3OmniTransformer", ["layers"], [("layers", [0])], True,
        "the last block has 2 distinct outputs used later; cannot tell the hidden stream",
    ),
    _row(
        "minimax_h3", "MiniMax-H3", "MiniMaxH3Transformer3DModel", ["transformer_blocks"],
        [("transformer_blocks", [3])], False,
    ),
    _row("sana_wm", "SANA-WM", "SanaWMTransformer3DModel", ["blocks"], [("blocks", [2])], False),
    _row(
        "sana_wm_refiner", "SANA-WM refiner (LTX-2)", "SanaWMLTX2RefinerTransformer3DModel", ["transformer_blocks"],
        [("transformer_blocks", [2])], False,
    ),
    _row(
        "wan_animate_2", "Wan Animate 2", "WanAnimate2Transformer3DModel", ["blocks"], [], True,
        "could not capture the forward as one graph: Consider annotating your code using torch._check*(). "
        "Could not extract specialized integer from data-dependent expression u0 (unhinted: u0).  (Size-like "
        "symbols: none) Caused by: freqs = self.rope_freqs_cache.get(offsets)",
    ),
    _row(
        "rfd4_proteina", "RFD4 Proteina", "RFD4ProteinaTransformer", ["transformer_layers"],
        [("transformer_layers", [3, 2, 2, 2])], False, scope="transformer_layers",
    ),
    _row("anyflow_far", "AnyFlow-FAR", "AnyFlowFARTransformer3DModel", ["blocks"], [("blocks", [2])], False),
)

MATRIX_BY_KEY = {row.key: row for row in MODEL_MATRIX}


def supported_models() -> Tuple[str, ...]:
    """diffusers transformer classes that dit_fx caches (verified on a tiny model of each), sorted."""
    return tuple(sorted({row.class_name for row in MODEL_MATRIX if row.cached}))


def _lists_cell(row: ModelRow) -> str:
    patterns = dict(row.patterns)
    cells = []
    for name in row.block_lists:
        if name in patterns:
            labels = "/".join(f"P{p}" for p in dict.fromkeys(patterns[name]))
            cells.append(f"`{name}` ({labels})")
        else:
            cells.append(f"`{name}`")
    return ", ".join(cells)


def markdown_table() -> str:
    """The matrix as a markdown table (``python -m dit_fx matrix``)."""
    lines = [
        "| Family | Class | Block lists (patterns of cached blocks) | Separate CFG | Status |",
        "|---|---|---|---|---|",
    ]
    for row in MODEL_MATRIX:
        if row.cached:
            status = "cached" + (f" (per-list config: `{{\"{row.scope}\": cfg}}`)" if row.scope else "")
        else:
            status = "unmodified: " + row.status.replace("|", "\\|")
        lines.append(
            f"| {row.family} | `{row.class_name}` | {_lists_cell(row)} | {'yes' if row.separate_cfg else 'no'} "
            f"| {status} |"
        )
    return "\n".join(lines)
