"""``python -m dit_fx demo``: 28-step generations, plain vs dit_fx, on the shipped trained model when it is there.

Two models (``--model``, default ``auto``):

- ``trained`` (``auto`` when ``dit_fx/assets/fashion_flux`` is installed): the small
  class-conditional FLUX transformer trained on Fashion-MNIST (``dit_fx.models.fashion``), a few
  classes (``--classes``), batched classifier-free guidance, FLUX's schedule. dit_fx runs
  DBCache F1B0 at ``TRAINED_THRESHOLD``, a threshold for trained models (docs/quality.md). It
  writes a side-by-side PNG (``--png``): the plain images, the dit_fx images and their
  difference (x8), with PSNR / SSIM against the plain run and the speed-up in the caption.
- ``random`` (the fallback): a tiny FLUX-architecture transformer with random weights, built from
  a config (no download), on fixed prompt embeddings, threshold 0.45. Random weights make the
  first blocks' residual change by 40-50% between steps (trained models: a few percent), so the
  deviation printed there is no guide to image quality, and no PNG is written.

The denoising loop is a plain flow-matching Euler loop, so both models see the same inputs step
for step, from the same noise.

Timing: two copies of the same weights, one plain and one optimized. After a warm-up generation
of each (the optimized one includes the one-time capture), ``--rounds`` rounds each run one full
generation of both, alternating which goes first, in this one process. Reported: the median
generation time of each and the median of the per-round ratios (plain / dit_fx), so host noise
that hits one round hits both sides of its ratio.

The printed deviation is the relative L1 (and max) error of the final latents (trained model: of
the final images) against the plain run with the same seed and inputs.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

# F1B0 on the shipped model at 28 steps (CPU, 10 samples): threshold 0.2 computes 46% of the steps
# at PSNR 33.6 dB against the uncached images; 0.08 computes 96% (55 dB). The front: docs/quality.md.
TRAINED_THRESHOLD = 0.2
TRAINED_FN_BLOCKS = 1
TRAINED_WARMUP = 4
TRAINED_CLASSES = (0, 1, 7, 8)  # T-shirt/top, Trouser, Sneaker, Bag (a batch of 4: well under a minute on 2 cores)
TRAINED_ROUNDS = 2
RANDOM_THRESHOLD = 0.45
RANDOM_FN_BLOCKS = 2
RANDOM_ROUNDS = 5

DEMO_FLUX_CONFIG = dict(
    patch_size=1,
    in_channels=16,
    num_layers=4,
    num_single_layers=8,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=64,
    pooled_projection_dim=64,
    axes_dims_rope=[8, 12, 12],
)


def build_demo_transformer(seed: int = 0) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(**DEMO_FLUX_CONFIG).eval()


def demo_inputs(height: int = 16, width: int = 16, text_tokens: int = 24, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img_ids = torch.zeros(height, width, 3)
    img_ids[..., 1] = torch.arange(height)[:, None]
    img_ids[..., 2] = torch.arange(width)[None, :]
    c = DEMO_FLUX_CONFIG
    return dict(
        latents=torch.randn(1, height * width, c["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(1, text_tokens, c["joint_attention_dim"], generator=g),
        pooled_projections=torch.randn(1, c["pooled_projection_dim"], generator=g),
        img_ids=img_ids.reshape(-1, 3),
        txt_ids=torch.zeros(text_tokens, 3),
    )


def denoise(model, inputs, steps: int, progress=None) -> Tuple[torch.Tensor, List[float]]:
    """Euler steps of a rectified-flow sampler from sigma=1 to 0; returns latents and step times."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    x = inputs["latents"].clone()
    times = []
    with torch.no_grad():
        for i in range(steps):
            t0 = time.perf_counter()
            v = model(
                hidden_states=x,
                encoder_hidden_states=inputs["encoder_hidden_states"],
                pooled_projections=inputs["pooled_projections"],
                timestep=sigmas[i : i + 1],
                img_ids=inputs["img_ids"],
                txt_ids=inputs["txt_ids"],
                return_dict=False,
            )[0]
            x = x + (sigmas[i + 1] - sigmas[i]) * v
            times.append(time.perf_counter() - t0)
            if progress is not None:
                progress.update(1)
    return x, times


