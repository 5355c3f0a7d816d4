"""DBPrune state: one guard per middle block, called by the rewritten body for each block.

``begin`` places the call (step, branch, generation) once per transformer call; ``run_block``
then prunes or runs one block: prune = the block's input + its stored residual, when its input
moved less than the threshold since the block last ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .context import Branch, CacheContext, CacheStats, kept
from .host import relative_l1
from .state import GenerationState


@dataclass
class PruneStats(CacheStats):
    """``CacheStats`` plus DBPrune's own (cfg_*: the CFG branch): steps with any pruned block,
    blocks pruned and blocks in the list per call, the guarded blocks' diffs per step,
    sum(pruned) / sum(actual)."""

    pruned_steps: List[int] = field(default_factory=list)
    pruned_blocks: List[int] = field(default_factory=list)
    actual_blocks: List[int] = field(default_factory=list)
    block_diffs: Dict[int, List[float]] = field(default_factory=dict)
    pruned_ratio: float = 0.0
    cfg_pruned_steps: List[int] = field(default_factory=list)
    cfg_pruned_blocks: List[int] = field(default_factory=list)
    cfg_actual_blocks: List[int] = field(default_factory=list)
    cfg_block_diffs: Dict[int, List[float]] = field(default_factory=dict)
    cfg_pruned_ratio: float = 0.0


class BlockState:
    """What one block stored when it last ran: its hidden input and one residual per output."""

    def __init__(self, hidden_input: torch.Tensor, residuals: Tuple[torch.Tensor, ...]):
        self.hidden_input = hidden_input
        self.residuals = residuals


class PruneBranch(Branch):
    def __init__(self):
        super().__init__()
        self.blocks: Dict[int, BlockState] = {}
        self.pruned_blocks: List[int] = []  # per call of this branch: blocks pruned
        self.actual_blocks: List[int] = []  # per call: blocks in the list(s) (pruned or not)
        self.block_diffs: Dict[int, List[float]] = {}  # step -> diffs of the guarded blocks, in order


class PruneContext(CacheContext):
    """Per-block decisions of one transformer; its state (block inputs, residuals, stats) lives
    in the current ``GenerationState`` like DBCache's."""

    stats_class = PruneStats
    branch_class = PruneBranch

    def _branch(self) -> PruneBranch:
        state, scope = self._state()
        name = state.tracker.branch
        branch = scope.branches.get(name)
        if branch is None:
            branch = scope.branches[name] = PruneBranch()
        return branch

    def begin(self, hidden: torch.Tensor, timestep: Optional[torch.Tensor] = None) -> None:
        state, _ = self._place(hidden, timestep)
        branch = self._branch()
        step = state.tracker.step
        cached = branch.stats.cached_steps
        streak = 0  # pruned steps in a row right before this one
        while streak < len(cached) and cached[-1 - streak] == step - 1 - streak:
            streak += 1
        branch.continuous_cached = streak
        branch.pruned_blocks.append(0)
        branch.actual_blocks.append(self.num_blocks)

    def run_block(
        self,
        block_id: int,
        block: Callable[..., object],
        args: Sequence[torch.Tensor],
        bases: Sequence[torch.Tensor],
        hidden_index: int,
    ):
        """Prune or run block ``block_id``; ``bases[k]`` is the input its output ``k`` continues,
        ``bases[hidden_index]`` the hidden input whose change decides."""
        branch = self._branch()
        step = self.step
        state = branch.blocks.get(block_id)
        hidden = bases[hidden_index]
        if state is not None and self._may_prune(branch, state, hidden, step):
            if not branch.stats.cached_steps or branch.stats.cached_steps[-1] != step:
                branch.stats.cached_steps.append(step)
            branch.pruned_blocks[-1] += 1
            outs = tuple(base + res for base, res in zip(bases, state.residuals))
            return outs if len(outs) > 1 else outs[0]
        out = block(*args)
        outs = out if isinstance(out, tuple) else (out,)
        hidden_kept = hidden.clone() if self.outputs_are_reused else hidden
        branch.blocks[block_id] = BlockState(kept(hidden_kept), tuple(kept(o - b) for o, b in zip(outs, bases)))
        return out

    def _may_prune(self, branch: PruneBranch, state: BlockState, hidden: torch.Tensor, step: int) -> bool:
        if state.hidden_input.shape != hidden.shape:
            return False
        gate = self._gate(branch, step)
        if gate is not None:
            return gate
        diffs = branch.block_diffs.setdefault(step, [])
        threshold = self.config.threshold_for(diffs)
        if threshold <= 0:
            return False
        diff = relative_l1(state.hidden_input, hidden, self.host)
        diffs.append(diff)
        branch.accumulated_diff += diff
        return diff < threshold

    @classmethod
    def collect_stats(cls, state: GenerationState, scope: Optional[str]) -> PruneStats:
        out = super().collect_stats(state, scope)
        own = state.scopes.get(scope)
        branches = own.branches if own is not None and own.generation == state.tracker.generation else {}
        for name, attr in (("cond", ""), ("uncond", "cfg_")):
            b = branches.get(name)
            pruned, actual = (list(b.pruned_blocks), list(b.actual_blocks)) if b else ([], [])
            setattr(out, f"{attr}pruned_steps", list(out.cfg_cached_steps if attr else out.cached_steps))
            setattr(out, f"{attr}pruned_blocks", pruned)
            setattr(out, f"{attr}actual_blocks", actual)
            setattr(out, f"{attr}block_diffs", {k: list(v) for k, v in b.block_diffs.items()} if b else {})
            setattr(out, f"{attr}pruned_ratio", sum(pruned) / sum(actual) if sum(actual) else 0.0)
        return out
