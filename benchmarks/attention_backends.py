#!/usr/bin/env python
"""Which SDPA backend is fastest for DiT attention on this GPU, and what it buys a compiled step.

Part 1 times ``F.scaled_dot_product_attention`` alone at the benchmark shapes with each backend
(and torch's own default choice), with its error against an fp32 math reference.
Part 2 compiles the FLUX.1-dev-sized transformer block by block (regional compile, fresh process
state) with the default backend and with each faster one forced while compiling, and times a
full step: the kernels a computed step runs, in whatever system compiles them.

    python benchmarks/attention_backends.py --out benchmarks/results/attention_h100.json
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import FLUX_DEV_CONFIG, Timer, build_flux, environment, flux_inputs, write_json  # noqa: E402

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}
# (name, heads, q tokens, kv tokens, head dim)
SHAPES = [("flux_1024", 24, 4608, 4608, 128), ("flux_512", 24, 1536, 1536, 128),
          ("pixart_512_self", 16, 1024, 1024, 72), ("pixart_512_cross", 16, 1024, 300, 72)]


def cuda_median_ms(fn, reps: int = 30) -> float:
    """Median CUDA-event time of ``fn`` after 3 untimed calls."""
    return Timer(torch.device("cuda")).median_ms(fn, reps=reps, warmup=3)


def default_choice(q, k, v) -> str:
    choice = torch._fused_sdp_choice(q, k, v)
    return {int(b): n for n, b in [("math", SDPBackend.MATH), *[(n, b) for n, b in BACKENDS.items()]]}.get(choice, str(choice))


def sdpa_alone():
    rows = []
    for name, h, sq, skv, d in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        # diffusers' layout: (B, S, H, D) transposed to (B, H, S, D), so strides are not contiguous
        q, k, v = (torch.randn(1, s, h, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for s in (sq, skv, skv))
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        flops = 4 * h * sq * skv * d
        row = {"shape": name, "default": default_choice(q, k, v)}
        for label, backends in [("default", None), *[(n, [b]) for n, b in BACKENDS.items()]]:
            def run(backends=backends):
                if backends is None:
                    return F.scaled_dot_product_attention(q, k, v)
                with sdpa_kernel(backends):
                    return F.scaled_dot_product_attention(q, k, v)
            try:
                ms = cuda_median_ms(run)
                err = (run().float() - ref).abs().max().item()
                row[label] = {"ms": round(ms, 4), "tflops": round(flops / ms / 1e9, 1), "max_err_vs_fp32": err}
            except RuntimeError as e:
                row[label] = {"error": str(e).splitlines()[0][:160]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def compiled_steps(sizes, backends):
    """Regional compile of the FLUX-sized model, one fresh compile per backend and size."""
    model = build_flux(FLUX_DEV_CONFIG, torch.device("cuda"), torch.bfloat16, seed=0)
    out = []
    for size in sizes:
        inputs = flux_inputs(size, FLUX_DEV_CONFIG, 512, torch.device("cuda"), torch.bfloat16, seed=0)
        results = {}
        for label in backends:
            if label.endswith("+fused_qkv") and not getattr(model, "fused_qkv", False):
                model.fuse_qkv_projections()  # diffusers' own fusion: one GEMM for q, k and v
                model.fused_qkv = True
            torch._dynamo.reset()
            blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
            for blk in blocks:
                blk.compile(fullgraph=True)
            attn_name = label.split("+")[0]
            forced = [BACKENDS[attn_name]] if attn_name != "default" else None
            with torch.no_grad():
                if forced:
                    with sdpa_kernel(forced):  # the choice is made while compiling
                        first = model(**inputs)[0]
                else:
                    first = model(**inputs)[0]
                ms = cuda_median_ms(lambda: model(**inputs), reps=10)
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    model(**inputs)
                    torch.cuda.synchronize()
            attn = {}
            for ev in prof.key_averages():
                n = ev.key.lower()
                if any(s in n for s in ("flash", "fmha", "sdpa", "attention", "cudnn")):
                    attn[ev.key[:90]] = round(ev.device_time_total / 1e3, 3)
            results[label] = {"step_ms": round(ms, 3), "attention_kernels_ms": attn, "out": first.float()}
            for blk in blocks:
                blk._compiled_call_impl = None
        base = results["default"]["out"]
        for label, r in results.items():
            r["max_diff_vs_default"] = (r.pop("out") - base).abs().max().item()
        row = {"size": size, **results}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out")
    p.add_argument("--sizes", type=int, nargs="*", default=[1024, 512])
    p.add_argument("--compiled", nargs="*", default=["default", "cudnn", "default+fused_qkv", "cudnn+fused_qkv"],
                   help="backend[+fused_qkv] per compile; fused_qkv rows must come last")
    a = p.parse_args()
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version(), "environment": environment(torch.device("cuda")),
              "sdpa_alone": sdpa_alone()}
    if a.sizes and a.compiled:
        result["regional_compiled_step"] = compiled_steps(a.sizes, a.compiled)
    write_json(a.out, result, indent=1)


if __name__ == "__main__":
    main()
