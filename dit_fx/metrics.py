"""Image and video quality metrics, in float64 math: MSE, PSNR, SSIM, and FID with a feature
extractor you supply. ``python -m dit_fx metrics A B`` on two folders (or files) prints them.

Inputs. A ``torch.Tensor`` is channels-first: ``[H, W]``, ``[C, H, W]`` or a stack ``[N, C, H, W]``
(a video ``[T, C, H, W]``: metrics per frame). A numpy array or PIL image is image-layout:
``[H, W]`` or ``[H, W, C]`` (a numpy stack: ``[N, H, W, C]``). A path is an image file (PIL),
a ``.pt`` tensor or a ``.npy`` array. Values are converted to float64 before any arithmetic, so
uint8 differences never wrap modulo 256.

Value range (``data_range``, the L of PSNR and SSIM): by default the dtype's: 255 for uint8,
65535 for uint16, 1.0 for floating inputs (images in [0, 1]); pass it for anything else (2.0 for
latents in [-1, 1]). Inputs of different dtype kinds without ``data_range`` raise ``ValueError``.

Identical pairs (MSE 0, PSNR infinite). ``psnr`` of one identical pair returns ``inf``. A
``Comparison`` over several pairs or frames counts them in ``identical``: they enter the MSE and
SSIM means (as 0 and 1) and are left out of the PSNR mean, which is over the differing pairs
(``inf`` when every pair is identical). Nothing is dropped: ``count`` is every pair compared. In
JSON an infinite PSNR is written as the string ``"inf"``.

SSIM: Wang et al. 2004, Gaussian window 11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, "valid"
filtering (no padding), averaged over pixels and channels; both sides must be at least 11x11.

FID: ``fid(real, fake, features=module)``: ``module`` maps a float batch ``[N, C, H, W]`` to
features ``[N, D]``; ``InceptionFeatures(weights_path)`` is the standard FID network
(torch-fidelity's). LPIPS (``load_lpips`` + ``lpips_distance``, the ``lpips`` package) and CLIP
score (``clip_score``, torchmetrics + transformers) likewise take weights from a path you give;
a missing one raises ``FileNotFoundError`` naming it. Nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


# ----------------------------------------------------------------------------- inputs


def _load_path(path: str, name: str) -> Any:
    if not os.path.isfile(path):
        raise ValueError(f"{name}: no such file {path!r}")
    if path.endswith(".pt"):
        return torch.load(path, weights_only=True)
    if path.endswith(".npy"):
        import numpy as np

        return np.load(path)
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "RGB", "I;16"):
            img = img.convert("RGB")
        import numpy as np

        return np.asarray(img).copy()


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """Channels-first tensor of ``x`` in its own dtype (paths loaded, numpy/PIL permuted)."""
    if isinstance(x, (str, os.PathLike)):
        x = _load_path(os.fspath(x), name)
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if hasattr(x, "mode") and hasattr(x, "size") and not hasattr(x, "shape"):  # a PIL image
        import numpy as np

        x = np.asarray(x).copy()
    if hasattr(x, "__array__"):
        import numpy as np

        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.movedim(-1, -3) if t.dim() >= 3 else t  # [..., H, W, C] -> [..., C, H, W]
    raise ValueError(f"{name} must be a tensor, array, PIL image or path, got {type(x).__name__}")


def _default_range(dtype: torch.dtype) -> float:
    if dtype == torch.bool:
        return 1.0
    if dtype.is_floating_point:
        return 1.0
    return float(torch.iinfo(dtype).max)


def _pair(a: Any, b: Any, data_range: Optional[float]) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Both sides as float64 stacks ``[N, C, H, W]`` and the value range."""
    ta, tb = _as_tensor(a, "a"), _as_tensor(b, "b")
    if ta.shape != tb.shape:
        raise ValueError(f"b has shape {tuple(tb.shape)} but a has {tuple(ta.shape)} (layouts: see dit_fx.metrics)")
    if ta.dim() not in (2, 3, 4):
        raise ValueError(f"a must be [H, W], [C, H, W] or [N, C, H, W], got shape {tuple(ta.shape)}")
    if data_range is None:
        data_range = _default_range(ta.dtype)
        if _default_range(tb.dtype) != data_range:
            raise ValueError(f"data_range: a ({ta.dtype}) and b ({tb.dtype}) have different value ranges; pass data_range")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
        raise ValueError(f"data_range must be a number > 0, got {data_range!r}")
    while ta.dim() < 4:
        ta, tb = ta.unsqueeze(0), tb.unsqueeze(0)
    return ta.to(torch.float64), tb.to(torch.float64), float(data_range)


