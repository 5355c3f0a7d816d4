"""Call the rewritten graph directly once Dynamo has captured it for an input signature.

Going through Dynamo on every step costs its guards plus marshalling every lifted parameter
(~1 ms per call for FLUX's 1156 parameters, measured), during which the GPU idles. After the
first call of an input signature, ``optimize`` calls the glue graph directly, keyed by:
tensor shapes/strides/dtypes/devices/requires_grad, non-tensor argument values, grad and
inference mode, autocast state and ``model.training``. Anything new goes through Dynamo again.

Registering a module, parameter or buffer on one of *a model's own* modules (adapters,
``load_state_dict(assign=True)``) bumps that model's ``Epoch`` and so invalidates its direct
entries; other models keep theirs. The registration hooks torch offers are process-wide, so they
are installed while at least one model is watched and removed when the last is unwatched.
"""

from __future__ import annotations

import inspect
import re
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.utils._pytree as pytree

from ..patterns.regions import parse_module_path


class Epoch:
    """A model's structure version: bumped when a module, parameter or buffer is registered on
    any of its modules."""

    __slots__ = ("value", "__weakref__")

    def __init__(self) -> None:
        self.value = 0


class _Watch:
    """Module -> the epochs of the watched models it belongs to; the process-wide registration
    hooks live only while something is watched."""

    def __init__(self) -> None:
        self.owners: "weakref.WeakKeyDictionary[torch.nn.Module, weakref.WeakSet]" = weakref.WeakKeyDictionary()
        self.epochs: "weakref.WeakSet[Epoch]" = weakref.WeakSet()
        self.handles: List[Any] = []
        self.lock = threading.Lock()

    def watch(self, model: torch.nn.Module) -> Epoch:
        epoch = Epoch()
        with self.lock:
            for module in model.modules():
                self.owners.setdefault(module, weakref.WeakSet()).add(epoch)
            self.epochs.add(epoch)
            if not self.handles:
                hooks = torch.nn.modules.module
                self.handles = [
                    hooks.register_module_parameter_registration_hook(self._parameter),
                    hooks.register_module_buffer_registration_hook(self._parameter),
                    hooks.register_module_module_registration_hook(self._module),
                ]
        return epoch

    def unwatch(self, epoch: Epoch) -> None:
        with self.lock:
            self.epochs.discard(epoch)
            for owners in list(self.owners.values()):
                owners.discard(epoch)
            if not len(self.epochs):
                for handle in self.handles:
                    handle.remove()
                self.handles = []

    def _bump(self, module: torch.nn.Module) -> Optional["weakref.WeakSet"]:
        # A forward that builds a container while Dynamo traces it (ConsisID slices a ModuleList:
        # ``self.layers[a:b]`` registers modules into a new one) would otherwise put this bump in
        # the graph: replayed on every call, and guarded on, it recompiled the model every call.
        if torch.compiler.is_compiling():
            return None
        owners = self.owners.get(module)
        if owners:
            for epoch in list(owners):
                epoch.value += 1
        return owners

    def _parameter(self, module, name, value):
        self._bump(module)

    def _module(self, module, name, child):
        owners = self._bump(module)
        if owners and isinstance(child, torch.nn.Module):  # a new submodule joins its model(s)
            for sub in child.modules():
                self.owners.setdefault(sub, weakref.WeakSet()).update(owners)


_WATCH = _Watch()
watch_model = _WATCH.watch
unwatch_model = _WATCH.unwatch


class Unkeyable(Exception):
    pass


def key_of(value: Any):
    if isinstance(value, torch.Tensor):
        return (torch.Tensor, value.shape, value.stride(), value.dtype, value.device, value.requires_grad)
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value), value)
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(key_of(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, key_of(v)) for k, v in value.items()))
    raise Unkeyable(type(value).__name__)


