"""Image quality of cached runs on the shipped trained model (issue 18, item 5; CPU, CI).

With the shipped Fashion-MNIST FLUX model (``dit_fx/assets/fashion_flux``; skipped with the reason
when absent): one sample per class, 20 Euler steps, batched CFG, the same noise for every run.

- A known DBCache config keeps the PSNR of its final images against the uncached images above
  ``PSNR_FLOOR`` (and caches at least ``MIN_CACHED_STEPS`` steps, so the floor means something).
- Masks from ``dit_fx.calibrate`` (calibrated on other noise seeds) beat the uniform masks of the
  same computed-step counts on the evaluation seeds at two budgets (PSNR, static policy, F1B0).
- With no block on cached steps (``fn_blocks=0``, static mask, FoCa) dit_fx beats diffusers'
  TaylorSeer "lite" on its own schedule (warm-up 4, interval 3).

``DIT_FX_FASHION_ASSETS=DIR`` runs the tests on another asset folder (``scripts/train_fashion.py
--out DIR``), e.g. a tiny CPU-trained one; the constants below are for the shipped weights. Run
with ``-s`` to see the measured values (the test prints them).
"""

import os
import time

import pytest
import torch

import dit_fx
from dit_fx import metrics
from dit_fx.models import fashion as fm
from helpers import lite_schedule

ASSETS = os.environ.get("DIT_FX_FASHION_ASSETS") or None

STEPS = 20
CLASSES = torch.arange(fm.NUM_CLASSES)  # one sample per class
EVAL_SEED = 0
CAL_SEED = 1  # calibration noise: disjoint from the evaluation noise
CAL_SAMPLES = 3  # calibration samples (classes 0, 1, 2 on CAL_SEED's noise)

# The known config: Fn=1, Bn=0, threshold 0.15, 4 warm-up steps. On the shipped weights (CPU,
# torch 2.13) it caches 6 of the 20 steps ([4, 6, 8, 10, 12, 14]) at PSNR 37.62 dB; the per-step
# diffs of F1B0 there are 0.09-0.26 (0.08, cache-dit's default, caches nothing at 20 steps).
KNOWN_CONFIG = dict(fn_blocks=1, bn_blocks=0, residual_diff_threshold=0.15, max_warmup_steps=4)
# PSNR (dB) of KNOWN_CONFIG's 20-step images against the uncached ones must stay above this:
# the measured 37.62 dB minus a ~3.6 dB margin. Re-measure with `pytest tests/test_quality.py -s`
# when the weights change (the test prints the value).
PSNR_FLOOR = 34.0
MIN_CACHED_STEPS = 4  # the known config must cache at least this many of the 20 steps (measured: 6)

CALIBRATED_BUDGETS = (6, 11)  # computed steps of the calibrated and the uniform masks (of STEPS): ~30% and ~55%
# PSNR (dB) the calibrated mask must gain over the uniform one at each budget. Measured on the shipped
# weights (CPU, torch 2.13, CAL_SAMPLES calibration samples, 20 steps, F1B0 static), calibrated vs
# uniform_mask(20, K): K=6 28.09 vs 27.80 (+0.29), K=11 36.35 vs 35.61 (+0.74); the margin keeps
# about a third of the smaller gain. Other budgets there: K=5 +0.43, K=8 +0.37, K=10 34.45 = 34.45
# (calibrate keeps the uniform mask: predicted gain < MIN_GAIN_DB), K=12 +0.34, K=14 +1.19; before
# issue 18's error model the calibrated mask lost at K=6, 8 and 10 (26.73 vs 27.80, 30.30 vs 31.76,
# 33.79 vs 34.45). At 28 steps: benchmarks/quality.py, docs/quality.md.
CALIBRATED_MARGIN_DB = 0.1

needs_assets = pytest.mark.skipif(
    not fm.assets_available(ASSETS),
    reason=f"no trained Fashion-MNIST model in {ASSETS or fm.ASSET_DIR} (train it with "
    "scripts/train_fashion.py on a GPU; DIT_FX_FASHION_ASSETS=DIR points at another folder)",
)


