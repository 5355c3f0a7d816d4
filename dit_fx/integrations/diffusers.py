"""Every change dit_fx makes to a user's diffusers objects, behind one installer that ``disable`` undoes.

On a transformer (``install_model``): its ``forward`` slot (``_old_forward`` under an accelerate
hook, so offloading keeps running around the optimized forward), its ``cache_context`` (diffusers
pipelines name CFG branches with ``transformer.cache_context("uncond")``: dit_fx is told the
branch too), each block's ``forward`` (routed through one traced region per block class, see
``frontend/block_tracing.py``), and the ``forward`` of data-dependent modules inside blocks (one
op while traced, see ``frontend/leaf_modules.py``). On a pipeline (``install_pipeline``): its scheduler *instance's*
``set_timesteps`` (a pipeline sets timesteps once per call, so each ``pipe(...)`` starts a fresh
generation; no class is patched). Each patch is an instance attribute whose previous value is kept;
``Installation.undo`` restores exactly that, and leaves alone an attribute someone replaced since.

Pipelines: ``optimize(pipe, cfg)`` optimizes ``pipe.transformer`` (and ``pipe.transformer_2``,
Wan 2.2's second expert). Configs: one for every transformer, or ``{"transformer": cfg_a,
"transformer_2": cfg_b}``.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch

from ..frontend.block_tracing import Marks, mark_blocks, unmark_blocks
from ..frontend.leaf_modules import leaf_patches

TRANSFORMER_COMPONENTS = ("transformer", "transformer_2")
_MISSING = object()


@dataclass
class Patch:
    owner_ref: Any  # weak references to the patched object and to what was installed on it:
    attr: str  # a patch never keeps either alive (the installed forward refers to the model)
    previous: Any  # the owner's own attribute before (``_MISSING``: none, the class's was used)
    installed_ref: Any

    def undo(self) -> None:
        owner, installed = self.owner_ref(), self.installed_ref()
        if owner is None or installed is None or owner.__dict__.get(self.attr) is not installed:
            return  # gone, or replaced by someone else since: theirs stays
        if self.previous is _MISSING:
            delattr(owner, self.attr)
        else:
            setattr(owner, self.attr, self.previous)


@dataclass
class Installation:
    """The patches of one object, undone in reverse order."""

    patches: List[Patch] = field(default_factory=list)
    block_marks: Marks = field(default_factory=list)

    def set(self, owner: Any, attr: str, value: Any) -> None:
        self.patches.append(Patch(weakref.ref(owner), attr, owner.__dict__.get(attr, _MISSING), weakref.ref(value)))
        setattr(owner, attr, value)

    def unmark_blocks(self) -> None:
        """Blocks trace flat from now on (a block could not be traced as a region)."""
        unmark_blocks(self.block_marks)

    def undo(self) -> None:
        self.unmark_blocks()
        for patch in reversed(self.patches):
            patch.undo()
        self.patches.clear()


def forward_slot(model: torch.nn.Module) -> str:
    """accelerate's hooks (offloading, device maps) replace ``forward`` and call ``_old_forward``:
    take the inner slot so the hook keeps running around the optimized forward."""
    return "_old_forward" if "_old_forward" in model.__dict__ and hasattr(model, "_hf_hook") else "forward"


def hooked_forward(model: torch.nn.Module) -> Optional[Callable]:
    """The forward someone already installed on the instance (diffusers' ``HookRegistry``: the
    context-parallel split/gather hooks of ``enable_parallelism``, other hooks), which the
    optimized forward must run inside the capture rather than bypass. None under accelerate's
    hooks (they call the ``_old_forward`` slot dit_fx takes) or when there is none."""
    if forward_slot(model) != "forward":
        return None
    inner = model.__dict__.get("forward")
    return inner if callable(inner) and not getattr(getattr(inner, "__func__", None), "__dit_fx__", False) else None


def parallel_group(model: torch.nn.Module) -> Any:
    """The process group over which a model parallelized with diffusers' ``enable_parallelism``
    splits its sequence (its context-parallel mesh), or None."""
    config = getattr(model, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    mesh = getattr(cp, "_flattened_mesh", None) or getattr(cp, "_mesh", None)
    if mesh is None:
        return None
    try:
        return mesh.get_group()
    except Exception:  # noqa: BLE001 - a mesh of several dims: the flattened one is what shards
        return None


def install_model(model: torch.nn.Module, forward: Callable, branch_named: Callable[[str], Any]) -> Installation:
    """Route ``model``'s forward to ``forward``; blocks through their class's traced region;
    ``model.cache_context(name)`` also enters ``branch_named(name)`` (a context manager)."""
    inst = Installation()
    inst.block_marks = mark_blocks(model)  # Dynamo traces each block class once
    for module, leaf_forward in leaf_patches(model):  # data-dependent modules: one op each while traced
        inst.set(module, "forward", leaf_forward)
    inst.set(model, forward_slot(model), forward)
    if callable(getattr(model, "cache_context", None)):
        inst.set(model, "cache_context", _naming_cache_context(model.cache_context, branch_named))
    return inst


def _naming_cache_context(original: Callable, branch_named: Callable[[str], Any]) -> Callable:
    @functools.wraps(original)
    @contextlib.contextmanager
    def cache_context(name, *args, **kwargs):
        with branch_named(name), original(name, *args, **kwargs):
            yield

    return cache_context


def install_pipeline(pipe: Any, on_new_generation: Callable[[], None],
                     on_steps: Optional[Callable[[Optional[int]], None]] = None) -> Installation:
    """Make each ``pipe(...)`` call start a new generation (its scheduler's ``set_timesteps``);
    ``on_steps`` then gets the call's step count (the scheduler's ``num_inference_steps``)."""
    inst = Installation()
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None or not hasattr(scheduler, "set_timesteps"):
        return inst  # timestep detection still finds each new generation
    inst.set(scheduler, "set_timesteps", _SetTimesteps(scheduler, on_new_generation, on_steps))
    return inst


class _SetTimesteps:
    """The scheduler's ``set_timesteps``, starting a new generation first (an instance attribute).

    A deep copy of the scheduler (the usual way to give a thread its own) gets its class's own
    ``set_timesteps`` instead: a plain wrapper would be shared by the copy and set the original's
    timesteps, leaving the copy on a stale schedule."""

    def __init__(self, scheduler: Any, on_new_generation: Callable[[], None],
                 on_steps: Optional[Callable[[Optional[int]], None]] = None):
        self.original = scheduler.set_timesteps
        self.on_new_generation, self.on_steps = on_new_generation, on_steps
        self.owner = weakref.ref(scheduler)
        functools.update_wrapper(self, self.original)

    def __call__(self, *args, **kwargs):
        self.on_new_generation()
        out = self.original(*args, **kwargs)
        if self.on_steps is not None:  # diffusers' schedulers record the count, whether steps or sigmas were given
            self.on_steps(getattr(self.owner(), "num_inference_steps", None))
        return out

    def __deepcopy__(self, memo):
        copied = memo.get(id(self.owner()))  # copy.deepcopy registers the new scheduler before its attributes
        if copied is None:  # this wrapper copied on its own: keep it
            return self
        return type(copied).set_timesteps.__get__(copied)


_PIPELINES: "weakref.WeakKeyDictionary[Any, Installation]" = weakref.WeakKeyDictionary()


def hook_pipeline(pipe: Any, on_new_generation: Callable[[], None],
                  on_steps: Optional[Callable[[Optional[int]], None]] = None) -> None:
    unhook_pipeline(pipe)
    _PIPELINES[pipe] = install_pipeline(pipe, on_new_generation, on_steps)


def unhook_pipeline(pipe: Any) -> None:
    inst = _PIPELINES.pop(pipe, None)
    if inst is not None:
        inst.undo()


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


def per_component(pipe: Any, fn, *args, **kwargs) -> Dict[str, Any]:
    return {name: fn(module, *args, **kwargs) for name, module in transformer_components(pipe).items()}
