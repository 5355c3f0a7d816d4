"""Run the reference cache-dit (1.5.x) DBCache on a bare transformer, for parity tests.

Conventions of cache-dit 1.5.3 as reported by ``run_cache_dit`` (steps are 0-based; one step
per transformer call unless ``enable_separate_cfg``):

* Warmup steps are ``range(0, max_warmup_steps, warmup_interval)``: always computed, no diff
  entry. With ``warmup_interval > 1`` the skipped warmup steps are ordinary steps.
* Other steps get a diff entry ``mean|R_prev - R_cur| / mean|R_prev|`` (R = image-stream
  residual of the first ``Fn`` blocks, ``R_prev`` from the last *computed* step: cached steps
  do not refresh it) and are cached iff ``diff < threshold``. No entry when there is no
  ``R_prev`` yet (``max_warmup_steps=0``, step 0), when ``max_cached_steps`` /
  ``max_continuous_cached_steps`` block caching (checked first), or when threshold <= 0.
  Special values: ``-1.0`` threshold >= 1 (always cache), ``-2.0`` shape mismatch.
* Computed steps are bit-identical to the plain model (cache-dit's Flux forward patch
  included) as long as ``Fn + Bn <= num_blocks``; cache-dit checks ``Fn`` and ``Bn`` only
  separately, and with overlap the shared blocks run twice on computed steps.
* Flux is cached as ONE list ``transformer_blocks + single_transformer_blocks`` (env
  ``CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS=1``, the default), so Fn/Bn count over both lists.
* Stats are published only after the call whose step index is ``num_inference_steps - 1``.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager, nullcontext

import torch

try:  # tests/ is on sys.path (conftest); fall back to the package-style import
    from tiny_models import output_tensor
except ImportError:  # pragma: no cover
    from tests.tiny_models import output_tensor

__all__ = ["run_cache_dit", "run_cache_dit_lists", "run_uncached", "make_block_adapter", "decision_margin"]

# Transformers cache-dit's registry does not match by class name when given a bare module
# (it keys SD3 on the pipeline name "StableDiffusion3"): (block attribute, ForwardPattern name).
_FALLBACK_ADAPTERS = {
    "SD3Transformer2DModel": ("transformer_blocks", "Pattern_1"),
}


@contextmanager
def _quiet_cache_dit(level: int = logging.ERROR):
    """Temporarily raise the level of cache-dit's (non-propagating) loggers."""
    loggers = [
        logging.getLogger(n)
        for n in list(logging.root.manager.loggerDict)
        if n == "cache_dit" or n.startswith("cache_dit.")
    ]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(level, lg.level))
    try:
        yield
    finally:
        for lg, lv in zip(loggers, saved):
            lg.setLevel(lv)


def make_block_adapter(model: torch.nn.Module):
    """What ``run_cache_dit`` hands to ``enable_cache``: the module itself when cache-dit's
    registry supports it, else a transformer-only ``BlockAdapter`` (SD3)."""
    import cache_dit

    if cache_dit.BlockAdapterRegister.is_supported(model):
        return model
    cls_name = type(model).__name__
    if cls_name not in _FALLBACK_ADAPTERS:
        raise ValueError(f"cache-dit has no adapter for {cls_name}")
    attr, pattern = _FALLBACK_ADAPTERS[cls_name]
    return cache_dit.BlockAdapter(
        transformer=model,
        blocks=getattr(model, attr),
        forward_pattern=getattr(cache_dit.ForwardPattern, pattern),
        check_forward_pattern=True,
        has_separate_cfg=False,
    )


def run_uncached(model: torch.nn.Module, inputs_per_step: list[dict]) -> list[torch.Tensor]:
    """Plain forward of ``model`` on each step's kwargs (no_grad); returns output tensors."""
    with torch.no_grad():
        return [output_tensor(model(**inp)).detach().clone() for inp in inputs_per_step]


