"""fp8 attention (``dit_fx.kernels.fp8_attention``) against torch's bf16 SDPA, one process, GPU.

Per shape: milliseconds (``triton.testing.do_bench`` medians) of torch's default bf16
``scaled_dot_product_attention`` (cuDNN on Hopper), of the fp8 kernel on quantized inputs, of
the quantization alone (compiled) and of the whole ``fp8_attention`` under ``torch.compile``; and
the error of each against fp32 attention on the same inputs (relative L2), on inputs shaped like
DiT activations (scores spread enough for a peaked softmax, a per-channel offset on K).

    python benchmarks/fp8_attention.py --out benchmarks/results/fp8_attention_h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import environment  # noqa: E402
from dit_fx.kernels import fp8_attention as fa  # noqa: E402

SHAPES = {  # name: (batch, heads, tokens, head dim)
    "flux_1024": (1, 24, 4608, 128),
    "flux_512": (1, 24, 1536, 128),
    "wan_14b_480p": (1, 40, 32760, 128),
}


def inputs(shape, seed=0, device="cuda"):
    g = torch.Generator(device=device).manual_seed(seed)
    b, h, s, d = shape
    q = torch.randn(b, h, s, d, device=device, generator=g) * 1.5
    k = torch.randn(b, h, s, d, device=device, generator=g) * 1.5 + torch.randn(1, h, 1, d, device=device, generator=g) * 3
    v = torch.randn(b, h, s, d, device=device, generator=g)
    return q, k, v


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def flops(shape):
    b, h, s, d = shape
    return 4 * b * h * s * s * d


def bench(fn, shape):
    from triton.testing import do_bench

    ms = do_bench(fn, warmup=50, rep=300, return_mode="median")
    return dict(ms=round(ms, 4), tflops=round(flops(shape) / ms / 1e9, 1))


def measure(name, shape):
    q32, k32, v32 = inputs(shape)
    ref = torch.nn.functional.scaled_dot_product_attention(q32, k32, v32) if shape[2] <= 8192 else None
    q, k, v = (t.to(torch.bfloat16) for t in (q32, k32, v32))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    scale = shape[-1] ** -0.5
    row = dict(shape=list(shape))
    row["bf16_sdpa"] = bench(lambda: sdpa(q, k, v), shape)
    if ref is not None:
        row["bf16_sdpa"]["rel_err"] = rel(sdpa(q, k, v), ref)
    for variant, pv_fp8 in (("fp8", True), ("fp8_qk_bf16_pv", False)):
        quant = torch.compile(lambda q, k, v: fa.quantize_qkv(q, k, v, pv_fp8))
        whole = torch.compile(lambda q, k, v: fa.fp8_attention(q, k, v, pv_fp8=pv_fp8))
        qs = quant(q, k, v)
        t0 = time.perf_counter()
        fa.fp8_attention_quantized(*qs, scale, torch.bfloat16)
        torch.cuda.synchronize()
        r = dict(autotune_s=round(time.perf_counter() - t0, 2))
        r["kernel"] = bench(lambda: fa.fp8_attention_quantized(*qs, scale, torch.bfloat16), shape)
        r["quantize_compiled"] = bench(lambda: quant(q, k, v), shape)
        r["whole_compiled"] = bench(lambda: whole(q, k, v), shape)
        r["kernel_over_bf16"] = round(r["kernel"]["ms"] / row["bf16_sdpa"]["ms"], 4)
        r["whole_over_bf16"] = round(r["whole_compiled"]["ms"] / row["bf16_sdpa"]["ms"], 4)
        if ref is not None:
            out, dq = whole(q, k, v), fa.reference(q, k, v, pv_fp8=pv_fp8)
            r["rel_err"] = rel(out, ref)
            r["rel_err_dequantized_math"] = rel(dq, ref)  # the quantization alone, fp32 attention
            r["rel_err_vs_dequantized_math"] = rel(out, dq)  # what the kernel adds (P's rounding, order)
        row[variant] = r
    print(name, json.dumps(row), flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    a = p.parse_args()
    result = dict(benchmark="fp8_attention", env=environment(), rows={})
    for name in a.shapes:
        result["rows"][name] = measure(name, SHAPES[name])
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
