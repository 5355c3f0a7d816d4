"""A small trained class-conditional FLUX-architecture transformer on Fashion-MNIST (issue 18).

Everything here runs on CPU or GPU and imports only torch at module level (diffusers, safetensors
and scipy are imported where they are used).

The model
---------
``load_fashion_transformer()`` is a plain diffusers ``FluxTransformer2DModel`` loaded with
``FluxTransformer2DModel.from_pretrained(<dit_fx>/assets/fashion_flux)``, the path any user's or
library's ``from_pretrained`` takes. Architecture (``TRANSFORMER_CONFIG``): 2 double-stream + 10
single-stream blocks, 6 heads x 32 = hidden 192, ``in_channels=4``, ``joint_attention_dim=64``,
``pooled_projection_dim=64``, no guidance embedding, rotary axes (8, 12, 12); 8.44 M parameters.
The weights are stored as float16 (16.9 MB), in two safetensors shards of at most 10 MB
(``diffusion_pytorch_model-0000N-of-00002.safetensors`` + ``.index.json``, diffusers' standard
sharded layout, as FLUX.1 ships), so no file is over 16 MB; they load into whatever ``dtype`` is
asked for (float32 by default). They are the EMA weights of the training run.

Images and latents
------------------
A 28x28 image in [0, 1] is mapped to [-1, 1], padded with -1 (the black background) to 32x32
(2 pixels each side) and packed 2x2 exactly like FLUX packs its latents (``pack``): 16x16 = 256
tokens of 4 channels. ``img_ids`` are FLUX's (0, row, col) per token, ``txt_ids`` zeros.

Class conditioning
------------------
The class is the "prompt": ``FashionConditioner`` is a learned table of 11 entries (10 classes +
the null class ``NULL_CLASS = 10`` for classifier-free guidance) giving ``encoder_hidden_states``
[B, 4, 64] (4 text tokens) and ``pooled_projections`` [B, 64]. It is not part of the transformer
(it plays the text encoder's role), so it lives in its own file, ``conditioner.safetensors``, in
the same asset folder, with its sizes in the file's metadata. It was trained jointly with the
transformer (its EMA weights), with the class replaced by the null class for 10% of the samples.

Sampling
--------
Rectified flow: ``x_t = (1 - t) x0 + t noise``, the model predicts the velocity ``noise - x0``,
and ``sample`` integrates from t = 1 (noise) to t = 0 with Euler steps. The schedule is FLUX's:
``sigmas = linspace(1, 1/steps, steps)`` shifted by ``shift * s / (1 + (shift - 1) s)`` with
``shift = exp(mu)``, ``mu = 0.5`` (what ``FluxPipeline``'s ``calculate_shift`` gives for 256 image
tokens), followed by 0; this is what ``FlowMatchEulerDiscreteScheduler`` does in a FLUX pipeline.
The transformer is called with keyword arguments as diffusers pipelines call it, with
``timestep = t`` in [0, 1] (``FluxTransformer2DModel`` multiplies it by 1000 itself), so a model
wrapped by ``dit_fx.optimize`` (or ``torch.compile``) works unchanged.

Quality metrics
---------------
``FashionClassifier`` is a small CNN (157 k parameters, ``classifier.safetensors``) trained on the
same training set; ``class_accuracy`` is its top-1 agreement with the requested classes, and
``feature_fid`` the Frechet distance between Gaussian fits of its 128-d penultimate features (a
FID with this classifier in place of Inception). ``load_reference_stats()`` gives the mean and
covariance of those features over the 10k test images (``fid_stats.safetensors``). The Frechet
distance is computed in float64; ``method="auto"`` uses ``scipy.linalg.sqrtm`` when scipy is
importable (as pytorch-fid does) and otherwise an exact eigen-decomposition form in torch:
``tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))``; both give the same value (to ~1e-9
relative) on full-rank covariances. On rank-deficient ones (fewer samples than 128 features),
where sqrtm warns that the product is singular, the scipy path uses the eigen form, which stays
exact there.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "fashion_flux"

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = 10
NULL_CLASS = 10  # the unconditional "empty prompt" entry of the conditioner

IMAGE_SIZE = 28
PAD = 2
PADDED_SIZE = IMAGE_SIZE + 2 * PAD  # 32
LATENT_SIDE = PADDED_SIZE // 2  # 16 tokens a side after 2x2 packing
NUM_IMAGE_TOKENS = LATENT_SIDE * LATENT_SIDE  # 256
LATENT_CHANNELS = 4  # 1 channel x 2 x 2
NUM_TEXT_TOKENS = 4

TRANSFORMER_CONFIG = dict(
    patch_size=1,
    in_channels=LATENT_CHANNELS,
    out_channels=None,
    num_layers=2,
    num_single_layers=10,
    attention_head_dim=32,
    num_attention_heads=6,
    joint_attention_dim=64,
    pooled_projection_dim=64,
    guidance_embeds=False,
    axes_dims_rope=(8, 12, 12),
)

DEFAULT_STEPS = 28
DEFAULT_GUIDANCE = 2.0
DEFAULT_MU = 0.5
DEFAULT_SHIFT = math.exp(DEFAULT_MU)

CONDITIONER_FILE = "conditioner.safetensors"
CLASSIFIER_FILE = "classifier.safetensors"
STATS_FILE = "fid_stats.safetensors"
TRAINING_LOG_FILE = "training_log.json"

# Fashion-MNIST training-set pixel mean / std (of [0, 1] images), used inside the classifier.
_PIXEL_MEAN = 0.2860
_PIXEL_STD = 0.3530

__all__ = [
    "ASSET_DIR",
    "CLASS_NAMES",
    "DEFAULT_GUIDANCE",
    "DEFAULT_SHIFT",
    "DEFAULT_STEPS",
    "FashionClassifier",
    "FashionConditioner",
    "FeatureStats",
    "NULL_CLASS",
    "NUM_CLASSES",
    "TRANSFORMER_CONFIG",
    "assets_available",
    "class_accuracy",
    "feature_fid",
    "feature_stats",
    "flux_sigmas",
    "frechet_distance",
    "images_to_latents",
    "latent_ids",
    "latents_to_images",
    "load_fashion_classifier",
    "load_fashion_conditioner",
    "load_fashion_transformer",
    "load_reference_stats",
    "load_training_log",
    "pack",
    "sample",
    "unpack",
]


# ---------------------------------------------------------------------------------------------
# Asset folder


def _asset_dir(path: Optional[Union[str, os.PathLike]] = None) -> Path:
    return Path(path) if path is not None else ASSET_DIR


def assets_available(path: Optional[Union[str, os.PathLike]] = None) -> bool:
    """True when the folder holds a complete model (transformer, conditioner, classifier, stats)."""
    d = _asset_dir(path)
    if not (d / "config.json").is_file():
        return False
    has_weights = (d / "diffusion_pytorch_model.safetensors").is_file() or (
        d / "diffusion_pytorch_model.safetensors.index.json"
    ).is_file()
    return has_weights and all((d / f).is_file() for f in (CONDITIONER_FILE, CLASSIFIER_FILE, STATS_FILE))


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found in {path}: the Fashion-MNIST model is not there; "
        "train it with `python scripts/train_fashion.py --out <dir>` (GPU, ~8 minutes)"
    )


# ---------------------------------------------------------------------------------------------
# Latents: padding and FLUX 2x2 packing


def pack(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/2)(W/2), 4C], exactly FluxPipeline._pack_latents."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, height: int = PADDED_SIZE, width: int = PADDED_SIZE) -> torch.Tensor:
    """[B, (H/2)(W/2), 4C] -> [B, C, H, W], exactly FluxPipeline._unpack_latents (at scale 1)."""
    b, _, ch = x.shape
    x = x.view(b, height // 2, width // 2, ch // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, ch // 4, height, width)


def images_to_latents(images: torch.Tensor) -> torch.Tensor:
    """[B, 1, 28, 28] in [0, 1] (or uint8 0..255) -> packed latents [B, 256, 4] in [-1, 1]."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if images.dim() == 3:
        images = images.unsqueeze(1)
    x = images.float() * 2.0 - 1.0
    x = F.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)
    return pack(x)


