#!/usr/bin/env python3
"""Train the Fashion-MNIST FLUX-architecture transformer that ships with dit_fx (issue 18).

    python scripts/train_fashion.py --device cuda --minutes 6 \\
        --out dit_fx/assets/fashion_flux --png docs/images/fashion_flux_samples.png

Steps, each time-budgeted (wall clock, compile time included):
1. the transformer + class conditioner (``dit_fx.models.fashion``): rectified flow
   (x_t = (1-t) x0 + t noise, target noise - x0, t ~ logit-normal(0, 1) as in SD3), AdamW,
   bf16 autocast on CUDA, EMA of the weights, the class replaced by the null class for 10% of the
   samples (CFG), linear warm-up then cosine decay to 10% over the time budget (``--minutes``);
   saved at once (EMA weights, float16, diffusers' sharded safetensors layout);
2. the feature classifier (``--classifier-minutes`` / ``--classifier-steps``), with random
   +-2 px translations; its test accuracy is logged;
3. the reference statistics of its features over the 10k test images;
4. from the saved model, reloaded as a user loads it: a sample grid PNG (one row per class,
   ``--grid-cols`` samples each, 28 steps), then class accuracy (overall and per class) and
   feature-FID of ``--eval-samples`` generated samples at 20 steps and for a sweep of guidance
   scales at 28 steps; ``training_log.json`` (arguments, versions, loss curves, steps,
   throughput, accuracies, FIDs) is rewritten after each stage, so a run stopped late keeps
   what it finished.

Needs torch, numpy, diffusers and safetensors (Pillow only adds class names to the grid); no
torchvision. The data are the Debian ``dataset-fashion-mnist`` idx files (``--data-dir``).
The functions are importable (``tests/test_fashion_model.py`` trains a tiny model through them).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dit_fx.models import fashion as fm  # noqa: E402

DATA_DIRS = ("/usr/share/datasets/fashion-mnist", str(REPO / ".data" / "fashion-mnist"))
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


# ---------------------------------------------------------------------------------------------
# Data


def find_data_dir(data_dir: Optional[str] = None) -> Optional[Path]:
    for d in ([data_dir] if data_dir else []) + list(DATA_DIRS):
        if d and all((Path(d) / f).is_file() for f in FILES.values()):
            return Path(d)
    return None


def load_idx(path) -> np.ndarray:
    """An idx file (optionally gzipped) as a numpy array (uint8 images [N, 28, 28] or labels [N])."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(data_dir: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """{"train_images": uint8 [60000, 28, 28], "train_labels": int64 [60000], "test_...": 10000}."""
    d = find_data_dir(data_dir)
    if d is None:
        raise FileNotFoundError(
            f"Fashion-MNIST idx files not found in {[data_dir] if data_dir else []} + {list(DATA_DIRS)} "
            "(Debian package dataset-fashion-mnist installs them under /usr/share/datasets/fashion-mnist)"
        )
    out = {}
    for key, name in FILES.items():
        a = torch.from_numpy(load_idx(d / name).copy())
        out[key] = a.long() if key.endswith("labels") else a
    return out


# ---------------------------------------------------------------------------------------------
# Models


def rope_axes(head_dim: int) -> tuple:
    """Rotary axes summing to head_dim, each even: 32 -> (8, 12, 12), 16 -> (4, 6, 6)."""
    a0 = 2 * (head_dim // 8)
    a1 = 2 * ((head_dim - a0) // 4)
    return (a0, a1, head_dim - a0 - a1)


def transformer_config(layers=None, single_layers=None, heads=None, head_dim=None, joint_dim=None) -> dict:
    c = dict(fm.TRANSFORMER_CONFIG)
    if layers is not None:
        c["num_layers"] = layers
    if single_layers is not None:
        c["num_single_layers"] = single_layers
    if heads is not None:
        c["num_attention_heads"] = heads
    if head_dim is not None:
        c["attention_head_dim"] = head_dim
        c["axes_dims_rope"] = rope_axes(head_dim)
    if joint_dim is not None:
        c["joint_attention_dim"] = joint_dim
        c["pooled_projection_dim"] = joint_dim
    return c


def build_models(config: Optional[dict] = None, num_text_tokens: int = fm.NUM_TEXT_TOKENS, seed: int = 0):
    """(FluxTransformer2DModel, FashionConditioner), freshly initialized from ``seed``."""
    from diffusers import FluxTransformer2DModel

    config = dict(config or fm.TRANSFORMER_CONFIG)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**config)
    conditioner = fm.FashionConditioner(
        num_tokens=num_text_tokens,
        joint_attention_dim=config["joint_attention_dim"],
        pooled_projection_dim=config["pooled_projection_dim"],
    )
    return transformer, conditioner


# ---------------------------------------------------------------------------------------------
# Rectified-flow training


def flow_loss(model, conditioner, x0, labels, noise, t, img_ids, txt_ids, amp_dtype=None) -> torch.Tensor:
    """MSE between the predicted and the true velocity (noise - x0) at x_t = (1-t) x0 + t noise."""
    tt = t.view(-1, 1, 1)
    xt = (1.0 - tt) * x0 + tt * noise
    enc, pooled = conditioner(labels)
    with torch.autocast(x0.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        pred = model(
            hidden_states=xt,
            encoder_hidden_states=enc,
            pooled_projections=pooled,
            timestep=t,
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
        )[0]
    return F.mse_loss(pred.float(), noise - x0)


def fixed_eval_set(images: torch.Tensor, labels: torch.Tensor, n: int = 512, seed: int = 1234):
    """A deterministic (x0, labels, noise, t) set, t stratified over (0, 1), for comparable losses."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(images.shape[0], generator=g)[:n]
    x0 = fm.images_to_latents(images[idx])
    noise = torch.randn(x0.shape, generator=g)
    t = (torch.arange(x0.shape[0], dtype=torch.float32) + 0.5) / x0.shape[0]
    return x0, labels[idx].clone(), noise, t


