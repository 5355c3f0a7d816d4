"""``python -m dit_fx demo``: a tiny FLUX-architecture transformer, 28 steps plain vs optimized.

Random weights, built from a config (no download). The denoising loop is a plain flow-matching
Euler loop on fixed prompt embeddings, so both runs see the same inputs step for step.
Random weights make the first blocks' residual change by 40-50% between steps (trained models:
a few percent), so the demo's default threshold is 0.45 where a real model would use ~0.08-0.2.
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List

import torch

DEMO_FLUX_CONFIG = dict(
    patch_size=1,
    in_channels=16,
    num_layers=4,
    num_single_layers=8,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=64,
    pooled_projection_dim=64,
    axes_dims_rope=[8, 12, 12],
)


def build_demo_transformer(seed: int = 0) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(**DEMO_FLUX_CONFIG).eval()


def demo_inputs(height: int = 16, width: int = 16, text_tokens: int = 24, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img_ids = torch.zeros(height, width, 3)
    img_ids[..., 1] = torch.arange(height)[:, None]
    img_ids[..., 2] = torch.arange(width)[None, :]
    c = DEMO_FLUX_CONFIG
    return dict(
        latents=torch.randn(1, height * width, c["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(1, text_tokens, c["joint_attention_dim"], generator=g),
        pooled_projections=torch.randn(1, c["pooled_projection_dim"], generator=g),
        img_ids=img_ids.reshape(-1, 3),
        txt_ids=torch.zeros(text_tokens, 3),
    )


def denoise(model, inputs, steps: int, progress=None) -> (torch.Tensor, List[float]):
    """Euler steps of a rectified-flow sampler from sigma=1 to 0; returns latents and step times."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    x = inputs["latents"].clone()
    times = []
    with torch.no_grad():
        for i in range(steps):
            t0 = time.perf_counter()
            v = model(
                hidden_states=x,
                encoder_hidden_states=inputs["encoder_hidden_states"],
                pooled_projections=inputs["pooled_projections"],
                timestep=sigmas[i : i + 1],
                img_ids=inputs["img_ids"],
                txt_ids=inputs["txt_ids"],
                return_dict=False,
            )[0]
            x = x + (sigmas[i + 1] - sigmas[i]) * v
            times.append(time.perf_counter() - t0)
            if progress is not None:
                progress.update(1)
    return x, times


def run_demo(steps: int = 28, threshold: float = 0.45, dump_dir: str = "dit_fx_dump", fn_blocks: int = 2) -> dict:
    from tqdm.auto import tqdm

    import dit_fx

    model = build_demo_transformer()
    inputs = demo_inputs()
    with tqdm(total=steps, desc="plain", unit="step") as bar:
        plain, plain_times = denoise(model, inputs, steps, bar)
    cfg = dit_fx.DBCacheConfig(
        fn_blocks=fn_blocks, bn_blocks=0, residual_diff_threshold=threshold, max_warmup_steps=4, num_inference_steps=steps
    )
    dit_fx.optimize(model, cfg)
    with tqdm(total=steps, desc="dit_fx (capture + rewrite on step 1)", unit="step") as bar:
        fast, fast_times = denoise(model, inputs, steps, bar)
    stats = dit_fx.summary(model)
    dit_fx.dump(model, dump_dir)
    # Timings skip step 0 of the optimized run: it includes the one-time capture.
    plain_ms = 1000 * sum(plain_times[1:]) / (steps - 1)
    fast_ms = 1000 * sum(fast_times[1:]) / (steps - 1)
    rel = ((fast - plain).abs().max() / plain.abs().max()).item()
    result = dict(
        cached_steps=stats.cached_steps,
        num_cached=len(stats.cached_steps),
        plain_ms_per_step=plain_ms,
        dit_fx_ms_per_step=fast_ms,
        capture_s=fast_times[0],
        max_rel_deviation=rel,
        dump_dir=dump_dir,
    )
    print(dit_fx.plan(model))
    print(f"cached steps ({len(stats.cached_steps)}/{steps}): {stats.cached_steps}")
    print(f"time per step: plain {plain_ms:.2f} ms, dit_fx {fast_ms:.2f} ms ({plain_ms / fast_ms:.2f}x); capture {fast_times[0]:.1f} s")
    print(f"max deviation of the final latents: {rel:.2e} (relative to max |plain|)")
    print(f"dump written to {dump_dir}/ (plan.json, glue.py, head.py, body.py, tail.py)")
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dit_fx demo", description=__doc__)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--threshold", type=float, default=0.45)
    parser.add_argument("--dump-dir", default="dit_fx_dump")
    args = parser.parse_args(argv)
    run_demo(args.steps, args.threshold, args.dump_dir)