def latents_to_images(latents: torch.Tensor) -> torch.Tensor:
    """Packed latents [B, 256, 4] -> images [B, 1, 28, 28] in [0, 1] (float32, padding cropped)."""
    x = unpack(latents.float())
    x = x[:, :, PAD : PAD + IMAGE_SIZE, PAD : PAD + IMAGE_SIZE]
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def latent_ids(num_text_tokens: int = NUM_TEXT_TOKENS, device=None, dtype=torch.float32):
    """(img_ids [256, 3], txt_ids [T, 3]) as FluxPipeline builds them: (0, row, col) and zeros."""
    ids = torch.zeros(LATENT_SIDE, LATENT_SIDE, 3)
    ids[..., 1] = torch.arange(LATENT_SIDE)[:, None]
    ids[..., 2] = torch.arange(LATENT_SIDE)[None, :]
    img_ids = ids.reshape(-1, 3).to(device=device, dtype=dtype)
    txt_ids = torch.zeros(num_text_tokens, 3, device=device, dtype=dtype)
    return img_ids, txt_ids


def flux_sigmas(steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT) -> torch.Tensor:
    """The ``steps + 1`` noise levels t_0 = 1 > ... > t_steps = 0 of FLUX's shifted schedule.

    ``linspace(1, 1/steps, steps)`` mapped by ``shift * s / (1 + (shift - 1) * s)``, then 0:
    what ``FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=..., mu=log(shift))`` returns
    with FLUX's scheduler config. ``shift=1`` gives the plain linear schedule.
    """
    s = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64)
    s = shift * s / (1.0 + (shift - 1.0) * s)
    return torch.cat([s, s.new_zeros(1)]).float()


