"""Whole diffusers pipelines: optimize every transformer component in one call.

``dit_fx.optimize(pipe, cfg)`` optimizes ``pipe.transformer`` (and ``pipe.transformer_2``, Wan 2.2's
second expert) and returns the same pipe. Each ``pipe(...)`` call starts a fresh generation: the
pipeline sets its scheduler's timesteps once per call, so the scheduler *instance's*
``set_timesteps`` is wrapped to reset the transformers' caches first (no class is patched; timestep
detection would find the new generation anyway, this makes it explicit). Everything else about the
pipeline (its components, configs, dtype, offloading, ``cache_context``) is left as it was.

Configs: one config for every transformer, or ``{"transformer": cfg_a, "transformer_2": cfg_b}``.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Mapping

import torch

TRANSFORMER_COMPONENTS = ("transformer", "transformer_2")
_MISSING = object()


def is_pipeline(obj: Any) -> bool:
    """A diffusers ``DiffusionPipeline`` (duck-typed: components dict, not an nn.Module)."""
    return not isinstance(obj, torch.nn.Module) and isinstance(getattr(obj, "components", None), dict)


def transformer_components(pipe: Any) -> Dict[str, torch.nn.Module]:
    found = {name: getattr(pipe, name, None) for name in TRANSFORMER_COMPONENTS}
    found = {name: module for name, module in found.items() if isinstance(module, torch.nn.Module)}
    if not found:
        raise ValueError(f"pipeline {type(pipe).__name__} has no transformer component ({TRANSFORMER_COMPONENTS})")
    return found


def split_configs(pipe: Any, config: Any) -> Dict[str, Any]:
    """One config per transformer component: shared, or a mapping by component name."""
    components = transformer_components(pipe)
    if isinstance(config, Mapping) and config and set(config) <= set(TRANSFORMER_COMPONENTS):
        missing = sorted(set(config) - set(components))
        if missing:
            raise ValueError(f"config names component(s) {missing} that pipeline {type(pipe).__name__} lacks")
        return {name: config.get(name) for name in components}
    return {name: config for name in components}


@dataclass
class _PipelineHook:
    scheduler: Any
    instance_set_timesteps: Any  # the scheduler's own attribute before, or _MISSING


_PIPELINES: "weakref.WeakKeyDictionary[Any, _PipelineHook]" = weakref.WeakKeyDictionary()


def hook_scheduler(pipe: Any, reset_all) -> None:
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None or not hasattr(scheduler, "set_timesteps"):
        return  # timestep detection still finds each new generation
    previous = scheduler.__dict__.get("set_timesteps", _MISSING)
    original = scheduler.set_timesteps

    @functools.wraps(original)
    def set_timesteps(*args, **kwargs):
        reset_all()
        return original(*args, **kwargs)

    scheduler.set_timesteps = set_timesteps
    _PIPELINES[pipe] = _PipelineHook(scheduler, previous)


def unhook_scheduler(pipe: Any) -> None:
    hook = _PIPELINES.pop(pipe, None)
    if hook is None:
        return
    if hook.instance_set_timesteps is _MISSING:
        del hook.scheduler.set_timesteps
    else:
        hook.scheduler.set_timesteps = hook.instance_set_timesteps


def per_component(pipe: Any, fn, *args, **kwargs) -> Dict[str, Any]:
    return {name: fn(module, *args, **kwargs) for name, module in transformer_components(pipe).items()}

