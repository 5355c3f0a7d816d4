"""Per-transformer cache state that the rewritten graph calls into on every call.

Nothing here knows about graphs: the glue graph hands in tensors and a callable body, so the
decision logic can be tested with plain tensors.

Where a call sits (step, CFG branch, generation) is read from the timestep the transformer
receives, with no hints needed:
- the first two distinct timesteps of a generation set the schedule's direction (most decrease,
  some, e.g. Lumina2, increase); a later timestep moving against it starts a new generation;
- a call with the same timestep as the previous call is another CFG branch of the same step
  (``enable_separate_cfg=None`` detects this; ``True`` forces it; ``False`` makes every call a step);
  at most ``MAX_BRANCHES`` calls share a timestep: a loop that repeats one timestep on purpose
  should set ``enable_separate_cfg=False``;
- a change of the hidden stream's shape (resolution, batch size), dtype or device starts a new
  generation (other inputs may differ per branch: a negative prompt of another length); so do
  ``reset()`` and step ``N+1`` of ``num_inference_steps=N`` steps.
Without a timestep input every call is one step (with ``enable_separate_cfg=True``: calls alternate
between branches by parity, as in cache-dit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..config import DBCacheConfig

COND, UNCOND = "cond", "uncond"
# More calls than this with one timestep are not CFG branches (a loop repeating a timestep, e.g. a
# benchmark): each further call starts a new step, so branch buffers stay bounded.
MAX_BRANCHES = 4


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
        self.middle_residuals: Optional[Tuple[torch.Tensor, ...]] = None
        self.continuous_cached = 0
        self.accumulated_diff = 0.0
        self.stats = BranchStats()


def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def relative_l1(reference: torch.Tensor, current: torch.Tensor) -> float:
    """mean|ref - cur| / mean|ref|; inf when the reference is all zeros.

    Sums are accumulated in fp32 without materialising fp32 copies; one host sync for both.
    """
    num = torch.linalg.vector_norm(reference - current, 1, dtype=torch.float32)
    den = torch.linalg.vector_norm(reference, 1, dtype=torch.float32)
    return _ratio(*torch.stack([num, den]).tolist())


class CacheContext(torch.nn.Module):
    """Step/branch/generation tracking, per-branch residual buffers and stats of one transformer.

    ``decide`` is called once per transformer call after the first Fn blocks; ``run_middle`` then
    runs or replaces the middle blocks. It is an ``nn.Module`` (without parameters) only so the glue
    graph can reference it with ``get_attr``.
    """

    def __init__(self, config: DBCacheConfig):
        super().__init__()
        self.config = config
        self.generation = 0
        self._signature = None  # (shape, dtype, device) of the hidden stream of the last call
        self._start_generation(None)
        self.generation, self._pending = 0, True  # the first call starts generation 1
        self.num_steps_override: Optional[int] = None  # set by dit_fx.generation(...)
        self.branch_hint: Optional[str] = None  # set by the pipeline's transformer.cache_context(name)
        self._timestep_copy = None  # (pinned host buffer, CUDA event) of an asynchronous timestep read
        self._pinned: Optional[torch.Tensor] = None

    # -- where are we -----------------------------------------------------------------------
    def _start_generation(self, t: Optional[float]) -> None:
        self.generation += 1
        self.step = 0
        self.calls = 0
        self.call_in_step = 0
        self.branch = COND
        self.branches: Dict[str, Branch] = {}
        self.separate_cfg = False
        self._last_t = t
        self._direction = 0  # +1 increasing schedule, -1 decreasing, 0 unknown yet
        self._pending = False

    def reset(self) -> None:
        """Start a new generation at the next call: buffers and stats are cleared then."""
        self._pending = True

    def _advance(self, t: Optional[float], signature) -> None:
        cfg = self.config
        moved = t is not None and self._last_t is not None and t != self._last_t
        direction = (1 if t > self._last_t else -1) if moved else 0
        new_generation = self._pending or signature != self._signature or (
            moved and self._direction != 0 and direction != self._direction
        )
        new_step = False
        if not new_generation:
            if cfg.enable_separate_cfg is False or (t is None and cfg.enable_separate_cfg is None):
                new_step = True
            elif t is None:  # separate CFG forced, no timestep: alternate by parity
                new_step = self.call_in_step >= 1
            else:
                new_step = moved or self.call_in_step + 1 >= MAX_BRANCHES
            n = self.num_steps_override if self.num_steps_override is not None else cfg.num_inference_steps
            if new_step and n is not None and self.step + 1 >= n:
                new_generation = True
        self._signature = signature
        if new_generation:
            self._start_generation(t)
        elif new_step:
            self.step += 1
            self.call_in_step = 0
            self._direction = self._direction or direction
        else:
            self.call_in_step += 1
            self.separate_cfg = True
        self._last_t = t
        self.calls += 1
        self.branch = self._branch_name(self.call_in_step)

    def _branch_name(self, index: int) -> str:
        if self.branch_hint is not None and self.config.enable_separate_cfg is not False:
            return self.branch_hint  # the pipeline named it ("cond" / "uncond")
        if index >= 2:
            return f"branch{index}"
        first_is_cfg = self.config.cfg_compute_first and self.config.enable_separate_cfg is not False
        return (UNCOND, COND)[index] if first_is_cfg else (COND, UNCOND)[index]

    # -- decision ----------------------------------------------------------------------------
    def prefetch_timestep(self, timestep: Optional[torch.Tensor]) -> None:
        """Start copying a CUDA timestep to the host before the head runs.

        The copy is queued ahead of the head's kernels, so by decision time it has landed and
        steps that need no diff never wait for the GPU. Other devices are read in ``decide``.
        """
        self._timestep_copy = None
        if timestep is None or timestep.device.type != "cuda":
            return
        if self._pinned is None:
            self._pinned = torch.empty((), dtype=torch.float32, pin_memory=True)
        self._pinned.copy_(timestep.reshape(-1)[0].float(), non_blocking=True)
        self._timestep_copy = (self._pinned, torch.cuda.current_stream(timestep.device).record_event())

    def decide(self, fn_residual: torch.Tensor, timestep: Optional[torch.Tensor] = None) -> bool:
        """Place this call (step, branch, generation), then decide whether to skip the middle."""
        self._advance(self._read_timestep(timestep), (fn_residual.shape, fn_residual.dtype, fn_residual.device))
        return self._should_reuse(fn_residual)

    def _read_timestep(self, timestep: Optional[torch.Tensor]) -> Optional[float]:
        if self._timestep_copy is not None:  # CUDA: copied before the head ran, so no stall here
            pinned, event = self._timestep_copy
            self._timestep_copy = None
            event.synchronize()
            return float(pinned)
        return None if timestep is None else float(timestep.reshape(-1)[0])

    def _should_reuse(self, fn_residual: torch.Tensor) -> bool:
        cfg, step = self.config, self.step
        branch = self.branches.setdefault(self.branch, Branch())
        if step in range(0, cfg.max_warmup_steps, cfg.warmup_interval):
            return False
        if cfg.max_cached_steps >= 0 and len(branch.stats.cached_steps) >= cfg.max_cached_steps:
            return False
        if cfg.max_continuous_cached_steps >= 0 and branch.continuous_cached >= cfg.max_continuous_cached_steps:
            return False
        limit = cfg.max_accumulated_residual_diff_threshold
        if limit is not None and branch.accumulated_diff >= limit:
            return False
        ref = branch.reference_residual
        if cfg.residual_diff_threshold <= 0 or branch.middle_residuals is None or ref is None:
            return False
        if ref.shape != fn_residual.shape:
            return False
        cond = self.branches.get(COND)
        if self.branch == UNCOND and not cfg.cfg_diff_compute_separate and cond and step in cond.stats.residual_diffs:
            diff = cond.stats.residual_diffs[step]  # reuse the cond call's diff of this step
        else:
            diff = relative_l1(ref, fn_residual)  # the one host sync of a step
        branch.stats.residual_diffs[step] = diff
        branch.accumulated_diff += diff
        return diff < cfg.residual_diff_threshold

    # -- middle ------------------------------------------------------------------------------
    def run_middle(
        self,
        reuse: bool,
        fn_residual: torch.Tensor,
        body: Callable[..., object],
        body_args: Sequence[torch.Tensor],
        stream_bases: Sequence[torch.Tensor],
    ) -> Tuple[torch.Tensor, ...]:
        """Run the middle blocks, or rebuild their outputs as ``base + stored residual``.

        ``stream_bases[k]`` is the stream entering the middle that output ``k`` continues.
        """
        branch = self.branches.setdefault(self.branch, Branch())
        if reuse and all(b.shape == r.shape for b, r in zip(stream_bases, branch.middle_residuals)):
            branch.stats.cached_steps.append(self.step)
            branch.continuous_cached += 1
            return tuple(base + res for base, res in zip(stream_bases, branch.middle_residuals))
        branch.continuous_cached = 0
        branch.reference_residual = fn_residual
        out = body(*body_args)
        outs = out if isinstance(out, tuple) else (out,)
        branch.middle_residuals = tuple(o - base for o, base in zip(outs, stream_bases))
        return outs

    # -- stats -------------------------------------------------------------------------------
    @property
    def stats(self) -> CacheStats:
        empty = BranchStats()
        cond = self.branches.get(COND)
        uncond = self.branches.get(UNCOND)
        cond_stats = cond.stats if cond else empty
        uncond_stats = uncond.stats if uncond else empty
        return CacheStats(
            cached_steps=list(cond_stats.cached_steps),
            residual_diffs=dict(cond_stats.residual_diffs),
            cfg_cached_steps=list(uncond_stats.cached_steps),
            cfg_residual_diffs=dict(uncond_stats.residual_diffs),
            branches={name: BranchStats(list(b.stats.cached_steps), dict(b.stats.residual_diffs)) for name, b in self.branches.items()},
            executed_steps=self.step + 1 if self.calls else 0,
            calls=self.calls,
            generation=self.generation,
            separate_cfg=self.separate_cfg,
        )
