"""Quality against latency on the shipped trained model (issue 18): dit_fx and every peer, one process.

    python benchmarks/quality.py                         # GPU: 10 classes x 20 seeds, every system
    python benchmarks/quality.py --quick                 # CPU: 10 x 1, fewer configs (~10 minutes on 2 cores)
    python benchmarks/quality.py --weights random        # no trained weights needed (numbers say nothing)
    python benchmarks/quality.py --assets /tmp/asset     # another asset folder (scripts/train_fashion.py --out)

The model is ``dit_fx.models.fashion``'s class-conditional FLUX transformer (2 double + 10 single
blocks) with its conditioner, classifier and test-set feature statistics. Every system runs
``fashion.sample``: 28 Euler steps on FLUX's shifted schedule, classifier-free guidance batched
(one call of batch 2B per step, guidance ``fashion.DEFAULT_GUIDANCE``), the same initial noise.

Reference and floors
--------------------
The reference is the uncached run of the evaluation batch (classes 0-9 x ``--seeds`` noise seeds).
Floors: the uncached run again (``rerun``: PSNR inf when the device is deterministic), and an
uncached run of the same classes on disjoint noise (``disjoint``): its feature-FID against the
reference is the FID floor at this set size, its PSNR the PSNR of unrelated images of the same
classes (no system should come near it).

Systems (``--groups``), each config enabled on the same transformer, then disabled, and the
model checked to give the uncached batch-1 output again (``leak``; on a mismatch the model is
replaced by a pristine copy and the row says so):

- ``dit_fx``: DBCache F1B0 over the thresholds (``--thresholds``; ``auto``: a sweep on the
  calibration set picks thresholds whose computed fractions are near ``--targets``);
  ``dit_fx_fnbn``: F1B1, F2B0, F2B1 on the same thresholds; ``calibrators``: TaylorSeer (orders
  1, 2) and FoCa on F1B0 at the two highest thresholds; ``prune``: DBPrune F1B0;
  ``masks``: the ``dit_fx.steps_mask`` presets with the static policy; ``calibrated``:
  ``dit_fx.calibrate`` masks at ``--calibrated-steps`` computed steps (calibrated on the
  calibration set: other noise seeds, ``--cal-samples`` samples) and the uniform masks of the same
  counts (``dit_fx.calibrate.uniform_mask``), static policy, F1B0; ``forecast_masks``: no block
  on cached steps (``fn_blocks=0``, static policy) on the schedules of the diffusers TaylorSeer
  rows (``lite_schedule``), with FoCa on the block stack's residual, FoCa on the outputs, and
  TaylorSeer order 1 on the outputs (which is diffusers' TaylorSeer lite: ``tests/test_fn_zero.py``),
  and FoCa (residual, outputs) on interval 2 after the longer warm-ups ``FORECAST_WARMUPS``; FoCa
  on the outputs with ``step_source="calls"`` (``COUNTED``: no host read of the timestep per call);
  ``calibrated_dynamic``: the calibrated masks with the dynamic policy (their 0 steps take the F1B0
  threshold decision) at the middle thresholds, the adaptive option ``dit_fx.calibrate`` was
  measured against (the report compares every adaptive row with the static masks at the same
  computed fraction).
- ``cache_dit`` / ``cache_dit_fnbn`` / ``cache_dit_calibrators`` / ``cache_dit_prune``: cache-dit
  (``cache_dit.enable_cache(transformer, cache_config=DBCacheConfig(Fn_compute_blocks=...,
  Bn_compute_blocks=..., residual_diff_threshold=...), calibrator_config=...)``) on the same
  configs, with its TaylorSeer and FoCa calibrators and its DBPrune.
- ``fbc``: diffusers' ``FirstBlockCacheConfig(threshold)`` on the same thresholds;
  ``diffusers_taylorseer``: ``TaylorSeerCacheConfig`` (attention outputs forecast, the default
  identifiers, and ``use_lite_mode``: the whole transformer forecast) over cache intervals;
  ``magcache``: ``MagCacheConfig`` with magnitude ratios calibrated by diffusers' own
  ``calibrate=True`` mode on the calibration set, thresholds swept like DBCache's.
- ``compiled`` (GPU, only while the budget allows): uncached ``torch.compile(mode=
  "reduce-overhead")``, dit_fx compiled + CUDA graphs (F1B0 at the threshold nearest a 0.5
  computed fraction, and the calibrated mask nearest half the steps), cache-dit + ``torch.compile``
  on the same F1B0 config.

Per config: PSNR and SSIM of the final images against the reference (``dit_fx.metrics.compare``,
same noise, data range 1), feature-FID against the reference images and against the test-set
statistics (``fashion.feature_fid``), class accuracy (``fashion.class_accuracy``), the computed
fraction, and wall seconds per generation at batch 1 and at the full batch, eager: the quality run
is the first generation at the full batch (dit_fx captures in it, ``first_run_s``), the timed one
repeats it (``repeat_max_abs_diff``: 0 when the system is deterministic); at batch 1 one warm-up
generation, then the median of ``--reps``.

Computed fraction: the share of the transformer calls that ran the middle blocks. For dit_fx
from ``dit_fx.summary`` (DBCache: 1 - cached steps / steps; DBPrune: middle-block executions /
(calls x middle blocks)); dit_fx runs the blocks inside its rewritten graph, so module hooks
see nothing. For the peers from forward hooks on a middle block (``probe_block``): ``attn.to_q``
(its attention ran) and the MLP projection (its body ran); ``computed_fraction`` is the
attention probe's (diffusers' default TaylorSeer forecasts attention outputs only: its MLP
fraction is in ``probe_mlp_fraction``); cache-dit's own cached steps are recorded beside it
(``own_computed_fraction``), and its DBPrune rows count middle-block executions from its summary
like dit_fx's.

Output: JSON (``--out``, rewritten after every row), a PNG next to it (PSNR against computed
fraction and against latency, one curve per system), and a Markdown report (printed; written to
``--doc``, default ``docs/quality.md`` except with ``--quick``). ``--budget-s`` (seconds since the
start): rows that would start after it are recorded as skipped and the plot and report are still
written; ``--resume`` then keeps the finished rows of the JSON (and its thresholds and MagCache
ratios) and runs the rest, so a second command completes the table.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import io
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from common import REPO_ROOT, RESULTS, environment, log, write_json  # puts the repo root on sys.path

import torch  # noqa: E402

import dit_fx  # noqa: E402
from dit_fx import metrics  # noqa: E402
from dit_fx.models import fashion as fm  # noqa: E402

T_START = time.perf_counter()
DEFAULT_OUT = os.path.join(RESULTS, "quality_h200_fashion.json")
DEFAULT_DOC = os.path.join(REPO_ROOT, "docs", "quality.md")
QUICK_OUT = os.path.join(tempfile.gettempdir(), "dit_fx_quality_quick.json")  # a smoke run: not a results file
GROUPS = (  # in the order they run: the budget cuts the last ones first
    "dit_fx", "cache_dit", "fbc", "magcache", "diffusers_taylorseer", "forecast_masks", "calibrated", "masks",
    "dit_fx_fnbn", "calibrators", "cache_dit_calibrators", "prune", "cache_dit_fnbn", "cache_dit_prune",
    "calibrated_dynamic", "compiled",
)  # fmt: skip
QUICK_GROUPS = ("dit_fx", "cache_dit", "fbc", "magcache", "diffusers_taylorseer", "forecast_masks", "calibrated", "masks",
                "dit_fx_fnbn", "calibrators", "prune")  # fmt: skip
FN_BN = ((1, 0), (1, 1), (2, 0), (2, 1))
LITE_INTERVALS = (2, 3, 5)  # the diffusers TaylorSeer lite rows' cache intervals
COUNTED = "dit_fx F0B0 mask + FoCa on the output, counted calls"  # step_source="calls": no timestep read per call
CAL_DYNAMIC = "dit_fx calibrated mask, dynamic"  # the calibrated mask's 0 steps take the threshold decision
# forecast rows with more computed steps than lite's interval 2 (16/28): interval 2 after a longer warm-up. Regular
# spacing matters to a forecast: on the CPU (10 samples), FoCa on the outputs got 50.62 dB at warm-up 6 (17/28) and
# 51.06 at 8 (18/28), but 43.76 on the uniform 18/28 mask (irregular gaps) and 48.44 at lite's 16/28.
FORECAST_WARMUPS = (6, 8)
DEFAULT_TARGETS = (0.9, 0.75, 0.6, 0.45, 0.3)
QUICK_THRESHOLDS = (0.08, 0.2)
PSNR_GOALS = (35.0, 30.0)  # guidance lines: the largest threshold that keeps PSNR above each


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU smoke run: 10 x 1 samples, fewer configs, no doc")
    p.add_argument("--out", default=None, help=f"JSON path (default {os.path.relpath(DEFAULT_OUT, REPO_ROOT)}; "
                   f"--quick: {QUICK_OUT})")
    p.add_argument("--plot", default=None, help="PNG path (default: the JSON's path with .png)")
    p.add_argument("--doc", default=None, help="Markdown report path (default docs/quality.md; --quick: none); 'none' for none")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (default: exact fp32)")
    p.add_argument("--weights", default="trained", choices=["trained", "random"],
                   help="random: the same architecture with random weights (classifier metrics only if assets exist)")
    p.add_argument("--assets", default=None, help=f"asset folder (default {fm.ASSET_DIR})")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seeds", type=int, default=None, help="noise seeds per class in the evaluation batch (default 20; --quick 1)")
    p.add_argument("--cal-samples", type=int, default=None,
                   help="calibration samples, other noise, classes 0-9 in turn (default 20; --quick 10)")
    p.add_argument("--steps", type=int, default=fm.DEFAULT_STEPS)
    p.add_argument("--guidance", type=float, default=fm.DEFAULT_GUIDANCE)
    p.add_argument("--warmup", type=int, default=4, help="max_warmup_steps of every DBCache/DBPrune config (and TaylorSeer's disable_cache_before_step)")
    p.add_argument("--thresholds", default=None,
                   help="comma-separated DBCache thresholds, or 'auto' (default auto; --quick 0.08,0.2)")
    p.add_argument("--targets", default=",".join(str(t) for t in DEFAULT_TARGETS), help="computed fractions 'auto' aims at")
    p.add_argument("--calibrated-steps", default=None, help="computed-step counts of the calibrated/uniform masks "
                   "(default 6,8,11,15,18; --quick 8,15)")
    p.add_argument("--groups", nargs="+", default=None, choices=GROUPS, help="which systems (default: all; --quick: a subset)")
    p.add_argument("--reps", type=int, default=None, help="timed batch-1 generations per config (default 3; --quick 1)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="no row starts after this many seconds since the start (default 240; --quick none)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the evaluation batch")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="run nothing: plot and report an existing JSON (--doc to write the Markdown, --plot for the PNG)")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished rows of the JSON at --out (same thresholds, MagCache ratios) and run the rest")
    args = p.parse_args(argv)
    q = args.quick
    args.plot_given, args.doc_given = args.plot, args.doc is not None and args.doc.lower() != "none"
    args.out = args.out or (QUICK_OUT if q else DEFAULT_OUT)
    args.plot = args.plot or os.path.splitext(args.out)[0] + ".png"
    if args.doc is None:
        args.doc = None if q else DEFAULT_DOC
    elif args.doc.lower() == "none":
        args.doc = None
    args.seeds = args.seeds or (1 if q else 20)
    args.cal_samples = args.cal_samples or (10 if q else 20)  # --quick: every class once
    args.reps = args.reps or (1 if q else 3)
    args.budget_s = args.budget_s if args.budget_s is not None else (None if q else 240.0)
    args.groups = list(args.groups or (QUICK_GROUPS if q else GROUPS))
    if args.thresholds is None:
        args.thresholds = ",".join(str(t) for t in QUICK_THRESHOLDS) if q else "auto"
    args.targets = [float(t) for t in args.targets.split(",") if t.strip()]
    cs = args.calibrated_steps or ("8,15" if q else "6,8,11,15,18")
    args.calibrated_steps = [int(c) for c in cs.split(",") if c.strip()]
    return args


# ------------------------------------------------------------------------------------------ utils


def finite(x: Any) -> Any:
    """JSON-safe: inf/nan floats as strings, recursively."""
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return str(x)
    if isinstance(x, dict):
        return {str(k): finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, torch.Tensor):
        return finite(x.tolist())
    return x


def as_float(x: Any) -> Optional[float]:
    if x is None:
        return None
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return float(x)


def leading_ones(mask: Sequence[int]) -> int:
    n = 0
    while n < len(mask) and mask[n]:
        n += 1
    return max(n, 1)


def lite_schedule(steps: int, warmup: int, interval: int) -> List[int]:
    """diffusers' TaylorSeer schedule as a steps mask: steps < ``warmup`` compute, then the steps
    with ``(step - warmup - 1) % interval == 0`` (its ``_measure_should_compute``)."""
    return [1 if i < warmup or (i - warmup - 1) % interval == 0 else 0 for i in range(steps)]


def uniform_mask(steps: int, computed: int, warmup: int = 1) -> List[int]:
    try:
        from dit_fx.calibrate import uniform_mask as um  # the baseline dit_fx.calibrate reports against

        return list(um(steps, computed, warmup))
    except ImportError:  # pragma: no cover - same definition
        warmup = max(1, min(warmup, computed))
        mask = [1] * warmup + [0] * (steps - warmup)
        rest, span = computed - warmup, steps - warmup
        for r in range(rest):
            mask[warmup + int(round(r * span / rest))] = 1
        return mask


def all_blocks(model) -> List[torch.nn.Module]:
    return list(model.transformer_blocks) + list(model.single_transformer_blocks)


class Probe:
    """Forward hooks counting calls of a middle block's attention (``attn.to_q``) and MLP."""

    def __init__(self, model, index: int):
        blk = all_blocks(model)[index]
        self.counts = {"attn": 0, "mlp": 0}
        mlp = getattr(blk, "proj_mlp", None) or getattr(blk, "ff", None)
        self.handles = [
            blk.attn.to_q.register_forward_hook(lambda *a: self._hit("attn")),
            mlp.register_forward_hook(lambda *a: self._hit("mlp")),
        ]

    def _hit(self, key: str) -> None:
        self.counts[key] += 1

    def reset(self) -> None:
        self.counts = {"attn": 0, "mlp": 0}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def snapshot(model) -> Dict[str, Tuple[List[str], List[str]]]:
    """Per module: its instance attributes and its children's order."""
    return {name: (list(m.__dict__), list(m._modules)) for name, m in model.named_modules()}


