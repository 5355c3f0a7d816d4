"""The DBCache decision of one block stack (or one block list) that the rewritten graph calls every step.

Nothing here knows about graphs: the glue graph hands in tensors and a callable body, so the
decision logic can be tested with plain tensors. A context holds only configuration, given to its
constructor; what a request accumulates (placement, buffers, stats) lives in the
``GenerationState`` its ``StateSlot`` hands out for the current call (``state.py``), and every
host read of a decision goes through its ``HostReads`` (``host.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..config import DBCacheConfig
from .calibrators import make_calibrator
from .host import LOCAL, HostReads, relative_l1
from .state import GenerationState, ScopeState, StateSlot
from .tracker import COND, MAX_BRANCHES, UNCOND

__all__ = ["BranchStats", "CacheStats", "CacheContext", "relative_l1", "COND", "UNCOND", "MAX_BRANCHES"]


@dataclass
class BranchStats:
    cached_steps: List[int] = field(default_factory=list)
    residual_diffs: Dict[int, float] = field(default_factory=dict)


@dataclass
class CacheStats:
    """Statistics of the current generation (cleared when a new one starts).

    cached_steps / residual_diffs: the non-CFG branch (the only one without separate CFG):
        sorted 0-based steps whose middle blocks were skipped; {step: relative L1 diff}.
    cfg_cached_steps / cfg_residual_diffs: the CFG branch (empty without separate CFG).
    branches: every branch by name ("cond", "uncond", "branch2", ...).
    executed_steps: steps (timesteps) seen in this generation; calls: transformer calls.
    generation: how many generations this context has started (1 for the first).
    separate_cfg: whether calls of this generation were split into CFG branches.
    """

    cached_steps: List[int] = field(default_factory=list)
    residual_diffs: Dict[int, float] = field(default_factory=dict)
    cfg_cached_steps: List[int] = field(default_factory=list)
    cfg_residual_diffs: Dict[int, float] = field(default_factory=dict)
    branches: Dict[str, BranchStats] = field(default_factory=dict)
    executed_steps: int = 0
    calls: int = 0
    generation: int = 0
    separate_cfg: bool = False
    details: Optional[str] = None  # markdown table, filled by dit_fx.summary(..., details=True)


class Branch:
    """Buffers and counters of one CFG branch."""

    def __init__(self):
        self.reference_residual: Optional[torch.Tensor] = None
        # Per middle stream: the stored residual (or, with a calibrator, the value it was fed).
        self.middle_residuals: Optional[Tuple[torch.Tensor, ...]] = None
        self.calibrators: Optional[List[object]] = None  # one per middle stream
        self.output_calibrators: Optional[List[object]] = None  # cache_type="output": one per output
        self.continuous_cached = 0
        self.accumulated_diff = 0.0
        self.stats = BranchStats()


def mask_length_message(entries: int, steps: Optional[int]) -> str:
    """The warning for a steps mask used on a generation of another length. ``steps``: a pipeline
    call's shorter ``num_inference_steps``; None: a generation that has just run past the mask's end
    (however it is driven, so a longer pipeline call is told here, once)."""
    if steps is None:
        what, effect = (f"this generation runs past its end (step {entries})",
                        "steps past its end take the threshold decision (computed when the diff reaches residual_diff_threshold)")
    else:
        what, effect = f"this pipeline call runs num_inference_steps={steps}", f"only its first {steps} entries are used"
    return (f"dit_fx: steps_computation_mask has {entries} entries but {what}: {effect}. Build the mask for the step "
            "count you run (dit_fx.steps_mask(..., total_steps=N), or dit_fx.calibrate on an N-step run), or set "
            "num_inference_steps in the config.")


def kept(t: torch.Tensor) -> torch.Tensor:
    """What a context keeps across calls: never part of this call's autograd graph (a loop that
    calls ``backward()`` every step would otherwise backpropagate into a freed graph on the
    next cached step). Cached steps treat the stored residuals as constants."""
    return t.detach() if t.requires_grad else t


def _fits(buffer: Optional[torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a op b`` may be written into ``buffer``: same shape, dtype and device, and no
    autograd in the way (``out=`` refuses operands that require grad)."""
    return (
        buffer is not None
        and (buffer.shape, buffer.dtype, buffer.device) == (a.shape, a.dtype, a.device)
        and not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or buffer.requires_grad))
    )


