"""dit_fx.metrics: PSNR / SSIM / MSE in float math, folder pairing, video frames, FID, the CLI."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dit_fx import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _image(seed, size=24, channels=3):
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, channels), dtype=np.uint8)


def _float_psnr(a, b, peak=255.0):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(peak**2 / mse)


def test_psnr_of_uint8_pair_is_the_float_formula_not_the_wrapped_one():
    a = np.zeros((16, 16, 3), np.uint8)
    b = np.full((16, 16, 3), 200, np.uint8)  # true MSE 40000; uint8 (a-b)**2 wraps to 64
    wrapped_mse = float(np.mean((a - b) ** 2))  # what uint8 arithmetic gives
    assert wrapped_mse != 40000.0
    assert metrics.psnr(a, b) == pytest.approx(_float_psnr(a, b), abs=1e-9)
    assert metrics.psnr(a, b) < 10 * math.log10(255.0**2 / wrapped_mse) - 20
    assert metrics.mse(a, b) == pytest.approx(40000.0)
    # random pairs, tensors and arrays alike
    x, y = _image(0), _image(1)
    assert metrics.psnr(x, y) == pytest.approx(_float_psnr(x, y), abs=1e-9)
    assert metrics.psnr(torch.from_numpy(x).permute(2, 0, 1), torch.from_numpy(y).permute(2, 0, 1)) == pytest.approx(_float_psnr(x, y))
    assert metrics.psnr(x, x) == math.inf


def _direct_ssim(a, b, peak):
    """SSIM of one 11x11 window, written out with numpy (the whole image is the window)."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = (w * a).sum(), (w * b).sum()
    var_a, var_b = (w * a * a).sum() - mu_a**2, (w * b * b).sum() - mu_b**2
    cov = (w * a * b).sum() - mu_a * mu_b
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    return (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(3)
    img = rng.random((32, 32, 3))
    assert metrics.ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    noisy = [np.clip(img + rng.normal(0, s, img.shape), 0, 1) for s in (0.02, 0.1, 0.3)]
    values = [metrics.ssim(img, n) for n in noisy]
    assert values[0] < 1.0 and values == sorted(values, reverse=True) and len(set(values)) == 3
    # the Gaussian-window formula itself, on an image the size of the window
    a, b = _image(4, size=11, channels=1)[..., 0], _image(5, size=11, channels=1)[..., 0]
    assert metrics.ssim(a, b) == pytest.approx(_direct_ssim(a, b, 255.0), rel=1e-10)


def _write(folder, name, array):
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(array).save(os.path.join(folder, name))


def _folders(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    images = {f"{i}.png": _image(10 + i) for i in range(3)}
    for name, img in images.items():
        _write(a, name, img)
    _write(b, "0.png", images["0.png"])
    _write(b, "1.png", images["1.png"])
    changed = images["2.png"].copy()
    changed[:8] = 255 - changed[:8]
    _write(b, "2.png", changed)
    return a, b, images["2.png"], changed


def test_folders_pair_by_name_and_count_identical_pairs(tmp_path):
    a, b, orig, changed = _folders(tmp_path)
    result = metrics.compare_folders(a, b)
    assert (result.count, result.identical) == (3, 2)
    assert result.per_item["0.png"]["psnr"] == math.inf and result.per_item["2.png"]["psnr"] < 40
    assert result.psnr == pytest.approx(_float_psnr(orig, changed))  # the PSNR mean is over differing pairs
    assert result.mse == pytest.approx(metrics.mse(orig, changed) / 3)  # identical pairs count as 0 in the MSE mean
    assert result.ssim == pytest.approx((2 + metrics.ssim(orig, changed)) / 3)
    assert result.as_dict()["per_item"]["1.png"]["psnr"] == "inf"


def test_video_frames_as_a_stack_and_as_a_folder(tmp_path):
    frames = np.stack([_image(20 + t) for t in range(4)])  # [T, H, W, C]
    other = frames.copy()
    other[1] = _image(99)
    video_a = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, C, H, W]
    video_b = torch.from_numpy(other).permute(0, 3, 1, 2)
    result = metrics.compare(video_a, video_b)
    assert (result.count, result.identical) == (4, 3)
    assert result.psnr == pytest.approx(_float_psnr(frames[1], other[1]))
    assert result.ssim == pytest.approx((3 + metrics.ssim(frames[1], other[1])) / 4)
    for t in range(4):
        _write(str(tmp_path / "va"), f"frame_{t:03d}.png", frames[t])
        _write(str(tmp_path / "vb"), f"frame_{t:03d}.png", other[t])
    folder = metrics.compare_folders(str(tmp_path / "va"), str(tmp_path / "vb"))
    assert (folder.count, folder.identical) == (4, 3)
    assert folder.psnr == pytest.approx(result.psnr) and folder.ssim == pytest.approx(result.ssim)


def test_fid_with_a_supplied_feature_extractor():
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6))
    real = torch.rand(64, 3, 8, 8)
    assert abs(metrics.fid(real, real, features)) < 1e-6
    shifted = real + 0.25  # features shift by W @ (0.25...), covariances unchanged
    expected = float((features[1].weight.detach().double().sum(1) * 0.25).square().sum())
    assert metrics.fid(real, shifted, features) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="features"):
        metrics.fid(real, real, features=lambda x: x)


def test_cli_prints_and_writes_json(tmp_path):
    a, b, orig, changed = _folders(tmp_path)
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "dit_fx", "metrics", a, b, "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pairs 3 (identical 2)" in proc.stdout
    data = json.loads(out.read_text())
    assert (data["count"], data["identical"]) == (3, 2)
    assert data["psnr"] == pytest.approx(_float_psnr(orig, changed))
    os.remove(os.path.join(b, "1.png"))
    proc = subprocess.run([sys.executable, "-m", "dit_fx", "metrics", a, b], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode != 0 and "dir_b" in proc.stderr and "1.png" in proc.stderr


def test_bad_inputs_raise_value_error_naming_the_argument(tmp_path):
    with pytest.raises(ValueError, match="^b has shape"):
        metrics.psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(np.zeros((8, 8)), np.ones((8, 8)), data_range=0)
    with pytest.raises(ValueError, match="^a: SSIM needs"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    a, b, _, _ = _folders(tmp_path)
    os.remove(os.path.join(a, "0.png"))
    with pytest.raises(ValueError, match="^dir_a: no pair for \\['0.png'\\]"):
        metrics.compare_folders(a, b)
    with pytest.raises(ValueError, match="^dir_b"):
        metrics.compare_folders(a, str(tmp_path / "missing"))