# ---------------------------------------------------------------------------------------------
# Conditioner (the "text encoder")


class FashionConditioner(nn.Module):
    """Class label -> (encoder_hidden_states [B, T, joint_dim], pooled_projections [B, pooled_dim]).

    Entry ``num_classes`` (10) is the null class used for classifier-free guidance.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        num_tokens: int = NUM_TEXT_TOKENS,
        joint_attention_dim: int = TRANSFORMER_CONFIG["joint_attention_dim"],
        pooled_projection_dim: int = TRANSFORMER_CONFIG["pooled_projection_dim"],
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_tokens = num_tokens
        self.joint_attention_dim = joint_attention_dim
        self.pooled_projection_dim = pooled_projection_dim
        self.tokens = nn.Embedding(num_classes + 1, num_tokens * joint_attention_dim)
        self.pooled = nn.Embedding(num_classes + 1, pooled_projection_dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def config(self) -> Dict[str, int]:
        return dict(
            num_classes=self.num_classes,
            num_tokens=self.num_tokens,
            joint_attention_dim=self.joint_attention_dim,
            pooled_projection_dim=self.pooled_projection_dim,
        )

    def forward(self, classes) -> Tuple[torch.Tensor, torch.Tensor]:
        classes = torch.as_tensor(classes, dtype=torch.long, device=self.tokens.weight.device).reshape(-1)
        enc = self.tokens(classes).view(-1, self.num_tokens, self.joint_attention_dim)
        return enc, self.pooled(classes)

    def save_pretrained(self, path: Union[str, os.PathLike]) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {k: str(v) for k, v in self.config().items()}
        save_file(state, str(Path(path) / CONDITIONER_FILE), metadata=meta)

    @classmethod
    def from_pretrained(cls, path=None, device=None, dtype=torch.float32) -> "FashionConditioner":
        from safetensors import safe_open
        from safetensors.torch import load_file

        f = _asset_dir(path) / CONDITIONER_FILE
        if not f.is_file():
            raise _missing(f.parent, CONDITIONER_FILE)
        with safe_open(str(f), framework="pt") as h:
            meta = h.metadata() or {}
        module = cls(**{k: int(v) for k, v in meta.items() if k in cls().config()})
        module.load_state_dict(load_file(str(f)))
        return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Classifier (accuracy and feature-FID)


class FashionClassifier(nn.Module):
    """A small CNN on [B, 1, 28, 28] images in [0, 1]: ``features`` (128-d) and ``logits`` (10)."""

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.width = width
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        c = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(1, c), *block(c, c), nn.MaxPool2d(2),  # 14x14
            *block(c, 2 * c), *block(2 * c, 2 * c), nn.MaxPool2d(2),  # 7x7
            *block(2 * c, 4 * c), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.fc = nn.Linear(4 * c, feature_dim)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, num_classes)

    def config(self) -> Dict[str, int]:
        return dict(width=self.width, feature_dim=self.feature_dim, num_classes=self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features [B, feature_dim] (after ReLU)."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = (x.float() - _PIXEL_MEAN) / _PIXEL_STD
        return F.relu(self.fc(self.body(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    forward = logits

    def save_pretrained(self, path: Union[str, os.PathLike]) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {k: str(v) for k, v in self.config().items()}
        save_file(state, str(Path(path) / CLASSIFIER_FILE), metadata=meta)

    @classmethod
    def from_pretrained(cls, path=None, device=None) -> "FashionClassifier":
        from safetensors import safe_open
        from safetensors.torch import load_file

        f = _asset_dir(path) / CLASSIFIER_FILE
        if not f.is_file():
            raise _missing(f.parent, CLASSIFIER_FILE)
        with safe_open(str(f), framework="pt") as h:
            meta = h.metadata() or {}
        module = cls(**{k: int(v) for k, v in meta.items() if k in ("width", "feature_dim", "num_classes")})
        module.load_state_dict(load_file(str(f)))
        return module.to(device=device).eval().requires_grad_(False)


def _classifier_device(classifier: nn.Module) -> torch.device:
    return next(classifier.parameters()).device


@torch.no_grad()
def _batched(fn, images: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    out = [fn(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def class_accuracy(images: torch.Tensor, labels, classifier: FashionClassifier, batch_size: int = 500) -> float:
    """Fraction of ``images`` ([B, 1, 28, 28] in [0, 1]) that ``classifier`` assigns to ``labels``."""
    was_training = classifier.training
    classifier.eval()
    try:
        logits = _batched(classifier.logits, images, _classifier_device(classifier), batch_size)
    finally:
        classifier.train(was_training)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    return float((logits.argmax(dim=1) == labels).double().mean())


@dataclass
class FeatureStats:
    """Mean and covariance (float64, N-1 normalized) of classifier features over ``n`` images."""

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int

    def save(self, file: Union[str, os.PathLike]) -> None:
        from safetensors.torch import save_file

        save_file(
            {"mu": self.mu.double().contiguous(), "sigma": self.sigma.double().contiguous()},
            str(file),
            metadata={"n": str(self.n)},
        )

    @classmethod
    def load(cls, file: Union[str, os.PathLike]) -> "FeatureStats":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as h:
            return cls(h.get_tensor("mu"), h.get_tensor("sigma"), int((h.metadata() or {}).get("n", 0)))


@torch.no_grad()
def feature_stats(images: torch.Tensor, classifier: FashionClassifier, batch_size: int = 500) -> FeatureStats:
    """Gaussian fit of ``classifier.features`` over ``images`` (at least 2)."""
    if images.shape[0] < 2:
        raise ValueError("feature statistics need at least 2 images")
    was_training = classifier.training
    classifier.eval()
    try:
        f = _batched(classifier.features, images, _classifier_device(classifier), batch_size).double()
    finally:
        classifier.train(was_training)
    mu = f.mean(dim=0)
    d = f - mu
    sigma = d.T @ d / (f.shape[0] - 1)
    return FeatureStats(mu, sigma, int(f.shape[0]))


def load_reference_stats(path=None) -> FeatureStats:
    """Classifier-feature statistics of the 10k Fashion-MNIST test images (shipped)."""
    f = _asset_dir(path) / STATS_FILE
    if not f.is_file():
        raise _missing(f.parent, STATS_FILE)
    return FeatureStats.load(f)


def _sym_sqrt(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) * 0.5)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "auto") -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)), in float64.

    ``method``: "scipy" (``scipy.linalg.sqrtm``, pytorch-fid's formula; where sqrtm reports the
    product singular, i.e. fewer samples than features, the "eigh" form is used instead), "eigh"
    (torch, ``tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))``, exact for any PSD pair), or
    "auto" (scipy if importable, else eigh).
    """
    mu1, mu2 = torch.as_tensor(mu1).double().cpu(), torch.as_tensor(mu2).double().cpu()
    s1, s2 = torch.as_tensor(sigma1).double().cpu(), torch.as_tensor(sigma2).double().cpu()
    diff = float(((mu1 - mu2) ** 2).sum())
    if method == "auto":
        import importlib.util

        method = "scipy" if importlib.util.find_spec("scipy") is not None else "eigh"
    if method == "scipy":
        import warnings

        import numpy as np
        import scipy.linalg

        a, b = s1.numpy(), s2.numpy()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            covmean = scipy.linalg.sqrtm(a @ b)
        if isinstance(covmean, tuple):  # older scipy with disp=False semantics
            covmean = covmean[0]
        if caught or not np.isfinite(covmean).all():
            # sqrtm reports a singular product (fewer samples than features): use the exact form.
            return frechet_distance(mu1, sigma1, mu2, sigma2, method="eigh")
        tr_covmean = float(np.trace(np.real(covmean)))
    elif method == "eigh":
        r = _sym_sqrt(s1)
        m = r @ s2 @ r
        tr_covmean = float(torch.linalg.eigvalsh((m + m.T) * 0.5).clamp(min=0).sqrt().sum())
    else:
        raise ValueError(f"unknown method {method!r} (expected 'auto', 'scipy' or 'eigh')")
    return max(0.0, diff + float(torch.trace(s1)) + float(torch.trace(s2)) - 2.0 * tr_covmean)


