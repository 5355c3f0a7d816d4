"""PSNR (dB) of every saved loop variant against the references. usage: python table.py [DIR]"""
import glob, math, os, sys, torch
d = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gap/out"
outs = {os.path.basename(p)[:-3]: torch.load(p) for p in sorted(glob.glob(f"{d}/*.pt"))}
def psnr(a, r):
    mse = ((a - r) ** 2).mean().item()
    return 10 * math.log10(((r.max() - r.min()) ** 2).item() / mse) if mse else math.inf
refs = [r for r in ("eager_bfloat16_static", "fx_eager_float32_static", "fx_eager_float64_static_w16", "fx_eager_float64_static_w16_xr")
        if r in outs]
short = {"eager_bfloat16_static": "eager bf16 uncached", "fx_eager_float32_static": "fp32 cached",
         "fx_eager_float64_static_w16": "fp64 cached (bf16 w)", "fx_eager_float64_static_w16_xr": "fp64 cached, bf16 latents"}
print("| variant | " + " | ".join("vs " + short[r] for r in refs) + " |")
print("|---|" + "---|" * len(refs))
for k, v in outs.items():
    print(f"| {k} | " + " | ".join("%.3f" % psnr(v, outs[r]) for r in refs) + " |")