def restore(model, snap: Dict[str, Tuple[List[str], List[str]]]) -> List[str]:
    """Undo what a peer's disable left behind: instance attributes added since ``snap`` (patched
    forwards, flags, hook registries) are deleted, children put back in their order. Returns what
    was fixed (e.g. cache-dit 1.5.3's ``disable_cache`` re-adds the block lists after the other
    children, which makes diffusers' hooks take a single block as the first block)."""
    fixed: List[str] = []
    modules = dict(model.named_modules())
    for name, (keys, order) in snap.items():
        m = modules.get(name)
        if m is None:
            fixed.append(f"{name or '<root>'}: missing")
            continue
        for k in [k for k in m.__dict__ if k not in keys]:
            del m.__dict__[k]
            fixed.append(f"{name or '<root>'}.{k}")
        if list(m._modules) != order and set(m._modules) == set(order):
            m._modules = type(m._modules)((k, m._modules[k]) for k in order)
            fixed.append(f"{name or '<root>'}: children order")
    return fixed


@contextlib.contextmanager
def quiet():
    """cache-dit and diffusers log at enable/disable; keep the console readable."""
    import logging

    names = [n for n in list(logging.root.manager.loggerDict) if n.startswith(("cache_dit", "diffusers"))]
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, saved):
            lg.setLevel(lv)


# ---------------------------------------------------------------------------------------- systems


class System:
    """One config of one system: enable on the transformer, reset per generation, stats, disable."""

    family = "none"
    uses_probe = True
    compiled = False

    def __init__(self, curve: str, label: str, params: Dict[str, Any]):
        self.curve, self.label, self.params = curve, label, params

    def enable(self, model):  # returns the callable to sample with (the model, or a compiled wrapper)
        return model

    def reset(self, model) -> None:
        pass

    def context(self, model):
        return contextlib.nullcontext()

    def stats(self, model) -> Dict[str, Any]:
        return {}

    def disable(self, model) -> None:
        pass


class Uncached(System):
    family = "uncached"
    uses_probe = False

    def __init__(self, compiled: bool = False):
        super().__init__("uncached" + (" torch.compile" if compiled else ""), "reference", {})
        self.compiled = compiled
        self._fn = None

    def enable(self, model):
        if self.compiled:
            self._fn = torch.compile(model, mode="reduce-overhead")
            return self._fn
        return model

    def stats(self, model) -> Dict[str, Any]:
        return dict(computed_fraction=1.0)

    def disable(self, model) -> None:
        self._fn = None
        torch._dynamo.reset()


class DitFx(System):
    family = "dit_fx"
    uses_probe = False  # its blocks run inside the rewritten graph: module hooks see nothing

    def __init__(self, curve, label, params, config, steps: int, mask: Optional[Sequence[int]] = None,
                 compiled: bool = False):
        super().__init__(curve, label, params)
        self.config, self.steps, self.mask, self.compiled = config, steps, mask, compiled

    def enable(self, model):
        if self.compiled:
            dit_fx.optimize(model, self.config, compile=True, cuda_graphs=model.device.type == "cuda")
        else:
            dit_fx.optimize(model, self.config, compile=False, cuda_graphs=False)
        return model

    def reset(self, model) -> None:
        dit_fx.reset(model)

    def stats(self, model) -> Dict[str, Any]:
        s = dit_fx.summary(model)
        out: Dict[str, Any] = dict(cached_steps=list(s.cached_steps), executed_steps=s.executed_steps, calls=s.calls)
        if isinstance(s, dit_fx.PruneStats):
            n = len(all_blocks(model))
            middle = n - self.config.fn_blocks - self.config.bn_blocks
            pruned = sum(s.pruned_blocks)
            out.update(pruned_blocks_total=pruned, pruned_ratio=s.pruned_ratio, pruned_steps=list(s.pruned_steps))
            out["computed_fraction"] = 1.0 - pruned / max(1, len(s.pruned_blocks) * middle)
        else:
            out["computed_fraction"] = 1.0 - len(s.cached_steps) / max(1, s.executed_steps)
        if self.mask is not None:
            out["matches_mask"] = list(s.cached_steps) == [i for i, m in enumerate(self.mask) if not m]
        return out

    def disable(self, model) -> None:
        dit_fx.disable(model)
        if self.compiled:
            torch._dynamo.reset()