StatsLike = Union[torch.Tensor, FeatureStats, Tuple[torch.Tensor, torch.Tensor], Dict[str, torch.Tensor]]


def _as_stats(x: StatsLike, classifier) -> FeatureStats:
    if isinstance(x, FeatureStats):
        return x
    if isinstance(x, dict):
        return FeatureStats(x["mu"], x["sigma"], int(x.get("n", 0)))
    if isinstance(x, (tuple, list)):
        return FeatureStats(x[0], x[1], 0)
    return feature_stats(x, classifier)


def feature_fid(images_a: StatsLike, images_b: StatsLike, classifier: FashionClassifier, method: str = "auto") -> float:
    """Frechet distance between the classifier-feature Gaussians of two image sets.

    Each side is images [N, 1, 28, 28] in [0, 1], or precomputed statistics (``FeatureStats``,
    ``(mu, sigma)`` or ``{"mu", "sigma"}``), e.g. ``load_reference_stats()`` for the test set.
    Small sets bias the value upwards (as with any FID): compare sets of equal size.
    """
    a, b = _as_stats(images_a, classifier), _as_stats(images_b, classifier)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method=method)


# ---------------------------------------------------------------------------------------------
# Loading


def load_fashion_transformer(device=None, dtype=torch.float32, path=None):
    """The trained ``FluxTransformer2DModel`` (eval mode, no grad), via ``from_pretrained``."""
    from diffusers import FluxTransformer2DModel

    d = _asset_dir(path)
    if not (d / "config.json").is_file():
        raise _missing(d, "config.json")
    model = FluxTransformer2DModel.from_pretrained(str(d), torch_dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model.eval().requires_grad_(False)


def load_fashion_conditioner(device=None, dtype=torch.float32, path=None) -> FashionConditioner:
    return FashionConditioner.from_pretrained(path, device=device, dtype=dtype)


def load_fashion_classifier(device=None, path=None) -> FashionClassifier:
    return FashionClassifier.from_pretrained(path, device=device)


def load_training_log(path=None) -> dict:
    f = _asset_dir(path) / TRAINING_LOG_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


# ---------------------------------------------------------------------------------------------
# Sampling


def _model_device_dtype(model) -> Tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


@torch.no_grad()
def sample(
    transformer,
    conditioner: FashionConditioner,
    classes,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
    latents: Optional[torch.Tensor] = None,
    cfg: Optional[str] = "batched",
    shift: float = DEFAULT_SHIFT,
    device=None,
    dtype=None,
    output: str = "images",
):
    """Generate one image per entry of ``classes`` (ints 0-9; 10 is unconditional).

    Rectified-flow Euler from t = 1 to 0 on ``flux_sigmas(steps, shift)``. Classifier-free
    guidance ``v = v_uncond + guidance * (v_cond - v_uncond)`` with the null class:
    ``cfg="batched"`` runs cond and uncond as one call of batch 2B (cond first), ``"sequential"``
    as two calls per step (cond, then uncond), ``None`` (or ``guidance == 1``) cond only.

    Noise: ``latents`` (packed [B, 256, 4]) if given, else drawn on the CPU from ``generator``
    (or ``torch.Generator().manual_seed(seed)``), so a seed gives the same images on every device.
    ``device``/``dtype`` default to the transformer's parameters'. Returns images [B, 1, 28, 28]
    in [0, 1] (float32, on the CPU), or the final packed latents with ``output="latents"``.
    """
    if cfg not in ("batched", "sequential", None):
        raise ValueError(f"cfg must be 'batched', 'sequential' or None, got {cfg!r}")
    p_device, p_dtype = _model_device_dtype(transformer)
    device = torch.device(device) if device is not None else p_device
    dtype = dtype or p_dtype
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    b = classes.shape[0]
    if latents is None:
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        latents = torch.randn(b, NUM_IMAGE_TOKENS, LATENT_CHANNELS, generator=g)
    x = latents.to(device=device, dtype=torch.float32)
    use_cfg = cfg is not None and guidance != 1.0

    cond_dev = conditioner.tokens.weight.device
    enc_c, pool_c = conditioner(classes.to(cond_dev))
    enc_u, pool_u = conditioner(torch.full_like(classes, conditioner.null_class).to(cond_dev))
    enc_c, pool_c, enc_u, pool_u = (t.to(device=device, dtype=dtype) for t in (enc_c, pool_c, enc_u, pool_u))
    img_ids, txt_ids = latent_ids(enc_c.shape[1], device=device, dtype=dtype)
    if use_cfg and cfg == "batched":
        enc_b, pool_b = torch.cat([enc_c, enc_u]), torch.cat([pool_c, pool_u])

    def call(h, enc, pooled, t):
        return transformer(
            hidden_states=h.to(dtype),
            encoder_hidden_states=enc,
            pooled_projections=pooled,
            timestep=t.expand(h.shape[0]).to(dtype),
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
        )[0].float()

    sigmas = flux_sigmas(steps, shift).to(device)
    for i in range(steps):
        t, t_next = sigmas[i], sigmas[i + 1]
        if not use_cfg:
            v = call(x, enc_c, pool_c, t)
        elif cfg == "batched":
            v_c, v_u = call(torch.cat([x, x]), enc_b, pool_b, t).chunk(2)
            v = v_u + guidance * (v_c - v_u)
        else:
            v_c = call(x, enc_c, pool_c, t)
            v_u = call(x, enc_u, pool_u, t)
            v = v_u + guidance * (v_c - v_u)
        x = x + (t_next - t) * v
    if output == "latents":
        return x
    return latents_to_images(x).cpu()
