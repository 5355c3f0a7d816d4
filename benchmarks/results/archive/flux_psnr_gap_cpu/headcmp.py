"""dit_fx's own head partition, eager vs compiled (bf16) vs float64: the values the head hands to
the glue (conditioning = temb, rotary tables, the streams after the Fn blocks).
env as percall.py (ND NS HD NH SIDE TT)."""
import copy, os, math, logging, operator
os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")
import torch, dit_fx
from dit_fx.api import session_for
from diffusers import FluxTransformer2DModel
logging.disable(logging.WARNING)
HD = int(os.environ.get("HD", 32))
CFG = dict(patch_size=1, in_channels=16, num_layers=int(os.environ.get("ND", 4)), num_single_layers=int(os.environ.get("NS", 8)),
           attention_head_dim=HD, num_attention_heads=int(os.environ.get("NH", 4)), joint_attention_dim=64,
           pooled_projection_dim=32, guidance_embeds=True,
           axes_dims_rope={32: [4, 14, 14], 128: [16, 56, 56]}.get(HD, [4, 6, 6]))
torch.manual_seed(0)
m = FluxTransformer2DModel(**CFG).eval().requires_grad_(False)
with torch.no_grad():
    for p in m.parameters():
        p.mul_(0.5)
mb = m.to(torch.bfloat16)
H = W = int(os.environ.get("SIDE", 12)); N = H * W; T = int(os.environ.get("TT", 16))
g = torch.Generator().manual_seed(1)
x0 = torch.randn(1, N, 16, generator=g).bfloat16()
enc = torch.randn(1, T, 64, generator=g).bfloat16(); pooled = torch.randn(1, 32, generator=g).bfloat16()
img_ids = torch.zeros(H, W, 3); img_ids[..., 1] = torch.arange(H)[:, None]; img_ids[..., 2] = torch.arange(W)[None, :]
img_ids = img_ids.reshape(N, 3); txt_ids = torch.zeros(T, 3)
sig = torch.linspace(1, 0, 29).bfloat16()
guid = torch.full((1,), 3.5, dtype=torch.float32)
cfg = lambda: dit_fx.DBCacheConfig(fn_blocks=2, bn_blocks=0, residual_diff_threshold=0.08, max_warmup_steps=0,
                                   steps_computation_mask=[1] * 28, steps_computation_policy="static", enable_separate_cfg=False)
def kw(i, dt):
    return dict(hidden_states=x0.to(dt), encoder_hidden_states=enc.to(dt), pooled_projections=pooled.to(dt),
                timestep=sig[i:i+1].to(dt), img_ids=img_ids.to(dt), txt_ids=txt_ids.to(dt), guidance=guid)
heads = {}
for name, dt, comp in (("eager", torch.bfloat16, False), ("compiled", torch.bfloat16, True), ("fp64", torch.float64, False)):
    a = copy.deepcopy(mb).to(dt)
    dit_fx.optimize(a, cfg(), compile=comp, cuda_graphs=False)
    with torch.no_grad():
        a(**kw(0, dt), return_dict=False)
    glue = session_for(a).last_record.glue
    names = {}
    for n in glue.graph.nodes:
        if n.op == "call_function" and n.target is operator.getitem and n.args[0].name == "head":
            names[n.args[1]] = n.name
    order = [n.name for n in glue.graph.nodes if n.op == "placeholder"]
    outs = {}
    with torch.no_grad():
        for i in range(28):
            k = kw(i, dt)
            args = [k[p.replace("l_kwargs_", "").rstrip("_")] for p in order]
            for j, v in enumerate(glue.head(*args)):
                outs.setdefault(names.get(j, f"out{j}"), []).append(v.double())
    heads[name] = outs
def snr(a, r):
    e = sum(((x - y) ** 2).sum().item() for x, y in zip(a, r))
    return -10 * math.log10(e / sum((y ** 2).sum().item() for y in r)) if e else math.inf
print("%-24s %12s %14s %14s %12s" % ("head output", "dtype", "eager vs fp64", "compiled vs fp64", "comp vs eager"))
for k in heads["eager"]:
    e, c, r = heads["eager"][k], heads["compiled"][k], heads["fp64"][k]
    print("%-24s %12s %14.2f %14.2f %12.2f" % (k, str(heads["compiled"][k][0].shape), snr(e, r), snr(c, r), snr(c, e)))