def _dump_files(directory: str) -> List[str]:
    found = []
    for root, _, files in os.walk(directory):
        found += [os.path.relpath(os.path.join(root, f), directory) for f in sorted(files)]
    return sorted(found)


def trained_available(assets: Optional[str] = None) -> bool:
    try:
        from ..models import fashion
    except ImportError:  # pragma: no cover - the package ships it
        return False
    return fashion.assets_available(assets)


def run_demo(steps: int = 28, threshold: Optional[float] = None, dump_dir: str = "dit_fx_dump",
             fn_blocks: Optional[int] = None, rounds: Optional[int] = None, show_plan: bool = True,
             model: str = "auto", png: str = "dit_fx_demo.png", classes: Optional[Sequence[int]] = None,
             assets: Optional[str] = None) -> dict:
    """The demo: ``model="auto"`` uses the trained model when its assets are installed, else the
    random-weight one (``"trained"`` / ``"random"`` force one). ``None`` arguments take the
    chosen model's defaults (``TRAINED_*`` / ``RANDOM_*``). Returns the numbers it printed."""
    if model not in ("auto", "trained", "random"):
        raise ValueError(f"model must be 'auto', 'trained' or 'random', got {model!r}")
    trained = model == "trained" or (model == "auto" and trained_available(assets))
    if model == "trained" and not trained_available(assets):
        from ..models import fashion

        raise FileNotFoundError(f"no trained Fashion-MNIST model in {assets or fashion.ASSET_DIR} "
                                "(train it with scripts/train_fashion.py, or run the demo with --model random)")
    if trained:
        return run_trained_demo(
            steps, TRAINED_THRESHOLD if threshold is None else threshold, dump_dir,
            TRAINED_FN_BLOCKS if fn_blocks is None else fn_blocks, TRAINED_ROUNDS if rounds is None else rounds,
            show_plan, png, TRAINED_CLASSES if classes is None else classes, assets)  # fmt: skip
    return run_random_demo(steps, RANDOM_THRESHOLD if threshold is None else threshold, dump_dir,
                           RANDOM_FN_BLOCKS if fn_blocks is None else fn_blocks,
                           RANDOM_ROUNDS if rounds is None else rounds, show_plan)


