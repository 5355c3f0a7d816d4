"""DBPrune state: one guard per middle block, called by the rewritten body for each block.

``begin`` places the call (step, branch, generation) once per transformer call; ``run_block``
then prunes or runs one block: prune = the block's input + its stored residual, when its input
moved less than the threshold since the block last ran.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .context import Branch, CacheContext, CacheStats, relative_l1


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
    """Per-branch block states, per-block decisions and prune stats of one transformer."""

    def __init__(self, config, tracker=None):
        super().__init__(config, tracker)
        self.num_blocks = 0  # set by the rewrite: blocks of the pruned list(s), Fn/Bn included

    def _branch(self) -> PruneBranch:
        return self.branches.setdefault(self.branch, PruneBranch())

    def begin(self, hidden: torch.Tensor, timestep: Optional[torch.Tensor] = None) -> None:
        tracker = self.tracker
        if self.leads:
            tracker.advance(tracker.read_timestep(timestep), (hidden.shape, hidden.dtype, hidden.device))
        if tracker.generation != self._generation:
            self.branches, self._generation = {}, tracker.generation
        branch = self._branch()
        cached = branch.stats.cached_steps
        streak = 0  # pruned steps in a row right before this one
        while streak < len(cached) and cached[-1 - streak] == self.step - 1 - streak:
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
        state = branch.blocks.get(block_id)
        hidden = bases[hidden_index]
        if state is not None and self._may_prune(branch, state, hidden):
            if not branch.stats.cached_steps or branch.stats.cached_steps[-1] != self.step:
                branch.stats.cached_steps.append(self.step)
            branch.pruned_blocks[-1] += 1
            outs = tuple(base + res for base, res in zip(bases, state.residuals))
            return outs if len(outs) > 1 else outs[0]
        out = block(*args)
        outs = out if isinstance(out, tuple) else (out,)
        kept = hidden.clone() if self.outputs_are_reused else hidden
        branch.blocks[block_id] = BlockState(kept, tuple(o - b for o, b in zip(outs, bases)))
        return out

    def _may_prune(self, branch: PruneBranch, state: BlockState, hidden: torch.Tensor) -> bool:
        if state.hidden_input.shape != hidden.shape:
            return False
        gate = self._gate(branch)
        if gate is not None:
            return gate
        diffs = branch.block_diffs.setdefault(self.step, [])
        threshold = self.config.threshold_for(diffs)
        if threshold <= 0:
            return False
        diff = relative_l1(state.hidden_input, hidden)
        diffs.append(diff)
        branch.accumulated_diff += diff
        return diff < threshold

    @property
    def stats(self) -> CacheStats:
        out = super().stats
        branches = self.branches if self._generation == self.tracker.generation else {}
        for name, attr in (("cond", ""), ("uncond", "cfg_")):
            b = branches.get(name)
            pruned, actual = (list(b.pruned_blocks), list(b.actual_blocks)) if b else ([], [])
            setattr(out, f"{attr}pruned_steps", list(out.cfg_cached_steps if attr else out.cached_steps))
            setattr(out, f"{attr}pruned_blocks", pruned)
            setattr(out, f"{attr}actual_blocks", actual)
            setattr(out, f"{attr}block_diffs", {k: list(v) for k, v in b.block_diffs.items()} if b else {})
            setattr(out, f"{attr}pruned_ratio", sum(pruned) / sum(actual) if sum(actual) else 0.0)
        return out
