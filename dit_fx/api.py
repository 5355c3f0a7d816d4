"""Public entry points: optimize, disable, reset, summary, dump."""

from __future__ import annotations

import contextlib
import os
import functools
import logging
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch

from .block_tracing import Marks, mark_blocks, unmark_blocks
from .backend import Session, forget_session, session_of
from .config import AnyConfig, BlockListConfigs, DBCacheConfig, coerce_config
from .fast_path import DirectCall, OutputTemplate, call_key, make_binder, module_epoch
from .patterns.regions import module_block_lists
from .pipelines import hook_scheduler, is_pipeline, per_component, split_configs, transformer_components, unhook_scheduler

log = logging.getLogger(__name__)
_MISSING = object()
_RECOMPILE_LIMIT = getattr(torch._dynamo.exc, "FailOnRecompileLimitHit", ())


@dataclass
class _Optimized:
    """What ``optimize`` changed on a module, so ``disable`` can put it back exactly."""

    session: Session
    instance_forward: Any  # the module's own forward attribute (in ``slot``) before, or _MISSING
    compiled: Callable
    slot: str = "forward"  # "_old_forward" under an accelerate hook
    fallback_reason: Optional[str] = None
    instance_cache_context: Any = _MISSING  # the module's own ``cache_context`` attribute before
    direct: Dict[Any, DirectCall] = field(default_factory=dict)  # call key -> direct glue call
    block_marks: Marks = field(default_factory=list)  # blocks routed through block_tracing's regions
    epoch: int = -1
    warned_bypass: bool = False


_OPTIMIZED: "weakref.WeakKeyDictionary[torch.nn.Module, _Optimized]" = weakref.WeakKeyDictionary()


def optimize(
    model: torch.nn.Module,
    config: Union[DBCacheConfig, BlockListConfigs, Mapping[str, Any], None] = None,
    *,
    compile: bool = False,
    cuda_graphs: bool = False,
    inductor_options: Optional[Mapping[str, Any]] = None,
) -> torch.nn.Module:
    """Make ``model`` (a DiT transformer) skip its middle blocks on steps where DBCache allows.

    Returns the same module object with ``forward`` replaced (and, where Dynamo can reuse a traced
    region, each block's ``forward`` routed through one region per block class so the capture
    traces each class once; ``disable`` restores both). The forward is captured by
    TorchDynamo on the first call (and again per new input shape), rewritten into head / body /
    tail around a cache decision, and run as Python (``compile=False``) or with the partitions
    compiled by Inductor (``compile=True``: one compile per distinct block, like regional
    compilation). ``cuda_graphs=True`` replays head, body and tail as CUDA graphs (CUDA inputs
    only): the cache decision stays between graphs, so cached and computed steps both replay.
    ``inductor_options`` (with ``compile=True``): Inductor config values for every region compile,
    as torch.compile's ``options`` (e.g. ``{"max_autotune": True}``: autotuned once per distinct
    block, not once per block).
    Anything the rewrite cannot handle runs the original forward with one warning saying why.

    ``config``: a ``DBCacheConfig`` (or a dict of its fields) treats all block lists as one stack;
    a dict of configs by block-list name (``{"transformer_blocks": cfg_a,
    "single_transformer_blocks": cfg_b}``) gives each named list its own cache context, Fn/Bn and
    statistics (lists not named then run every step).
    """
    if is_pipeline(model):
        return _optimize_pipeline(model, config, compile, cuda_graphs, inductor_options)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"optimize expects a transformer nn.Module or a diffusers pipeline, got {type(model).__name__}")
    for name, flag in (("compile", compile), ("cuda_graphs", cuda_graphs)):
        if not isinstance(flag, bool):
            raise ValueError(f"optimize({name}=...) must be a bool, got {flag!r}")
    cfg = coerce_config(config)
    _check_block_counts(model, cfg)
    session = Session(cfg, lowering="inductor" if compile else "eager", cuda_graphs=cuda_graphs, inductor_options=inductor_options)
    if model in _OPTIMIZED:
        disable(model)
    original = type(model).forward.__get__(model)
    compiled = torch.compile(original, backend=session, fullgraph=True, dynamic=False)
    # accelerate's hooks (offloading, device maps) replace ``forward`` and call ``_old_forward``:
    # take the inner slot so the hook keeps running around the optimized forward.
    slot = "_old_forward" if "_old_forward" in model.__dict__ and hasattr(model, "_hf_hook") else "forward"
    state = _Optimized(session, model.__dict__.get(slot, _MISSING), compiled, slot=slot)
    state.block_marks = mark_blocks(model)  # Dynamo traces each block class once
    _OPTIMIZED[model] = state
    setattr(model, slot, _make_forward(weakref.ref(model), original, state))
    if callable(getattr(model, "cache_context", None)):
        state.instance_cache_context = model.__dict__.get("cache_context", _MISSING)
        model.cache_context = _naming_cache_context(model.cache_context, session.tracker)
    return model


