# ad hoc: eager batch-1 step_source timestep vs calls, interleaved (not committed)
import time, gc, torch, dit_fx
from dit_fx.models import fashion as fm
dev = torch.device("cuda")
S = 28
def lite(S, w, i): return [1 if k < w or (k - w - 1) % i == 0 else 0 for k in range(S)]
cond = fm.load_fashion_conditioner(device=dev)
models = {}
for src in ("timestep", "calls"):
    for interval in (2, 3, 5):
        m = fm.load_fashion_transformer(device=dev)
        cfg = dit_fx.DBCacheConfig(fn_blocks=0, bn_blocks=0, steps_computation_mask=lite(S, 4, interval),
                                   steps_computation_policy="static", max_warmup_steps=4, num_inference_steps=S,
                                   enable_separate_cfg=False, calibrator=dit_fx.FoCaConfig(cache_type="output"),
                                   step_source=src)
        dit_fx.optimize(m, cfg, compile=False, cuda_graphs=False)
        models[(src, interval)] = m
def run(m):
    dit_fx.reset(m); torch.cuda.synchronize(); t = time.perf_counter()
    fm.sample(m, cond, [3], steps=S); torch.cuda.synchronize(); return time.perf_counter() - t
for k, m in models.items(): run(m); run(m)
res = {k: [] for k in models}
for r in range(5):
    for k, m in models.items():
        res[k].append(round(run(m), 4))
for k, v in res.items(): print("b1", k, v)
gc.disable()
for k, m in models.items(): print("b1 nogc", k, [round(run(m), 4) for _ in range(3)])
gc.enable()
from torch.profiler import profile, ProfilerActivity
for k in (("timestep", 3), ("calls", 3)):
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        run(models[k])
    print(k); print(p.key_averages().table(sort_by="cpu_time_total", row_limit=18))
