"""Where torch.compile(model) breaks the graph on a cache-dit-enabled FLUX (one call), and which graph holds `timestep * 1000`."""
import os, logging, torch
os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")
import cache_dit
from diffusers import FluxTransformer2DModel
torch.manual_seed(0)
m = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=4, num_single_layers=8, attention_head_dim=32, num_attention_heads=4,
    joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=[4, 14, 14]).eval().requires_grad_(False).bfloat16()
cache_dit.enable_cache(m, cache_config=cache_dit.DBCacheConfig(Fn_compute_blocks=2, Bn_compute_blocks=0, residual_diff_threshold=0.08,
    max_warmup_steps=0, num_inference_steps=28, steps_computation_mask=[1]*28, steps_computation_policy="static", enable_separate_cfg=False))
graphs = []
def backend(gm, ex):
    graphs.append(gm); return gm.forward
c = torch.compile(m, backend=backend)
N, T = 64, 8
ids = torch.zeros(8, 8, 3); ids[..., 1] = torch.arange(8)[:, None]; ids[..., 2] = torch.arange(8)[None]
with torch.no_grad():
    c(hidden_states=torch.randn(1, N, 16).bfloat16(), encoder_hidden_states=torch.randn(1, T, 64).bfloat16(), pooled_projections=torch.randn(1, 32).bfloat16(),
      timestep=torch.tensor([0.5]).bfloat16(), img_ids=ids.reshape(-1, 3).bfloat16(), txt_ids=torch.zeros(T, 3).bfloat16(), guidance=torch.tensor([3.5]), return_dict=False)
for i, gm in enumerate(graphs):
    ops = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
    code = gm.code
    print(f"graph {i}: {len(ops)} ops; has timestep*1000: {'* 1000' in code}; sin/cos: {'torch.sin' in code}; outputs:",
          [str(a) for a in (next(n for n in gm.graph.nodes if n.op == 'output').args[0])][:12])
print(graphs[0].code[:3000])