class CacheDit(System):
    family = "cache-dit"

    def __init__(self, curve, label, params, steps: int, prune: bool = False, calibrator=None,
                 compiled: bool = False, **cfg):
        super().__init__(curve, label, params)
        self.steps, self.prune, self.calibrator, self.cfg, self.compiled = steps, prune, calibrator, cfg, compiled
        self._fn = None

    def enable(self, model):
        import cache_dit

        kind = cache_dit.DBPruneConfig if self.prune else cache_dit.DBCacheConfig
        cfg = kind(warmup_interval=1, max_cached_steps=-1, max_continuous_cached_steps=-1, enable_separate_cfg=False,
                   num_inference_steps=self.steps, **self.cfg)
        cal = None
        if self.calibrator is not None:
            kind_name, kw = self.calibrator
            cal = getattr(cache_dit, kind_name)(**kw)
        with quiet():
            cache_dit.enable_cache(model, cache_config=cfg, calibrator_config=cal)
        if self.compiled:
            self.uses_probe = False  # hooks inside a compiled graph: use its own statistics
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self._fn = torch.compile(model)
            return self._fn
        return model

    def reset(self, model) -> None:
        import cache_dit

        with quiet():
            cache_dit.refresh_context(model, num_inference_steps=self.steps)

    def stats(self, model) -> Dict[str, Any]:
        import cache_dit

        with quiet():
            st = cache_dit.summary(model, logging=False)[0]
        out: Dict[str, Any] = {}
        if self.prune:  # middle-block executions, as dit_fx's DBPrune row counts them (a probe sees one block)
            out.update(pruned_steps=sorted(int(s) for s in st.pruned_steps), pruned_ratio=float(st.pruned_ratio),
                       pruned_blocks_total=int(sum(st.pruned_blocks)))
            middle = len(all_blocks(model)) - self.cfg["Fn_compute_blocks"] - self.cfg["Bn_compute_blocks"]
            out["computed_fraction"] = 1.0 - out["pruned_blocks_total"] / max(1, self.steps * middle)
        else:
            out["cached_steps"] = sorted(int(s) for s in st.cached_steps)
            out["own_computed_fraction"] = 1.0 - len(out["cached_steps"]) / self.steps
        return out

    def disable(self, model) -> None:
        import cache_dit

        with quiet():
            cache_dit.disable_cache(model)
        for mod in model.modules():  # its patch functors leave instance forwards behind
            if "forward" in mod.__dict__:
                del mod.forward
        self._fn = None
        if self.compiled:
            torch._dynamo.reset()


class DiffusersCache(System):
    family = "diffusers"

    def __init__(self, curve, label, params, make_config: Callable[[], Any], compiled: bool = False,
                 schedule: Optional[Sequence[int]] = None):
        super().__init__(curve, label, params)
        self.make_config, self.compiled, self.schedule = make_config, compiled, schedule
        if compiled:  # module hooks inside a compiled graph count nothing: the computed fraction is its schedule's
            self.uses_probe = False

    def stats(self, model) -> Dict[str, Any]:
        return dict(computed_fraction=sum(self.schedule) / len(self.schedule)) if self.schedule is not None else {}

    def enable(self, model):
        with quiet():
            model.enable_cache(self.make_config())
        # compiled: torch.compile over the hooked model (default mode: the hooks' Python state breaks the graph, so
        # no CUDA graphs); on the CPU it equals the eager hooks within 5e-6 (12 graphs)
        return torch.compile(model) if self.compiled else model

    def reset(self, model) -> None:
        model._reset_stateful_cache()

    def context(self, model):
        return model.cache_context("cond")  # one call per step (batched CFG): one state

    def disable(self, model) -> None:
        with quiet():
            model.disable_cache()
        if self.compiled:
            torch._dynamo.reset()


