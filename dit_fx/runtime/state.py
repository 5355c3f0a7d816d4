"""Per-generation state as an object: everything a request accumulates while it runs.

A ``GenerationState`` holds the placement of calls (its ``StepTracker``: step, CFG branch,
generation) and, per cache context (one per cached block list), the branch buffers (reference
residual, middle residuals, calibrators) and stats. The cache contexts keep nothing of a request
themselves: they read the state through a ``StateSlot``, the one handle swapped per request.

``StateSlot.current()`` is the state bound in this thread / task (``StateSlot.use``: a request,
or a pipeline call), else this thread's own default state: calls that carry no request are placed
by automatic detection as before, and two threads never share a default (the main thread's is
``StateSlot.default``).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
from typing import Any, Dict, Iterator, Optional

from ..config import DBCacheConfig
from .tracker import StepTracker

_SLOT_IDS = itertools.count()


class ScopeState:
    """What one cache context (``scope``: a block list, or None for all lists joined) keeps for
    one generation state: branch buffers by CFG branch, and this call's pending Fn residual."""

    __slots__ = ("branches", "generation", "pending", "body_outputs", "middle_reused")

    def __init__(self) -> None:
        self.branches: Dict[str, Any] = {}
        self.generation = 0  # the tracker generation ``branches`` belong to
        self.pending: Any = None  # this call's Fn residual, between decide and run_middle
        # With reused outputs (CUDA graphs): the body's static output buffers a cached step
        # writes ``base + residual`` into, so the tail's graph reads them in place.
        self.body_outputs: tuple = ()
        self.middle_reused = False  # this call's middle was rebuilt (read by ``finish_outputs``)

    def clear(self, generation: int) -> None:
        self.branches, self.generation, self.body_outputs = {}, generation, ()


class GenerationState:
    """Placement and buffers of one request (or of all calls that carry none)."""

    def __init__(self, placement: DBCacheConfig):
        self.tracker = StepTracker(placement)
        self.scopes: Dict[Optional[str], ScopeState] = {}
        self.per_call = False  # bound by a pipeline call for itself (not a user's request)

    def scope(self, name: Optional[str]) -> ScopeState:
        state = self.scopes.get(name)
        if state is None:
            state = self.scopes[name] = ScopeState()
        return state

    # -- what callers outside the graph tell the state -------------------------------------------
    def reset(self) -> None:
        """Start a new generation at the next call (buffers and stats are cleared then)."""
        self.tracker.reset()

    def expect_steps(self, num_inference_steps: Optional[int]) -> None:
        """The current generation has this many steps (None: the config's / detected)."""
        self.tracker.num_steps_override = num_inference_steps

    @contextlib.contextmanager
    def branch_named(self, name: str) -> Iterator[None]:
        """Calls inside belong to the CFG branch ``name`` (diffusers' ``cache_context("uncond")``)."""
        previous, self.tracker.branch_hint = self.tracker.branch_hint, name
        try:
            yield
        finally:
            self.tracker.branch_hint = previous

    def release(self) -> None:
        """Drop every buffer (a finished request): the next call starts a new generation."""
        self.scopes.clear()
        self.tracker.reset()

    def buffer_bytes(self) -> int:
        """Bytes of the tensors this state keeps across calls (residuals, calibrator ladders)."""
        import torch

        seen, total = set(), 0

        def add(value: Any) -> None:
            nonlocal total
            if isinstance(value, torch.Tensor):
                key = (value.untyped_storage().data_ptr(), value.device)
                if key not in seen:
                    seen.add(key)
                    total += value.untyped_storage().nbytes()
            elif isinstance(value, (list, tuple)):
                for v in value:
                    add(v)
            elif isinstance(value, dict):
                for v in value.values():
                    add(v)
            elif hasattr(value, "__dict__"):
                for v in vars(value).values():
                    add(v)

        for scope in self.scopes.values():
            add(list(scope.branches.values()))
        return total


class StateSlot:
    """Which ``GenerationState`` the cache contexts of one model read: the one bound with
    ``use`` in this thread or task, else ``default``."""

    def __init__(self, placement: DBCacheConfig):
        self.placement = placement
        self.default = GenerationState(placement)  # the main thread's
        self._main = threading.main_thread()
        self._threads = threading.local()  # other threads' defaults (freed with their thread)
        self._bound: contextvars.ContextVar = contextvars.ContextVar(f"dit_fx_state_{next(_SLOT_IDS)}", default=None)

    def current(self) -> GenerationState:
        state = self._bound.get()
        if state is not None:
            return state
        if threading.current_thread() is self._main:
            return self.default
        state = getattr(self._threads, "state", None)
        if state is None:
            state = self._threads.state = GenerationState(self.placement)
        return state

    def bound(self) -> Optional[GenerationState]:
        """The state bound in this thread / task, if any (a request's or a pipeline call's)."""
        return self._bound.get()

    def bind(self, state: GenerationState) -> contextvars.Token:
        """Bind ``state`` in this thread / task until ``unbind(token)`` (or for good)."""
        return self._bound.set(state)

    def unbind(self, token: contextvars.Token) -> None:
        self._bound.reset(token)

    def new_state(self) -> GenerationState:
        return GenerationState(self.placement)

    @contextlib.contextmanager
    def use(self, state: GenerationState) -> Iterator[GenerationState]:
        token = self._bound.set(state)
        try:
            yield state
        finally:
            self._bound.reset(token)