def call_key(model: torch.nn.Module, args: Sequence[Any], kwargs: Dict[str, Any]):
    """What must match for a direct call to be valid, or None if an argument cannot be keyed."""
    try:
        return (
            tuple(key_of(a) for a in args),
            tuple((k, key_of(v)) for k, v in kwargs.items()),
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            torch.is_autocast_enabled("cuda"),
            torch.is_autocast_enabled("cpu"),
            model.training,
        )
    except Unkeyable:
        return None


@dataclass(frozen=True)
class InputBinder:
    """How to fetch each activation input of the glue from a ``forward(*args, **kwargs)`` call."""

    signature: inspect.Signature
    getters: Tuple[Tuple[str, Tuple[str, ...]], ...]  # ("arg", (name,)) or ("self", attr path)
    varargs_only: bool  # forward(*args, **kwargs), as diffusers' wrappers are: no binding needed

    def __call__(self, model, args, kwargs) -> List[Any]:
        bound = {"args": args, "kwargs": kwargs} if self.varargs_only else None
        out = []
        for kind, path in self.getters:
            if kind == "self":
                obj = model
                for attr in path:
                    obj = getattr(obj, attr)
                out.append(obj)
            else:
                if bound is None:
                    bound = self.signature.bind(*args, **kwargs).arguments
                value = bound
                for key in path:
                    value = value[key]
                out.append(value)
        return out


def make_binder(forward: Callable, sources: Sequence[str]) -> Optional[InputBinder]:
    """Translate Dynamo source names (``L['kwargs']['x']``, ``L['x']``, ``L['self']...attr``)."""
    getters = []
    for src in sources:
        if src.startswith("L['self']"):
            path = parse_module_path(src)
            if not _resolves(getattr(forward, "__self__", None), path):
                return None  # not a plain attribute path (a DTensor's local shard, a method): Dynamo handles it
            getters.append(("self", path))
            continue
        keys = tuple(k for k in _subscripts(src))
        if not src.startswith("L[") or not keys or len(keys) > 2:
            return None
        getters.append(("arg", keys))
    signature = inspect.signature(forward, follow_wrapped=False)
    kinds = [(p.name, p.kind) for p in signature.parameters.values()]
    varargs_only = kinds == [("args", inspect.Parameter.VAR_POSITIONAL), ("kwargs", inspect.Parameter.VAR_KEYWORD)]
    return InputBinder(signature, tuple(getters), varargs_only)


def _resolves(model: Any, path: Sequence[str]) -> bool:
    obj = model
    try:
        for attr in path:
            obj = getattr(obj, attr)
    except AttributeError:
        return False
    return isinstance(obj, torch.Tensor)


def _subscripts(src: str) -> List[Any]:
    """``L['kwargs']['x']`` -> ["kwargs", "x"]; ``L['args'][0]`` -> ["args", 0]; else []."""
    if re.fullmatch(r"L(\['[^']+'\]|\[\d+\])+", src) is None:
        return []
    return [k if k else int(i) for k, i in re.findall(r"\['([^']+)'\]|\[(\d+)\]", src)]


@dataclass(frozen=True)
class OutputTemplate:
    """Rebuilds the model's Python output (tuple, ModelOutput, ...) from the glue's flat outputs."""

    spec: Any
    slots: Tuple[Any, ...]  # int: index into flat outputs; else ("const", value)

    @classmethod
    def capture(cls, python_out: Any, flat_out: Sequence[Any]) -> Optional["OutputTemplate"]:
        leaves, spec = pytree.tree_flatten(python_out)
        slots = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                idx = next((i for i, t in enumerate(flat_out) if t is leaf), None)
                if idx is None:
                    return None
                slots.append(idx)
            else:
                slots.append(("const", leaf))
        return cls(spec, tuple(slots))

    def build(self, flat_out: Sequence[Any]) -> Any:
        leaves = [flat_out[s] if isinstance(s, int) else s[1] for s in self.slots]
        return pytree.tree_unflatten(leaves, self.spec)


@dataclass(frozen=True)
class DirectCall:
    glue: Callable
    binder: InputBinder
    template: OutputTemplate

    def __call__(self, model, args, kwargs):
        return self.template.build(self.glue(*self.binder(model, args, kwargs)))
