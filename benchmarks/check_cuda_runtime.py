#!/usr/bin/env python
"""CUDA check of the runtime's asynchronous timestep read: a tiny Wan transformer in a CFG loop
gives the same steps, branches, cached steps and (within fp32 rounding) outputs on CUDA as on CPU."""

import argparse
import os
import sys

import torch

from common import REPO_ROOT  # noqa: E402  (also puts the repository root on sys.path)

sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
import dit_fx  # noqa: E402
from test_cfg_parity import cfg_calls  # noqa: E402
from tiny_models import MODELS  # noqa: E402


def run(device):
    torch._dynamo.reset()
    model = MODELS["wan_deep"].build().to(device)
    # eager lowering on both devices, so only the runtime's timestep read differs
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.15, max_warmup_steps=3),
                    compile=False, cuda_graphs=False)
    outs = []
    for _ in range(2):  # two generations back to back
        for call in cfg_calls(steps=12):
            kw = {k: v.to(device) if torch.is_tensor(v) else v for k, v in call.items()}
            with torch.no_grad():
                outs.append(model(**kw)[0].float().cpu())
    return dit_fx.summary(model), outs


def main() -> int:
    argparse.ArgumentParser(description=__doc__).parse_args()
    cpu_stats, cpu_out = run("cpu")
    cuda_stats, cuda_out = run("cuda")
    print("cpu ", cpu_stats.generation, cpu_stats.executed_steps, cpu_stats.cached_steps, cpu_stats.cfg_cached_steps)
    print("cuda", cuda_stats.generation, cuda_stats.executed_steps, cuda_stats.cached_steps, cuda_stats.cfg_cached_steps)
    err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(cuda_out, cpu_out))
    same = (cpu_stats.generation, cpu_stats.executed_steps, cpu_stats.cached_steps, cpu_stats.cfg_cached_steps) == (
        cuda_stats.generation, cuda_stats.executed_steps, cuda_stats.cached_steps, cuda_stats.cfg_cached_steps)
    print(f"same decisions: {same}; max relative output difference {err:.2e}")
    return 0 if same and cuda_stats.separate_cfg and cuda_stats.generation == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