@torch.no_grad()
def eval_loss(model, conditioner, eval_set, device, amp_dtype=None, batch_size: int = 256) -> float:
    x0, y, noise, t = eval_set
    img_ids, txt_ids = fm.latent_ids(conditioner.num_tokens, device=device)
    total = 0.0
    for i in range(0, x0.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        loss = flow_loss(
            model, conditioner, x0[sl].to(device), y[sl].to(device), noise[sl].to(device), t[sl].to(device),
            img_ids, txt_ids, amp_dtype,
        )  # fmt: skip
        total += float(loss) * x0[sl].shape[0]
    return total / x0.shape[0]


def _lr_at(step: int, progress: float, base_lr: float, warmup: int, min_frac: float) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    cos = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return base_lr * warm * (min_frac + (1.0 - min_frac) * cos)


def train_transformer(
    model,
    conditioner,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device="cpu",
    minutes: Optional[float] = None,
    max_steps: Optional[int] = None,
    batch_size: int = 256,
    lr: float = 5e-4,
    warmup_steps: int = 300,
    min_lr_frac: float = 0.1,
    weight_decay: float = 0.0,
    ema_decay: float = 0.999,
    null_prob: float = 0.1,
    grad_clip: float = 1.0,
    amp: Optional[bool] = None,
    compile: bool = False,
    seed: int = 0,
    log_every: int = 50,
    print_every: int = 500,
    eval_set=None,
    use_ema: bool = True,
    verbose: bool = True,
) -> dict:
    """Train ``model`` and ``conditioner`` in place; at the end they hold the EMA weights.

    Stops after ``minutes`` of wall clock or ``max_steps`` steps, whichever comes first (at least
    one of them must be given); the learning-rate schedule runs over whichever is closer.
    ``images``: uint8 [N, 28, 28]; ``labels``: int64 [N]. Returns the log (a JSON-able dict).
    """
    if minutes is None and max_steps is None:
        raise ValueError("give minutes or max_steps")
    device = torch.device(device)
    amp_dtype = torch.bfloat16 if (amp if amp is not None else device.type == "cuda") else None
    model.to(device).train()
    conditioner.to(device).train()
    images = images.to(device)
    labels = labels.to(device)
    img_ids, txt_ids = fm.latent_ids(conditioner.num_tokens, device=device)
    params = [p for p in list(model.parameters()) + list(conditioner.parameters()) if p.requires_grad]
    opt_kw = dict(lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    if device.type == "cuda":
        opt_kw["fused"] = True
    opt = torch.optim.AdamW(params, **opt_kw)
    ema = [p.detach().clone().float() for p in params] if use_ema else None
    gen = torch.Generator(device=device).manual_seed(seed)
    n = images.shape[0]

    fwd = model
    compiled = False
    if compile:
        fwd = torch.compile(model, dynamic=False)
        compiled = True

    log = dict(
        batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, min_lr_frac=min_lr_frac,
        weight_decay=weight_decay, ema_decay=ema_decay if use_ema else None, null_prob=null_prob,
        grad_clip=grad_clip, amp=str(amp_dtype) if amp_dtype else None, compile=compile,
        minutes=minutes, max_steps=max_steps, seed=seed, loss_curve=[], val_loss_curve=[],
    )  # fmt: skip
    budget = minutes * 60.0 if minutes is not None else None
    t0 = time.perf_counter()
    step = 0
    loss_acc = torch.zeros((), device=device)
    acc_n = 0
    first_step_s = None
    while True:
        elapsed = time.perf_counter() - t0
        if (budget is not None and elapsed >= budget) or (max_steps is not None and step >= max_steps):
            break
        progress = max(elapsed / budget if budget else 0.0, step / max_steps if max_steps else 0.0)
        cur_lr = _lr_at(step, progress, lr, warmup_steps, min_lr_frac)
        for gr in opt.param_groups:
            gr["lr"] = cur_lr

        idx = torch.randint(0, n, (batch_size,), device=device, generator=gen)
        x0 = fm.images_to_latents(images[idx])
        y = labels[idx]
        drop = torch.rand(batch_size, device=device, generator=gen) < null_prob
        y = torch.where(drop, torch.full_like(y, fm.NULL_CLASS), y)
        noise = torch.randn(x0.shape, device=device, generator=gen)
        t = torch.sigmoid(torch.randn(batch_size, device=device, generator=gen))

        try:
            loss = flow_loss(fwd, conditioner, x0, y, noise, t, img_ids, txt_ids, amp_dtype)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        except Exception as e:  # a torch.compile failure: fall back to eager, once
            if not compiled or step > 0:
                raise
            print(f"[train] torch.compile failed ({type(e).__name__}: {e}); continuing eager", flush=True)
            fwd, compiled = model, False
            log["compile"] = f"failed: {type(e).__name__}"
            opt.zero_grad(set_to_none=True)
            continue
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if ema is not None:
            d = min(ema_decay, (1.0 + step) / (10.0 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - d)
        loss_acc += loss.detach()
        acc_n += 1
        step += 1
        if step == 1:
            first_step_s = time.perf_counter() - t0
        if step % log_every == 0:
            log["loss_curve"].append(
                dict(step=step, time_s=round(time.perf_counter() - t0, 2), loss=float(loss_acc) / acc_n, lr=cur_lr)
            )
            loss_acc.zero_()
            acc_n = 0
        if print_every and step % print_every == 0:
            msg = f"[train] step {step} {time.perf_counter() - t0:.0f}s"
            if log["loss_curve"]:
                msg += f" loss {log['loss_curve'][-1]['loss']:.4f}"
            if eval_set is not None:
                model.eval(), conditioner.eval()
                vl = eval_loss(model, conditioner, eval_set, device, amp_dtype)
                model.train(), conditioner.train()
                log["val_loss_curve"].append(dict(step=step, val_loss=vl))
                msg += f" val {vl:.4f}"
            if verbose:
                print(msg + f" lr {cur_lr:.2e}", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - t0
    if acc_n:
        log["loss_curve"].append(dict(step=step, time_s=round(total, 2), loss=float(loss_acc) / acc_n, lr=cur_lr))
    log.update(
        steps=step, time_s=round(total, 2), first_step_s=round(first_step_s or 0.0, 2),
        steps_per_s=round(step / total, 2) if total else None, samples_seen=step * batch_size,
        epochs=round(step * batch_size / n, 2), compiled=compiled,
    )  # fmt: skip
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
    model.eval()
    conditioner.eval()
    if eval_set is not None:
        log["final_val_loss"] = eval_loss(model, conditioner, eval_set, device, amp_dtype)
        log["final_val_loss_fp32"] = eval_loss(model, conditioner, eval_set, device, None)
    return log


# ---------------------------------------------------------------------------------------------
# Classifier


def _translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random integer translations of up to +-max_shift pixels (zeros shifted in)."""
    b, _, h, w = x.shape
    s = torch.randint(-max_shift, max_shift + 1, (b, 2), device=x.device, generator=gen).float()
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = s[:, 0] * 2.0 / w
    theta[:, 1, 2] = s[:, 1] * 2.0 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def train_classifier(
    classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    test_images: Optional[torch.Tensor] = None,
    test_labels: Optional[torch.Tensor] = None,
    *,
    device="cpu",
    minutes: Optional[float] = None,
    max_steps: Optional[int] = None,
    batch_size: int = 512,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    max_shift: int = 2,
    seed: int = 0,
    verbose: bool = True,
) -> dict:
    if minutes is None and max_steps is None:
        raise ValueError("give minutes or max_steps")
    device = torch.device(device)
    classifier.to(device).train()
    images, labels = images.to(device), labels.to(device)
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator(device=device).manual_seed(seed)
    budget = minutes * 60.0 if minutes is not None else None
    t0 = time.perf_counter()
    step = 0
    curve = []
    acc = torch.zeros((), device=device)
    while True:
        elapsed = time.perf_counter() - t0
        if (budget is not None and elapsed >= budget) or (max_steps is not None and step >= max_steps):
            break
        progress = max(elapsed / budget if budget else 0.0, step / max_steps if max_steps else 0.0)
        for gr in opt.param_groups:
            gr["lr"] = _lr_at(step, progress, lr, 100, 0.01)
        idx = torch.randint(0, images.shape[0], (batch_size,), device=device, generator=gen)
        x = images[idx].float().unsqueeze(1) / 255.0
        if max_shift:
            x = _translate(x, max_shift, gen)
        loss = F.cross_entropy(classifier.logits(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc += loss.detach()
        step += 1
        if step % 200 == 0:
            curve.append(dict(step=step, loss=float(acc) / 200))
            acc.zero_()
    total = time.perf_counter() - t0
    classifier.eval()
    out = dict(
        steps=step, time_s=round(total, 2), batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        max_shift=max_shift, epochs=round(step * batch_size / images.shape[0], 2), loss_curve=curve,
        parameters=sum(p.numel() for p in classifier.parameters()),
    )  # fmt: skip
    if test_images is not None:
        out["test_accuracy"] = fm.class_accuracy(test_images.float().unsqueeze(1) / 255.0, test_labels, classifier)
        out["train_accuracy"] = fm.class_accuracy(
            images[:10000].float().unsqueeze(1).cpu() / 255.0, labels[:10000].cpu(), classifier
        )
    if verbose:
        print(f"[classifier] {step} steps in {total:.0f}s, test accuracy {out.get('test_accuracy')}", flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation, saving, grid


def generate(transformer, conditioner, classes, *, steps, guidance, seed, chunk: int = 500, cfg="batched"):
    """``fm.sample`` in chunks (seed + chunk index), images [N, 1, 28, 28] on the CPU."""
    classes = torch.as_tensor(classes).reshape(-1)
    out = []
    for k, i in enumerate(range(0, classes.shape[0], chunk)):
        part = classes[i : i + chunk]
        out.append(fm.sample(transformer, conditioner, part, steps=steps, guidance=guidance, seed=seed + k, cfg=cfg))
    return torch.cat(out)


def evaluate_samples(transformer, conditioner, classifier, ref_stats, *, n, steps, guidance, seed=1) -> dict:
    classes = torch.arange(n) % fm.NUM_CLASSES
    t0 = time.perf_counter()
    imgs = generate(transformer, conditioner, classes, steps=steps, guidance=guidance, seed=seed)
    dt = time.perf_counter() - t0
    per_class = []
    for k in range(fm.NUM_CLASSES):
        sel = classes == k
        per_class.append(round(fm.class_accuracy(imgs[sel], classes[sel], classifier), 3) if sel.any() else None)
    return dict(
        n=n, steps=steps, guidance=guidance, seed=seed, time_s=round(dt, 2),
        accuracy=fm.class_accuracy(imgs, classes, classifier), per_class_accuracy=per_class,
        fid=fm.feature_fid(imgs, ref_stats, classifier) if n >= 2 else None,
    )  # fmt: skip


def save_transformer(transformer, out: Path, save_dtype: torch.dtype = torch.float16, max_shard_size: str = "10MB"):
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("diffusion_pytorch_model*"):
        f.unlink()
    from diffusers.utils import logging as dlogging

    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # .to(dtype) warns about fp32-kept modules (there are none)
    try:
        m = copy.deepcopy(transformer).to("cpu", save_dtype)
    finally:
        dlogging.set_verbosity(verbosity)
    m.save_pretrained(str(out), safe_serialization=True, max_shard_size=max_shard_size)
    return sorted(f.name for f in out.glob("diffusion_pytorch_model*"))


def write_png(path, pixels: np.ndarray) -> None:
    """An 8-bit grayscale [H, W] or RGB [H, W, 3] PNG with zlib only."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    color = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png)


def grid_image(images: torch.Tensor, rows: int, cols: int, scale: int = 2, gap: int = 2) -> np.ndarray:
    """images [rows*cols, 1, 28, 28] in [0, 1] (row-major) -> uint8 [H, W] with white gaps."""
    s = fm.IMAGE_SIZE * scale
    canvas = np.full((rows * (s + gap) + gap, cols * (s + gap) + gap), 255, dtype=np.uint8)
    a = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()[:, 0]
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        tile = a[k].repeat(scale, axis=0).repeat(scale, axis=1)
        canvas[gap + r * (s + gap) : gap + r * (s + gap) + s, gap + c * (s + gap) : gap + c * (s + gap) + s] = tile
    return canvas


def save_grid(path, images: torch.Tensor, rows: int, cols: int, row_names: Optional[Sequence[str]] = None) -> str:
    canvas = grid_image(images, rows, cols)
    if row_names:
        try:  # class names in a left margin, when Pillow is there
            from PIL import Image, ImageDraw, ImageFont

            margin = 84
            img = Image.new("L", (canvas.shape[1] + margin, canvas.shape[0]), 255)
            img.paste(Image.fromarray(canvas), (margin, 0))
            draw = ImageDraw.Draw(img)
            font = ImageFont.load_default()
            cell = canvas.shape[0] / rows
            for r, name in enumerate(row_names):
                draw.text((4, int(r * cell + cell / 2 - 6)), name, fill=0, font=font)
            canvas = np.asarray(img)
        except Exception:
            pass
    write_png(path, canvas)
    return str(path)


def _json_default(o):
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    raise TypeError(type(o))


def _write_log(out: Path, log: dict) -> None:
    (out / fm.TRAINING_LOG_FILE).write_text(json.dumps(log, indent=1, default=_json_default))


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "dit_fx" / "assets" / "fashion_flux"), help="asset folder to write")
    p.add_argument("--png", default=None, help="sample grid PNG path (none: no grid)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-dir", default=None, help="folder with the 4 Fashion-MNIST .gz idx files")
    p.add_argument("--minutes", type=float, default=6.0, help="transformer training budget (wall clock)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on transformer steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--null-prob", type=float, default=0.1)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer for training (falls back to eager on failure)")
    p.add_argument("--no-amp", action="store_true", help="train in float32 (default: bf16 autocast on CUDA)")
    p.add_argument("--classifier-minutes", type=float, default=1.0)
    p.add_argument("--classifier-steps", type=int, default=6000)
    p.add_argument("--classifier-batch-size", type=int, default=512)
    p.add_argument("--eval-samples", type=int, default=1000, help="samples per evaluated setting (0: skip)")
    p.add_argument("--guidance-sweep", default="1,1.5,2,3,4", help="guidance scales evaluated at 28 steps")
    p.add_argument("--guidance", type=float, default=fm.DEFAULT_GUIDANCE,
                   help="guidance of the grid and the 20-step eval")
    p.add_argument("--grid-cols", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--max-shard-size", default="10MB")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training images (smoke tests)")
    p.add_argument("--max-test", type=int, default=None, help="use only the first N test images (smoke tests)")
    p.add_argument("--layers", type=int, default=None, help="override num_layers (smoke tests)")
    p.add_argument("--single-layers", type=int, default=None, help="override num_single_layers")
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=None)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--print-every", type=int, default=500)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import diffusers

    data = load_fashion_mnist(args.data_dir)
    for split, limit in (("train", args.max_train), ("test", args.max_test)):
        if limit:
            for kind in ("images", "labels"):
                data[f"{split}_{kind}"] = data[f"{split}_{kind}"][:limit]
    print(f"[data] train {tuple(data['train_images'].shape)} test {tuple(data['test_images'].shape)} "
          f"({time.perf_counter() - t_start:.1f}s)", flush=True)  # fmt: skip

    config = transformer_config(args.layers, args.single_layers, args.heads, args.head_dim)
    transformer, conditioner = build_models(config, seed=args.seed)
    n_params = sum(p.numel() for p in transformer.parameters())
    print(f"[model] FluxTransformer2DModel {n_params / 1e6:.2f} M parameters, config {config}", flush=True)
    log: dict = dict(
        format=1, torch=torch.__version__, diffusers=diffusers.__version__, device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        args=vars(args), transformer_config=config, transformer_parameters=n_params,
        conditioner=conditioner.config(), class_names=list(fm.CLASS_NAMES), null_class=fm.NULL_CLASS,
        sampler=dict(kind="rectified-flow Euler", shift=fm.DEFAULT_SHIFT, mu=fm.DEFAULT_MU,
                     steps=fm.DEFAULT_STEPS, guidance=args.guidance),
    )  # fmt: skip

    eval_set = fixed_eval_set(data["test_images"], data["test_labels"], n=min(512, data["test_images"].shape[0]))
    log["transformer"] = train_transformer(
        transformer, conditioner, data["train_images"], data["train_labels"], device=device,
        minutes=args.minutes, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, null_prob=args.null_prob,
        amp=False if args.no_amp else None, compile=args.compile, seed=args.seed,
        log_every=args.log_every, print_every=args.print_every, eval_set=eval_set,
    )  # fmt: skip
    tl = log["transformer"]
    print(f"[train] done: {tl['steps']} steps in {tl['time_s']}s ({tl['steps_per_s']} steps/s, {tl['epochs']} epochs), "
          f"EMA val loss {tl.get('final_val_loss_fp32')}", flush=True)  # fmt: skip
    save_dtype = getattr(torch, args.save_dtype)
    log["files"] = save_transformer(transformer, out, save_dtype, args.max_shard_size)
    conditioner.save_pretrained(out)
    log["save_dtype"] = args.save_dtype
    _write_log(out, log)  # partial (rewritten at the end): a run stopped later keeps the curves
    print(f"[save] {out}: {log['files']} + {fm.CONDITIONER_FILE}", flush=True)
    del transformer

    torch.manual_seed(args.seed)
    classifier = fm.FashionClassifier()
    log["classifier"] = train_classifier(
        classifier, data["train_images"], data["train_labels"], data["test_images"], data["test_labels"],
        device=device, minutes=args.classifier_minutes, max_steps=args.classifier_steps,
        batch_size=args.classifier_batch_size, seed=args.seed,
    )  # fmt: skip
    classifier.save_pretrained(out)
    test01 = data["test_images"].float().unsqueeze(1) / 255.0
    ref = fm.feature_stats(test01, classifier)
    ref.save(out / fm.STATS_FILE)
    _write_log(out, log)

    # Evaluate the model exactly as shipped: reloaded from the folder, in float32.
    transformer = fm.load_fashion_transformer(device=device, path=out)
    conditioner = fm.load_fashion_conditioner(device=device, path=out)
    log["shipped_val_loss_fp32"] = eval_loss(transformer, conditioner, eval_set, device, None)

    # Cheapest and most needed first, the log rewritten after each part (a stopped run keeps them).
    if args.png:
        rows, cols = fm.NUM_CLASSES, args.grid_cols
        classes = torch.arange(rows).repeat_interleave(cols)
        imgs = fm.sample(transformer, conditioner, classes, steps=28, guidance=args.guidance, seed=0)
        path = save_grid(args.png, imgs, rows, cols, fm.CLASS_NAMES)
        acc = fm.class_accuracy(imgs, classes, classifier)
        log["grid"] = dict(path=path, steps=28, guidance=args.guidance, seed=0, accuracy=acc)
        _write_log(out, log)
        print(f"[grid] {args.png} (accuracy {log['grid']['accuracy']:.3f})", flush=True)

    ev: dict = {}
    log["eval"] = ev
    n_eval = args.eval_samples
    if n_eval:
        train01 = data["train_images"].float().unsqueeze(1) / 255.0
        g = torch.Generator().manual_seed(0)
        sub = train01[torch.randperm(train01.shape[0], generator=g)[:n_eval]]
        ev["fid_train_vs_test"] = {str(n_eval): fm.feature_fid(sub, ref, classifier)}
        if train01.shape[0] >= 10000:
            ev["fid_train_vs_test"]["10000"] = fm.feature_fid(train01[:10000], ref, classifier)
        r = evaluate_samples(transformer, conditioner, classifier, ref, n=n_eval, steps=20, guidance=args.guidance)
        ev["steps_20"] = r
        _write_log(out, log)
        print(f"[eval] 20 steps guidance {args.guidance}: accuracy {r['accuracy']:.3f} fid {r['fid']:.2f} "
              f"({r['time_s']}s) per class {r['per_class_accuracy']}", flush=True)  # fmt: skip
        ev["guidance_sweep_28_steps"] = []
        for gs in [float(s) for s in args.guidance_sweep.split(",") if s.strip()]:
            r = evaluate_samples(transformer, conditioner, classifier, ref, n=n_eval, steps=28, guidance=gs)
            ev["guidance_sweep_28_steps"].append(r)
            _write_log(out, log)
            print(f"[eval] 28 steps guidance {gs}: accuracy {r['accuracy']:.3f} fid {r['fid']:.2f} ({r['time_s']}s)",
                  flush=True)  # fmt: skip

    log["total_time_s"] = round(time.perf_counter() - t_start, 2)
    _write_log(out, log)
    sizes = {f.name: f.stat().st_size for f in sorted(out.iterdir())}
    print(f"[done] {log['total_time_s']}s; files {sizes}", flush=True)
    return log


if __name__ == "__main__":
    main()
