"""Pairwise per-call SNR (dB) between the variants saved by percall.py."""
import math, os, torch
d = torch.load(os.environ.get("PERCALL", "/tmp/gap/out_percall/percall.pt")); res = dict(d["res"]); res["fp64"] = d["v64"]
def snr(a, r):
    e = sum(((x - y) ** 2).sum().item() for x, y in zip(a, r))
    return -10 * math.log10(e / sum((y ** 2).sum().item() for y in r)) if e else math.inf
names = list(res)
print("%-22s" % "" + "".join("%11s" % n[:10] for n in names))
for a in names:
    print("%-22s" % a + "".join("%11.2f" % snr(res[a], res[b]) for b in names))