def run_cache_dit(
    model: torch.nn.Module,
    inputs_per_step: list[dict],
    *,
    Fn: int,
    Bn: int,
    residual_diff_threshold: float,
    max_warmup_steps: int,
    warmup_interval: int = 1,
    max_cached_steps: int = -1,
    max_continuous_cached_steps: int = -1,
    enable_separate_cfg: bool = False,
    quiet: bool = True,
    calibrator_config=None,
    prune: bool = False,
    **cache_options,
) -> dict:
    """Run cache-dit DBCache on a deep copy of ``model`` over ``inputs_per_step``.

    Returns ``dict(outputs=[tensor per call], cached_steps=sorted 0-based step list,
    residual_diffs={step: float})`` (conventions in the module docstring); ``model`` itself
    is never patched. ``calibrator_config`` (e.g. ``cache_dit.TaylorSeerCalibratorConfig``) and
    further ``DBCacheConfig`` fields (``cache_options``) are passed through; ``prune=True`` runs
    its DBPrune instead and reports ``pruned_steps`` / ``pruned_blocks`` / ``block_diffs``. With ``enable_separate_cfg=True`` the list must alternate
    (cond, uncond) calls per step, ``num_inference_steps = len // 2``, steps count
    pipeline steps, and ``cfg_cached_steps`` / ``cfg_residual_diffs`` are added.
    """
    import cache_dit

    n_calls = len(inputs_per_step)
    if n_calls == 0:
        raise ValueError("inputs_per_step is empty")
    if enable_separate_cfg and n_calls % 2:
        raise ValueError("separate CFG needs (cond, uncond) pairs of calls")
    n_steps = n_calls // 2 if enable_separate_cfg else n_calls
    m = copy.deepcopy(model).eval()
    cfg = (cache_dit.DBPruneConfig if prune else cache_dit.DBCacheConfig)(
        Fn_compute_blocks=Fn,
        Bn_compute_blocks=Bn,
        residual_diff_threshold=residual_diff_threshold,
        max_warmup_steps=max_warmup_steps,
        warmup_interval=warmup_interval,
        max_cached_steps=max_cached_steps,
        max_continuous_cached_steps=max_continuous_cached_steps,
        # Explicit: the registry turns separate CFG on for Wan/QwenImage when left None.
        enable_separate_cfg=enable_separate_cfg,
        num_inference_steps=n_steps,
        **cache_options,  # steps_computation_mask, steps_computation_policy, ...
    )
    with _quiet_cache_dit() if quiet else nullcontext():
        cache_dit.enable_cache(make_block_adapter(m), cache_config=cfg, calibrator_config=calibrator_config)
        if hasattr(cache_dit, "refresh_context"):
            # A no-op on a fresh context; on a reused one cache-dit would only notice the
            # new run on its second call (the first call counts as step N of the old run).
            cache_dit.refresh_context(m, num_inference_steps=n_steps)
        outputs = run_uncached(m, inputs_per_step)
        stats = cache_dit.summary(m, logging=False)
    st = stats[0]
    if not st.cache_options or not hasattr(m, "_cached_steps"):
        raise RuntimeError("cache-dit published no stats (the last step was never reached)")
    if st.accumulated_executed_steps != n_steps:
        raise RuntimeError(f"cache-dit counted {st.accumulated_executed_steps} steps, expected {n_steps}")
    if prune:  # per step: the list of the guarded blocks' diffs, and blocks pruned per call
        return dict(
            outputs=outputs,
            pruned_steps=sorted(int(s) for s in st.pruned_steps),
            pruned_blocks=list(st.pruned_blocks),
            block_diffs={int(k): [float(x) for x in v] for k, v in st.residual_diffs.items()},
            pruned_ratio=st.pruned_ratio,
        )
    result = dict(
        outputs=outputs,
        cached_steps=sorted(int(s) for s in st.cached_steps),
        residual_diffs=_int_keys(st.residual_diffs),
    )
    if enable_separate_cfg:
        result["cfg_cached_steps"] = sorted(int(s) for s in st.cfg_cached_steps)
        result["cfg_residual_diffs"] = _int_keys(st.cfg_residual_diffs)
    return result


def run_cache_dit_lists(model: torch.nn.Module, inputs_per_step: list[dict], lists: dict, quiet: bool = True) -> dict:
    """cache-dit with one context per block list (its registry adapter lists them, e.g.
    HunyuanVideo) and a ``ParamsModifier`` per list: ``lists = {name: dict(Fn=, Bn=,
    residual_diff_threshold=, max_warmup_steps=)}`` in the model's block-list order.

    Returns ``dict(outputs=[...], lists={name: dict(cached_steps=..., residual_diffs=...)})``; one
    step per call (no separate CFG).
    """
    import cache_dit

    n_steps = len(inputs_per_step)

    def config(Fn, Bn, **rest):
        return cache_dit.DBCacheConfig(
            Fn_compute_blocks=Fn, Bn_compute_blocks=Bn, enable_separate_cfg=False, num_inference_steps=n_steps, **rest
        )

    configs = [config(**kw) for kw in lists.values()]
    m = copy.deepcopy(model).eval()
    with _quiet_cache_dit() if quiet else nullcontext():
        cache_dit.enable_cache(
            m, cache_config=configs[0], params_modifiers=[cache_dit.ParamsModifier(cache_config=c) for c in configs]
        )
        outputs = run_uncached(m, inputs_per_step)
        stats = cache_dit.summary(m, logging=False)
    found = {}
    for st in stats:  # its summary may repeat a context: the first entry per list is the live one
        name = str(st.cache_options.get("name", "")).rsplit("_", 1)[0]
        found.setdefault(name, st)
    missing = sorted(set(lists) - set(found))
    if missing:
        raise RuntimeError(f"cache-dit published no stats for {missing} (found {sorted(found)})")
    for name in lists:
        if found[name].accumulated_executed_steps != n_steps:
            raise RuntimeError(f"cache-dit counted {found[name].accumulated_executed_steps} steps for {name}")
    per_list = {
        name: dict(
            cached_steps=sorted(int(s) for s in found[name].cached_steps),
            residual_diffs=_int_keys(found[name].residual_diffs),
        )
        for name in lists
    }
    return dict(outputs=outputs, lists=per_list)


def decision_margin(residual_diffs: dict, threshold: float) -> float:
    """Smallest ``|diff - threshold|`` over the recorded diffs (inf if none): how close a
    cache decision came to flipping; parity tests should use thresholds with a clear margin."""
    return min((abs(float(v) - threshold) for v in residual_diffs.values()), default=float("inf"))


def _int_keys(d) -> dict:
    return {int(k): float(v) for k, v in sorted(dict(d).items(), key=lambda kv: int(kv[0]))}
