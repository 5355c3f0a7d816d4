"""Per-call error of each bf16 variant against float64 (bf16-rounded weights/inputs), same inputs.
usage: python percall.py  (env: ND NS HD SIDE TT as run_variant.py)
Each of the 28 calls gets x = the float64 trajectory's state at that step (rounded to bf16), sigma_i.
"""
import copy, os, sys, math, logging, time
os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")
import torch, dit_fx
from diffusers import FluxTransformer2DModel
logging.disable(logging.WARNING)
HD = int(os.environ.get("HD", 32))
CFG = dict(patch_size=1, in_channels=16, num_layers=int(os.environ.get("ND", 4)), num_single_layers=int(os.environ.get("NS", 8)),
           attention_head_dim=HD, num_attention_heads=int(os.environ.get("NH", 4)), joint_attention_dim=64,
           pooled_projection_dim=32, guidance_embeds=True,
           axes_dims_rope=[4, 14, 14] if HD == 32 else ([16, 56, 56] if HD == 128 else [4, 6, 6]))
torch.manual_seed(0)
m32 = FluxTransformer2DModel(**CFG).eval().requires_grad_(False)
with torch.no_grad():
    for p in m32.parameters():
        p.mul_(0.5)
mb = m32.to(torch.bfloat16)
m64 = copy.deepcopy(mb).to(torch.float64)
H = W = int(os.environ.get("SIDE", 12)); N = H * W; T = int(os.environ.get("TT", 16))
g = torch.Generator().manual_seed(1)
x0 = torch.randn(1, N, 16, generator=g).bfloat16()
enc = torch.randn(1, T, 64, generator=g).bfloat16(); pooled = torch.randn(1, 32, generator=g).bfloat16()
img_ids = torch.zeros(H, W, 3); img_ids[..., 1] = torch.arange(H)[:, None]; img_ids[..., 2] = torch.arange(W)[None, :]
img_ids = img_ids.reshape(N, 3); txt_ids = torch.zeros(T, 3)
sig = torch.linspace(1, 0, 29).bfloat16()
guid = torch.full((1,), 3.5, dtype=torch.float32)

def call(model, x, i, dt):
    return model(hidden_states=x.to(dt), encoder_hidden_states=enc.to(dt), pooled_projections=pooled.to(dt),
                 timestep=sig[i:i+1].to(dt), img_ids=img_ids.to(dt), txt_ids=txt_ids.to(dt), guidance=guid,
                 return_dict=False)[0].double()

# float64 trajectory and its per-step inputs/outputs
xs, v64 = [], []
with torch.no_grad():
    x = x0.double()
    for i in range(28):
        xs.append(x.bfloat16())
        v = call(m64, xs[-1], i, torch.float64); v64.append(v)  # reference output at the bf16 input
        x = x + (sig[i+1].double() - sig[i].double()) * call(m64, x, i, torch.float64)

def ones_cfg():
    return dit_fx.DBCacheConfig(fn_blocks=2, bn_blocks=0, residual_diff_threshold=0.08, max_warmup_steps=0,
        steps_computation_mask=[1] * 28, steps_computation_policy="static", enable_separate_cfg=False)

variants = {}
variants["eager"] = mb
a = copy.deepcopy(mb); dit_fx.optimize(a, ones_cfg(), compile=True, cuda_graphs=False); variants["fx_compiled"] = a
a = copy.deepcopy(mb); dit_fx.optimize(a, ones_cfg(), compile=True, cuda_graphs=False,
                                       inductor_options={"emulate_precision_casts": True}); variants["fx_compiled_emulate"] = a
variants["compile_full"] = torch.compile(copy.deepcopy(mb))
c = copy.deepcopy(mb); c.compile_repeated_blocks(); variants["compile_blocks"] = c
# eager bf16, but the time/guidance embedding fed sigma*1000 and guidance*1000 unrounded (fp32):
# what a fused kernel computes when it drops the bf16 rounding of `timestep.to(bf16) * 1000`
e = copy.deepcopy(mb)
_stash = {}
e.register_forward_pre_hook(lambda mod, args, kw: _stash.update(t=kw["timestep"].float() * 1000, g=kw["guidance"].float() * 1000), with_kwargs=True)
def _exact(mod, args):
    return (_stash["t"], _stash["g"]) + tuple(args[2:])
e.time_text_embed.register_forward_pre_hook(_exact)
variants["eager_exact_t"] = e
import cache_dit
cd = copy.deepcopy(mb)
cache_dit.enable_cache(cd, cache_config=cache_dit.DBCacheConfig(Fn_compute_blocks=2, Bn_compute_blocks=0,
    residual_diff_threshold=0.08, max_warmup_steps=0, num_inference_steps=28, steps_computation_mask=[1] * 28,
    steps_computation_policy="static", enable_separate_cfg=False))
variants["cd_compile"] = torch.compile(cd)
variants["compile_full_emulate"] = torch.compile(copy.deepcopy(mb), options={"emulate_precision_casts": True})
only = os.environ.get("ONLY")
res = {}
with torch.no_grad():
    for name, model in variants.items():
        if only and name not in only.split(","):
            continue
        t0 = time.time()
        res[name] = [call(model, xs[i], i, torch.bfloat16) for i in range(28)]
        print(f"{name} {time.time()-t0:.0f}s", flush=True)
torch.save(dict(res=res, v64=v64), os.environ.get("PERCALL", "/tmp/gap/out_percall/percall.pt"))
def err(a, r):  # error energy relative to reference energy over all 28 calls
    return sum(((x - y) ** 2).sum().item() for x, y in zip(a, r)) / sum((y ** 2).sum().item() for y in r)
print("%-22s %14s %14s" % ("variant", "SNR vs fp64 dB", "SNR vs eager dB"))
for name, outs in res.items():
    print("%-22s %14.3f %14.3f" % (name, -10 * math.log10(err(outs, v64)), -10 * math.log10(err(outs, res["eager"])) if name != "eager" else math.inf))
