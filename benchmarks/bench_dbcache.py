#!/usr/bin/env python
"""Per-step latency of a FLUX.1-dev-sized transformer: eager vs. ideal cached step vs. dit_fx vs. cache-dit.

Everything is measured in ONE run on ONE base model (random weights, every parameter scaled by 0.5
so activations stay finite); ratios are always taken against the eager row of the same run.

Rows (per resolution):
  eager                 plain ``model(**inputs)``
  ideal FnB0            the same model with only the first Fn double blocks kept (no single blocks):
                        the lower bound for a cached step (embeddings + Fn blocks + norm_out/proj_out)
  dit_fx computed FnB0  dit_fx.optimize(..., residual_diff_threshold=0) -> every step runs all blocks
  dit_fx cached FnB0    identical inputs every call, threshold 0.5, max_warmup_steps=1 -> every step
                        after the first skips the middle blocks (decision included in the timing)
  cache-dit ...         the same two configurations through cache_dit.enable_cache (run last)
  eager (end)           eager again after everything was disabled: drift / restore check

Timing: CUDA events around one transformer call, synchronized after every call (one call = one
denoising step); ``--warmup`` untimed calls, then ``--repeats`` timed calls; median/p10/p90.
On CPU (``--tiny``) wall-clock is used instead.

Usage:
  python benchmarks/bench_dbcache.py --tiny                      # CPU smoke run, < 1 minute
  python benchmarks/bench_dbcache.py --device cuda --dtype bf16 --sizes 1024 512 --out benchmarks/results/dbcache_h100.json
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional

from common import (  # noqa: E402  (also puts the repository root on sys.path)
    DTYPES,
    FLUX_DEV_CONFIG,
    TINY_FLUX_CONFIG,
    Timer,
    build_flux,
    environment,
    first_tensor,
    flux_inputs,
    log,
    percentile,
    truncated_blocks,
    write_json,
)

import torch  # noqa: E402
from torch import nn  # noqa: E402

CACHED_THRESHOLD = 0.5  # < 1.0 on purpose: cache-dit skips the diff computation for thresholds >= 1.0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 (fp32 with --tiny)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="image resolutions in pixels; image tokens = (size/16)^2 (default: 1024 512, tiny: 256 128)")
    p.add_argument("--text-tokens", type=int, default=None, help="text tokens (default: 512, tiny: 32)")
    p.add_argument("--fn", type=int, nargs="+", default=None,
                   help="Fn values (Bn is always 0); default: 8 1, tiny: 1. Fn must be < num double blocks")
    p.add_argument("--out", default=None,
                   help="JSON path (default: benchmarks/results/dbcache_h100.json, tiny: .../dbcache_tiny.json)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run with a tiny Flux config")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per row before timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 with --tiny, which is far less noisy on small VMs)")
    p.add_argument("--groups", nargs="+", default=["eager", "ideal", "dit_fx", "cache_dit"],
                   choices=["eager", "ideal", "dit_fx", "cache_dit"], help="row groups to run")
    p.add_argument("--inference-mode", action="store_true",
                   help="run calls under torch.inference_mode() instead of torch.no_grad()")
    p.add_argument("--keep-times", action="store_true", help="store every timed sample in the JSON")
    p.add_argument("--verbose", action="store_true", help="cache-dit INFO logs")
    args = p.parse_args(argv)

    if args.verbose:
        os.environ["CACHE_DIT_LOG_LEVEL"] = "info"
    if args.tiny:
        args.device = args.device or "cpu"
        args.dtype = args.dtype or "fp32"
        args.sizes = args.sizes or [256, 128]
        args.text_tokens = args.text_tokens if args.text_tokens is not None else 32
        args.fn = args.fn or [1]
        args.threads = args.threads or 1
        args.out = args.out or "benchmarks/results/dbcache_tiny.json"
    else:
        args.device = args.device or "cuda"
        args.dtype = args.dtype or "bf16"
        args.sizes = args.sizes or [1024, 512]
        args.text_tokens = args.text_tokens if args.text_tokens is not None else 512
        args.fn = args.fn or [8, 1]
        args.out = args.out or "benchmarks/results/dbcache_h100.json"
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    for s in args.sizes:
        if s % 16:
            p.error(f"--sizes must be multiples of 16, got {s}")
    return args


# --------------------------------------------------------------------------------------------------
# model and inputs
# --------------------------------------------------------------------------------------------------


def model_state(model: nn.Module) -> Dict[str, Any]:
    """Cheap fingerprint of everything an in-place patcher could leave behind."""
    n_hooks = 0
    n_inst_forward = 0
    for mod in model.modules():
        n_hooks += len(mod._forward_hooks) + len(mod._forward_pre_hooks)
        if "forward" in mod.__dict__:
            n_inst_forward += 1
    return dict(
        forward_patched="forward" in model.__dict__,
        modules_with_instance_forward=n_inst_forward,
        hooks=n_hooks,
        transformer_blocks_id=id(model.transformer_blocks),
        n_transformer_blocks=len(model.transformer_blocks),
        n_single_blocks=len(model.single_transformer_blocks),
        cache_attrs=sorted(k for k in model.__dict__ if k.startswith(("_is_cached", "_is_patched", "_context"))),
    )


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args = args
        self.device = device
        self.cuda = device.type == "cuda"
        self.timer = Timer(device)

    def sync(self) -> None:
        self.timer.sync()

    def grad_ctx(self):
        return torch.inference_mode() if self.args.inference_mode else torch.no_grad()

    def run_row(self, call: Callable[[], Any], n_prime: int = 0) -> Dict[str, Any]:
        """``n_prime`` + ``warmup`` untimed calls, then ``repeats`` timed calls (one call = one step).

        Python warnings raised during the row (dit_fx reports fallbacks that way) are recorded.
        """
        a = self.args
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        out = None
        with warnings.catch_warnings(record=True) as caught, self.grad_ctx():
            warnings.simplefilter("always")
            first_call_ms = None
            for i in range(n_prime + a.warmup):
                t0 = time.perf_counter()
                out = call()
                if i == 0:
                    self.sync()
                    first_call_ms = (time.perf_counter() - t0) * 1e3  # includes any capture/compile
            self.sync()
            ev_ms: List[float] = []
            wall_ms: List[float] = []
            for _ in range(a.repeats):
                ms, wall, out = self.timer.call(call)  # CUDA events (synchronized), or wall clock
                ev_ms.append(ms)
                wall_ms.append(wall)
            self.sync()
        times = ev_ms if self.cuda else wall_ms
        row: Dict[str, Any] = dict(
            status="ok",
            timer="cuda_event" if self.cuda else "wall_clock",
            median_ms=percentile(times, 0.5),
            p10_ms=percentile(times, 0.1),
            p90_ms=percentile(times, 0.9),
            min_ms=min(times),
            mean_ms=sum(times) / len(times),
            wall_median_ms=percentile(wall_ms, 0.5),
            first_call_ms=first_call_ms,
            n_prime=n_prime,
            n_warmup=a.warmup,
            n_repeats=a.repeats,
            calls=n_prime + a.warmup + a.repeats,
        )
        if a.keep_times:
            row["times_ms"] = times
            if self.cuda:
                row["wall_ms"] = wall_ms
        if self.cuda:
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        msgs = []
        for w in caught:
            m = f"{w.category.__name__}: {str(w.message)[:500]}"
            if m not in msgs:
                msgs.append(m)
        if msgs:
            row["warnings"] = msgs[:10]
            for m in msgs[:3]:
                log(f"  warning: {m[:300]}")
        row["_last_out"] = first_tensor(out)
        return row


def dynamo_reset() -> None:
    try:
        import torch._dynamo

        torch._dynamo.reset()
    except Exception:  # noqa: BLE001
        pass


def compare(out: torch.Tensor, ref: Optional[torch.Tensor]) -> Dict[str, Any]:
    o = out.float()
    res: Dict[str, Any] = dict(finite=bool(torch.isfinite(o).all().item()), out_abs_mean=o.abs().mean().item())
    if ref is not None and ref.shape == out.shape:
        r = ref.float()
        res["max_abs_diff_vs_eager"] = (o - r).abs().max().item()
        res["rel_l1_vs_eager"] = ((o - r).abs().mean() / r.abs().mean().clamp_min(1e-30)).item()
    return res


def verify_steps(cached_steps: List[int], first_timed: int, repeats: int, expect_cached: bool,
                 executed_reported: Optional[int], calls: int,
                 warnings_seen: Optional[List[str]] = None) -> Dict[str, Any]:
    """Timed calls are steps ``first_timed .. first_timed+repeats-1`` (the step counter starts at 0).

    ``ok`` needs: every timed step cached (or none, for a computed row), the reported number of
    executed steps equal to the number of calls made (else the stats are not from these calls, e.g.
    the cache fell back to the plain forward), and no "running the model unmodified" warning.
    """
    timed = range(first_timed, first_timed + repeats)
    cs = set(int(s) for s in cached_steps)
    n_cached = sum(1 for s in timed if s in cs)
    problems = []
    if expect_cached and n_cached != repeats:
        problems.append(f"only {n_cached}/{repeats} timed calls cached")
    if not expect_cached and n_cached:
        problems.append(f"{n_cached}/{repeats} timed calls cached in a computed row")
    if executed_reported is not None and executed_reported != calls:
        problems.append(f"cache reports {executed_reported} executed steps for {calls} calls")
    if any("unmodified" in w for w in (warnings_seen or [])):
        problems.append("fell back to the unmodified forward (see warnings)")
    return dict(
        ok=not problems,
        problems=problems,
        expect="cached" if expect_cached else "computed",
        calls=calls,
        executed_steps_reported=executed_reported,
        cached_steps_total=len(cs),
        timed_cached=n_cached,
        timed_computed=repeats - n_cached,
        cached_steps=sorted(cs),
    )


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def env_info(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    info = environment(device)
    info.update(dtype=args.dtype, grad_mode="inference_mode" if args.inference_mode else "no_grad")
    return info


def row_keys(fns: List[int]) -> List[tuple]:
    keys = [("eager", "eager")]
    for fn in fns:
        keys += [
            (f"ideal_F{fn}B0", f"ideal F{fn}B0 (first {fn} double blocks only)"),
            (f"dit_fx_computed_F{fn}B0", f"dit_fx computed F{fn}B0"),
            (f"dit_fx_cached_F{fn}B0", f"dit_fx cached F{fn}B0"),
        ]
    for fn in fns:
        keys += [
            (f"cache_dit_computed_F{fn}B0", f"cache-dit computed F{fn}B0"),
            (f"cache_dit_cached_F{fn}B0", f"cache-dit cached F{fn}B0"),
        ]
    keys.append(("eager_end", "eager (re-run at end)"))
    return keys


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.cfg = TINY_FLUX_CONFIG if args.tiny else FLUX_DEV_CONFIG
        self.bench = Bench(args, self.device)
        self.result: Dict[str, Any] = dict(
            benchmark="dbcache_step_latency",
            args={k: v for k, v in vars(args).items()},
            environment=env_info(args, self.device),
            model_config={k: (list(v) if isinstance(v, tuple) else v) for k, v in self.cfg.items()},
            notes=[],
            model_state_checks=[],
            resolutions={},
        )
        self.inputs: Dict[int, Dict[str, Any]] = {}
        self.eager_out: Dict[int, torch.Tensor] = {}
        self.model: Optional[nn.Module] = None
        self.baseline_state: Optional[Dict[str, Any]] = None
        self._cache_dit_leftovers_noted = False
        for s in args.sizes:
            n_img = (s // 16) ** 2
            self.result["resolutions"][str(s)] = dict(
                image_tokens=n_img, text_tokens=args.text_tokens,
                shapes=dict(hidden_states=[1, n_img, self.cfg["in_channels"]],
                            encoder_hidden_states=[1, args.text_tokens, self.cfg["joint_attention_dim"]],
                            img_ids=[n_img, 3], txt_ids=[args.text_tokens, 3],
                            pooled_projections=[1, self.cfg["pooled_projection_dim"]], timestep=[1], guidance=[1]),
                rows={},
            )

    # ---- bookkeeping -------------------------------------------------------------------------
    def save(self) -> None:
        write_json(self.args.out, self.result)

    def put(self, size: int, key: str, row: Dict[str, Any]) -> None:
        out = row.pop("_last_out", None)
        if out is not None:
            try:
                # the ideal rows compute a different function: no output comparison for them
                ref = None if key.startswith("ideal") else self.eager_out.get(size)
                row.update(compare(out, ref))
            except Exception as e:  # noqa: BLE001
                row["compare_error"] = repr(e)
        self.result["resolutions"][str(size)]["rows"][key] = row
        if row.get("status") == "ok":
            v = row.get("verify")
            vs = f" verify={'OK' if v['ok'] else 'FAILED'} ({v['timed_cached']}/{self.args.repeats} timed calls cached)" if v else ""
            log(f"  {size}px {key}: median {row['median_ms']:.3f} ms (p10 {row['p10_ms']:.3f}, p90 {row['p90_ms']:.3f})"
                f"{vs} finite={row.get('finite')}")
        else:
            log(f"  {size}px {key}: {row.get('status')}: {row.get('error', '')[:300]}")
        self.save()

    def error_row(self, e: BaseException) -> Dict[str, Any]:
        return dict(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])

    def check_state(self, stage: str, restore: bool = False) -> None:
        st = model_state(self.model)
        diff = {k: (self.baseline_state[k], v) for k, v in st.items() if self.baseline_state[k] != v}
        entry = dict(stage=stage, clean=not diff, diff={k: [str(a), str(b)] for k, (a, b) in diff.items()})
        if diff:
            log(f"  model state after {stage} differs from baseline: {diff}")
            if restore:
                fixed = self._restore_model()
                entry["restored"] = fixed
                st2 = model_state(self.model)
                entry["clean_after_restore"] = all(self.baseline_state[k] == v for k, v in st2.items())
        self.result["model_state_checks"].append(entry)
        self.save()

    def _restore_model(self) -> List[str]:
        """Undo leftovers of in-place patching that do not belong to the baseline model."""
        fixed = []
        m = self.model
        if not self.baseline_state["forward_patched"] and "forward" in m.__dict__:
            del m.__dict__["forward"]
            fixed.append("model.forward (instance attribute removed)")
        for name in ("_is_patched", "_is_cached"):
            if name in m.__dict__ and name not in self.baseline_state["cache_attrs"]:
                del m.__dict__[name]
                fixed.append(name)
        if not self.baseline_state["modules_with_instance_forward"]:
            for mod_name, mod in m.named_modules():
                if mod is not m and "forward" in mod.__dict__:
                    del mod.__dict__["forward"]
                    fixed.append(f"{mod_name}.forward")
        return fixed

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- groups ------------------------------------------------------------------------------
    def run_eager(self, key: str = "eager") -> None:
        for s in self.args.sizes:
            log(f"{key} {s}px")
            try:
                inp = self.inputs[s]
                row = self.bench.run_row(lambda: self.model(**inp))
                if key == "eager":
                    self.eager_out[s] = row["_last_out"].detach().clone()
                self.put(s, key, row)
            except Exception as e:  # noqa: BLE001
                self.put(s, key, self.error_row(e))
            self.free()

    def run_ideal(self, fn: int) -> None:
        key = f"ideal_F{fn}B0"
        for s in self.args.sizes:
            log(f"{key} {s}px")
            try:
                inp = self.inputs[s]
                with truncated_blocks(self.model, fn, ["transformer_blocks", "single_transformer_blocks"]):
                    row = self.bench.run_row(lambda: self.model(**inp))
                row["kept_blocks"] = dict(double=fn, single=0)
                self.put(s, key, row)
            except Exception as e:  # noqa: BLE001
                self.put(s, key, self.error_row(e))
            self.free()
        self.check_state(key)

    def _calls_per_row(self) -> int:
        return 1 + self.args.warmup + self.args.repeats

    def run_dit_fx(self, fn: int, mode: str) -> None:
        key = f"dit_fx_{mode}_F{fn}B0"
        cached = mode == "cached"
        a = self.args
        try:
            import dit_fx  # noqa: F401

            cfg = dit_fx.DBCacheConfig(
                fn_blocks=fn,
                bn_blocks=0,
                residual_diff_threshold=CACHED_THRESHOLD if cached else 0.0,
                max_warmup_steps=1 if cached else 0,
                # identical inputs (same timestep) every call: declare that each call is a step,
                # else dit_fx reads repeated timesteps as CFG branches of one step
                enable_separate_cfg=False,
            )
        except Exception as e:  # noqa: BLE001
            log(f"{key}: dit_fx unavailable: {type(e).__name__}: {e}")
            for s in a.sizes:
                self.put(s, key, self.error_row(e))
            return
        # One optimize per size: a fresh session (stats cannot be stale), and a capture failure at
        # one size (dit_fx then falls back to the original forward for good) cannot leak into the
        # next. dit_fx captures with TorchDynamo on the first call, so every variant starts from an
        # empty Dynamo cache: no recompile-limit interplay, no graphs of earlier variants kept alive.
        for s in a.sizes:
            log(f"{key} {s}px")
            m = None
            try:
                dynamo_reset()
                t0 = time.perf_counter()
                with torch.no_grad():
                    m = dit_fx.optimize(self.model, cfg, compile=False, cuda_graphs=False)
                optimize_s = time.perf_counter() - t0
                inp = self.inputs[s]
                # call 0 (prime: capture + computed step), then warmup, then the timed calls
                row = self.bench.run_row(lambda: m(**inp), n_prime=1)
                st = dit_fx.summary(m)
                row["verify"] = verify_steps(list(st.cached_steps), 1 + a.warmup, a.repeats, cached,
                                             getattr(st, "executed_steps", None), row["calls"],
                                             row.get("warnings"))
                row["config"] = repr(cfg)
                row["optimize_s"] = optimize_s
                try:
                    pl = dit_fx.plan(m)
                    row["plan_supported"] = getattr(pl, "supported", None)
                    row["plan_reason"] = getattr(pl, "reason", None)
                except Exception as e:  # noqa: BLE001
                    row["plan_error"] = repr(e)
                self.put(s, key, row)
            except Exception as e:  # noqa: BLE001
                self.put(s, key, self.error_row(e))
            finally:
                if m is not None:
                    self._dit_fx_disable(m, dit_fx)
                del m
                dynamo_reset()
                self.free()
        self.check_state(key, restore=True)

    def _dit_fx_disable(self, m, dit_fx) -> None:
        try:
            dit_fx.disable(m)
        except Exception as e:  # noqa: BLE001
            msg = f"dit_fx.disable failed: {type(e).__name__}: {e}"
            log("  " + msg)
            self.result["notes"].append(msg)

    def run_cache_dit(self, fn: int, mode: str) -> None:
        key = f"cache_dit_{mode}_F{fn}B0"
        cached = mode == "cached"
        a = self.args
        try:
            import cache_dit

            self.result["environment"]["cache_dit"] = getattr(cache_dit, "__version__", "unknown")
        except Exception as e:  # noqa: BLE001
            log(f"{key}: cache_dit import failed: {e!r}")
            for s in a.sizes:
                self.put(s, key, dict(status="skipped", error=f"import cache_dit failed: {type(e).__name__}: {e}"))
            return
        for s in a.sizes:
            log(f"{key} {s}px")
            enabled = False
            try:
                calls = self._calls_per_row()
                cfg = cache_dit.DBCacheConfig(
                    Fn_compute_blocks=fn,
                    Bn_compute_blocks=0,
                    residual_diff_threshold=CACHED_THRESHOLD if cached else 0.0,
                    max_warmup_steps=1 if cached else 0,
                    max_cached_steps=-1,
                    max_continuous_cached_steps=-1,
                    enable_separate_cfg=False,
                    # one "generation" == this row's calls: no refresh inside the row, and the stats
                    # hook runs once at the last step instead of after every call
                    num_inference_steps=calls,
                )
                cache_dit.enable_cache(self.model, cache_config=cfg)
                enabled = True
                inp = self.inputs[s]
                row = self.bench.run_row(lambda: self.model(**inp), n_prime=1)
                stats = cache_dit.summary(self.model, logging=False)
                st = stats[0]
                row["verify"] = verify_steps(list(st.cached_steps), 1 + a.warmup, a.repeats, cached,
                                             getattr(st, "accumulated_executed_steps", None), row["calls"])
                row["config"] = cfg.strify()
                self.put(s, key, row)
            except Exception as e:  # noqa: BLE001
                self.put(s, key, self.error_row(e))
            finally:
                if enabled:
                    try:
                        cache_dit.disable_cache(self.model)
                    except Exception as e:  # noqa: BLE001
                        self.result["notes"].append(f"cache_dit.disable_cache failed: {e!r}")
                # disable_cache leaves FluxPatchFunctor's instance-level forward and _is_patched behind
                st = model_state(self.model)
                left = {k: [str(self.baseline_state[k]), str(v)] for k, v in st.items() if self.baseline_state[k] != v}
                fixed = self._restore_model()
                if left and not self._cache_dit_leftovers_noted:
                    self._cache_dit_leftovers_noted = True
                    msg = f"cache_dit.disable_cache left behind {left}; the benchmark removed {fixed}"
                    log("  " + msg)
                    self.result["notes"].append(msg)
                self.free()
        self.check_state(key, restore=True)

    # ---- driver ------------------------------------------------------------------------------
    def run(self) -> None:
        a = self.args
        log(f"environment: {self.result['environment']}")
        nd = self.cfg["num_layers"]
        fns = []
        for fn in a.fn:
            if 1 <= fn < nd:
                fns.append(fn)
            else:
                msg = f"F{fn}B0 skipped: needs 1 <= Fn < {nd} double blocks"
                log(msg)
                self.result["notes"].append(msg)
        self.result["fns"] = fns

        log(f"building model ({'tiny' if a.tiny else 'FLUX.1-dev-sized'}) on {self.device} in {a.dtype}")
        t0 = time.perf_counter()
        self.model = build_flux(self.cfg, self.device, self.dtype, a.seed)
        self.sync()
        n_params = sum(p.numel() for p in self.model.parameters())
        self.result["environment"]["model_params"] = n_params
        self.result["environment"]["model_build_s"] = time.perf_counter() - t0
        log(f"model built: {n_params / 1e9:.3f} B params in {time.perf_counter() - t0:.1f} s")
        if self.device.type == "cuda":
            self.result["environment"]["model_mem_gib"] = torch.cuda.memory_allocated(self.device) / 2**30
        self.baseline_state = model_state(self.model)
        for s in a.sizes:
            self.inputs[s] = flux_inputs(s, self.cfg, a.text_tokens, self.device, self.dtype, a.seed)
        self.save()

        # process-level warmup (allocator, cuBLAS/attention kernels, GPU clocks) before the first row
        t0 = time.perf_counter()
        with self.bench.grad_ctx():
            for s in a.sizes:
                for _ in range(max(2, a.warmup)):
                    self.model(**self.inputs[s])
        self.sync()
        log(f"global warmup done in {time.perf_counter() - t0:.1f} s")

        groups = set(a.groups)
        if "eager" in groups or groups & {"dit_fx", "cache_dit"}:
            self.run_eager("eager")  # reference for all ratios
        if "ideal" in groups:
            for fn in fns:
                self.run_ideal(fn)
        if "dit_fx" in groups:
            for fn in fns:
                for mode in ("computed", "cached"):
                    self.run_dit_fx(fn, mode)
        if "cache_dit" in groups:  # last: it patches the model in place
            for fn in fns:
                for mode in ("computed", "cached"):
                    self.run_cache_dit(fn, mode)
        if "eager" in groups:
            self.run_eager("eager_end")
        self.finish(fns)

    def sync(self) -> None:
        self.bench.sync()

    def finish(self, fns: List[int]) -> None:
        for s, res in self.result["resolutions"].items():
            rows = res["rows"]
            eager = rows.get("eager", {}).get("median_ms") if rows.get("eager", {}).get("status") == "ok" else None
            for key, row in rows.items():
                if row.get("status") != "ok":
                    continue
                if eager:
                    row["ratio_to_eager"] = row["median_ms"] / eager
                    row["speedup_vs_eager"] = eager / row["median_ms"]
                if "_cached_" in key:
                    fn_tag = key.rsplit("_", 1)[-1]  # F8B0
                    ideal = rows.get(f"ideal_{fn_tag}", {})
                    if ideal.get("status") == "ok":
                        row["ratio_to_ideal"] = row["median_ms"] / ideal["median_ms"]
        self.save()
        table = self.markdown(fns)
        self.result["markdown"] = table
        self.save()
        print("\n" + table, flush=True)
        log(f"wrote {self.args.out}")

    def markdown(self, fns: List[int]) -> str:
        sizes = self.args.sizes
        env = self.result["environment"]
        timer = "CUDA events" if self.device.type == "cuda" else "wall clock"
        hdr = ["row"]
        for s in sizes:
            r = self.result["resolutions"][str(s)]
            hdr += [f"{s}px ({r['image_tokens']}+{r['text_tokens']} tok) ms", "x eager", "x ideal", "steps"]
        lines = [
            f"Per-step latency, {env.get('gpu', env.get('cpu', ''))}, torch {env['torch']}, {self.args.dtype}, "
            f"median of {self.args.repeats} ({timer}) after {self.args.warmup} warmup",
            "",
            "| " + " | ".join(hdr) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|",
        ]
        for key, label in row_keys(fns):
            cells = [label]
            present = False
            for s in sizes:
                row = self.result["resolutions"][str(s)]["rows"].get(key)
                if row is None:
                    cells += ["", "", "", ""]
                    continue
                present = True
                if row.get("status") != "ok":
                    cells += [row.get("status", "?"), "", "", ""]
                    continue
                med = f"{row['median_ms']:.2f} [{row['p10_ms']:.2f}-{row['p90_ms']:.2f}]"
                re_ = f"{row['ratio_to_eager']:.3f}" if "ratio_to_eager" in row else ""
                ri = f"{row['ratio_to_ideal']:.3f}" if "ratio_to_ideal" in row else ""
                v = row.get("verify")
                vs = ""
                if v:
                    vs = f"{v['timed_cached']}/{self.args.repeats} cached" + ("" if v["ok"] else " (!)")
                if row.get("finite") is False:
                    vs += " NaN/inf!"
                cells += [med, re_, ri, vs]
            if present:
                lines.append("| " + " | ".join(cells) + " |")
        errs = []
        for s in sizes:
            for key, row in self.result["resolutions"][str(s)]["rows"].items():
                if row.get("status") != "ok":
                    errs.append(f"- {s}px {key}: {row.get('status')}: {row.get('error', '')[:200]}")
        if errs:
            lines += ["", "Errors / skipped:"] + errs
        return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA not available; use --device cpu (or --tiny)", file=sys.stderr, flush=True)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = Runner(args)
    try:
        runner.run()
    except Exception as e:  # noqa: BLE001 -- keep what was measured
        runner.result["fatal_error"] = f"{type(e).__name__}: {e}"
        runner.result["fatal_traceback"] = traceback.format_exc()
        runner.save()
        log(f"FATAL: {e!r}; partial results in {args.out}")
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
