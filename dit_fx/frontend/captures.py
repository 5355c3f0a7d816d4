"""One ``torch.compile`` of a model's forward per input signature, each on a fresh code object.

Used by ``dit_fx.optimize`` (``api.py``). Dynamo keeps its cache and counts its ``recompile_limit``
per code object; diffusers gives 40 transformer classes one shared forward code object (its
lora-scale wrapper), so without fresh copies a few models and resolutions in one process exhaust
that shared limit and silently run unaccelerated.
"""

from __future__ import annotations

import collections
import functools
import re
import threading
import types
import warnings
import weakref
from typing import Any, Callable, Optional

import torch

from ..runtime.glue_ops import CALL_TIMESTEP
from .pieces import DYNAMO_CONFIG


MAX_SIGNATURES = 32  # captures dit_fx keeps per model: one per input signature (see ``Captures``)


class Captures:
    """One ``torch.compile`` of the model's forward per input signature (shapes, dtypes, devices
    of the tensors; kinds of the other arguments), each on a fresh copy of the forward's code.

    Dynamo keeps its cache, and counts its ``recompile_limit``, per code object; diffusers gives
    40 transformer classes one shared forward code object (its lora-scale wrapper), so one
    process with a few models, resolutions and batch sizes used to exhaust that shared limit and
    silently run unaccelerated. Fresh copies give every model and signature its own. dit_fx's own
    limit is ``MAX_SIGNATURES`` per model: past it the least recently used signature's capture is
    dropped (one warning; it is captured again if it comes back). Dropping a model drops its copies
    and with them Dynamo's cache entries (``inspect(model).signatures`` reports the count).
    """

    def __init__(self, forward: Callable, backend: Callable, limit: Optional[int] = None,
                 on_evict: Callable[[Any], None] = lambda key: None):
        self.forward, self.backend, self.on_evict = forward, backend, on_evict
        self.limit = MAX_SIGNATURES if limit is None else limit
        self.by_key: "collections.OrderedDict[Any, Callable]" = collections.OrderedDict()
        self.evictions = 0
        # After a whole-graph capture failed (``frontend/pieces.py``): captures allow graph breaks,
        # with sizes read from tensors kept symbolic ("dynamic") or specialized ("static").
        self.graph_breaks: Optional[str] = None
        self._lock = threading.Lock()

    def allow_graph_breaks(self, mode: str) -> None:
        """Capture from now on with graph breaks allowed: ``mode`` "dynamic" (sizes read from
        tensors symbolic, ``pieces.DYNAMO_CONFIG``) or "static" (they break the graph and the
        graphs after the break are specialized to their values)."""
        with self._lock:
            self.graph_breaks = mode
            self.by_key.clear()  # the failed compiles: nothing of them is kept

    def for_call(self, args, kwargs) -> Callable:
        key = signature_key(args, kwargs)
        with self._lock:
            fn = self.by_key.get(key)
            if fn is not None:
                self.by_key.move_to_end(key)
                return fn
            if len(self.by_key) >= self.limit:
                evicted, _ = self.by_key.popitem(last=False)
                self.on_evict(evicted)  # its direct calls go too: nothing of it stays alive
                self.evictions += 1
                if self.evictions == 1:
                    warnings.warn(
                        f"dit_fx: this model has seen more than {self.limit} input signatures (shapes, dtypes, "
                        "argument kinds); the least recently used one's capture is dropped and captured again "
                        "if it comes back (dit_fx.frontend.captures.MAX_SIGNATURES)",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            fn = torch.compile(fresh_function(self.forward), backend=self.backend, fullgraph=not self.graph_breaks,
                               dynamic=False)
            if self.graph_breaks:
                fn = _in_pieces(fn, DYNAMO_CONFIG if self.graph_breaks == "dynamic" else {})
            self.by_key[key] = fn
            return fn

    def clear(self) -> None:
        with self._lock:
            self.by_key.clear()


_TIMESTEP_KEY = re.compile(r"(^|_)timesteps?(_|$)")


def call_timestep(kwargs) -> Optional[torch.Tensor]:
    """The timestep tensor of a call (``timestep`` / ``timesteps``, else the first keyword that
    names one, as the glue finds a graph's timestep input)."""
    for key in ("timestep", "timesteps", *kwargs):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor) and (key in ("timestep", "timesteps") or _TIMESTEP_KEY.search(key)):
            return value
    return None


def _in_pieces(compiled: Callable, config: dict) -> Callable:
    """A capture with graph breaks allowed: Dynamo's ``config`` for it around every call (tracing
    and re-tracing happen inside calls), and the call's timestep where a resumed graph's glue
    reads it."""

    @functools.wraps(compiled)
    def call(*args, **kwargs):
        token = CALL_TIMESTEP.set(call_timestep(kwargs))
        try:
            with torch._dynamo.config.patch(**config):
                return compiled(*args, **kwargs)
        finally:
            CALL_TIMESTEP.reset(token)

    return call


def signature_key(args, kwargs) -> Any:
    """What selects a capture: tensor shapes/dtypes/devices, the values of bools, strings and
    None, the types of other values (numbers change per step: Dynamo guards those itself)."""
    return (tuple(_coarse(a) for a in args), tuple((k, _coarse(v)) for k, v in kwargs.items()))


def _coarse(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.dtype, value.device, value.requires_grad)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_coarse(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _coarse(v)) for k, v in value.items()))
    return type(value).__name__


def fresh_function(fn: Callable) -> Callable:
    """A copy of ``fn`` with a code object of its own (Dynamo's cache lives on the code object)."""
    copy_ = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy_.__kwdefaults__ = fn.__kwdefaults__
    copy_.__qualname__ = fn.__qualname__
    copy_.__dict__.update(fn.__dict__)
    return copy_


class WeakBackend:
    """The backend handed to ``torch.compile`` (a ``Session`` behind a weak reference): Dynamo
    keeps every backend it was given for good (``cached_backends``), so this refers to the session weakly and a dropped model's session,
    weights and compiled regions can go."""

    __name__ = "dit_fx"

    def __init__(self, session: Callable):
        self._session = weakref.ref(session)

    def __call__(self, gm, example_inputs):
        session = self._session()
        return session(gm, example_inputs) if session is not None else gm.forward