def _check_block_counts(model: torch.nn.Module, cfg: AnyConfig) -> None:
    lists = module_block_lists(model)
    if not lists:
        return  # found at capture time, or refused there with a warning
    if isinstance(cfg, DBCacheConfig):
        cfg.check_block_count(sum(lists.values()))
        return
    for name, list_cfg in cfg.lists:
        if name not in lists:
            raise ValueError(f"config names block list {name!r}, which {type(model).__name__} lacks (it has {sorted(lists)})")
        list_cfg.check_block_count(lists[name])


def _naming_cache_context(original: Callable, tracker) -> Callable:
    """``transformer.cache_context("uncond")`` as diffusers pipelines use it: also tell dit_fx
    which CFG branch the calls inside belong to, then do what diffusers does."""

    @functools.wraps(original)
    @contextlib.contextmanager
    def cache_context(name, *args, **kwargs):
        tracker.branch_hint = name
        try:
            with original(name, *args, **kwargs):
                yield
        finally:
            tracker.branch_hint = None

    return cache_context


def _optimize_pipeline(pipe: Any, config: Any, compile: bool, cuda_graphs: bool, inductor_options: Any) -> Any:
    """Optimize every transformer component; each ``pipe(...)`` call starts a new generation."""
    configs = split_configs(pipe, config)
    for name, module in transformer_components(pipe).items():
        optimize(module, configs[name], compile=compile, cuda_graphs=cuda_graphs, inductor_options=inductor_options)
    pipe_ref = weakref.ref(pipe)

    def reset_all() -> None:
        live = pipe_ref()
        if live is not None:
            for module in transformer_components(live).values():
                if module in _OPTIMIZED:
                    _OPTIMIZED[module].session.tracker.reset()

    unhook_scheduler(pipe)
    hook_scheduler(pipe, reset_all)
    return pipe