# ----------------------------------------------------------------------------- per frame


def _mse_frames(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().flatten(1).mean(1)


def _psnr_from_mse(mse: float, data_range: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(channels: int) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def _ssim_frames(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"a: SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(a.shape[-2:])}")
    channels = a.shape[1]
    window = _gaussian_window(channels)

    def blur(x):
        return F.conv2d(x, window, groups=channels)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1)


# ----------------------------------------------------------------------------- public


def mse(a: Any, b: Any) -> float:
    """Mean squared error over every element (float64; a stack counts as one signal)."""
    ta, tb, _ = _pair(a, b, 1.0)
    return float((ta - tb).square().mean())


def psnr(a: Any, b: Any, data_range: Optional[float] = None) -> float:
    """10 log10(L² / MSE) of one image (``inf`` when identical); of a stack: the mean over its
    differing frames (see ``compare``)."""
    return compare(a, b, data_range).psnr


def ssim(a: Any, b: Any, data_range: Optional[float] = None) -> float:
    """Mean SSIM (Gaussian 11x11, sigma 1.5); of a stack, the mean over its frames."""
    ta, tb, rng = _pair(a, b, data_range)
    return float(_ssim_frames(ta, tb, rng).mean())


@dataclass
class Comparison:
    """Metrics over pairs (images of two folders, frames of two videos)."""

    count: int  # pairs compared
    identical: int  # pairs with MSE 0: in the MSE / SSIM means, not in the PSNR mean
    mse: float
    psnr: float  # mean over the differing pairs; inf when every pair is identical
    ssim: Optional[float]  # None when the images are smaller than the SSIM window
    per_item: Dict[str, Dict[str, float]] = field(default_factory=dict)
    learned: Dict[str, float] = field(default_factory=dict)  # the CLI's LPIPS / FID / CLIP numbers, when asked

    def as_dict(self) -> Dict[str, Any]:
        """JSON-ready: an infinite PSNR becomes the string ``"inf"``."""
        clean = lambda v: "inf" if isinstance(v, float) and math.isinf(v) else v  # noqa: E731
        out = {k: clean(v) for k, v in self.__dict__.items() if k not in ("per_item", "learned")}
        if self.learned:
            out["learned"] = dict(self.learned)
        out["per_item"] = {n: {k: clean(v) for k, v in m.items()} for n, m in self.per_item.items()}
        return out

    def line(self) -> str:
        ssim_text = "n/a" if self.ssim is None else f"{self.ssim:.4f}"
        return (f"pairs {self.count} (identical {self.identical})  PSNR {self.psnr:.2f} dB (differing pairs)  "
                f"SSIM {ssim_text}  MSE {self.mse:.6g}")


def _summarize(names: Sequence[str], mses: List[float], psnrs: List[float], ssims: Optional[List[float]]) -> Comparison:
    finite = [p for p in psnrs if not math.isinf(p)]
    per_item = {n: {"mse": m, "psnr": p} for n, m, p in zip(names, mses, psnrs)}
    if ssims is not None:
        for n, s in zip(names, ssims):
            per_item[n]["ssim"] = s
    return Comparison(
        count=len(mses),
        identical=len(psnrs) - len(finite),
        mse=sum(mses) / len(mses),
        psnr=sum(finite) / len(finite) if finite else math.inf,
        ssim=sum(ssims) / len(ssims) if ssims is not None else None,
        per_item=per_item,
    )


def _frame_metrics(ta: torch.Tensor, tb: torch.Tensor, rng: float) -> Tuple[List[float], List[float], Optional[List[float]]]:
    """Per frame: MSE, PSNR, SSIM (None for images smaller than the SSIM window)."""
    mses = _mse_frames(ta, tb).tolist()
    ssims = _ssim_frames(ta, tb, rng).tolist() if min(ta.shape[-2:]) >= SSIM_WINDOW else None
    return mses, [_psnr_from_mse(m, rng) for m in mses], ssims


def compare(a: Any, b: Any, data_range: Optional[float] = None) -> Comparison:
    """MSE, PSNR and SSIM of two images or two stacks of frames (``[T, C, H, W]``), per frame."""
    ta, tb, rng = _pair(a, b, data_range)
    mses, psnrs, ssims = _frame_metrics(ta, tb, rng)
    return _summarize([str(i) for i in range(len(mses))], mses, psnrs, ssims)


def _image_names(folder: str, name: str) -> List[str]:
    if not os.path.isdir(folder):
        raise ValueError(f"{name}: {folder!r} is not a folder")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError(f"{name}: no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder!r}")
    return names


def paired_names(dir_a: str, dir_b: str) -> List[str]:
    """Image file names present in both folders; a name in only one raises ``ValueError``."""
    names_a, names_b = _image_names(dir_a, "dir_a"), _image_names(dir_b, "dir_b")
    missing_b, missing_a = sorted(set(names_a) - set(names_b)), sorted(set(names_b) - set(names_a))
    if missing_b:
        raise ValueError(f"dir_b: no pair for {missing_b[:5]}{' ...' if len(missing_b) > 5 else ''} of dir_a ({dir_b!r})")
    if missing_a:
        raise ValueError(f"dir_a: no pair for {missing_a[:5]}{' ...' if len(missing_a) > 5 else ''} of dir_b ({dir_a!r})")
    return names_a


def compare_folders(dir_a: str, dir_b: str, data_range: Optional[float] = None) -> Comparison:
    """Images of two folders paired by file name (a folder of video frames works the same);
    each pair is one item (a file holding a stack counts as one, its frames averaged)."""
    names = paired_names(dir_a, dir_b)
    mses, psnrs, ssims = [], [], []
    for n in names:
        one = compare(os.path.join(dir_a, n), os.path.join(dir_b, n), data_range)
        mses.append(one.mse)
        psnrs.append(one.psnr)
        ssims.append(one.ssim)
    return _summarize(names, mses, psnrs, None if None in ssims else ssims)


def compare_paths(a: str, b: str, data_range: Optional[float] = None) -> Comparison:
    """Two folders (paired by name) or two files (images, ``.pt`` tensors, ``.npy`` arrays)."""
    if os.path.isdir(a) or os.path.isdir(b):
        return compare_folders(a, b, data_range)
    return compare(a, b, data_range)


# ----------------------------------------------------------------------------- FID


def _run_features(t: torch.Tensor, module: torch.nn.Module, name: str) -> torch.Tensor:
    """``module(t)`` as float64 ``[N, D]`` on the CPU (``t`` moved to the module's device/dtype)."""
    param = next(module.parameters(), None)
    t = t.to(torch.float32 if param is None else param.dtype)
    if param is not None:
        t = t.to(param.device)
    with torch.no_grad():
        feats = module(t)
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] != t.shape[0]:
        raise ValueError(f"features must map [N, C, H, W] to [N, D]; got {getattr(feats, 'shape', type(feats).__name__)} for {name}")
    return feats.detach().to(torch.float64).cpu()


