#!/usr/bin/env python
"""Profile one cached dit_fx step against the ideal cached step (model truncated to Fn blocks).

FLUX.1-dev-sized transformer, random weights x0.5, bf16, CUDA. Writes profiler tables (top ops by
device and host time) to --out-dir. Used to find where a cached step spends time beyond the ideal.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dit_fx  # noqa: E402
from diffusers import FluxTransformer2DModel  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=1024)
p.add_argument("--fn", type=int, default=1)
p.add_argument("--out-dir", default=".")
a = p.parse_args()

torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = FluxTransformer2DModel(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                                   joint_attention_dim=4096, pooled_projection_dim=768, in_channels=64,
                                   guidance_embeds=True, axes_dims_rope=(16, 56, 56)).eval()
torch.set_default_dtype(torch.float32)
with torch.no_grad():
    for prm in model.parameters():
        prm.mul_(0.5)
n_img = (a.size // 16) ** 2
g = torch.Generator("cuda").manual_seed(0)
ids = torch.zeros(a.size // 16, a.size // 16, 3, device="cuda")
ids[..., 1] = torch.arange(a.size // 16, device="cuda")[:, None]
ids[..., 2] = torch.arange(a.size // 16, device="cuda")[None, :]
inputs = dict(hidden_states=torch.randn(1, n_img, 64, device="cuda", dtype=torch.bfloat16, generator=g),
              encoder_hidden_states=torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16, generator=g),
              pooled_projections=torch.randn(1, 768, device="cuda", dtype=torch.bfloat16, generator=g),
              timestep=torch.tensor([0.5], device="cuda"), guidance=torch.tensor([3.5], device="cuda"),
              img_ids=ids.reshape(-1, 3), txt_ids=torch.zeros(512, 3, device="cuda"), return_dict=False)


def profile(name, fn):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    with open(os.path.join(a.out_dir, f"profile_{name}.txt"), "w") as f:
        f.write(ka.table(sort_by="self_cuda_time_total", row_limit=25))
        f.write("\n\n")
        f.write(ka.table(sort_by="self_cpu_time_total", row_limit=25))
    cuda = sum(e.self_device_time_total for e in ka) / 5 / 1000
    cpu = sum(e.self_cpu_time_total for e in ka) / 5 / 1000
    print(f"{name}: device time {cuda:.2f} ms/step, host time {cpu:.2f} ms/step", flush=True)


with torch.no_grad():
    blocks, singles = model.transformer_blocks, model.single_transformer_blocks
    model.transformer_blocks = torch.nn.ModuleList(list(blocks)[: a.fn])
    model.single_transformer_blocks = torch.nn.ModuleList()
    profile(f"ideal_F{a.fn}B0", lambda: model(**inputs))
    model.transformer_blocks, model.single_transformer_blocks = blocks, singles
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=a.fn, residual_diff_threshold=0.5, max_warmup_steps=1,
                                                enable_separate_cfg=False))
    model(**inputs)
    profile(f"dit_fx_cached_F{a.fn}B0", lambda: model(**inputs))
    s = dit_fx.summary(model)
    print("cached", len(s.cached_steps), "of", s.executed_steps, flush=True)
    # computed step (threshold 0: never caches) against plain eager
    dit_fx.disable(model)
    profile("eager_full", lambda: model(**inputs))
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=a.fn, residual_diff_threshold=0.0, enable_separate_cfg=False))
    model(**inputs)
    profile(f"dit_fx_computed_F{a.fn}B0", lambda: model(**inputs))
