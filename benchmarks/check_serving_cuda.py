#!/usr/bin/env python
"""GPU check of serving with the CUDA defaults (compiled + CUDA graphs): requests from a thread
pool on one optimized model each get exactly the output and cached steps of the same request run
alone (CUDA-graph runs are serialized; everything per request lives in its own state).

    python benchmarks/check_serving_cuda.py [--out results.json]
"""

import argparse
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from common import REPO_ROOT, environment, write_json  # noqa: E402  (also puts the repository root on sys.path)

sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
import dit_fx  # noqa: E402
from tiny_models import MODELS  # noqa: E402

STEPS = 8


def generate(model, spec, seed: int, batch: int):
    x = spec.make_inputs(0, 1000.0, batch=batch)
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(x["hidden_states"].shape, generator=g).cuda()
    with dit_fx.request(model) as r:
        with torch.no_grad():
            for step in range(STEPS):
                kw = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
                kw.update(hidden_states=latents, timestep=torch.full((batch,), 1000.0 - 100.0 * step, device="cuda"))
                latents = latents - model(**kw)[0] / STEPS
    return latents.cpu(), r.summary().cached_steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    spec = MODELS["flux"]
    model = spec.build().cuda()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=2))
    rng = random.Random(0)
    jobs = [(rng.randrange(100), rng.choice([1, 2])) for _ in range(24)]
    solo = {job: generate(model, spec, *job) for job in set(jobs)}
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda job: generate(model, spec, *job), jobs))
    same_out = [torch.equal(out, solo[job][0]) for job, (out, _) in zip(jobs, results)]
    same_cached = [cached == solo[job][1] for job, (_, cached) in zip(jobs, results)]
    info = dit_fx.inspect(model)
    capture = info.captures[-1].options
    report = dict(environment=environment(torch.device("cuda")), jobs=len(jobs), threads=6,
                  defaults=dict(compile=capture.compile, cuda_graphs=capture.cuda_graphs),
                  all_outputs_equal=all(same_out), all_cached_equal=all(same_cached),
                  cached_steps_seen=sorted({len(c) for _, c in results}),
                  captures_total=info.captures_total, graph_captures=info.cuda_graphs.captures,
                  graph_replays=info.cuda_graphs.replays)
    ok = report["all_outputs_equal"] and report["all_cached_equal"] and capture.compile and capture.cuda_graphs
    report["ok"] = bool(ok)
    print({k: v for k, v in report.items() if k != "environment"})
    write_json(a.out, report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
