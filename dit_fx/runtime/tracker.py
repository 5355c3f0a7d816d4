"""Where a transformer call sits: denoising step, CFG branch and generation.

Read from the timestep the transformer receives, with no hints needed:
- the first two distinct timesteps of a generation set the schedule's direction (most decrease,
  some, e.g. Lumina2, increase); a later timestep moving against it starts a new generation;
- a call with the same timestep as the previous call is another CFG branch of the same step
  (``enable_separate_cfg=None`` detects this; ``True`` forces it; ``False`` makes every call a step);
  at most ``MAX_BRANCHES`` calls share a timestep: a loop that repeats one timestep on purpose
  should set ``enable_separate_cfg=False``;
- a change of the hidden stream's shape (resolution, batch size), dtype or device starts a new
  generation; the shape is compared per CFG branch (other inputs may differ per branch: a negative
  prompt of another length, which Lumina2 joins to the hidden stream itself); so do
  ``reset()`` and step ``N+1`` of ``num_inference_steps=N`` steps.
Without a timestep input, or with ``step_source="calls"`` (no host read at all), every call is one
step (with ``enable_separate_cfg=True``: calls alternate between branches by parity, as in cache-dit),
unless a pipeline names the branches (``cache_context("cond")`` / ``("uncond")``): then a call is
another branch of the step until a name repeats.

One tracker serves every cache context of a transformer (one per block list when block lists get
their own contexts), so all of them agree on the step, branch and generation of a call.
"""

from __future__ import annotations

import collections
import warnings
from typing import Optional, Tuple

import torch

from ..config import DBCacheConfig
from .host import LOCAL, HostReads

COND, UNCOND = "cond", "uncond"
# More calls than this with one timestep are not CFG branches (a loop repeating a timestep, e.g. a
# benchmark): each further call starts a new step, so branch buffers stay bounded.
MAX_BRANCHES = 4


class LateCheck:
    """``step_source="calls"``: each call's timestep, copied without waiting (CUDA: non-blocking into
    a few pinned buffers; a call finding them all in flight is not checked) and read once it has
    landed, a call or more later. A timestep moving against its generation's direction inside one
    counted generation is a restart nobody marked (``StepTracker.advance`` then warns once; the
    placement itself stays counted). Nothing here waits for the GPU."""

    BUFFERS = 4

    def __init__(self):
        self.pending = collections.deque()  # (generation, call index, pinned buffer or float, CUDA event or None)
        self.free = []
        self.last: Optional[Tuple[int, float]] = None  # (generation, timestep) of the last landed read
        self.direction = 0

    def push(self, timestep: Optional[torch.Tensor], generation: int, call: int) -> None:
        if timestep is None:
            return
        if timestep.device.type != "cuda":  # already on the host: nothing to wait for
            self.pending.append((generation, call, float(timestep.reshape(-1)[0]), None))
            return
        if self.free:
            buf = self.free.pop()
        elif len(self.pending) < self.BUFFERS:
            buf = torch.empty((), dtype=torch.float32, pin_memory=True)
        else:
            return
        buf.copy_(timestep.reshape(-1)[0].float(), non_blocking=True)
        self.pending.append((generation, call, buf, torch.cuda.current_stream(timestep.device).record_event()))

    def restart(self) -> Optional[int]:
        """The call index of an unmarked restart among the reads that have landed (None: none)."""
        found = None
        while self.pending:
            generation, call, value, event = self.pending[0]
            if event is not None and not event.query():
                break
            self.pending.popleft()
            if event is not None:
                self.free.append(value)
                value = float(value)  # landed: a host read that does not wait
            if self.last is None or self.last[0] != generation:
                self.last, self.direction = (generation, value), 0
                continue
            if value != self.last[1]:
                d = 1 if value > self.last[1] else -1
                if self.direction == 0:
                    self.direction = d
                elif d != self.direction and found is None:
                    found = call
            self.last = (generation, value)
        return found