def run_random_demo(steps: int = 28, threshold: float = RANDOM_THRESHOLD, dump_dir: str = "dit_fx_dump",
                    fn_blocks: int = RANDOM_FN_BLOCKS, rounds: int = RANDOM_ROUNDS, show_plan: bool = True) -> dict:
    """The random-weight tiny FLUX demo (what ``run_demo`` did before the trained model shipped)."""
    from tqdm.auto import tqdm

    import dit_fx

    plain = build_demo_transformer()
    fast = copy.deepcopy(plain)  # the same weights; only this copy is optimized
    inputs = demo_inputs()
    cfg = dit_fx.DBCacheConfig(
        fn_blocks=fn_blocks, bn_blocks=0, residual_diff_threshold=threshold, max_warmup_steps=4, num_inference_steps=steps
    )
    dit_fx.optimize(fast, cfg)

    cached: Optional[List[int]] = None
    diffs: List[float] = []  # first-block residual change per step (relative L1), latest generation
    bar = tqdm(total=steps * 2 * (1 + rounds), unit="step")

    def generate_plain(label: str) -> Tuple[float, torch.Tensor]:
        bar.set_description(f"{label} plain")
        t0 = time.perf_counter()
        x, _ = denoise(plain, inputs, steps, bar)
        return time.perf_counter() - t0, x

    def generate_fast(label: str) -> Tuple[float, torch.Tensor, List[float]]:
        nonlocal cached
        bar.set_description(f"{label} dit_fx")
        with dit_fx.generation(fast, num_inference_steps=steps):
            t0 = time.perf_counter()
            x, step_times = denoise(fast, inputs, steps, bar)
            seconds = time.perf_counter() - t0
            stats = dit_fx.summary(fast)
            now = list(stats.cached_steps)
            diffs[:] = list(stats.residual_diffs.values())
        if cached is not None and now != cached:
            raise RuntimeError(f"dit_fx cached other steps in another generation: {now} against {cached}")
        cached = now
        return seconds, x, step_times

    # Warm-up: one generation of each (the optimized one captures and rewrites on its first call).
    _, plain_out = generate_plain("warm-up")
    _, _, warm_times = generate_fast("warm-up (capture)")
    plain_s: List[float] = []
    fast_s: List[float] = []
    fast_out = None
    for r in range(rounds):  # alternate who goes first: drift and noise hit both sides alike
        label = f"round {r + 1}/{rounds}"
        if r % 2:
            seconds, fast_out, _ = generate_fast(label)
            fast_s.append(seconds)
            plain_s.append(generate_plain(label)[0])
        else:
            plain_s.append(generate_plain(label)[0])
            seconds, fast_out, _ = generate_fast(label)
            fast_s.append(seconds)
    bar.close()

    ratios = [p / f for p, f in zip(plain_s, fast_s)]
    diff = (fast_out - plain_out).abs()
    rel_l1 = (diff.mean() / plain_out.abs().mean()).item()
    rel_max = (diff.max() / plain_out.abs().max()).item()
    dump_path = os.path.abspath(dit_fx.dump(fast, dump_dir))
    files = _dump_files(dump_path)
    result = dict(
        model="random",
        steps=steps,
        rounds=rounds,
        cached_steps=cached,
        num_cached=len(cached or []),
        plain_s=plain_s,
        dit_fx_s=fast_s,
        plain_s_median=statistics.median(plain_s),
        dit_fx_s_median=statistics.median(fast_s),
        speedup_median=statistics.median(ratios),
        speedups=ratios,
        plain_ms_per_step=1000 * statistics.median(plain_s) / steps,
        dit_fx_ms_per_step=1000 * statistics.median(fast_s) / steps,
        capture_s=warm_times[0],
        residual_diff_median=statistics.median(diffs) if diffs else float("nan"),
        rel_l1_deviation=rel_l1,
        max_rel_deviation=rel_max,
        dump_dir=dump_path,
        dump_files=files,
    )
    if show_plan:
        print(dit_fx.plan(fast))
    print(f"cached steps ({len(cached or [])}/{steps}, the same in every generation): {cached}")
    print(f"one {steps}-step generation, median of {rounds} alternating rounds: plain {result['plain_s_median']:.2f} s, "
          f"dit_fx {result['dit_fx_s_median']:.2f} s ({result['plain_ms_per_step']:.1f} / {result['dit_fx_ms_per_step']:.1f} ms per step)")
    print(f"speedup plain/dit_fx: median {result['speedup_median']:.2f}x of the per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; first call (capture + rewrite) {warm_times[0]:.1f} s, not in the rounds")
    print(f"deviation of the final latents from the plain run (same seed and inputs): relative L1 {rel_l1:.2e}, "
          f"max {rel_max:.2e} (max |difference| / max |plain|)")
    print(f"  what it means: how far reusing cached residuals moved the result; with random weights it says nothing "
          f"about image quality: untrained first-block residuals change 40-50% per step (this run: median "
          f"{result['residual_diff_median']:.0%}), hence the threshold {threshold}; for trained models see docs/quality.md "
          f"(the shipped trained model runs when its weights are installed: python -m dit_fx demo --model trained)")
    shown = [f for f in files if f.endswith(("plan.json", "glue.py", "head.py", "body.py", "tail.py"))]
    print(f"dump written to {dump_path}/: {', '.join(shown)}" + (f" (+{len(files) - len(shown)} more)" if len(files) > len(shown) else ""))
    return result


# ------------------------------------------------------------------------------- trained model


class _Counted:
    """The transformer as ``fashion.sample`` calls it, with a progress bar and per-call times."""

    def __init__(self, model, bar):
        self.model, self.bar, self.times = model, bar, []

    def parameters(self):
        return self.model.parameters()

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.model(*args, **kwargs)
        self.times.append(time.perf_counter() - t0)
        self.bar.update(1)
        return out