# ----------------------------------------------------------------------------------------- bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.t_start = T_START  # the budget counts the imports too
        self.device = torch.device(args.device)
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = args.tf32
            torch.backends.cudnn.allow_tf32 = args.tf32
        self.steps = args.steps
        assets = args.assets
        have_assets = fm.assets_available(assets)
        if args.weights == "trained":
            if not have_assets:
                raise SystemExit(f"no trained Fashion-MNIST model in {assets or fm.ASSET_DIR}: train it "
                                 "(scripts/train_fashion.py) or pass --weights random / --assets DIR")
            self.model = fm.load_fashion_transformer(device=self.device, dtype=self.dtype, path=assets)
            self.conditioner = fm.load_fashion_conditioner(device=self.device, dtype=self.dtype, path=assets)
        else:
            from diffusers import FluxTransformer2DModel

            torch.manual_seed(0)
            self.model = FluxTransformer2DModel(**fm.TRANSFORMER_CONFIG).to(self.device, self.dtype).eval().requires_grad_(False)
            self.conditioner = fm.FashionConditioner().to(self.device, self.dtype).eval().requires_grad_(False)
        self.classifier = fm.load_fashion_classifier(device=self.device, path=assets) if have_assets else None
        self.test_stats = fm.load_reference_stats(assets) if have_assets else None
        self.pristine = copy.deepcopy(self.model)  # never enabled: the replacement after a leak
        self.pristine_tree = snapshot(self.model)
        n_blocks = len(all_blocks(self.model))
        self.probe_index = n_blocks - 2  # middle for every Fn <= 2, Bn <= 1 used here
        if self.probe_index < 2:
            raise SystemExit(f"the model has {n_blocks} blocks; the probe needs at least 4")

        c, s = args.classes, args.seeds
        self.classes = torch.arange(c).repeat(s)
        n = self.classes.shape[0]
        self.latents = torch.randn(n, fm.NUM_IMAGE_TOKENS, fm.LATENT_CHANNELS, generator=torch.Generator().manual_seed(args.seed))
        self.disjoint_latents = torch.randn(n, fm.NUM_IMAGE_TOKENS, fm.LATENT_CHANNELS,
                                            generator=torch.Generator().manual_seed(args.seed + 1000))
        m = args.cal_samples
        self.cal_classes = torch.arange(m) % c
        self.cal_latents = torch.randn(m, fm.NUM_IMAGE_TOKENS, fm.LATENT_CHANNELS,
                                       generator=torch.Generator().manual_seed(args.seed + 2000))
        self.b1_classes, self.b1_latents = self.classes[:1], self.latents[:1]

        self.result: Dict[str, Any] = dict(
            script="benchmarks/quality.py", environment=environment(self.device), args=vars(args),
            setup=dict(
                model="dit_fx.models.fashion FluxTransformer2DModel", weights=args.weights,
                assets=str(assets or fm.ASSET_DIR), blocks=n_blocks, probe_block=self.probe_index,
                parameters=sum(p.numel() for p in self.model.parameters()), dtype=args.dtype, tf32=args.tf32,
                steps=self.steps, guidance=args.guidance, cfg="batched", warmup=args.warmup,
                eval_batch=n, eval_classes=c, eval_seeds=s, cal_samples=m, classifier=self.classifier is not None,
            ),
            floors={}, thresholds={}, calibrations={}, rows=[],
        )  # fmt: skip
        self.ref: Optional[torch.Tensor] = None
        self.ref_b1: Optional[torch.Tensor] = None
        self.ref_stats = None
        self.previous: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.previous_result: Dict[str, Any] = {}
        if args.resume and os.path.isfile(args.out):
            import json

            with open(args.out) as f:
                self.previous_result = json.load(f)
            keep = ("eval_batch", "steps", "guidance", "warmup", "dtype", "weights")
            if any(self.previous_result.get("setup", {}).get(k) != self.result["setup"][k] for k in keep):
                raise SystemExit(f"--resume: {args.out} was measured with another setup ({keep})")
            for r in self.previous_result.get("rows", []):
                if not r.get("error") and not r.get("skipped"):
                    self.previous[(r["system"], r["config"])] = r
            self.result["resumed_from"] = dict(elapsed_s=self.previous_result.get("elapsed_s"),
                                               rows_kept=len(self.previous))  # fmt: skip
            log(f"--resume: {len(self.previous)} finished rows of {args.out} kept")

    # ----------------------------------------------------------------------------------- running

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def over_budget(self) -> bool:
        return self.args.budget_s is not None and self.elapsed() > self.args.budget_s

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def generate(self, fn, classes, latents, system: Optional[System] = None, steps: Optional[int] = None):
        """One generation (``system`` reset first); returns (wall seconds, images [B, 1, 28, 28] on the CPU)."""
        if system is not None:
            system.reset(self.model)
        ctx = system.context(self.model) if system is not None else contextlib.nullcontext()
        self.sync()
        t0 = time.perf_counter()
        with ctx:
            imgs = fm.sample(fn, self.conditioner, classes, steps=steps or self.steps, guidance=self.args.guidance,
                             latents=latents, cfg="batched", device=self.device, dtype=self.dtype)
        self.sync()
        return time.perf_counter() - t0, imgs

    def quality(self, imgs: torch.Tensor) -> Dict[str, Any]:
        cmp = metrics.compare(imgs, self.ref, data_range=1.0)
        out: Dict[str, Any] = dict(psnr=cmp.psnr, ssim=cmp.ssim, mse=cmp.mse, identical=cmp.identical)
        if self.classifier is not None:
            out["fid_vs_uncached"] = fm.feature_fid(imgs, self.ref_stats, self.classifier)
            out["fid_vs_test"] = fm.feature_fid(imgs, self.test_stats, self.classifier)
            out["accuracy"] = fm.class_accuracy(imgs, self.classes, self.classifier)
        return out

    def save(self) -> None:
        self.result["elapsed_s"] = round(self.elapsed(), 2)
        write_json(self.args.out, finite(self.result))

    def floors(self) -> None:
        a = self.args
        log(f"uncached reference: {self.classes.shape[0]} samples x {self.steps} steps on {self.device} ({a.dtype})")
        self.generate(self.model, self.b1_classes, self.b1_latents, steps=2)  # first-call warm-up
        self.generate(self.model, self.classes, self.latents, steps=2)
        full_s, self.ref = self.generate(self.model, self.classes, self.latents)
        b1 = [self.generate(self.model, self.b1_classes, self.b1_latents) for _ in range(a.reps)]
        self.ref_b1 = b1[-1][1]
        rerun_s, rerun = self.generate(self.model, self.classes, self.latents)
        if self.classifier is not None:
            self.ref_stats = fm.feature_stats(self.ref, self.classifier)
        _, disjoint = self.generate(self.model, self.classes, self.disjoint_latents)
        f = self.result["floors"]
        f["uncached"] = dict(full_batch_s=full_s, full_batch_rerun_s=rerun_s, batch1_s=statistics.median(t for t, _ in b1),
                             batch1_runs_s=[t for t, _ in b1])  # fmt: skip
        if self.classifier is not None:
            f["uncached"].update(fid_vs_test=fm.feature_fid(self.ref, self.test_stats, self.classifier),
                                 accuracy=fm.class_accuracy(self.ref, self.classes, self.classifier))
        f["rerun"] = self.quality(rerun)
        f["disjoint"] = self.quality(disjoint)
        f["batch1_rerun_identical"] = bool(torch.equal(b1[0][1], b1[-1][1]))
        self.save()
        u = f["uncached"]
        log(f"  uncached: full batch {u['full_batch_s']:.2f} s, batch 1 {u['batch1_s']:.3f} s; rerun PSNR "
            f"{f['rerun']['psnr']}, disjoint PSNR {f['disjoint']['psnr']:.2f}"
            + (f", FID vs test {u['fid_vs_test']:.2f}, disjoint FID {f['disjoint']['fid_vs_uncached']:.2f}, "
               f"accuracy {u['accuracy']:.3f}" if self.classifier is not None else ""))

    def leak_check(self) -> Dict[str, Any]:
        """The uncached batch-1 output again, and the module tree as it was."""
        _, out = self.generate(self.model, self.b1_classes, self.b1_latents)
        diff = float((out - self.ref_b1).abs().max())
        same_tree = snapshot(self.model) == self.pristine_tree
        return dict(max_abs_diff=diff, same_module_tree=same_tree, ok=diff <= 1e-5 and same_tree)

    def run(self, system: System, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        row: Dict[str, Any] = dict(system=system.curve, family=system.family, config=system.label,
                                   params=system.params, compiled=system.compiled)  # fmt: skip
        if extra:
            row.update(extra)
        old = self.previous.get((system.curve, system.label))
        if old is not None:
            old = dict(old, previous_run=True)
            self.result["rows"].append(old)
            self.save()
            log(f"  {system.curve} {system.label}: kept from the previous run")
            return old
        if self.over_budget():
            row["skipped"] = f"budget ({self.args.budget_s:.0f} s) spent"
            self.result["rows"].append(row)
            log(f"skip {system.curve} {system.label}: budget")
            return row
        t_row = time.perf_counter()
        probe = None
        enabled = False
        snap = snapshot(self.model) if system.family in ("cache-dit", "diffusers") else None
        try:
            fn = system.enable(self.model)
            enabled = True
            if system.uses_probe:
                probe = Probe(self.model, self.probe_index)  # after enable: counts what really runs
            # The quality run is the first generation at this shape (dit_fx captures in it); the
            # timed one repeats it, and must give the same images.
            row["first_run_s"], imgs = self.generate(fn, self.classes, self.latents, system)
            st = system.stats(self.model)
            if probe:  # counted over the quality run only
                row["probe_attn_fraction"] = probe.counts["attn"] / self.steps
                row["probe_mlp_fraction"] = probe.counts["mlp"] / self.steps
                st.setdefault("computed_fraction", row["probe_attn_fraction"])
                probe.remove()
                probe = None
            elif "computed_fraction" not in st and "own_computed_fraction" in st:
                st["computed_fraction"] = st["own_computed_fraction"]
            row.update(st)
            row.update(self.quality(imgs))
            row["full_batch_s"], again = self.generate(fn, self.classes, self.latents, system)
            row["repeat_max_abs_diff"] = float((again - imgs).abs().max())
            self.generate(fn, self.b1_classes, self.b1_latents, system)  # warm-up at batch 1
            b1 = [self.generate(fn, self.b1_classes, self.b1_latents, system)[0] for _ in range(self.args.reps)]
            row["batch1_s"], row["batch1_runs_s"] = statistics.median(b1), b1
            u = self.result["floors"]["uncached"]
            row["speedup_full_batch"] = u["full_batch_s"] / row["full_batch_s"]
            row["speedup_batch1"] = u["batch1_s"] / row["batch1_s"]
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            row["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        finally:
            if probe:
                probe.remove()
            if enabled:
                try:
                    system.disable(self.model)
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    row["disable_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            if snap is not None:
                fixed = restore(self.model, snap)
                if fixed:
                    row["left_behind"] = fixed  # after the system's own disable; removed here
            try:
                row["leak"] = self.leak_check()
            except Exception as exc:  # noqa: BLE001
                row["leak"] = dict(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
            if not row["leak"].get("ok"):
                log(f"  LEAK after {system.curve} {system.label}: {row['leak']}; replacing the model by a pristine copy")
                self.model = copy.deepcopy(self.pristine)
                row["model_replaced"] = True
        row["row_s"] = time.perf_counter() - t_row
        self.result["rows"].append(row)
        self.save()
        log(row_line(row))
        return row

    # --------------------------------------------------------------------------------- helpers

    def dit_cfg(self, fn: int, bn: int, thr: float, prune: bool = False, **kw):
        kind = dit_fx.DBPruneConfig if prune else dit_fx.DBCacheConfig
        return kind(fn_blocks=fn, bn_blocks=bn, residual_diff_threshold=thr, max_warmup_steps=self.args.warmup,
                    num_inference_steps=self.steps, enable_separate_cfg=False, **kw)

    def mask_cfg(self, mask: Sequence[int]):
        return dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=0, steps_computation_mask=list(mask),
                                    steps_computation_policy="static", max_warmup_steps=leading_ones(mask),
                                    num_inference_steps=self.steps, enable_separate_cfg=False)  # fmt: skip

    def cal_fraction(self, system: System) -> float:
        """Computed fraction of ``system`` on the calibration set (for threshold sweeps)."""
        snap = snapshot(self.model)
        fn = system.enable(self.model)
        probe = Probe(self.model, self.probe_index) if system.uses_probe else None
        try:
            self.generate(fn, self.cal_classes, self.cal_latents, system)
            if probe:
                return probe.counts["attn"] / self.steps
            return system.stats(self.model)["computed_fraction"]
        finally:
            if probe:
                probe.remove()
            system.disable(self.model)
            restore(self.model, snap)

    def sweep(self, name: str, make: Callable[[float], System], lo: float, hi: float, points: int = 9) -> List[float]:
        """Thresholds whose computed fractions on the calibration set are nearest ``--targets``:
        a geometric sweep from ``lo`` to ``hi`` (widened while the ends miss the targets), then
        log-linear interpolation between the bracketing points."""
        targets = self.args.targets
        before = self.previous_result.get("thresholds", {}).get(name)
        if before and before.get("chosen"):
            self.result["thresholds"][name] = dict(before, reused=True)
            log(f"{name} thresholds from the previous run: {before['chosen']}")
            return list(before["chosen"])
        seen: Dict[float, float] = {}

        def measure(ts):
            for t in ts:
                if t not in seen:
                    seen[t] = self.cal_fraction(make(t))

        grid = [lo * (hi / lo) ** (i / (points - 1)) for i in range(points)]
        measure(grid)
        for _ in range(2):  # widen the range where the ends miss the targets
            ts = sorted(seen)
            if seen[ts[-1]] > min(targets) + 0.05:
                measure([ts[-1] * 2.0, ts[-1] * 4.0])
            if seen[ts[0]] < max(targets) - 0.05:
                measure([ts[0] / 2.0, ts[0] / 4.0])
        ts = sorted(seen)
        chosen: List[float] = []
        for target in targets:
            pick = None
            for a, b in zip(ts, ts[1:]):
                fa, fb = seen[a], seen[b]
                if (fa - target) * (fb - target) <= 0 and fa != fb:
                    w = (fa - target) / (fa - fb)
                    pick = math.exp(math.log(a) + w * (math.log(b) - math.log(a)))
                    break
            if pick is None:  # out of reach: the nearest end
                pick = min(ts, key=lambda t: abs(seen[t] - target))
            pick = float(f"{pick:.3g}")
            if pick not in chosen:
                chosen.append(pick)
        self.result["thresholds"][name] = dict(sweep={f"{t:.4g}": seen[t] for t in ts}, targets=targets, chosen=chosen)
        self.save()
        log(f"{name} thresholds for computed fractions {targets}: {chosen} (sweep {', '.join(f'{t:.3g}:{seen[t]:.2f}' for t in ts)})")
        return chosen

    def mag_ratios(self) -> List[float]:
        """MagCache's magnitude ratios from diffusers' calibration mode, on the calibration set."""
        from diffusers import MagCacheConfig

        before = self.previous_result.get("calibrations", {}).get("magcache_ratios")
        if before:
            self.result["calibrations"]["magcache_ratios"] = before
            return [float(r) for r in before]
        snap = snapshot(self.model)
        self.model.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=self.steps))
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                self.model._reset_stateful_cache()
                with self.model.cache_context("cond"):
                    fm.sample(self.model, self.conditioner, self.cal_classes, steps=self.steps, guidance=self.args.guidance,
                              latents=self.cal_latents, cfg="batched", device=self.device, dtype=self.dtype)
        finally:
            with quiet():
                self.model.disable_cache()
            restore(self.model, snap)
        lines = [ln.strip() for ln in buf.getvalue().splitlines() if ln.strip().startswith("[") and "MagCache" not in ln]
        if not lines:
            raise RuntimeError(f"MagCache calibration printed no ratios: {buf.getvalue()[-300:]!r}")
        ratios = [float(r) for r in ast.literal_eval(lines[-1])]
        if len(ratios) != self.steps:
            raise RuntimeError(f"MagCache calibration gave {len(ratios)} ratios for {self.steps} steps")
        self.result["calibrations"]["magcache_ratios"] = ratios
        return ratios

    # -------------------------------------------------------------------------------- the plan

    def thresholds(self) -> List[float]:
        a = self.args
        if a.thresholds != "auto" and not self.previous_result:
            ts = [float(t) for t in a.thresholds.split(",") if t.strip()]
            self.result["thresholds"]["dbcache"] = dict(chosen=ts, given=True)
            return ts
        return self.sweep("dbcache", lambda t: DitFx("sweep", "", {}, self.dit_cfg(1, 0, t), self.steps), 0.02, 0.6)

    def main(self) -> None:
        a, S = self.args, self.steps
        self.floors()
        thr = self.thresholds()
        hi2 = sorted(thr)[-2:]
        fnbn_rest = [c for c in FN_BN if c != (1, 0)]

        def dit(fn, bn, t):
            return DitFx(f"dit_fx DBCache F{fn}B{bn}", f"F{fn}B{bn} t={t:g}", dict(fn=fn, bn=bn, threshold=t),
                         self.dit_cfg(fn, bn, t), S)

        def cd(fn, bn, t, calibrator=None, curve=None, prune=False):
            return CacheDit(curve or f"cache-dit DBCache F{fn}B{bn}", f"F{fn}B{bn} t={t:g}", dict(fn=fn, bn=bn, threshold=t),
                            S, prune=prune, calibrator=calibrator, Fn_compute_blocks=fn, Bn_compute_blocks=bn,
                            residual_diff_threshold=t, max_warmup_steps=a.warmup)  # fmt: skip

        def fbc():
            from diffusers import FirstBlockCacheConfig

            for t in thr:
                self.run(DiffusersCache("diffusers FirstBlockCache", f"t={t:g}", dict(threshold=t),
                                        lambda t=t: FirstBlockCacheConfig(threshold=t)))

        def masks():
            for preset in ("slow", "medium", "fast", "ultra"):
                mask = dit_fx.steps_mask(preset, total_steps=S)
                self.run(DitFx("dit_fx steps mask (preset)", f"{preset} ({sum(mask)}/{S})", dict(preset=preset, mask=mask),
                               self.mask_cfg(mask), S, mask=mask), extra=dict(mask=mask))

        def calibrators():
            cals = [("TaylorSeer o1", dit_fx.TaylorSeerConfig(order=1)), ("TaylorSeer o2", dit_fx.TaylorSeerConfig(order=2)),
                    ("FoCa", dit_fx.FoCaConfig())]
            for name, cal in cals if not a.quick else [cals[0], cals[2]]:
                for t in hi2 if not a.quick else thr[-1:]:
                    self.run(DitFx(f"dit_fx F1B0 + {name}", f"F1B0 t={t:g}", dict(fn=1, bn=0, threshold=t, calibrator=name),
                                   self.dit_cfg(1, 0, t, calibrator=cal), S))

        def cache_dit_calibrators():
            cals = [("TaylorSeer o1", ("TaylorSeerCalibratorConfig", dict(taylorseer_order=1))),
                    ("TaylorSeer o2", ("TaylorSeerCalibratorConfig", dict(taylorseer_order=2))),
                    ("FoCa", ("FoCaCalibratorConfig", {}))]
            for name, cal in cals:
                for t in hi2:
                    self.run(cd(1, 0, t, calibrator=cal, curve=f"cache-dit F1B0 + {name}"))

        f0b0 = self.f0b0_cfg

        def forecast_masks():
            cals = [("FoCa", dit_fx.FoCaConfig()), ("FoCa on the output", dit_fx.FoCaConfig(cache_type="output")),
                    ("TaylorSeer o1 on the output", dit_fx.TaylorSeerConfig(order=1, cache_type="output"))]
            for interval in LITE_INTERVALS if not a.quick else LITE_INTERVALS[1:2]:
                mask = lite_schedule(S, a.warmup, interval)
                for name, cal in cals if not a.quick else cals[:1]:
                    self.run(DitFx(f"dit_fx F0B0 mask + {name}", f"interval {interval} ({sum(mask)}/{S})",
                                   dict(interval=interval, calibrator=name, mask=mask), f0b0(mask, a.warmup, cal), S,
                                   mask=mask),
                             extra=dict(mask=mask))
            for interval in LITE_INTERVALS if not a.quick else LITE_INTERVALS[1:2]:  # counted calls: no timestep read
                mask = lite_schedule(S, a.warmup, interval)
                self.run(DitFx(COUNTED, f"interval {interval} ({sum(mask)}/{S})",
                               dict(interval=interval, calibrator="FoCa on the output", mask=mask, step_source="calls"),
                               f0b0(mask, a.warmup, cals[1][1], "calls"), S, mask=mask), extra=dict(mask=mask))
            for w in FORECAST_WARMUPS if not a.quick else FORECAST_WARMUPS[:1]:  # more computed steps than lite's 16/28
                mask = lite_schedule(S, w, 2)
                for name, cal in cals[:2] if not a.quick else cals[:1]:
                    self.run(DitFx(f"dit_fx F0B0 mask + {name}", f"interval 2, warm-up {w} ({sum(mask)}/{S})",
                                   dict(interval=2, warmup=w, calibrator=name, mask=mask), f0b0(mask, w, cal), S, mask=mask),
                             extra=dict(mask=mask))

        groups = dict(
            dit_fx=lambda: [self.run(dit(1, 0, t)) for t in thr],
            forecast_masks=forecast_masks,
            cache_dit=lambda: [self.run(cd(1, 0, t)) for t in thr],
            fbc=fbc,
            magcache=self.magcache_rows,
            diffusers_taylorseer=self.diffusers_taylorseer_rows,
            calibrated=self.calibrated_rows,
            masks=masks,
            dit_fx_fnbn=lambda: [self.run(dit(fn, bn, t)) for fn, bn in (fnbn_rest if not a.quick else [(2, 1)])
                                 for t in (thr if not a.quick else thr[-1:])],
            calibrators=calibrators,
            cache_dit_calibrators=cache_dit_calibrators,
            prune=lambda: [self.run(DitFx("dit_fx DBPrune F1B0", f"F1B0 t={t:g}", dict(fn=1, bn=0, threshold=t),
                                          self.dit_cfg(1, 0, t, prune=True), S)) for t in (hi2 if not a.quick else thr[-1:])],
            cache_dit_fnbn=lambda: [self.run(cd(fn, bn, t)) for fn, bn in fnbn_rest for t in thr],
            cache_dit_prune=lambda: [self.run(cd(1, 0, t, prune=True, curve="cache-dit DBPrune F1B0")) for t in hi2],
            calibrated_dynamic=lambda: self.calibrated_dynamic_rows(thr),
            compiled=lambda: self.compiled_rows(thr),
        )  # fmt: skip
        assert set(groups) == set(GROUPS)
        for name in GROUPS:
            if name not in a.groups:
                continue
            if self.over_budget() and not self.previous:
                self.result.setdefault("skipped_groups", []).append(name)
                log(f"group {name}: skipped, budget ({a.budget_s:.0f} s) spent (run again with --resume)")
                continue
            log(f"group {name}")
            groups[name]()
        self.result["finished"] = True
        self.save()

    def f0b0_cfg(self, mask, warmup, calibrator, step_source="timestep"):
        """No block on cached steps (``fn_blocks=0``): the calibrator forecasts them, on a static mask.
        ``step_source="calls"``: steps counted, no timestep read (every generation here is marked by
        ``System.reset``)."""
        return dit_fx.DBCacheConfig(fn_blocks=0, bn_blocks=0, steps_computation_mask=mask, steps_computation_policy="static",
                                    max_warmup_steps=warmup, num_inference_steps=self.steps, enable_separate_cfg=False,
                                    calibrator=calibrator, step_source=step_source)

    def magcache_rows(self) -> None:
        from diffusers import MagCacheConfig

        try:
            ratios = self.mag_ratios()
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            self.result["calibrations"]["magcache_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            return

        def mag(t, k=3):
            return DiffusersCache("diffusers MagCache" + (f" K={k}" if k != 3 else ""), f"t={t:g} K={k}",
                                  dict(threshold=t, max_skip_steps=k),
                                  lambda: MagCacheConfig(threshold=t, max_skip_steps=k, num_inference_steps=self.steps,
                                                         mag_ratios=ratios))  # fmt: skip

        if self.args.quick:
            ts = [0.06]
        else:
            try:
                ts = self.sweep("magcache", lambda t: mag(t), 0.005, 0.5)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                self.result["thresholds"]["magcache_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                ts = [0.01, 0.03, 0.06, 0.12, 0.25]
        for t in ts:
            self.run(mag(t))
        if not self.args.quick:
            for t in sorted(ts)[-2:]:
                self.run(mag(t, 6))

    def taylorseer(self, interval: int, lite: bool, compiled: bool = False) -> "DiffusersCache":
        """diffusers' TaylorSeer (order 1, our warm-up) at ``interval``; compiled: under ``torch.compile``."""
        from diffusers import TaylorSeerCacheConfig

        a = self.args
        return DiffusersCache(
            "diffusers TaylorSeer" + (" lite" if lite else "") + (" + torch.compile" if compiled else ""),
            f"interval {interval}", dict(cache_interval=interval, lite=lite, disable_cache_before_step=a.warmup, max_order=1),
            lambda: TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=a.warmup, max_order=1,
                                          taylor_factors_dtype=self.dtype, use_lite_mode=lite),
            compiled=compiled, schedule=lite_schedule(self.steps, a.warmup, interval) if compiled and lite else None)

    def diffusers_taylorseer_rows(self) -> None:
        runs = [(False, 2), (False, 4), (True, 2), (True, 3), (True, 5)] if not self.args.quick else [(True, 3)]
        for lite, interval in runs:
            self.run(self.taylorseer(interval, lite))

    def calibrate(self, computed: int):
        def run():
            fm.sample(self.model, self.conditioner, self.cal_classes, steps=self.steps, guidance=self.args.guidance,
                      latents=self.cal_latents, cfg="batched", device=self.device, dtype=self.dtype)

        t0 = time.perf_counter()
        cal = dit_fx.calibrate(self.model, run, computed)
        self.result["calibrations"][f"computed_{computed}"] = dict(
            mask=list(cal.mask), cost=cal.cost, uniform_cost=cal.uniform_cost, gain_db=cal.gain_db,
            growth=getattr(cal, "growth", None), seconds=time.perf_counter() - t0)
        return cal

    def calibrated_rows(self) -> None:
        S = self.steps
        for k in self.args.calibrated_steps:
            keys = [("dit_fx calibrated mask", f"{k}/{S}"), ("dit_fx uniform mask", f"{k}/{S}")]
            if all(key in self.previous for key in keys):  # --resume: both rows done, no calibration needed
                before = self.previous_result.get("calibrations", {}).get(f"computed_{k}")
                if before:
                    self.result["calibrations"][f"computed_{k}"] = before
                for key in keys:
                    self.result["rows"].append(dict(self.previous[key], previous_run=True))
                continue
            if self.over_budget():
                self.result.setdefault("skipped_groups", []).append(f"calibrated {k}/{S}")
                continue
            try:
                cal = self.calibrate(k)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                self.result["calibrations"][f"computed_{k}"] = dict(error=f"{type(exc).__name__}: {str(exc)[:300]}")
                continue
            mask = list(cal.mask)
            self.run(DitFx("dit_fx calibrated mask", f"{k}/{S}", dict(computed_steps=k, mask=mask),
                           cal.config(fn_blocks=1, num_inference_steps=S, enable_separate_cfg=False), S, mask=mask),
                     extra=dict(mask=mask, model_cost=cal.cost))
            umask = uniform_mask(S, k)
            self.run(DitFx("dit_fx uniform mask", f"{k}/{S}", dict(computed_steps=k, mask=umask),
                           self.mask_cfg(umask), S, mask=umask), extra=dict(mask=umask, model_cost=cal.uniform_cost))

    def calibrated_dynamic_rows(self, thr: List[float]) -> None:
        """The adaptive variant of a calibrated mask: its 1 steps are always computed, its 0 steps take the
        F1B0 threshold decision (``steps_computation_policy="dynamic"``), at the middle DBCache thresholds."""
        S = self.steps
        mid = sorted(thr)[1:-1] or list(thr)
        for k in self.args.calibrated_steps:
            mask = self.result["calibrations"].get(f"computed_{k}", {}).get("mask")
            if mask is None and not self.over_budget():
                try:
                    mask = list(self.calibrate(k).mask)
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    self.result["calibrations"][f"computed_{k}"] = dict(error=f"{type(exc).__name__}: {str(exc)[:300]}")
            if mask is None:
                self.result.setdefault("skipped_groups", []).append(f"calibrated_dynamic {k}/{S}")
                continue
            for t in mid:
                cfg = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=0, residual_diff_threshold=t,
                                           steps_computation_mask=list(mask), steps_computation_policy="dynamic",
                                           max_warmup_steps=leading_ones(mask), num_inference_steps=S,
                                           enable_separate_cfg=False)  # fmt: skip
                self.run(DitFx(CAL_DYNAMIC, f"{k}/{S} t={t:g}", dict(computed_steps=k, threshold=t, mask=list(mask)),
                               cfg, S), extra=dict(mask=list(mask)))

    def compiled_rows(self, thr: List[float]) -> None:
        if self.device.type != "cuda":
            log("compiled rows: CUDA only; skipped")
            return
        rows = [r for r in self.result["rows"] if not r.get("error") and not r.get("skipped")]
        S = self.steps

        def nearest(curve, target):
            cands = [r for r in rows if r["system"] == curve and r.get("computed_fraction") is not None]
            return min(cands, key=lambda r: abs(r["computed_fraction"] - target), default=None)

        self.run(Uncached(compiled=True))
        best = nearest("dit_fx DBCache F1B0", 0.5)
        t = best["params"]["threshold"] if best else sorted(thr)[len(thr) // 2]
        self.run(DitFx("dit_fx DBCache F1B0 compiled + CUDA graphs", f"F1B0 t={t:g}", dict(fn=1, bn=0, threshold=t),
                       self.dit_cfg(1, 0, t), S, compiled=True))
        calm = nearest("dit_fx calibrated mask", 0.5)
        if calm:
            mask = calm["mask"]
            self.run(DitFx("dit_fx calibrated mask compiled + CUDA graphs", calm["config"], dict(mask=mask),
                           self.mask_cfg(mask), S, mask=mask, compiled=True), extra=dict(mask=mask))
        self.run(CacheDit("cache-dit DBCache F1B0 + torch.compile", f"F1B0 t={t:g}", dict(fn=1, bn=0, threshold=t), S,
                          compiled=True, Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=t,
                          max_warmup_steps=self.args.warmup))  # fmt: skip
        # The forecast rows against diffusers' TaylorSeer lite, each compiled (its schedules; FoCa on the outputs)
        a = self.args
        for interval in LITE_INTERVALS:
            mask = lite_schedule(S, a.warmup, interval)
            for curve, source in (("dit_fx F0B0 mask + FoCa on the output", "timestep"), (COUNTED, "calls")):
                cfg = self.f0b0_cfg(mask, a.warmup, dit_fx.FoCaConfig(cache_type="output"), source)
                self.run(DitFx(curve + " compiled + CUDA graphs", f"interval {interval} ({sum(mask)}/{S})",
                               dict(interval=interval, calibrator="FoCa on the output", mask=mask, step_source=source),
                               cfg, S, mask=mask, compiled=True), extra=dict(mask=mask))
            self.run(self.taylorseer(interval, lite=True, compiled=True))


# ----------------------------------------------------------------------------------------- report


def _fmt(v, nd=2, none=""):
    v = as_float(v) if not isinstance(v, bool) else v
    if v is None:
        return none
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{nd}f}"


def row_line(r: Dict[str, Any]) -> str:
    head = f"{r['system']} {r['config']}"
    if r.get("error"):
        return f"  {head}: ERROR {r['error'][:200]}"
    if r.get("skipped"):
        return f"  {head}: skipped ({r['skipped']})"
    return (f"  {head}: computed {_fmt(r.get('computed_fraction'))} PSNR {_fmt(r.get('psnr'))} SSIM {_fmt(r.get('ssim'), 4)} "
            f"FID(unc) {_fmt(r.get('fid_vs_uncached'))} FID(test) {_fmt(r.get('fid_vs_test'))} acc {_fmt(r.get('accuracy'), 3)} "
            f"b1 {_fmt(r.get('batch1_s'), 3)} s  bN {_fmt(r.get('full_batch_s'), 3)} s (x{_fmt(r.get('speedup_full_batch'))})"
            + ("" if r.get("leak", {}).get("ok", True) else "  LEAK"))  # fmt: skip


def good_rows(result) -> List[Dict[str, Any]]:
    return [r for r in result["rows"] if not r.get("error") and not r.get("skipped") and r.get("psnr") is not None]


def markdown_table(result) -> str:
    n = result["setup"]["eval_batch"]
    lines = [
        f"| system | config | computed | PSNR dB | SSIM | FID vs uncached | FID vs test | accuracy | batch 1 s | batch {n} s | speedup {n} | speedup 1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    f = result["floors"]
    u = f.get("uncached", {})
    if u:
        lines.append(f"| uncached (reference) | | 1.00 | | | 0 | {_fmt(u.get('fid_vs_test'))} | {_fmt(u.get('accuracy'), 3)} | "
                     f"{_fmt(u.get('batch1_s'), 3)} | {_fmt(u.get('full_batch_s'), 3)} | 1.00 | 1.00 |")
    for key, name in (("rerun", "floor: uncached rerun"), ("disjoint", "floor: uncached, disjoint noise")):
        if key in f:
            q = f[key]
            lines.append(f"| {name} | | | {_fmt(q.get('psnr'))} | {_fmt(q.get('ssim'), 4)} | {_fmt(q.get('fid_vs_uncached'))} | "
                         f"{_fmt(q.get('fid_vs_test'))} | {_fmt(q.get('accuracy'), 3)} | | | | |")
    order: List[str] = []
    for r in result["rows"]:
        if r["system"] not in order:
            order.append(r["system"])
    for sysname in order:
        rs = [r for r in result["rows"] if r["system"] == sysname]
        rs.sort(key=lambda r: -(as_float(r.get("computed_fraction")) or 0.0))
        for r in rs:
            if r.get("error") or r.get("skipped"):
                lines.append(f"| {sysname} | {r['config']} | {'error: ' + r['error'][:80] if r.get('error') else 'skipped'} "
                             "| | | | | | | | | |")
                continue
            leak = "" if r.get("leak", {}).get("ok", True) else " (LEAK)"
            lines.append(
                f"| {sysname} | {r['config']}{leak} | {_fmt(r.get('computed_fraction'))} | {_fmt(r.get('psnr'))} | "
                f"{_fmt(r.get('ssim'), 4)} | {_fmt(r.get('fid_vs_uncached'))} | {_fmt(r.get('fid_vs_test'))} | "
                f"{_fmt(r.get('accuracy'), 3)} | {_fmt(r.get('batch1_s'), 3)} | {_fmt(r.get('full_batch_s'), 3)} | "
                f"{_fmt(r.get('speedup_full_batch'))} | {_fmt(r.get('speedup_batch1'))} |")  # fmt: skip
    return "\n".join(lines)


def pareto(rows: List[Dict[str, Any]], x: str) -> List[Dict[str, Any]]:
    """Rows not beaten by another row with x <= and PSNR >= (one strictly)."""
    pts = [r for r in rows if as_float(r.get(x)) is not None and not r.get("compiled")]
    front = []
    for r in pts:
        rx, rp = as_float(r[x]), as_float(r["psnr"])
        if not any(as_float(o[x]) <= rx and as_float(o["psnr"]) >= rp and (as_float(o[x]) < rx or as_float(o["psnr"]) > rp)
                   for o in pts if o is not r):
            front.append(r)
    return sorted(front, key=lambda r: as_float(r[x]))


COMPILED_SUFFIXES = (" compiled + CUDA graphs", " + torch.compile")


def base_curve(r: Dict[str, Any]) -> str:
    """The eager curve a compiled row is a variant of (its own name for an eager row)."""
    for suffix in COMPILED_SUFFIXES:
        if r["system"].endswith(suffix):
            return r["system"][: -len(suffix)]
    return r["system"]


def match_peers(rows: List[Dict[str, Any]], eager_only: bool,
                x: str = "full_batch_s") -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(unmatched, peers): a peer config (its fastest row by ``x``, or its eager row with ``eager_only``) is matched
    by a dit_fx row at most 2% slower by ``x`` with PSNR >= and feature-FID <= (any dit_fx row, or eager ones)."""
    keep = [r for r in rows if not (eager_only and r.get("compiled")) and as_float(r.get(x)) is not None]
    mine = [r for r in keep if r["family"] == "dit_fx"]
    fastest: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for r in keep:
        if r["family"] in ("cache-dit", "diffusers"):
            key = (base_curve(r), r["config"])
            if key not in fastest or as_float(r[x]) < as_float(fastest[key][x]):
                fastest[key] = r
    peers = list(fastest.values())
    unmatched = [p for p in peers if not any(
        as_float(m[x]) <= as_float(p[x]) * 1.02 and as_float(m["psnr"]) >= as_float(p["psnr"])
        and (p.get("fid_vs_uncached") is None or as_float(m.get("fid_vs_uncached")) <= as_float(p["fid_vs_uncached"]))
        for m in mine)]
    return unmatched, peers


def interpolate(points: Sequence[Tuple[float, float]], x: float) -> Optional[float]:
    """``y`` at ``x`` on the polyline through ``points`` (sorted by x); None outside their range."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def adaptive_vs_static(rows: List[Dict[str, Any]]) -> str:
    """Does a runtime decision pay over the calibrated static masks? Each adaptive dit_fx row (F1B0 threshold,
    calibrated mask with the dynamic policy) against the calibrated masks' PSNR interpolated at its computed fraction."""
    static = sorted((r["computed_fraction"], as_float(r["psnr"])) for r in rows if r["system"] == "dit_fx calibrated mask")
    if len(static) < 2:
        return ""
    parts = []
    for curve in ("dit_fx DBCache F1B0", CAL_DYNAMIC):
        for r in sorted((r for r in rows if r["system"] == curve), key=lambda r: r["computed_fraction"]):
            ref = interpolate(static, r["computed_fraction"])
            if ref is not None:
                parts.append(f"{curve} {r['config']} (computed {_fmt(r['computed_fraction'])}): "
                             f"{as_float(r['psnr']) - ref:+.2f} dB")
    return ("- **Adaptive vs the calibrated static masks** (PSNR minus the static masks' PSNR interpolated at the same "
            "computed fraction): " + "; ".join(parts) + ".") if parts else ""


def guidance(result) -> str:
    """Threshold guidance and the front, derived from the rows."""
    rows = good_rows(result)
    out: List[str] = []
    for fn, bn in FN_BN:
        rs = sorted((r for r in rows if r["system"] == f"dit_fx DBCache F{fn}B{bn}"), key=lambda r: r["params"]["threshold"])
        if not rs:
            continue
        parts = []
        for goal in PSNR_GOALS:
            ok = [r for r in rs if as_float(r["psnr"]) >= goal]
            if ok:
                r = ok[-1]
                parts.append(f"PSNR >= {goal:g} dB up to threshold {r['params']['threshold']:g} (computed {_fmt(r['computed_fraction'])}, "
                             f"FID vs uncached {_fmt(r.get('fid_vs_uncached'))}, x{_fmt(r.get('speedup_full_batch'))} at batch "
                             f"{result['setup']['eval_batch']})")
            else:
                parts.append(f"no threshold tried keeps PSNR >= {goal:g} dB")
        out.append(f"- **F{fn}B{bn}**: " + "; ".join(parts) + ".")
    cal = {r["params"]["computed_steps"]: r for r in rows if r["system"] == "dit_fx calibrated mask"}
    uni = {r["params"]["computed_steps"]: r for r in rows if r["system"] == "dit_fx uniform mask"}
    both = sorted(set(cal) & set(uni))
    if both:
        cals = result.get("calibrations", {})

        def cal_note(k):
            c = cals.get(f"computed_{k}", {})
            if "mask" not in c:
                return ""
            same = c["mask"] == uni[k].get("params", {}).get("mask")
            return (f" (`{''.join(map(str, c['mask']))}`" + (", the uniform mask" if same else "")
                    + (f", predicted {c['gain_db']:+.2f} dB" if c.get("gain_db") is not None else "") + ")")

        out.append(f"- **Calibrated vs uniform masks** (same computed steps, static policy, `dit_fx.calibrate` on "
                   f"{result['setup'].get('cal_samples')} calibration samples): " + "; ".join(
            f"{k}/{result['setup']['steps']}: {_fmt(cal[k]['psnr'])} vs {_fmt(uni[k]['psnr'])} dB{cal_note(k)}"
            for k in both) + ".")
    adaptive = adaptive_vs_static(rows)
    if adaptive:
        out.append(adaptive)
    for x, what in (("full_batch_s", f"batch {result['setup']['eval_batch']} latency"), ("batch1_s", "batch 1 latency"),
                    ("computed_fraction", "computed fraction")):
        front = pareto(rows, x)
        if front:
            out.append(f"- **Front by {what}** (PSNR, no config both faster and better): " + ", ".join(
                f"{r['system']} {r['config']} ({_fmt(r[x], 3)}, {_fmt(r['psnr'])} dB)" for r in front) + ".")
    # The target: every peer config is matched by a dit_fx config at least as fast and at least as good,
    # once with eager rows only, once with each config at its fastest measured lowering (compiled rows too).
    n = result["setup"]["eval_batch"]
    for label, eager_only, x in (("eager", True, "full_batch_s"), ("each config at its fastest lowering", False, "full_batch_s"),
                                 ("eager", True, "batch1_s"), ("each config at its fastest lowering", False, "batch1_s")):
        unmatched, peers = match_peers(rows, eager_only, x)
        if peers:
            out.append(f"- **dit_fx vs peers** ({label}, batch {n if x == 'full_batch_s' else 1}): {len(peers) - len(unmatched)} of "
                       f"{len(peers)} peer configs have a dit_fx config at most 2% slower with PSNR and feature-FID at least "
                       "as good" + (": unmatched " + ", ".join(f"{p['system']} {p['config']}" for p in unmatched)
                                    if unmatched else "") + ".")
    return "\n".join(out)


def forecast_table(result) -> str:
    """diffusers' TaylorSeer lite against the dit_fx ``fn_blocks=0`` rows on its schedules, eager and compiled."""
    rows = good_rows(result)
    lines = ["| schedule | system | lowering | PSNR dB | FID vs uncached | batch 1 s | batch {n} s |".format(
        n=result["setup"]["eval_batch"]), "|---|---|---|---:|---:|---:|---:|"]
    found = False
    for interval in LITE_INTERVALS:
        for r in rows:
            lite = r["system"].startswith("diffusers TaylorSeer lite") and r["config"] == f"interval {interval}"
            mine = r["system"].startswith("dit_fx F0B0 mask") and r["config"].startswith(f"interval {interval} (")
            if lite or mine:
                found = True
                lines.append(f"| interval {interval} | {base_curve(r)} | {'compiled' if r.get('compiled') else 'eager'} | "
                             f"{_fmt(r.get('psnr'))} | {_fmt(r.get('fid_vs_uncached'), 4)} | {_fmt(r.get('batch1_s'), 3)} | "
                             f"{_fmt(r.get('full_batch_s'), 3)} |")
    return "\n".join(lines) if found else ""


DOC_HEAD = """# Quality against latency on a trained model

Random weights say nothing about image quality, so these numbers come from the small trained
model that ships with dit_fx ([fashion_model.md](fashion_model.md)): a class-conditional
FLUX-architecture transformer (2 double + 10 single blocks) on Fashion-MNIST. Every system runs
the same sampler (`fashion.sample`: {steps} Euler steps on FLUX's shifted schedule, batched
classifier-free guidance {guidance}) from the same initial noise on {n} samples (10 classes x
{seeds} noise seed(s)); the reference is the uncached run. Script:
[`benchmarks/quality.py`](../benchmarks/quality.py) (its docstring says what every system and
column is); file: `{out}`; this page is written by the script ({command}).

Run: {env}; {dtype}{tf32}; `{weights}` weights; warm-up {warmup} steps for every DBCache/DBPrune
config; thresholds {thr_note}.

Columns: *computed* = share of the transformer calls that ran the middle blocks (dit_fx: its
summary; peers: hooks on a middle block; DBPrune: middle-block executions); *PSNR/SSIM* of the
final images against the uncached images of the same noise; *FID* = Frechet distance of the
shipped classifier's 128-d features (against the uncached images, and against the 10k test
images); *accuracy* = the classifier's agreement with the requested class; latency = wall seconds
per generation, eager, not counting the first generation at that shape (dit_fx captures in it;
batch 1: median of {reps}); speedups against the uncached row. Floors: the uncached run repeated, and an uncached run on disjoint noise (its
FID against the reference is the FID floor at this set size; its PSNR is that of unrelated
images).
"""


def _repo_path(path: str) -> str:
    """``path`` relative to the repository; a file written outside it (a device's output folder) is named where
    results are committed, ``benchmarks/results/<name>``."""
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    return os.path.relpath(os.path.join(RESULTS, os.path.basename(path)), REPO_ROOT) if rel.startswith("..") else rel


def write_doc(result, path: str, plot: Optional[str]) -> str:
    s, env = result["setup"], result["environment"]
    env_text = f"{env.get('gpu') or env.get('cpu')}, torch {env.get('torch')}, diffusers {env.get('diffusers')}, cache-dit {env.get('cache_dit')}"
    th = result["thresholds"].get("dbcache", {})
    thr_note = (f"{th.get('chosen')} " + ("(given)" if th.get("given") else
                f"(picked by a sweep on the calibration set for computed fractions {th.get('targets')})")) if th else "n/a"
    quick = result["args"].get("quick")
    text = DOC_HEAD.format(steps=s["steps"], guidance=s["guidance"], n=s["eval_batch"], seeds=s["eval_seeds"],
                           out=_repo_path(result["args"]["out"]), env=env_text, dtype=s["dtype"],
                           tf32=" (TF32)" if s.get("tf32") else "", weights=s["weights"], warmup=s["warmup"],
                           thr_note=thr_note, reps=result["args"]["reps"],
                           command=f"`{result['command']}`" if result.get("command") else "its command line was not recorded")  # fmt: skip
    if quick:
        text += ("\n**A CPU smoke run (`--quick`)**: one sample per class, the quick subset of configs, CPU "
                 "latencies on a shared 2-core VM. The GPU run (`python benchmarks/quality.py` on an H200) replaces "
                 "this page.\n")
    if plot and os.path.isfile(plot) and not os.path.relpath(os.path.abspath(plot), REPO_ROOT).startswith(".."):  # only a plot inside the repo
        text += f"\n![PSNR against computed fraction and latency]({os.path.relpath(plot, os.path.dirname(os.path.abspath(path)))})\n"
    text += "\n## Threshold guidance and the front\n\n" + (guidance(result) or "(no rows)") + "\n"
    text += ("\nFor a trained model of your own: read the diffs your model sees (`dit_fx.summary(model, details=True)`), "
             "start from the threshold above for your Fn/Bn, and compare images at a few thresholds; "
             "a fixed steps mask (static policy) needs no threshold at all: compare it with a uniform mask of the same "
             "count on your model, as the masks rows here do.\n")
    ft = forecast_table(result)
    if ft:
        text += ("\n## No block on cached steps, against diffusers' TaylorSeer lite\n\nOn lite's own schedules "
                 "(`lite_schedule`); dit_fx with `fn_blocks=0` and a calibrator; TaylorSeer o1 on the outputs is lite "
                 "itself (`tests/test_fn_zero.py`). Compiled: dit_fx compiled + CUDA graphs, lite under `torch.compile` "
                 "(its hooks break the graph, so no CUDA graphs). Why dit_fx is a little slower at large batch: "
                 "[benchmarks.md](benchmarks.md#quality-against-latency-on-the-trained-model-h200).\n\n" + ft + "\n")
    text += "\n## All configs\n\n" + markdown_table(result) + "\n"
    skipped = result.get("skipped_groups", []) + [f"{r['system']} {r['config']}" for r in result["rows"] if r.get("skipped")]
    if skipped:
        text += "\nNot measured (the run's budget was spent; `--resume` runs them): " + ", ".join(skipped) + "\n"
    errs = [r for r in result["rows"] if r.get("error")]
    if errs:
        text += "\nErrors: " + "; ".join(f"{r['system']} {r['config']}: {r['error'][:160]}" for r in errs) + "\n"
    leaks = [r for r in result["rows"] if not r.get("leak", {}).get("ok", True)]
    text += "\nLeak check (the uncached batch-1 output again after every disable): " + (
        "every config passed.\n" if not leaks else "FAILED after " + ", ".join(f"{r['system']} {r['config']}" for r in leaks) + "\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return text


def plot(result, path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plot")
        return None
    rows = good_rows(result)
    curves: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        curves.setdefault(r["system"], []).append(r)
    n = result["setup"]["eval_batch"]
    panels = [("computed_fraction", "computed fraction"), ("full_batch_s", f"seconds per generation, batch {n}"),
              ("batch1_s", "seconds per generation, batch 1")]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5))
    cmap = plt.get_cmap("tab20")
    styles = {"dit_fx": "-", "cache-dit": "--", "diffusers": ":", "uncached": "-."}
    u = result["floors"].get("uncached", {})
    disjoint = as_float(result["floors"].get("disjoint", {}).get("psnr"))
    for ax, (key, label) in zip(axes, panels):
        for i, (name, rs) in enumerate(curves.items()):
            pts = sorted((as_float(r[key]), as_float(r["psnr"])) for r in rs if as_float(r.get(key)) is not None)
            pts = [(x, y if not math.isinf(y) else 60.0) for x, y in pts]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(rs[0]["family"], "-"), marker="o", ms=4,
                        color=cmap(i % 20), label=name)
        if key != "computed_fraction" and as_float(u.get(key)) is not None:
            ax.axvline(as_float(u[key]), color="k", lw=0.8, ls="-.", label="uncached")
        if disjoint is not None:
            ax.axhline(disjoint, color="grey", lw=0.8, ls=":", label="unrelated images (floor)")
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR vs uncached (dB)")
        ax.grid(alpha=0.3)
    axes[0].set_title("quality against compute")
    axes[1].set_title(f"quality against latency (eager, batch {n})")
    axes[2].set_title("quality against latency (eager, batch 1)")
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = axes[1].get_legend_handles_labels()
    for h, lab in zip(h2, l2):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    env = result["environment"]
    fig.suptitle(f"dit_fx and peers on the trained Fashion-MNIST FLUX model ({result['setup']['weights']} weights), "
                 f"{result['setup']['steps']} steps, CFG {result['setup']['guidance']}, {env.get('gpu') or env.get('cpu')}")
    fig.tight_layout(rect=(0, 0.16, 1, 0.96))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(result: Dict[str, Any], plot_path: Optional[str], doc: Optional[str]) -> Optional[str]:
    """Plot, table and guidance of a result (printed; the doc written when given)."""
    png = plot(result, plot_path) if plot_path else None
    print("\n" + markdown_table(result) + "\n")
    print(guidance(result) + "\n")
    if doc:
        write_doc(result, doc, png)
        log(f"report written to {doc}")
    return png


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.report:  # no runs: the plot and report of an existing JSON
        import json

        with open(args.report) as f:
            result = json.load(f)
        plot_path = args.plot_given or os.path.splitext(args.report)[0] + ".png"
        report(result, plot_path, args.doc if args.doc_given else None)
        return result
    bench = Bench(args)
    bench.result["command"] = "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    log(f"quality benchmark: groups {args.groups}; out {args.out}")
    try:
        bench.main()
    finally:
        result = bench.result
        bench.save()
        result["plot"] = report(result, args.plot, args.doc)
        result["doc"] = args.doc
        bench.save()
        log(f"JSON {args.out}; plot {result['plot']}; {bench.elapsed():.0f} s")
    return result


if __name__ == "__main__":
    main()