class StepTracker:
    """Step, branch and generation of the current call; advanced once per transformer call.

    Uses the placement fields of ``config`` (``num_inference_steps``, ``enable_separate_cfg``,
    ``cfg_compute_first``); the other fields belong to the cache contexts.
    """

    def __init__(self, config: DBCacheConfig):
        self.config = config
        self.generation = 0
        self._signatures = {}  # branch index -> (shape, dtype, device) of its hidden stream at its last call
        self._start_generation(None)
        self.generation, self._pending = 0, True  # the first call starts generation 1
        # Told by the owning GenerationState (``expect_steps`` / ``branch_named``), never poked from outside.
        self.num_steps_override: Optional[int] = None
        self.branch_hint: Optional[str] = None
        self._timestep_copy = None  # (pinned host buffer, CUDA event) of an asynchronous timestep read
        self._pinned: Optional[torch.Tensor] = None
        self._late = LateCheck() if config.step_source == "calls" else None
        self._late_timestep: Optional[torch.Tensor] = None

    def _start_generation(self, t: Optional[float]) -> None:
        self._refresh()
        self._signatures = {}
        self._step_hints = set()  # branch names (pipeline hints) called in this step
        self.run_step = 0  # steps since the generation began (a forced refresh keeps counting)
        self._refreshes = 0
        self.separate_cfg = False
        self._last_t = t
        self._direction = 0  # +1 increasing schedule, -1 decreasing, 0 unknown yet
        self._pending = False

    def _refresh(self) -> None:
        """A new cache context: steps restart at 0 and the contexts drop buffers and stats."""
        self.generation += 1
        self.step = 0
        self.calls = 0
        self.call_in_step = 0
        self.branch = COND

    def _forces_refresh(self) -> bool:
        hint = self.config.force_refresh_step_hint
        if hint is None or self.step + 1 != hint:
            return False
        return self.config.force_refresh_step_policy == "repeat" or self._refreshes == 0

    def reset(self) -> None:
        """Start a new generation at the next call."""
        self._pending = True

    @property
    def generation_pending(self) -> bool:
        """Whether the next call starts a new generation (``reset`` was called: a pipeline call began)."""
        return self._pending

    def advance(self, t: Optional[float], signature) -> None:
        """Place a new call with timestep ``t`` (None: no timestep input) and hidden ``signature``."""
        cfg = self.config
        moved = t is not None and self._last_t is not None and t != self._last_t
        direction = (1 if t > self._last_t else -1) if moved else 0
        new_generation = self._pending or (moved and self._direction != 0 and direction != self._direction)
        if self._late is not None and not new_generation:
            self._warn_unmarked_restart()
        new_step = False
        if not new_generation:
            if cfg.enable_separate_cfg is False:
                new_step = True
            elif t is None and self.branch_hint is not None:  # the pipeline names the branch: a new step
                new_step = self.branch_hint in self._step_hints or self.call_in_step + 1 >= MAX_BRANCHES  # once it repeats
            elif t is None and cfg.enable_separate_cfg is None:
                new_step = True
            elif t is None:  # separate CFG forced, no timestep: alternate by parity
                new_step = self.call_in_step >= 1
            else:
                new_step = moved or self.call_in_step + 1 >= MAX_BRANCHES
            # The hidden stream's shape is compared per branch: a branch's stream may be longer
            # than another's (Lumina2 joins the prompt's valid tokens to it, and a negative
            # prompt has another length). A branch seen for the first time takes any shape.
            known = self._signatures.get(0 if new_step else self.call_in_step + 1)
            if known is not None and signature != known:
                new_generation = True
            n = self.num_steps_override if self.num_steps_override is not None else cfg.num_inference_steps
            if new_step and n is not None and self.run_step + 1 >= n:
                new_generation = True
        if new_generation:
            self._start_generation(t)
        elif new_step and self._forces_refresh():
            self._refresh()
            self._refreshes += 1
            self.run_step += 1
            self._direction = self._direction or direction
        elif new_step:
            self.step += 1
            self.run_step += 1
            self.call_in_step = 0
            self._direction = self._direction or direction
        else:
            self.call_in_step += 1
            self.separate_cfg = True
        self._last_t = t
        if new_generation or new_step:
            self._step_hints = set()
        if self.branch_hint is not None:
            self._step_hints.add(self.branch_hint)
        self._signatures[self.call_in_step] = signature
        self.calls += 1
        self.branch = self._branch_name(self.call_in_step)
        if self._late is not None:
            self._late.push(self._late_timestep, self.generation, self.calls)
            self._late_timestep = None

    def _warn_unmarked_restart(self) -> None:
        """Counted calls: warn once when a landed timestep shows a restart the caller did not mark.
        Placement stays pure counting: when a copy lands depends on the GPU's progress, so acting on
        it would make placement differ between runs and between ranks that must agree."""
        call = self._late.restart()
        if call is None:
            return
        self._late = None  # warned once: no more copies or checks per call
        warnings.warn(
            f"dit_fx: step_source='calls': the timestep moved back at call {call} without dit_fx.reset or "
            "dit_fx.generation, so that loop is being counted as later steps of the previous generation (its cached "
            "steps reuse that generation's state) until num_inference_steps ends it. Mark every generation, or use "
            "step_source='timestep'.", RuntimeWarning, stacklevel=2)

    def _branch_name(self, index: int) -> str:
        if self.branch_hint is not None and self.config.enable_separate_cfg is not False:
            return self.branch_hint  # the pipeline named it ("cond" / "uncond")
        if index >= 2:
            return f"branch{index}"
        first_is_cfg = self.config.cfg_compute_first and self.config.enable_separate_cfg is not False
        return (UNCOND, COND)[index] if first_is_cfg else (COND, UNCOND)[index]

    # -- timestep reads ------------------------------------------------------------------------
    def prefetch_timestep(self, timestep: Optional[torch.Tensor]) -> None:
        """Start copying a CUDA timestep to the host before the head runs.

        The copy is queued ahead of the head's kernels, so by decision time it has landed and
        steps that need no diff never wait for the GPU. Other devices are read in ``read_timestep``.
        """
        self._timestep_copy = None
        if timestep is None or timestep.device.type != "cuda" or self.config.step_source == "calls":
            return
        if self._pinned is None:
            self._pinned = torch.empty((), dtype=torch.float32, pin_memory=True)
        self._pinned.copy_(timestep.reshape(-1)[0].float(), non_blocking=True)
        self._timestep_copy = (self._pinned, torch.cuda.current_stream(timestep.device).record_event())

    def read_timestep(self, timestep: Optional[torch.Tensor], host: HostReads = LOCAL) -> Optional[float]:
        """The timestep as a float, through ``host`` (the seam a parallel run reduces in); None with
        ``step_source="calls"`` (no host read: the call is placed as if the model had no timestep)."""
        if self._late is not None:
            self._late_timestep = timestep  # copied after placement, checked when it has landed (LateCheck)
            return None
        if self._timestep_copy is not None:  # CUDA: copied before the head ran, so no stall here
            pinned, event = self._timestep_copy
            self._timestep_copy = None
            event.synchronize()
            return host.floats([float(pinned)])[0]
        return None if timestep is None else host.scalar(timestep)
