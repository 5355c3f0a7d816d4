#!/usr/bin/env python
"""GPU check of CUDA graphs with caching: every case runs the same calls through dit_fx without
graphs (eager lowering, the reference) and with ``cuda_graphs=True`` (eager and Inductor
lowering), and requires the same decisions (cached/pruned steps per branch, generations) and
outputs within fp32 rounding (TF32 off). Cases: FLUX with DBCache over two generations and a new
resolution, Wan with separate CFG, TaylorSeer caching hidden states, DBPrune.

    python benchmarks/check_cuda_graphs.py [--out results.json]
"""

import argparse
import os
import sys

import torch

from common import REPO_ROOT, environment, write_json  # noqa: E402  (also puts the repository root on sys.path)

sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
import dit_fx  # noqa: E402
from test_cfg_parity import cfg_calls  # noqa: E402
from tiny_models import MODELS, make_trajectory, output_tensor  # noqa: E402


def flux_calls():
    small = make_trajectory("flux", 10)
    big = make_trajectory("flux", 10)
    for call in big:  # a new resolution: twice the image tokens
        call["hidden_states"] = torch.cat([call["hidden_states"]] * 2, dim=1)
        call["img_ids"] = torch.cat([call["img_ids"]] * 2, dim=0)
    return small + small + big  # two generations, then another resolution


CASES = {
    "flux_dbcache": ("flux", flux_calls, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.3, max_warmup_steps=2)),
    "wan_separate_cfg": ("wan_deep", lambda: cfg_calls(steps=10), dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.35, max_warmup_steps=2)),
    "flux_taylorseer_hidden": ("flux", lambda: make_trajectory("flux", 12), dit_fx.DBCacheConfig(
        fn_blocks=1, residual_diff_threshold=0.3, max_warmup_steps=2,
        calibrator=dit_fx.TaylorSeerConfig(order=1, cache_type="hidden_states"))),
    # Cached steps before the body's first graph: the tail is captured reading a copy, then once
    # more reading the body's static output in place.
    "flux_static_mask": ("flux", lambda: make_trajectory("flux", 10), dit_fx.DBCacheConfig(
        fn_blocks=1, bn_blocks=0, max_warmup_steps=0, steps_computation_mask=[1, 0, 0, 1, 0, 0, 1, 0, 0, 1],
        steps_computation_policy="static")),
    "flux_dbprune": ("flux", lambda: make_trajectory("flux", 12), dit_fx.DBPruneConfig(fn_blocks=1, bn_blocks=1, residual_diff_threshold=0.3, max_warmup_steps=2)),
}


def run(name, calls, cfg, compile, cuda_graphs):
    torch._dynamo.reset()
    model = MODELS[name].build().cuda()
    dit_fx.optimize(model, cfg, compile=compile, cuda_graphs=cuda_graphs)
    outs = []
    with torch.no_grad():
        for call in calls:
            kw = {k: v.cuda() if torch.is_tensor(v) else v for k, v in call.items()}
            out = output_tensor(model(**kw))
            outs.append(out)  # kept on the GPU: a later replay must not change it
    outs = [o.float().cpu() for o in outs]
    s = dit_fx.summary(model)
    decisions = (s.generation, s.executed_steps, s.cached_steps, s.cfg_cached_steps, getattr(s, "pruned_blocks", None))
    graphs = dit_fx.inspect(model).cuda_graphs
    return decisions, outs, (graphs.captures, graphs.replays, graphs.recaptures, graphs.input_copies)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results, ok = {}, True
    for case, (name, make_calls, cfg) in CASES.items():
        calls = make_calls()
        ref_dec, ref_out, _ = run(name, calls, cfg, False, False)
        for compile in (False, True):
            dec, out, (captures, replays, recaptures, copies) = run(name, calls, cfg, compile, True)
            err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(out, ref_out))
            good = dec == ref_dec and err < 1e-4 and captures > 0 and replays > 0
            ok &= good
            key = f"{case} {'inductor' if compile else 'eager'}+cuda_graphs"
            if case == "flux_static_mask":  # the tail re-captured once, then read the body's output in place
                good &= recaptures == 1
            results[key] = dict(ok=good, same_decisions=dec == ref_dec, max_rel_err=err, captures=captures, replays=replays,
                                recaptures=recaptures, input_copies=copies,
                                decisions=str(dec), reference_decisions=str(ref_dec))
            print(f"{key:48s} ok={good} same_decisions={dec == ref_dec} err={err:.1e} captures={captures} replays={replays} recaptures={recaptures} input_copies={copies}")
            if dec != ref_dec:
                print("   got ", dec, "\n   want", ref_dec)
    write_json(args.out, dict(device=torch.cuda.get_device_name(), torch=torch.__version__, all_ok=ok, cases=results,
                              environment=environment(torch.device("cuda"))))
    print("ALL OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