def _noise(n, seed):
    return torch.randn(n, fm.NUM_IMAGE_TOKENS, fm.LATENT_CHANNELS, generator=torch.Generator().manual_seed(seed))


class Fashion:
    def __init__(self):
        pytest.importorskip("diffusers")
        t0 = time.perf_counter()
        self.transformer = fm.load_fashion_transformer(path=ASSETS)
        self.conditioner = fm.load_fashion_conditioner(path=ASSETS)
        self.latents = _noise(CLASSES.shape[0], EVAL_SEED)
        self.cal_classes = torch.arange(CAL_SAMPLES) % fm.NUM_CLASSES
        self.cal_latents = _noise(CAL_SAMPLES, CAL_SEED)
        self.reference = self.sample()
        self.setup_s = time.perf_counter() - t0

    def sample(self, classes=None, latents=None):
        return fm.sample(self.transformer, self.conditioner, CLASSES if classes is None else classes, steps=STEPS,
                         latents=self.latents if latents is None else latents, cfg="batched")

    def cached(self, config):
        """Images of one generation with ``config``, and its stats; the model is disabled after."""
        dit_fx.optimize(self.transformer, config)
        try:
            images = self.sample()
            stats = dit_fx.summary(self.transformer)
        finally:
            dit_fx.disable(self.transformer)
        return images, stats

    def psnr(self, images):
        return metrics.psnr(images, self.reference, data_range=1.0)


@pytest.fixture(scope="module")
def fashion():
    return Fashion()


def _mask_config(mask):
    lead = next((i for i, m in enumerate(mask) if not m), len(mask))
    return dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=0, steps_computation_mask=list(mask), steps_computation_policy="static",
                                max_warmup_steps=max(1, lead), num_inference_steps=STEPS, enable_separate_cfg=False)


@needs_assets
def test_known_dbcache_config_keeps_psnr_above_floor(fashion):
    t0 = time.perf_counter()
    cfg = dit_fx.DBCacheConfig(num_inference_steps=STEPS, enable_separate_cfg=False, **KNOWN_CONFIG)
    images, stats = fashion.cached(cfg)
    psnr = fashion.psnr(images)
    print(f"\nknown config {KNOWN_CONFIG}: PSNR {psnr:.2f} dB (floor {PSNR_FLOOR}), cached steps "
          f"{stats.cached_steps} ({len(stats.cached_steps)}/{STEPS}); setup {fashion.setup_s:.1f} s, "
          f"this test {time.perf_counter() - t0:.1f} s")
    assert len(stats.cached_steps) >= MIN_CACHED_STEPS, (
        f"the known config cached {stats.cached_steps} only: the PSNR floor would say nothing (diffs seen: "
        f"{ {k: round(v, 3) for k, v in stats.residual_diffs.items()} })"
    )
    assert psnr >= PSNR_FLOOR, f"PSNR {psnr:.2f} dB of {KNOWN_CONFIG} against the uncached images < {PSNR_FLOOR}"


@needs_assets
@pytest.mark.parametrize("computed", CALIBRATED_BUDGETS)
def test_calibrated_mask_beats_uniform_mask_of_same_compute(fashion, computed):
    from dit_fx.calibrate import uniform_mask

    t0 = time.perf_counter()
    cal = dit_fx.calibrate(fashion.transformer, lambda: fashion.sample(fashion.cal_classes, fashion.cal_latents), computed)
    uniform = uniform_mask(STEPS, computed)
    assert sum(cal.mask) == sum(uniform) == computed
    assert cal.cost <= cal.uniform_cost  # never worse than uniform by the error model's own prediction
    cal_images, cal_stats = fashion.cached(cal.config(fn_blocks=1, num_inference_steps=STEPS, enable_separate_cfg=False))
    uni_images, uni_stats = fashion.cached(_mask_config(uniform))
    for mask, stats in ((cal.mask, cal_stats), (uniform, uni_stats)):
        assert stats.cached_steps == [i for i, m in enumerate(mask) if not m]
    psnr_cal, psnr_uni = fashion.psnr(cal_images), fashion.psnr(uni_images)
    print(f"\n{computed}/{STEPS} computed: calibrated {''.join(map(str, cal.mask))} PSNR {psnr_cal:.2f} dB, "
          f"uniform {''.join(map(str, uniform))} PSNR {psnr_uni:.2f} dB (predicted gain {cal.gain_db:+.2f} dB, "
          f"{cal.growth} growth); this test {time.perf_counter() - t0:.1f} s")
    assert psnr_cal >= psnr_uni + CALIBRATED_MARGIN_DB, (
        f"calibrated mask {cal.mask}: {psnr_cal:.2f} dB, not {CALIBRATED_MARGIN_DB} dB above the uniform mask "
        f"{uniform}: {psnr_uni:.2f} dB"
    )