def side_by_side(rows: Sequence[Tuple[str, torch.Tensor]], caption: Sequence[str], path: str, scale: int = 4,
                 column_names: Optional[Sequence[str]] = None) -> str:
    """A PNG of image rows (each ``[N, 1, H, W]`` in [0, 1]) with a label per row and caption lines
    on top; Pillow draws the text (without it: the tiles only). Returns the absolute path."""
    import numpy as np

    try:
        from PIL import Image, ImageDraw, ImageFont

        font = ImageFont.load_default()
    except ImportError:  # tiles only
        Image = font = None
    n = rows[0][1].shape[0]
    h, w = rows[0][1].shape[-2:]
    th, tw, gap = h * scale, w * scale, 4
    label_w = 96
    caption_h = 14 * len(caption) + 10
    names_h = 14 if column_names else 0
    text_w = max((int(font.getlength(line)) + 12 for line in caption), default=0) if font is not None else 0
    width = max(label_w + n * (tw + gap) + gap, text_w)
    height = caption_h + names_h + len(rows) * (th + gap) + gap
    canvas = np.full((height, width), 255, dtype=np.uint8)
    for r, (_, imgs) in enumerate(rows):
        a = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).numpy()[:, 0]
        y = caption_h + names_h + gap + r * (th + gap)
        for c in range(n):
            x = label_w + gap + c * (tw + gap)
            canvas[y : y + th, x : x + tw] = a[c].repeat(scale, axis=0).repeat(scale, axis=1)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if Image is None:
        _write_gray_png(path, canvas)
        return path
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(caption):
        draw.text((6, 5 + 14 * i), line, fill=0, font=font)
    if column_names:
        for c, name in enumerate(column_names):
            draw.text((label_w + gap + c * (tw + gap), caption_h), str(name)[: max(4, tw // 6)], fill=0, font=font)
    for r, (label, _) in enumerate(rows):
        y = caption_h + names_h + gap + r * (th + gap) + th // 2 - 12
        for k, part in enumerate(label.split("\n")):
            draw.text((6, y + 12 * k), part, fill=0, font=font)
    img.save(path)
    return path


def _write_gray_png(path: str, pixels) -> None:
    import struct
    import zlib

    h, w = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def run_trained_demo(steps: int = 28, threshold: float = TRAINED_THRESHOLD, dump_dir: str = "dit_fx_dump",
                     fn_blocks: int = TRAINED_FN_BLOCKS, rounds: int = TRAINED_ROUNDS, show_plan: bool = True,
                     png: str = "dit_fx_demo.png", classes: Sequence[int] = TRAINED_CLASSES,
                     assets: Optional[str] = None) -> dict:
    """The shipped Fashion-MNIST FLUX model, plain vs dit_fx, and the side-by-side PNG."""
    from tqdm.auto import tqdm

    import dit_fx
    from dit_fx import metrics
    from dit_fx.models import fashion

    plain = fashion.load_fashion_transformer(path=assets)
    conditioner = fashion.load_fashion_conditioner(path=assets)
    fast = copy.deepcopy(plain)  # the same weights; only this copy is optimized
    labels = torch.as_tensor(list(classes), dtype=torch.long)
    if labels.numel() < 1 or int(labels.min()) < 0 or int(labels.max()) >= fashion.NUM_CLASSES:
        raise ValueError(f"classes must be in 0..{fashion.NUM_CLASSES - 1}, got {list(classes)}")
    latents = torch.randn(labels.numel(), fashion.NUM_IMAGE_TOKENS, fashion.LATENT_CHANNELS,
                          generator=torch.Generator().manual_seed(0))
    cfg = dit_fx.DBCacheConfig(fn_blocks=fn_blocks, bn_blocks=0, residual_diff_threshold=threshold,
                               max_warmup_steps=min(TRAINED_WARMUP, steps), num_inference_steps=steps)
    dit_fx.optimize(fast, cfg)
    bar = tqdm(total=2 + min(steps, TRAINED_WARMUP + 2) + 2 * rounds * steps, unit="step")
    plain_c, fast_c = _Counted(plain, bar), _Counted(fast, bar)
    cached: Optional[List[int]] = None
    diffs: List[float] = []

    def generate(which: str, label: str, n_steps: int = steps) -> Tuple[float, torch.Tensor]:
        nonlocal cached
        bar.set_description(f"{label} {which}")
        model = plain_c if which == "plain" else fast_c
        t0 = time.perf_counter()
        if which == "plain":
            imgs = fashion.sample(model, conditioner, labels, steps=n_steps, latents=latents)
            return time.perf_counter() - t0, imgs
        with dit_fx.generation(fast, num_inference_steps=n_steps):
            imgs = fashion.sample(model, conditioner, labels, steps=n_steps, latents=latents)
            seconds = time.perf_counter() - t0
            stats = dit_fx.summary(fast)
            now = list(stats.cached_steps)
            diffs[:] = list(stats.residual_diffs.values())
        if cached is not None and now != cached:
            raise RuntimeError(f"dit_fx cached other steps in another generation: {now} against {cached}")
        cached = now
        return seconds, imgs

    warm = min(steps, TRAINED_WARMUP + 2)  # the capture, computed steps and the first cacheable ones
    generate("plain", "warm-up", 2)
    generate("dit_fx", "warm-up (capture)", warm)
    cached = None  # the warm-up is a shorter generation
    capture_s = fast_c.times[0]
    plain_s: List[float] = []
    fast_s: List[float] = []
    plain_out = fast_out = None
    for r in range(rounds):  # alternate who goes first: drift and noise hit both sides alike
        label = f"round {r + 1}/{rounds}"
        order = ("dit_fx", "plain") if r % 2 else ("plain", "dit_fx")
        for which in order:
            seconds, imgs = generate(which, label)
            if which == "plain":
                plain_s.append(seconds)
                plain_out = imgs
            else:
                fast_s.append(seconds)
                fast_out = imgs
    bar.close()

    ratios = [p / f for p, f in zip(plain_s, fast_s)]
    cmp = metrics.compare(fast_out, plain_out, data_range=1.0)
    diff = (fast_out - plain_out).abs()
    rel_l1 = (diff.mean() / plain_out.abs().mean()).item()
    rel_max = (diff.max() / plain_out.abs().max()).item()
    accuracy = None
    try:
        classifier = fashion.load_fashion_classifier(path=assets)
        accuracy = dict(plain=fashion.class_accuracy(plain_out, labels, classifier),
                        dit_fx=fashion.class_accuracy(fast_out, labels, classifier))
    except Exception:  # noqa: BLE001 - the classifier only adds a line
        pass
    speedup = statistics.median(ratios)
    n_cached = len(cached or [])
    caption = [
        f"dit_fx DBCache F{fn_blocks}B0, threshold {threshold:g}: {n_cached}/{steps} steps cached; CPU, batch "
        f"{labels.numel()} (+CFG), {steps} Euler steps",
        f"plain {statistics.median(plain_s):.2f} s, dit_fx {statistics.median(fast_s):.2f} s per generation: "
        f"{speedup:.2f}x (median of {rounds} rounds)",
        f"PSNR {cmp.psnr:.2f} dB, SSIM {cmp.ssim:.4f} (dit_fx vs plain, same noise)"
        + (f"; class accuracy {accuracy['plain']:.2f} / {accuracy['dit_fx']:.2f}" if accuracy else ""),
    ]
    png_path = side_by_side(
        [("plain", plain_out), ("dit_fx", fast_out), ("|difference|\nx8", (diff * 8).clamp(0, 1))],
        caption, png, column_names=[fashion.CLASS_NAMES[int(c)] for c in labels])
    dump_path = os.path.abspath(dit_fx.dump(fast, dump_dir))
    files = _dump_files(dump_path)
    result = dict(
        model="trained",
        steps=steps,
        rounds=rounds,
        threshold=threshold,
        fn_blocks=fn_blocks,
        classes=[int(c) for c in labels],
        cached_steps=cached,
        num_cached=n_cached,
        plain_s=plain_s,
        dit_fx_s=fast_s,
        plain_s_median=statistics.median(plain_s),
        dit_fx_s_median=statistics.median(fast_s),
        speedup_median=speedup,
        speedups=ratios,
        plain_ms_per_step=1000 * statistics.median(plain_s) / steps,
        dit_fx_ms_per_step=1000 * statistics.median(fast_s) / steps,
        capture_s=capture_s,
        residual_diff_median=statistics.median(diffs) if diffs else float("nan"),
        rel_l1_deviation=rel_l1,
        max_rel_deviation=rel_max,
        psnr=cmp.psnr,
        ssim=cmp.ssim,
        accuracy=accuracy,
        png=png_path,
        dump_dir=dump_path,
        dump_files=files,
    )
    if show_plan:
        print(dit_fx.plan(fast))
    print(f"trained model (dit_fx.models.fashion), classes {[fashion.CLASS_NAMES[int(c)] for c in labels]}, "
          f"batched CFG, {steps} steps; dit_fx F{fn_blocks}B0 threshold {threshold:g}")
    print(f"cached steps ({n_cached}/{steps}, the same in every generation): {cached}")
    print(f"one {steps}-step generation, median of {rounds} alternating rounds: plain {result['plain_s_median']:.2f} s, "
          f"dit_fx {result['dit_fx_s_median']:.2f} s ({result['plain_ms_per_step']:.1f} / {result['dit_fx_ms_per_step']:.1f} ms per step)")
    print(f"speedup plain/dit_fx: median {speedup:.2f}x of the per-round ratios {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"first call (capture + rewrite) {capture_s:.1f} s, not in the rounds")
    print(f"quality against the plain run (same noise): PSNR {cmp.psnr:.2f} dB, SSIM {cmp.ssim:.4f}; relative L1 "
          f"{rel_l1:.2e}, max {rel_max:.2e}" + (f"; class accuracy plain {accuracy['plain']:.2f}, dit_fx "
                                               f"{accuracy['dit_fx']:.2f}" if accuracy else ""))
    print(f"  first-block residual change per step: median {result['residual_diff_median']:.1%} (threshold {threshold:g}); "
          f"thresholds and their quality on this model: docs/quality.md")
    print(f"side-by-side PNG (plain | dit_fx | difference x8): {png_path}")
    shown = [f for f in files if f.endswith(("plan.json", "glue.py", "head.py", "body.py", "tail.py"))]
    print(f"dump written to {dump_path}/: {', '.join(shown)}" + (f" (+{len(files) - len(shown)} more)" if len(files) > len(shown) else ""))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dit_fx demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"residual diff threshold (default: {TRAINED_THRESHOLD} trained, {RANDOM_THRESHOLD} random)")
    parser.add_argument("--dump-dir", default="dit_fx_dump")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds of one plain and one dit_fx generation "
                        f"each (default: {TRAINED_ROUNDS} trained, {RANDOM_ROUNDS} random)")
    parser.add_argument("--model", default="auto", choices=["auto", "trained", "random"],
                        help="auto: the shipped trained model when installed, else random weights")
    parser.add_argument("--png", default="dit_fx_demo.png", help="side-by-side PNG (trained model only)")
    parser.add_argument("--classes", default=None, help="comma-separated classes 0-9 of the trained model "
                        f"(default {','.join(map(str, TRAINED_CLASSES))})")
    parser.add_argument("--assets", default=None, help="another asset folder for the trained model")
    args = parser.parse_args(argv)
    if (args.rounds is not None and args.rounds < 1) or args.steps < 2:
        parser.error("--rounds must be >= 1 and --steps >= 2")
    classes = [int(c) for c in args.classes.split(",") if c.strip()] if args.classes else None
    try:
        run_demo(args.steps, args.threshold, args.dump_dir, rounds=args.rounds, model=args.model, png=args.png,
                 classes=classes, assets=args.assets)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
