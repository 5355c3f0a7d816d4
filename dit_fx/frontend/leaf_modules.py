"""Modules inside blocks that Dynamo cannot trace into a graph, called as one opaque op instead.

HiDream's mixture-of-experts feed-forward (``MOEFeedForwardSwiGLU``) routes tokens to experts
with counts read on the host (``bincount().cpu().numpy()``) and a Python loop over experts: a
graph break inside every block, so no graph holds the block stack. Its output is a tensor of its
one input's shape and dtype whatever the routing, so ``optimize`` routes the forward of each such
module through ``dit_fx::leaf_module`` while Dynamo traces: the graph holds one call of that op
(its fake: a tensor like the input), and running it calls the module's own forward, eagerly, on
the real tensors. The outputs are the module's own, bit for bit.

Only under ``torch.no_grad`` / inference mode (the op has no autograd formula: with grad enabled
the module is traced as it is, and breaks the graph as before), only for the classes in
``LEAF_CLASSES`` (each checked to take one tensor and return one like it: a call that returns
anything else raises instead of being used), and only on instances whose ``forward`` nobody
replaced. Eager calls of the module are untouched.
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from typing import Any, Dict, List, Tuple

import torch

# (module, class name) of modules traced as one op: data-dependent inside, shape-preserving outside.
LEAF_CLASSES = frozenset({
    ("diffusers.models.transformers.transformer_hidream_image", "MOEFeedForwardSwiGLU"),
})

_HANDLES: Dict[int, "weakref.ref[torch.nn.Module]"] = {}
_HANDLE_OF: "weakref.WeakKeyDictionary[torch.nn.Module, int]" = weakref.WeakKeyDictionary()
_NEXT = itertools.count(1)
_LOCK = threading.Lock()


def is_leaf(module: torch.nn.Module) -> bool:
    cls = type(module)
    return (cls.__module__, cls.__name__) in LEAF_CLASSES


def _handle(module: torch.nn.Module) -> int:
    with _LOCK:
        handle = _HANDLE_OF.get(module)
        if handle is None:
            handle = next(_NEXT)
            _HANDLE_OF[module] = handle
            _HANDLES[handle] = weakref.ref(module, lambda _, h=handle: _HANDLES.pop(h, None))
        return handle


@torch.library.custom_op("dit_fx::leaf_module", mutates_args=())
def leaf_module(x: torch.Tensor, handle: int) -> torch.Tensor:
    """The forward of the module registered as ``handle``, run eagerly on ``x``."""
    ref = _HANDLES.get(handle)
    module = ref() if ref is not None else None
    if module is None:
        raise RuntimeError(f"dit_fx: the module of leaf handle {handle} is gone")
    out = type(module).forward(module, x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise RuntimeError(
            f"dit_fx: {type(module).__name__} returned {type(out).__name__} where a tensor like its input was "
            "expected; it cannot be traced as one op (dit_fx.frontend.leaf_modules)"
        )
    if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        out = out.clone()  # a custom op's output must not alias its input
    return out


@leaf_module.register_fake
def _(x: torch.Tensor, handle: int) -> torch.Tensor:
    return torch.empty_like(x)


class _Handle:
    """The registry handle of one leaf module. A copy (``copy.deepcopy``, pickling) of the model
    copies the installed forward with it; its handle would name the original module, so a
    copied handle is empty (the copy's leaf is traced as it is)."""

    def __init__(self, value):
        self.value = value

    def __deepcopy__(self, memo):
        return _Handle(None)

    def __copy__(self):
        return _Handle(None)

    def __reduce__(self):
        return (_Handle, (None,))


def _leaf_forward(module: torch.nn.Module, handle: _Handle, x, *args, **kwargs):
    if (
        torch.compiler.is_compiling()
        and handle.value is not None
        and not args
        and not kwargs
        and isinstance(x, torch.Tensor)
        and not torch.is_grad_enabled()
    ):
        return torch.ops.dit_fx.leaf_module(x, handle.value)
    return type(module).forward(module, x, *args, **kwargs)


def leaf_patches(model: torch.nn.Module) -> List[Tuple[torch.nn.Module, Any]]:
    """(module, forward to install) for every leaf module of ``model`` whose forward is its
    class's (or a leaf forward copied from another model). A ``functools.partial`` of the module,
    so a copy of the model calls its own modules eagerly."""
    out = []
    for module in model.modules():
        if not is_leaf(module) or hasattr(module, "_hf_hook"):
            continue
        current = module.__dict__.get("forward")
        if current is None or (isinstance(current, functools.partial) and current.func is _leaf_forward):
            out.append((module, functools.partial(_leaf_forward, module, _Handle(_handle(module)))))
    return out
