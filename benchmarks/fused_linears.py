"""Does fusing sibling Linears (one GEMM for q/k/v, or q/k/v/mlp in FLUX's single blocks) pay,
in bf16 and in fp8 (torchao dynamic row-wise)? GPU, one process, interleaved.

Two levels:

* ``linears``: the Linears alone after a norm + modulation (the op that feeds them), compiled
  with Inductor's defaults, separate vs one fused weight split after the GEMM.
* ``blocks``: one diffusers block at full width (Wan 2.1 14B, FLUX.1-dev double and single),
  compiled with ``fullgraph=True``, with and without diffusers' ``fuse_projections``.

Plus ``--flux-gap``: FLUX.1-dev-sized F8B0 on the quantize benchmark's mask, bf16, PSNR of dit_fx
and cache-dit (eager and compiled) vs the eager uncached run, to locate the gap seen in
``quantize_h200_flux_1024.json``.

    python benchmarks/fused_linears.py --out /tmp/fused.json [--flux-gap]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bench(fn, *args, iters=30, rounds=5):
    for _ in range(3):
        fn(*args)
    torch.cuda.synchronize()
    best = []
    for _ in range(rounds):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn(*args)
        b.record()
        torch.cuda.synchronize()
        best.append(a.elapsed_time(b) / iters)
    best.sort()
    return best[len(best) // 2]


def fp8(module):
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(module, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), activation_value_lb=1e-12,
                                                                set_inductor_config=False))
    return module


class Separate(nn.Module):
    def __init__(self, k, ns, dev):
        super().__init__()
        self.norm = nn.LayerNorm(k, elementwise_affine=False, eps=1e-6)
        self.lins = nn.ModuleList(nn.Linear(k, n, device=dev, dtype=torch.bfloat16) for n in ns)

    def forward(self, h, shift, scale):
        x = self.norm(h) * (1 + scale) + shift
        return [lin(x) for lin in self.lins]


class Fused(nn.Module):
    def __init__(self, sep):
        super().__init__()
        self.norm = sep.norm
        self.sizes = [lin.out_features for lin in sep.lins]
        w = torch.cat([lin.weight.data for lin in sep.lins])
        b = torch.cat([lin.bias.data for lin in sep.lins])
        self.lin = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
        self.lin.weight.data.copy_(w)
        self.lin.bias.data.copy_(b)

    def forward(self, h, shift, scale):
        x = self.norm(h) * (1 + scale) + shift
        return list(self.lin(x).split(self.sizes, dim=-1))


def compare(a, b, dtype, args, iters):
    """Separate ``a`` vs joined ``b`` (fp8: both quantized), compiled, timed in 3 interleaved rounds:
    (row, compiled a)."""
    if dtype == "fp8":
        fp8(a)
        fp8(b)
    fa = torch.compile(a, fullgraph=True)
    fb = torch.compile(b, fullgraph=True)
    with torch.no_grad():
        ya, yb = fa(*args), fb(*args)
        ya = ya if isinstance(ya, (tuple, list)) else (ya,)
        yb = yb if isinstance(yb, (tuple, list)) else (yb,)
        diff = max((x.float() - y.float()).abs().max().item() for x, y in zip(ya, yb))
        ts, tf = [], []
        for _ in range(3):  # interleaved
            ts.append(bench(fa, *args, iters=iters))
            tf.append(bench(fb, *args, iters=iters))
    ts.sort()
    tf.sort()
    return dict(separate_ms=round(ts[1], 4), fused_ms=round(tf[1], 4), ratio=round(tf[1] / ts[1], 4),
                max_abs_diff=diff), fa


LINEAR_CASES = {
    "wan_qkv": (7800, 5120, [5120] * 3),
    "wan_cross_kv": (512, 5120, [5120] * 2),
    "flux_double_qkv": (4096, 3072, [3072] * 3),
    "flux_single_qkv": (4608, 3072, [3072] * 3),
    "flux_single_qkv_mlp": (4608, 3072, [3072] * 3 + [12288]),
}


def linears(dev, res):
    out = {}
    for name, (m, k, ns) in LINEAR_CASES.items():
        torch.manual_seed(0)
        sep = Separate(k, ns, dev).eval().requires_grad_(False)
        for p in sep.parameters():
            p.data.mul_(0.05)
        h = torch.randn(1, m, k, device=dev, dtype=torch.bfloat16)
        shift = torch.randn(1, 1, k, device=dev, dtype=torch.bfloat16) * 0.1
        scale = torch.randn(1, 1, k, device=dev, dtype=torch.bfloat16) * 0.1
        row = {}
        for dtype in ("bf16", "fp8"):
            row[dtype], _ = compare(copy.deepcopy(sep), Fused(copy.deepcopy(sep)), dtype, (h, shift, scale), iters=30)
            log(f"linears {name} {dtype}: {row[dtype]}")
            torch._dynamo.reset()
        out[name] = row
    res["linears"] = out


def blocks(dev, res):
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    out = {}
    bf = torch.bfloat16

    def wan():
        torch.manual_seed(0)
        with torch.device(dev):
            blk = WanTransformerBlock(5120, 13824, 40, qk_norm="rms_norm_across_heads", cross_attn_norm=True, eps=1e-6).to(bf)
        n = 7800
        args = (torch.randn(1, n, 5120, device=dev, dtype=bf), torch.randn(1, 512, 5120, device=dev, dtype=bf),
                torch.randn(1, 6, 5120, device=dev, dtype=bf) * 0.1,
                (torch.randn(1, n, 1, 128, device=dev), torch.randn(1, n, 1, 128, device=dev)))
        return blk, args, lambda b: (b.attn1.fuse_projections(), b.attn2.fuse_projections())

    def flux(cls):
        def make():
            torch.manual_seed(0)
            with torch.device(dev):
                blk = cls(3072, 24, 128).to(bf)
            args = (torch.randn(1, 4096, 3072, device=dev, dtype=bf), torch.randn(1, 512, 3072, device=dev, dtype=bf),
                    torch.randn(1, 3072, device=dev, dtype=bf),
                    (torch.randn(4608, 128, device=dev), torch.randn(4608, 128, device=dev)))
            return blk, args, lambda b: b.attn.fuse_projections()
        return make

    for name, make in (("wan", wan), ("flux_double", flux(FluxTransformerBlock)), ("flux_single", flux(FluxSingleTransformerBlock))):
        blk, args, fuse = make()
        blk.eval().requires_grad_(False)
        for p in blk.parameters():
            p.data.mul_(0.5)
        row = {}
        for dtype in ("bf16", "fp8"):
            b = copy.deepcopy(blk)
            fuse(b)
            row[dtype], fa = compare(copy.deepcopy(blk), b, dtype, args, iters=10)
            log(f"block {name} {dtype}: {row[dtype]}")
            if dtype == "fp8":
                row["fp8_profile"] = profile(fa, args)
                log(f"block {name} fp8 profile: {row['fp8_profile']}")
            del b, fa
            torch._dynamo.reset()
        out[name] = row
        del blk
        torch.cuda.empty_cache()
    res["blocks"] = out


def profile(fn, args):
    from torch.profiler import ProfilerActivity, profile as prof

    with torch.no_grad(), prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(5):
            fn(*args)
        torch.cuda.synchronize()
    buckets = {}
    for ev in p.key_averages():
        name = ev.key
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t <= 0 or name.startswith("cuda") or name.startswith("Memcpy") and False:
            continue
        low = name.lower()
        if "sdpa" in low or "flash" in low or "attention" in low and "triton" not in low:
            key = "attention"
        elif "gemm" in low or "sm90" in low or "cutlass" in low or "scaled_mm" in low or "nvjet" in low:
            key = "gemm"
        elif "triton" in low:
            key = "triton"
        else:
            key = "other"
        buckets.setdefault(key, 0.0)
        buckets[key] += t / 5 / 1000.0
    top = sorted(((getattr(ev, "device_time_total", 0) / 5000.0, ev.key[:90]) for ev in p.key_averages()), reverse=True)[:12]
    return dict(ms=({k: round(v, 3) for k, v in buckets.items()}), top=[(round(a, 3), b) for a, b in top])


def flux_gap(dev, res):
    import cache_dit

    import dit_fx
    from common import FLUX_DEV_CONFIG, build_flux, flux_inputs

    mask = [1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1]
    model = build_flux(FLUX_DEV_CONFIG, dev, torch.bfloat16)
    inputs = flux_inputs(1024, FLUX_DEV_CONFIG, 512, dev, torch.bfloat16)
    sig = torch.linspace(1.0, 0.0, 29)

    def loop(fn):
        x = inputs["hidden_states"].clone()
        kw = dict(inputs)
        with torch.no_grad():
            for i in range(28):
                kw["hidden_states"] = x
                kw["timestep"] = torch.full((1,), float(sig[i]), device=dev, dtype=torch.bfloat16)
                v = fn(**kw)[0]
                x = (x.float() + float(sig[i + 1] - sig[i]) * v.float()).to(torch.bfloat16)
        return x.double()

    def psnr(a, r):
        mse = ((a - r) ** 2).mean().item()
        return round(10 * math.log10(((r.max() - r.min()) ** 2).item() / mse), 3) if mse else "inf"

    t = time.perf_counter()
    ref = loop(model)
    log(f"flux gap: reference {time.perf_counter() - t:.1f} s")
    fx_cfg = dit_fx.DBCacheConfig(fn_blocks=8, bn_blocks=0, residual_diff_threshold=0.08, max_warmup_steps=0,
                                  steps_computation_mask=mask, steps_computation_policy="static", enable_separate_cfg=False)
    outs = {}
    for name, kw in (("dit_fx_eager", dict(compile=False, cuda_graphs=False)), ("dit_fx_compiled", dict(cuda_graphs=False)),
                     ("dit_fx_compiled_cg", {})):
        dit_fx.optimize(model, fx_cfg, **kw)
        outs[name] = loop(model)
        log(f"flux gap {name}: cached {dit_fx.summary(model).cached_steps} psnr {psnr(outs[name], ref)}")
        dit_fx.disable(model)
        torch._dynamo.reset()
    cd_cfg = cache_dit.DBCacheConfig(Fn_compute_blocks=8, Bn_compute_blocks=0, residual_diff_threshold=0.08, max_warmup_steps=0,
                                     num_inference_steps=28, steps_computation_mask=mask, steps_computation_policy="static",
                                     enable_separate_cfg=False)
    cache_dit.enable_cache(model, cache_config=cd_cfg)
    outs["cache_dit_eager"] = loop(model)
    log(f"flux gap cache_dit_eager: {cache_dit.summary(model, logging=False)[0].cached_steps if hasattr(cache_dit.summary(model, logging=False)[0], 'cached_steps') else '?'} psnr {psnr(outs['cache_dit_eager'], ref)}")
    cache_dit.refresh_context(model, num_inference_steps=28)
    compiled = torch.compile(model)
    outs["cache_dit_compiled"] = loop(compiled)
    log(f"flux gap cache_dit_compiled psnr {psnr(outs['cache_dit_compiled'], ref)}")
    res["flux_gap"] = {k: psnr(v, ref) for k, v in outs.items()}
    res["flux_gap"]["dit_fx_eager_vs_cache_dit_eager"] = psnr(outs["dit_fx_eager"], outs["cache_dit_eager"])
    res["flux_gap"]["dit_fx_compiled_cg_vs_cache_dit_compiled"] = psnr(outs["dit_fx_compiled_cg"], outs["cache_dit_compiled"])
    log(f"flux gap: {res['flux_gap']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--flux-gap", action="store_true")
    ap.add_argument("--skip", default="")
    args = ap.parse_args()
    dev = torch.device("cuda")
    res = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
    parts = [("flux_gap", flux_gap)] if args.flux_gap else []
    parts += [("linears", linears), ("blocks", blocks)]
    for name, part in parts:
        if name in args.skip.split(","):
            continue
        try:
            part(dev, res)
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            res[name + "_error"] = repr(exc)[:500]
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    log("done")


if __name__ == "__main__":
    main()
