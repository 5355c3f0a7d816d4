"""passes/quantize_attention.py and kernels/fp8_attention.py: the blocks' attention in fp8.

On CPU the op runs its torch math (quantize, dequantize, fp32 attention), so a model optimized
with ``attention="fp8"`` must equal the unmodified model whose ``scaled_dot_product_attention``
is that math, bit for bit in fp32. The Triton kernel itself needs a GPU:
``benchmarks/fp8_attention.py`` checks it against the same math there."""

import warnings
from unittest import mock

import pytest
import torch

import dit_fx
from dit_fx.kernels import fp8_attention as fa
from helpers import run_steps
from tiny_models import MODELS, make_trajectory

STEPS = 5


def _patched(pv_fp8):
    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        assert attn_mask is None and not is_causal and dropout_p == 0.0
        return fa.reference(query, key, value, scale, pv_fp8=pv_fp8)

    return mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", sdpa)


def _optimized(name, steps, config=None, **options):
    model = MODELS[name].build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dit_fx.optimize(model, config or dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), **options)
        outs = run_steps(model, steps)
    return model, outs, [str(w.message) for w in caught if "attention=" in str(w.message)]


@pytest.mark.parametrize("name", ["flux", "wan", "sd3", "qwenimage"])
@pytest.mark.parametrize("mode", ["fp8", "fp8_qk"])
def test_equals_the_model_with_fp8_attention(name, mode):
    steps = make_trajectory(name, STEPS)
    with _patched(mode == "fp8"):
        expected = run_steps(MODELS[name].build(), steps)
    model, outs, warned = _optimized(name, steps, attention=mode)
    assert not warned
    record = dit_fx.inspect(model).attention
    assert record.mode == mode and record.replaced and not record.kept
    for got, want in zip(outs, expected):
        assert torch.equal(got, want)
    plain = run_steps(MODELS[name].build(), steps)  # and fp8 is not a no-op
    assert not torch.equal(outs[-1], plain[-1])


def test_cached_steps_still_reuse_the_residual():
    steps = make_trajectory("flux", 8)
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=2)
    model, outs, _ = _optimized("flux", steps, cfg, attention="fp8")
    cached = dit_fx.summary(model).cached_steps
    assert cached
    with _patched(True):  # the same cache decisions and values as caching the fp8 model itself
        ref_model = MODELS["flux"].build()
        dit_fx.optimize(ref_model, cfg)
        expected = run_steps(ref_model, steps)
    assert dit_fx.summary(ref_model).cached_steps == cached
    for got, want in zip(outs, expected):
        assert torch.equal(got, want)


def test_masked_attention_stays_and_says_why():
    steps = make_trajectory("hunyuanvideo", 2)
    model, outs, warned = _optimized("hunyuanvideo", steps, attention="fp8")
    record = dit_fx.inspect(model).attention
    assert not record.replaced and any(why == "has an attention mask" for _, why in record.kept)
    assert len(warned) == 1 and "stay as they are" in warned[0]
    plain = run_steps(MODELS["hunyuanvideo"].build(), steps)
    for got, want in zip(outs, plain):
        assert torch.equal(got, want)


@pytest.mark.parametrize("bad", ["fp4", "FP8", True, 8])
def test_bad_attention_value_names_the_field(bad):
    with pytest.raises(ValueError, match="attention"):
        dit_fx.optimize(MODELS["flux"].build(), dit_fx.DBCacheConfig(), attention=bad)
    with pytest.raises(ValueError, match="attention"):
        dit_fx.CompileOptions.from_backend({"attention": bad})


def test_backend_option():
    steps = make_trajectory("wan", 3)
    with _patched(True):
        expected = run_steps(MODELS["wan"].build(), steps)
    model = MODELS["wan"].build()
    compiled = torch.compile(model, backend="dit_fx", options={"compile": False, "attention": "fp8",
                                                              "config": dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0)})
    for got, want in zip(run_steps(compiled, steps), expected):
        assert torch.equal(got, want)


def test_quantization_is_safe_and_smooths_keys():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 64, generator=g) for _ in range(3))
    zeros = torch.zeros_like(q)
    assert torch.equal(fa.fp8_attention(zeros, zeros, zeros), zeros)  # zero scales give zeros, not NaN
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    out = fa.fp8_attention(q, k, v)
    assert (out - exact).norm() / exact.norm() < 0.08  # fp8's 3 mantissa bits, measured ~0.04
    # A key offset shared by all tokens does not change softmax; the smoothing removes it before
    # the fp8 cast, so the quantized result does not change either (without it: the offset's
    # range would take the fp8 scale).
    shifted = fa.fp8_attention(q, k + 30.0 * torch.randn(64, generator=g), v)
    assert (shifted - out).abs().max() < 1e-5
    q8, k8, v8, sq, sk, sv = fa.quantize_qkv(q, k, v)
    assert q8.dtype == k8.dtype == v8.dtype == torch.float8_e4m3fn
    assert v8.stride(-2) == 1  # values with the sequence contiguous, for the second fp8 product
    assert sq.shape == (1, 2, 40) and sv.shape == (1, 2, 64)