def _make_forward(model_ref, original: Callable, state: _Optimized) -> Callable:
    @functools.wraps(original)
    def forward(*args, **kwargs):
        if state.fallback_reason is not None:
            return original(*args, **kwargs)
        model = model_ref()
        key = call_key(model, args, kwargs)
        if key is not None and state.epoch == module_epoch():
            direct = state.direct.get(key)
            if direct is not None:
                return direct(model, args, kwargs)
        state.session.last_used = None
        try:
            out = state.compiled(*args, **kwargs)
        except _RECOMPILE_LIMIT:
            _warn_bypassed(state)  # this signature is not captured; others keep working
            return original(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as exc:
            if state.block_marks:
                # Some block cannot be traced as a region (side effects, input mutation): trace
                # the forward flat instead, which costs only trace time.
                log.debug("dit_fx: tracing blocks once failed, tracing flat", exc_info=True)
                unmark_blocks(state.block_marks)
                return forward(*args, **kwargs)
            # Capture failed: run the original. If that fails too, the input was the problem.
            out = original(*args, **kwargs)
            state.fallback_reason = f"could not capture the forward as one graph: {_first_line(exc)}"
            warnings.warn(
                f"dit_fx: running the model unmodified (no caching): {state.fallback_reason}",
                RuntimeWarning,
                stacklevel=2,
            )
            return out
        if state.session.last_used is None:
            _warn_bypassed(state)
        elif key is not None:
            _learn_direct_call(state, key, original, out)
        return out

    forward.__dit_fx__ = True  # type: ignore[attr-defined]
    return forward


def _warn_bypassed(state: _Optimized) -> None:
    """Dynamo ran the original frame without calling our backend (e.g. its recompile limit)."""
    if not state.warned_bypass:
        state.warned_bypass = True
        warnings.warn(
            "dit_fx: this call ran the model unmodified (no caching): TorchDynamo did not use the "
            "rewritten graph, most likely because torch._dynamo.config.recompile_limit was reached "
            "(all diffusers transformers share one forward code object). Raise the limit or call "
            "torch._dynamo.reset().",
            RuntimeWarning,
            stacklevel=3,
        )


def _learn_direct_call(state: _Optimized, key: Any, original: Callable, out: Any) -> None:
    """After a Dynamo call handled by a rewritten graph, remember how to call that graph directly."""
    record = state.session.last_used
    if record is None or record.activation_sources is None:
        return
    flat, record.last_flat_output = record.last_flat_output, None
    binder = make_binder(original, record.activation_sources)
    template = OutputTemplate.capture(out, flat) if flat is not None else None
    if binder is None or template is None:
        return
    if state.epoch != module_epoch():
        state.direct.clear()
        state.epoch = module_epoch()
    state.direct[key] = DirectCall(record.glue, binder, template)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def _session(model: torch.nn.Module) -> Session:
    state = _OPTIMIZED.get(model)
    if state is not None:
        return state.session
    session = session_of(model)
    if session is None:
        raise ValueError("model is not optimized by dit_fx (call dit_fx.optimize or torch.compile(backend='dit_fx'))")
    return session


def disable(model: torch.nn.Module) -> torch.nn.Module:
    """Restore the original forward exactly; the cache state is dropped. Pipelines: every transformer."""
    if is_pipeline(model):
        unhook_scheduler(model)
        for module in transformer_components(model).values():
            if module in _OPTIMIZED:
                disable(module)
        return model
    state = _OPTIMIZED.pop(model, None)
    if state is None:
        raise ValueError("model is not optimized by dit_fx.optimize")
    forget_session(state.session)
    unmark_blocks(state.block_marks)
    for attr, before in ((state.slot, state.instance_forward), ("cache_context", state.instance_cache_context)):
        if before is not _MISSING:
            setattr(model, attr, before)
        elif attr in model.__dict__:
            delattr(model, attr)
    return model


def reset(model: torch.nn.Module) -> None:
    """Start a new generation at the next call: cached residuals and statistics are cleared."""
    if is_pipeline(model):
        per_component(model, reset)
        return
    _session(model).tracker.reset()


@contextlib.contextmanager
def generation(model: torch.nn.Module, num_inference_steps: Optional[int] = None):
    """``with dit_fx.generation(model, num_inference_steps=None): ...`` runs one generation.

    Entering starts a new generation; inside, ``num_inference_steps`` (if given) overrides the
    config's; leaving makes the next call start a new one. Explicit control always wins over the
    timestep-based detection.
    """
    if num_inference_steps is not None and (
        isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1
    ):
        raise ValueError(f"num_inference_steps must be a positive int or None, got {num_inference_steps!r}")
    tracker = _session(model).tracker
    tracker.reset()
    tracker.num_steps_override = num_inference_steps
    try:
        yield
    finally:
        tracker.num_steps_override = None
        tracker.reset()


def summary(model: torch.nn.Module, details: bool = False):
    """Statistics of the current generation (a dict by component name for a pipeline).

    ``cached_steps`` / ``cfg_cached_steps`` per branch, ``executed_steps``, ``residual_diffs``;
    with ``details=True`` also ``details``: a markdown table of residual-diff percentiles per
    branch against the threshold, to help pick one. With one cache context per block list, a
    dict of those by block-list name.
    """
    if is_pipeline(model):
        return per_component(model, summary, details=details)
    session = _session(model)
    stats = session.stats()  # a fresh snapshot (copies of the lists and dicts)
    if details:
        from .report import residual_diff_table

        for name, one in stats.items() if isinstance(stats, dict) else [(None, stats)]:
            one.details = residual_diff_table(one, session.caches[name].config.residual_diff_threshold)
    return stats


def plan(model: torch.nn.Module):
    """The plan of the most recent capture (None before the first call); a dict for a pipeline,
    and a dict by block-list name with one cache context per list."""
    if is_pipeline(model):
        return per_component(model, plan)
    record = _session(model).last_record
    return record.plan if record else None


def dump(model: torch.nn.Module, directory: str) -> str:
    """Write plan.json, the captured graph and the glue/head/body/tail code to ``directory``
    (one sub-folder per transformer for a pipeline)."""
    from .dump_writer import write_dump

    if is_pipeline(model):
        for name, module in transformer_components(model).items():
            write_dump(_session(module), os.path.join(directory, name))
        return directory
    return write_dump(_session(model), directory)


def plot_timeline(model: torch.nn.Module, path: str) -> str:
    """PNG of the residual diff per step against the threshold, cached steps marked, per branch
    (one panel per transformer for a pipeline). Needs matplotlib (``pip install dit_fx[plot]``)."""
    from .report import plot_sessions

    if is_pipeline(model):
        sessions = {name: _session(module) for name, module in transformer_components(model).items()}
    else:
        sessions = {"transformer": _session(model)}
    return plot_sessions(sessions, path)