def _features(x: Any, module: torch.nn.Module, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.dim() != 4:
        raise ValueError(f"{name} must be a batch [N, C, H, W] of images, got shape {tuple(t.shape)}")
    feats = _run_features(t, module, name)
    if feats.shape[0] < 2:
        raise ValueError(f"{name}: FID needs at least 2 images")
    return feats


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64."""
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    cov_a, cov_b = torch.cov(feats_a.T), torch.cov(feats_b.T)
    root = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root @ cov_b @ root).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def fid(real: Any, fake: Any, features: torch.nn.Module) -> float:
    """Fréchet distance between ``features(real)`` and ``features(fake)`` (batches
    ``[N, C, H, W]``). ``features``: your extractor, e.g. an Inception-v3 pool layer loaded from
    your own weights file; dit_fx downloads nothing."""
    if not isinstance(features, torch.nn.Module):
        raise ValueError(f"features must be an nn.Module mapping images to [N, D], got {type(features).__name__}")
    return frechet_distance(_features(real, features, "real"), _features(fake, features, "fake"))


# ----------------------------------------------------------------------------- learned metrics
# LPIPS, Inception features for FID and CLIP score run through the libraries that define them
# (``lpips``, ``torch-fidelity``, ``torchmetrics`` + ``transformers``), always on weights from a
# path you give: nothing is downloaded. ``pip install dit_fx[metrics]`` adds torchmetrics and
# transformers only: lpips and torch-fidelity need a torchvision built for your torch, which pip
# would otherwise pick by upgrading torch; install them beside the torchvision that matches it.


def _weights_path(path: Any, what: str, how: str, folder: bool = False) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{what} weights must be a path, got {type(path).__name__}")
    path = os.fspath(path)
    exists = os.path.isfile(os.path.join(path, "config.json")) if folder else os.path.isfile(path)
    if not exists:
        missing = os.path.join(path, "config.json") if folder and os.path.isdir(path) else path
        raise FileNotFoundError(f"{what} weights: no such {'folder with config.json' if folder else 'file'}: "
                                f"{missing!r} (dit_fx downloads nothing; {how})")
    return path


def _library(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:  # torchvision built for another torch fails with RuntimeError, not ImportError
        raise ImportError(f"this metric needs {package} (and, for lpips / torch-fidelity, a torchvision built for "
                          f"this torch): "
                          f"import {module} failed: {type(exc).__name__}: {exc}") from exc


def _unit_images(x: Any, name: str) -> torch.Tensor:
    """``[N, C, H, W]`` float32 in [0, 1] (uint8 divided by 255; floats taken as [0, 1])."""
    t = _as_tensor(x, name)
    if t.dim() == 2:  # a grey image file
        t = t.unsqueeze(0)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ValueError(f"{name} must be an image [H, W] / [C, H, W] or a batch [N, C, H, W], got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    if not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be uint8 or floating images in [0, 1], got {t.dtype}")
    return t.to(torch.float32)


LPIPS_NETS = ("alex", "vgg", "squeeze")


def load_lpips(weights: Any, net: str = "alex") -> torch.nn.Module:
    """The ``lpips`` package's ``LPIPS(net=net)`` with every weight (backbone and linear heads)
    from ``weights``: a ``state_dict`` file, made once where a hub is reachable with
    ``torch.save(lpips.LPIPS(net=net).state_dict(), path)``. Built with ``pnet_rand=True`` and
    ``pretrained=False`` so nothing is fetched, then loaded strictly."""
    if net not in LPIPS_NETS:
        raise ValueError(f"net must be one of {LPIPS_NETS}, got {net!r}")
    path = _weights_path(weights, f"LPIPS ({net})", f"save lpips.LPIPS(net={net!r}).state_dict() to it")
    lpips = _library("lpips", "lpips")
    model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def lpips_distance(a: Any, b: Any, model: torch.nn.Module) -> torch.Tensor:
    """LPIPS of each pair (``[N]``; lower is closer) with a model from ``load_lpips``; images in
    [0, 1] (or uint8), shapes as for ``psnr``, grey images repeated to 3 channels."""
    ta, tb = _unit_images(a, "a"), _unit_images(b, "b")
    if ta.shape != tb.shape:
        raise ValueError(f"b has shape {tuple(tb.shape)} but a has {tuple(ta.shape)}")
    if ta.shape[1] == 1:
        ta, tb = ta.expand(-1, 3, -1, -1), tb.expand(-1, 3, -1, -1)
    param = next(model.parameters())
    with torch.no_grad():
        out = model(ta.to(param), tb.to(param), normalize=True)  # normalize: [0, 1] -> [-1, 1]
    return out.flatten().to(torch.float64).cpu()


class InceptionFeatures(torch.nn.Module):
    """torch-fidelity's FID Inception-v3 (``inception-v3-compat``, the network of the standard
    FID) on weights from a file (its ``pt_inception-2015-12-05`` state dict), as a feature module
    for ``fid``: float images in [0, 1] ``[N, C, H, W]`` to ``[N, 2048]`` pool features (grey
    repeated to RGB; torch-fidelity resizes to 299 itself)."""

    def __init__(self, weights: Any):
        super().__init__()
        path = _weights_path(weights, "Inception-v3 (FID)", "torch-fidelity's pt_inception-2015-12-05 .pth file")
        fidelity = _library("torch_fidelity.feature_extractor_inceptionv3", "torch-fidelity")
        self.net = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                        feature_extractor_weights_path=path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError("InceptionFeatures takes float images in [0, 1] (divide uint8 images by 255), got values in "
                             f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x * 255).round().to(torch.uint8)  # the extractor takes uint8 images
        return self.net(x)[0].reshape(x.shape[0], -1)


class _ClipFeatures(torch.nn.Module):
    """A CLIPModel whose ``get_*_features`` return the projected embeddings as tensors: from
    transformers 5 they return a model output (``pooler_output`` holds them), which torchmetrics
    1.9 divides by its norm as if it were a tensor."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.config = model, model.config

    @staticmethod
    def _tensor(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def clip_score(images: Any, prompts: Sequence[str], model: Any) -> float:
    """CLIP score (torchmetrics': ``max(mean(100 * cos(image, text)), 0)``) of ``images``
    (``[N, C, H, W]``, or a list of images of any sizes; [0, 1] floats or uint8) against one
    prompt each. ``model``: a local folder
    that ``transformers.CLIPModel`` / ``CLIPProcessor.from_pretrained`` read (``save_pretrained``
    of both), loaded with ``local_files_only``."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a list of strings, one per image")
    path = _weights_path(model, "CLIP", "save_pretrained a CLIPModel and its CLIPProcessor there", folder=True)
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    imgs = [im for item in items for im in _unit_images(item, "images")]  # each [C, H, W]; sizes may differ
    if len(imgs) != len(prompts):
        raise ValueError(f"prompts: {len(prompts)} for {len(imgs)} images")
    imgs = [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in imgs]
    transformers = _library("transformers", "transformers")
    functional = _library("torchmetrics.functional.multimodal", "torchmetrics")

    def load():
        return (_ClipFeatures(transformers.CLIPModel.from_pretrained(path, local_files_only=True).eval()),
                transformers.CLIPProcessor.from_pretrained(path, local_files_only=True))

    pixels = [(im * 255).round().to(torch.uint8) for im in imgs]  # the processor rescales by 1/255 itself
    with torch.no_grad():
        return float(functional.clip_score(pixels, list(prompts), model_name_or_path=load))


# ----------------------------------------------------------------------------- CLI


def _image_pairs(a: str, b: str) -> Tuple[List[str], List[torch.Tensor], List[torch.Tensor]]:
    """Names and the two sides as lists of ``[N, C, H, W]`` images in [0, 1] (one per file)."""
    if os.path.isdir(a) or os.path.isdir(b):
        names = paired_names(a, b)
        return (names, [_unit_images(os.path.join(a, n), "a") for n in names],
                [_unit_images(os.path.join(b, n), "b") for n in names])
    return [os.path.basename(a)], [_unit_images(a, "a")], [_unit_images(b, "b")]


def _prompts(path: str, names: Sequence[str]) -> List[str]:
    """``--prompts``: a JSON object of file name -> prompt (one per pair), or one string for a
    single pair."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, str) and len(names) == 1:
        return [data]
    if not isinstance(data, dict):
        raise ValueError(f"prompts: {path!r} must hold a JSON object of file name -> prompt")
    missing = [n for n in names if not isinstance(data.get(n), str)]
    if missing:
        raise ValueError(f"prompts: no prompt for {missing[:5]} in {path!r}")
    return [data[n] for n in names]


def learned(args: Any, names: Sequence[str], xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> Dict[str, float]:
    """The CLI's ``--lpips`` / ``--fid-inception`` / ``--clip`` numbers over the pairs."""
    out: Dict[str, float] = {}
    if args.lpips:
        model = load_lpips(args.lpips, args.lpips_net)
        values = torch.cat([lpips_distance(x, y, model) for x, y in zip(xs, ys)])
        out["lpips"] = float(values.mean())
    if args.fid_inception:
        feats = InceptionFeatures(args.fid_inception)
        fa = torch.cat([_run_features(x, feats, "a") for x in xs])
        fb = torch.cat([_run_features(y, feats, "b") for y in ys])
        if fa.shape[0] < 2:
            raise ValueError("fid_inception: FID needs at least 2 images a side")
        out["fid"] = frechet_distance(fa, fb)
    if args.clip:
        if not args.prompts:
            raise ValueError("prompts: --clip needs --prompts (a JSON object of file name -> prompt)")
        texts = _prompts(args.prompts, names)
        out["clip_score_a"] = clip_score(list(xs), texts, args.clip)
        out["clip_score_b"] = clip_score(list(ys), texts, args.clip)
    return out


def main(argv: Optional[Sequence[str]] = None) -> Comparison:
    """``python -m dit_fx metrics A B [--data-range L] [--json PATH|-] [--per-item]
    [--lpips WEIGHTS [--lpips-net NET]] [--fid-inception WEIGHTS] [--clip FOLDER --prompts JSON]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dit_fx metrics", description="PSNR / SSIM / MSE of A against B, "
                                     "and LPIPS / FID / CLIP score on weights you give")
    parser.add_argument("a", help="folder of images (paired by file name with B), image file, .pt or .npy")
    parser.add_argument("b")
    parser.add_argument("--data-range", type=float, default=None, help="value range L (default: 255 for uint8, 1 for floats)")
    parser.add_argument("--json", default=None, help="write the numbers as JSON to this file ('-': stdout)")
    parser.add_argument("--per-item", action="store_true", help="print every pair's numbers too")
    parser.add_argument("--lpips", default=None, metavar="WEIGHTS", help="LPIPS state dict file (see load_lpips): mean LPIPS")
    parser.add_argument("--lpips-net", default="alex", choices=LPIPS_NETS)
    parser.add_argument("--fid-inception", default=None, metavar="WEIGHTS",
                        help="torch-fidelity's Inception .pth: FID of A's images against B's")
    parser.add_argument("--clip", default=None, metavar="FOLDER", help="local CLIP save_pretrained folder: CLIP score of A and of B")
    parser.add_argument("--prompts", default=None, help="JSON object of file name -> prompt (for --clip)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    result = compare_paths(args.a, args.b, args.data_range)
    print(result.line())
    if args.per_item:
        for name, m in result.per_item.items():
            print(f"  {name}: " + "  ".join(f"{k} {v:.6g}" for k, v in m.items()))
    if args.lpips or args.fid_inception or args.clip:
        result.learned = learned(args, *_image_pairs(args.a, args.b))
        print("  ".join(f"{k} {v:.6g}" for k, v in result.learned.items()))
    if args.json:
        text = json.dumps(result.as_dict(), indent=2, allow_nan=False)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return result
