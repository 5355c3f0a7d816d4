"""Requests: one generation's state, carried by a handle instead of by the model.

    r = dit_fx.new_request(pipe_or_model)
    with r:                 # every call of the model(s) inside belongs to r
        ...                 # one step, or the whole loop
    with r: ...             # enter again: a server interleaves requests step by step
    r.summary()             # r's statistics; r.close() frees its buffers

    with dit_fx.request(model): ...   # the one-shot form (closed on exit)

Concurrency model (docs/design.md):
- a request's state is bound to the thread / asyncio task that entered it (a ``contextvars``
  binding): requests on different threads never see each other's state, and requests entered one
  after another on one thread (interleaved step by step) each continue their own;
- one request must not run on two threads at the same time (it is one sequence of steps);
- calls that carry no request are placed by automatic detection, per thread (each thread has its
  own default state; the main thread's is what ``dit_fx.summary(model)`` reads outside a request);
- a pipeline optimized with ``dit_fx.optimize(pipe)`` makes every ``pipe(...)`` call a request of
  its own (bound when the pipeline sets its scheduler's timesteps), so concurrent pipeline calls
  from threads are isolated with no user code (diffusers' schedulers are stateful, so give each
  thread its own scheduler, e.g. ``copy.deepcopy(pipe.scheduler)``, or its own pipeline object
  sharing the transformer);
- what all requests share is read-only or locked: compiled regions, the CUDA-graph pool (runs of
  a CUDA-graphed model are serialized), capture records.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, Iterator, List, Tuple

import torch

from .api import session_for
from .integrations.diffusers import is_pipeline, transformer_components
from .runtime.state import GenerationState


def _sessions(target: Any) -> Dict[str, Any]:
    if is_pipeline(target):
        return {name: session_for(module) for name, module in transformer_components(target).items()}
    if not isinstance(target, torch.nn.Module):
        raise ValueError(f"a request needs a model or pipeline optimized by dit_fx, got {type(target).__name__}")
    return {"transformer": session_for(target)}


class Request:
    """One request's generation state on one optimized model, or on every transformer of an
    optimized pipeline. Enter it (``with r:``) around the calls that belong to it."""

    def __init__(self, target: Any):
        self._states: Dict[str, Tuple[Any, GenerationState]] = {
            name: (session, session.states.new_state()) for name, session in _sessions(target).items()
        }
        self._tokens = threading.local()  # per entering thread: a stack of bindings
        self._final = None  # the statistics at close
        self.closed = False

    def __enter__(self) -> "Request":
        if self.closed:
            raise ValueError("this request is closed: make a new one with dit_fx.new_request(...)")
        stack: List[Any] = getattr(self._tokens, "stack", None) or []
        stack.append([(session.states, session.states.bind(state)) for session, state in self._states.values()])
        self._tokens.stack = stack
        return self

    def __exit__(self, *exc) -> None:
        for slot, token in reversed(self._tokens.stack.pop()):
            slot.unbind(token)

    def summary(self):
        """Statistics of this request (a dict by component name for a pipeline); after ``close``,
        those it had then."""
        if self._final is not None:
            return self._final
        stats = {name: session.stats(state) for name, (session, state) in self._states.items()}
        return stats["transformer"] if list(stats) == ["transformer"] else stats

    def buffer_bytes(self) -> int:
        return sum(state.buffer_bytes() for _, state in self._states.values())

    def close(self) -> None:
        """Free this request's buffers (residuals, calibrator states); it cannot be entered again."""
        if self.closed:
            return
        self._final = self.summary()
        for _, state in self._states.values():
            state.release()
        self.closed = True


def new_request(target: Any) -> Request:
    """A request handle for ``target`` (an optimized model or pipeline)."""
    return Request(target)


@contextlib.contextmanager
def request(target: Any) -> Iterator[Request]:
    """``with dit_fx.request(model_or_pipe) as r: ...``: one request, closed on exit."""
    r = Request(target)
    try:
        with r:
            yield r
    finally:
        r.close()