def _sub_into(out: torch.Tensor, base: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """``out - base``, written into this branch's residual buffer when it still fits (no allocation)."""
    return torch.sub(out, base, out=buffer) if _fits(buffer, out, base) else out - base


class FnResidual:
    """The Fn residual of one call, ``hidden_fn - hidden_in``, formed on first use.

    Only a diff and a computed step (which keeps it as the reference) read it, so a cached step
    that needs no diff (a static steps mask) never pays for the subtraction.
    """

    __slots__ = ("hidden_fn", "hidden_in", "_value")

    def __init__(self, hidden_fn: torch.Tensor, hidden_in: torch.Tensor):
        self.hidden_fn, self.hidden_in, self._value = hidden_fn, hidden_in, None

    @property
    def shape(self) -> torch.Size:
        return self.hidden_fn.shape

    def value(self) -> torch.Tensor:
        if self._value is None:
            self._value = torch.sub(self.hidden_fn, self.hidden_in)
        return self._value


class CacheContext(torch.nn.Module):
    """The decision and the cached middle of one block stack; the rewritten glue calls it.

    ``decide`` is called once per transformer call after the first Fn blocks, with the hidden
    stream after and before them; ``run_middle`` then runs or replaces the middle blocks.

    Constructor arguments (nothing is set on a context later):
    config: its ``DBCacheConfig``. scope: the block list it caches (None: all lists joined).
    leads: it decides first in a call and places the call (step, branch, generation) for every
        context of the model; followers read that placement.
    states: the ``StateSlot`` of the model (a fresh one of its own when None: a standalone context).
    outputs_are_reused: the partitions return buffers they overwrite on their next run (CUDA
        graphs): whatever is kept across calls is copied first.
    host: where the decision's host reads go (``HostReads``; a parallel run reduces there).
    It is an ``nn.Module`` (without parameters) only so the glue graph can reference it with ``get_attr``.
    """

    stats_class = CacheStats
    branch_class = Branch

    def __init__(
        self,
        config: DBCacheConfig,
        *,
        scope: Optional[str] = None,
        leads: bool = True,
        states: Optional[StateSlot] = None,
        outputs_are_reused: bool = False,
        host: HostReads = LOCAL,
        num_blocks: int = 0,
    ):
        super().__init__()
        self.config = config
        self.scope = scope
        self.leads = leads
        self.states = states if states is not None else StateSlot(config)
        self.outputs_are_reused = outputs_are_reused
        self.host = host
        self.num_blocks = num_blocks  # blocks of the cached list(s), Fn/Bn included

    # -- the current request's state -------------------------------------------------------------
    def _state(self) -> Tuple[GenerationState, ScopeState]:
        state = self.states.current()
        return state, state.scope(self.scope)

    @property
    def tracker(self):
        return self.states.current().tracker

    @property
    def branches(self) -> Dict[str, Branch]:
        return self._state()[1].branches

    @property
    def step(self) -> int:
        return self.tracker.step

    @property
    def branch(self) -> str:
        return self.tracker.branch

    @property
    def generation(self) -> int:
        return self.tracker.generation

    def reset(self) -> None:
        """Start a new generation at the next call: buffers and stats are cleared then."""
        self.tracker.reset()

    def prefetch_timestep(self, timestep: Optional[torch.Tensor]) -> None:
        self.tracker.prefetch_timestep(timestep)

    def _place(self, hidden: torch.Tensor, timestep: Optional[torch.Tensor]) -> Tuple[GenerationState, ScopeState]:
        """Place this call (if this context leads) and clear buffers of an ended generation."""
        state, scope = self._state()
        tracker = state.tracker
        if self.leads:
            tracker.advance(tracker.read_timestep(timestep, self.host), (hidden.shape, hidden.dtype, hidden.device))
        if tracker.generation != scope.generation:
            scope.clear(tracker.generation)
        return state, scope

    # -- decision ----------------------------------------------------------------------------
    def decide(self, hidden_fn: torch.Tensor, hidden_in: torch.Tensor, timestep: Optional[torch.Tensor] = None) -> bool:
        """Place this call (if this context leads), then decide whether to skip the middle.

        ``hidden_fn`` / ``hidden_in``: the hidden stream after / before the first Fn blocks."""
        state, scope = self._place(hidden_fn, timestep)
        self._check_past_mask(state)
        scope.pending = FnResidual(hidden_fn, hidden_in)
        branch = scope.branches.get(state.tracker.branch)
        if branch is None:
            branch = scope.branches[state.tracker.branch] = self.branch_class()
        return self._should_reuse(state, scope, branch, scope.pending)

    def _check_past_mask(self, state: GenerationState) -> None:
        """A generation that runs past the steps mask's end gets one warning (the first call of that
        step). A shorter pipeline call is told when it sets its timesteps (``Session.expect_pipeline_steps``)."""
        mask, tracker = self.config.steps_computation_mask, state.tracker
        if mask is not None and tracker.step == len(mask) and tracker.call_in_step == 0:
            warnings.warn(mask_length_message(len(mask), None), UserWarning, stacklevel=2)

    def _gate(self, branch: Branch, step: int) -> Optional[bool]:
        """The gates before the threshold test: False = compute, True = cache (a static steps
        mask), None = let the diff decide."""
        cfg = self.config
        if step in range(0, cfg.max_warmup_steps, cfg.warmup_interval):
            return False
        mask = cfg.steps_computation_mask
        if mask is not None and step < len(mask):
            if mask[step] == 1:
                return False
            if cfg.steps_computation_policy == "static":  # a fixed schedule: no diff, no other gate
                return True
        if cfg.max_cached_steps >= 0 and len(branch.stats.cached_steps) >= cfg.max_cached_steps:
            return False
        if cfg.max_continuous_cached_steps >= 0 and branch.continuous_cached >= cfg.max_continuous_cached_steps:
            return False
        limit = cfg.max_accumulated_residual_diff_threshold
        if limit is not None and branch.accumulated_diff >= limit:
            return False
        return None

    def _should_reuse(self, state: GenerationState, scope: ScopeState, branch: Branch, fn_residual: "FnResidual") -> bool:
        cfg, step, name = self.config, state.tracker.step, state.tracker.branch
        gate = self._gate(branch, step)
        if gate is not None:
            return gate and branch.middle_residuals is not None
        ref = branch.reference_residual
        if cfg.residual_diff_threshold <= 0 or branch.middle_residuals is None or ref is None:
            return False
        if ref.shape != fn_residual.shape:
            return False
        cond = scope.branches.get(COND)
        if name == UNCOND and not cfg.cfg_diff_compute_separate and cond and step in cond.stats.residual_diffs:
            diff = cond.stats.residual_diffs[step]  # reuse the cond call's diff of this step
        else:
            diff = relative_l1(ref, fn_residual.value(), self.host)  # the one host sync of a step
        branch.stats.residual_diffs[step] = diff
        branch.accumulated_diff += diff
        return diff < cfg.residual_diff_threshold

    # -- middle ------------------------------------------------------------------------------
    def run_middle(
        self,
        reuse: bool,
        body: Callable[..., object],
        body_args: Sequence[torch.Tensor],
        stream_bases: Sequence[torch.Tensor],
    ) -> Tuple[torch.Tensor, ...]:
        """Run the middle blocks, or rebuild their outputs as ``base + stored residual``.

        ``stream_bases[k]`` is the stream entering the middle that output ``k`` continues.
        """
        state, scope = self._state()
        fn_residual, scope.pending = scope.pending, None
        if fn_residual is None:
            raise RuntimeError("run_middle needs this call's decide first")
        step = state.tracker.step
        branch = scope.branches[state.tracker.branch]
        calibrator = self.config.calibrator
        if calibrator is not None and calibrator.cache_type == "output":
            calibrator = None  # the middle is reused plainly; ``finish_outputs`` forecasts the outputs
        hidden_type = calibrator is not None and calibrator.cache_type == "hidden_states"
        scope.middle_reused = False
        if reuse and all(b.shape == r.shape for b, r in zip(stream_bases, branch.middle_residuals)):
            scope.middle_reused = True
            branch.stats.cached_steps.append(step)
            branch.continuous_cached += 1
            if calibrator is None:
                outs = scope.body_outputs or (None,) * len(stream_bases)  # set only with reused outputs
                return tuple(
                    torch.add(base, res, out=o) if _fits(o, base, res) else base + res
                    for base, res, o in zip(stream_bases, branch.middle_residuals, outs)
                )
            forecasts = [c.predict(step) for c in branch.calibrators]
            if hidden_type:
                return tuple(forecasts)
            return tuple(base + f for base, f in zip(stream_bases, forecasts))
        branch.continuous_cached = 0
        branch.reference_residual = kept(fn_residual.value())
        out = body(*body_args)
        outs = out if isinstance(out, tuple) else (out,)
        if self.outputs_are_reused:
            # Never an output that is (a view of) a body input: writing into it would change the
            # head's outputs, which the rest of the call still reads.
            inputs = {a.untyped_storage().data_ptr() for a in body_args if isinstance(a, torch.Tensor)}
            scope.body_outputs = tuple(None if o.untyped_storage().data_ptr() in inputs else o for o in outs)
        if hidden_type:  # a calibrator keeps what it is fed: never a buffer someone overwrites
            stored = tuple(o.clone() for o in outs) if self.outputs_are_reused else outs
        elif calibrator is None and branch.middle_residuals is not None:
            stored = tuple(_sub_into(o, base, buf) for o, base, buf in zip(outs, stream_bases, branch.middle_residuals))
        else:
            stored = tuple(o - base for o, base in zip(outs, stream_bases))
        stored = tuple(kept(t) for t in stored)
        branch.middle_residuals = stored
        if calibrator is not None:
            if branch.calibrators is None:
                branch.calibrators = [make_calibrator(calibrator) for _ in stored]
            for c, value in zip(branch.calibrators, stored):
                c.update(step, value)
        return outs

    def finish_outputs(self, outputs: Sequence[Any]) -> Tuple[Any, ...]:
        """``cache_type="output"``: on a step whose middle was rebuilt, the forecast of each
        floating-point tensor output; on a computed step the outputs themselves, fed to the
        calibrators. Other outputs pass through."""
        state, scope = self._state()
        step = state.tracker.step
        branch = scope.branches[state.tracker.branch]
        idx = [i for i, o in enumerate(outputs) if isinstance(o, torch.Tensor) and o.is_floating_point()]
        cals = branch.output_calibrators
        if scope.middle_reused and cals is not None and len(cals) == len(idx):
            forecasts = [c.predict(step) for c in cals]
            if all(f.shape == outputs[i].shape for f, i in zip(forecasts, idx)):
                out = list(outputs)
                for f, i in zip(forecasts, idx):
                    out[i] = f.to(outputs[i].dtype)
                return tuple(out)
        if cals is None or len(cals) != len(idx):
            cals = branch.output_calibrators = [make_calibrator(self.config.calibrator) for _ in idx]
        for c, i in zip(cals, idx):  # CUDA-graph outputs are overwritten by the next replay
            c.update(step, kept(outputs[i].clone() if self.outputs_are_reused else outputs[i]))
        return tuple(outputs)

    # -- stats -------------------------------------------------------------------------------
    @property
    def stats(self) -> CacheStats:
        return self.collect_stats(self.states.current(), self.scope)

    @classmethod
    def collect_stats(cls, state: GenerationState, scope: Optional[str]) -> CacheStats:
        """A snapshot (copies) of ``state``'s stats for the context of ``scope``."""
        tracker, own = state.tracker, state.scopes.get(scope)
        # A follower that has not decided since its leader started a new generation holds old state.
        branches = own.branches if own is not None and own.generation == tracker.generation else {}
        empty = BranchStats()
        cond = branches.get(COND)
        uncond = branches.get(UNCOND)
        cond_stats = cond.stats if cond else empty
        uncond_stats = uncond.stats if uncond else empty
        return cls.stats_class(
            cached_steps=list(cond_stats.cached_steps),
            residual_diffs=dict(cond_stats.residual_diffs),
            cfg_cached_steps=list(uncond_stats.cached_steps),
            cfg_residual_diffs=dict(uncond_stats.residual_diffs),
            branches={name: BranchStats(list(b.stats.cached_steps), dict(b.stats.residual_diffs)) for name, b in branches.items()},
            executed_steps=tracker.step + 1 if tracker.calls else 0,
            calls=tracker.calls,
            generation=tracker.generation,
            separate_cfg=tracker.separate_cfg,
        )