# diffusers' TaylorSeer "lite" (forecasts the transformer's output, runs no block on its predicted
# steps) against dit_fx with no block either (fn_blocks=0) on lite's own schedule (steps < warm-up,
# then every interval-th step from warm-up + 1), FoCa forecasting the block stack's residual.
# Measured on the shipped weights (CPU, torch 2.13, these 10 samples, 20 steps; this test's PSNR on
# [0, 1] images): warm-up 4 interval 3 (9/20 computed) lite 35.04 dB vs dit_fx 36.76; with PSNR
# over the images' own range: interval 3 33.74 vs 35.17, interval 2 39.56 vs 41.78, warm-up 3
# interval 4 30.10 vs 30.94. At 28 steps on 20 samples: interval 3 38.29 vs 41.14, interval 5
# 31.60 vs 32.63. dit_fx's TaylorSeer order 1 on the outputs is lite itself (tests/test_fn_zero.py).
LITE_WARMUP, LITE_INTERVAL, LITE_MARGIN_DB = 4, 3, 1.0


@needs_assets
def test_forecast_without_blocks_beats_diffusers_taylorseer_lite(fashion):
    from diffusers import TaylorSeerCacheConfig

    t0 = time.perf_counter()
    model = fashion.transformer
    model.enable_cache(TaylorSeerCacheConfig(cache_interval=LITE_INTERVAL, disable_cache_before_step=LITE_WARMUP,
                                             max_order=1, taylor_factors_dtype=torch.float32, use_lite_mode=True))
    try:
        with model.cache_context("cond"):
            lite = fashion.psnr(fashion.sample())
    finally:
        model.disable_cache()
    mask = lite_schedule(STEPS, LITE_WARMUP, LITE_INTERVAL)
    cfg = dit_fx.DBCacheConfig(fn_blocks=0, steps_computation_mask=mask, steps_computation_policy="static",
                               max_warmup_steps=LITE_WARMUP, calibrator=dit_fx.FoCaConfig(), enable_separate_cfg=False)
    images, stats = fashion.cached(cfg)
    ours = fashion.psnr(images)
    print(f"\nno block on {STEPS - sum(mask)}/{STEPS} steps: diffusers TaylorSeer lite {lite:.2f} dB, dit_fx F0B0 + FoCa "
          f"{ours:.2f} dB; this test {time.perf_counter() - t0:.1f} s")
    assert stats.cached_steps == [i for i, m in enumerate(mask) if not m]
    assert ours >= lite + LITE_MARGIN_DB


def test_demo_side_by_side_png(tmp_path):
    """The demo's PNG (rows of images, labels, caption) without the trained model: its size and pixels."""
    from PIL import Image

    from dit_fx.tools.demo import side_by_side

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 28, 28, generator=g)
    b = (a + 0.05 * torch.randn(3, 1, 28, 28, generator=g)).clamp(0, 1)
    path = side_by_side([("plain", a), ("dit_fx", b), ("|difference|\nx8", ((a - b).abs() * 8).clamp(0, 1))],
                        ["line one", "PSNR 30.00 dB"], str(tmp_path / "sub" / "demo.png"), column_names=["x", "y", "z"])
    assert os.path.isabs(path) and os.path.isfile(path)
    with Image.open(path) as img:
        w, h = img.size
        assert img.mode == "L"
        assert w > 3 * 28 * 4 and h > 3 * 28 * 4
        px = img.load()
        assert len({px[x, h // 2] for x in range(w)}) > 10  # image content, not a blank canvas
