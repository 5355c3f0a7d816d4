"""Shared test utilities: block-execution counters and loops over per-step inputs."""

from __future__ import annotations

from typing import Iterable, List

import torch

from tiny_models import output_tensor


class BlockCounter:
    """Counts executions of chosen blocks with an in-place add inside the captured graph.

    The hook is traced into the graph, so the count only grows when the block's code really runs
    (a Python-side counter would be specialised away by Dynamo).
    """

    def __init__(self, blocks: Iterable[torch.nn.Module]):
        self.count = torch.zeros((), dtype=torch.float64)
        self.handles = [b.register_forward_pre_hook(self._hook) for b in blocks]

    def _hook(self, module, args):
        self.count.add_(1)
        return None

    def value(self) -> int:
        return int(self.count.item())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def all_blocks(model: torch.nn.Module, block_lists) -> List[torch.nn.Module]:
    return [blk for name, _ in block_lists for blk in getattr(model, name)]


@torch.no_grad()
def run_steps(model, inputs_per_step) -> List[torch.Tensor]:
    return [output_tensor(model(**inputs)).clone() for inputs in inputs_per_step]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def lite_schedule(steps: int, warmup: int, interval: int) -> List[int]:
    """diffusers' TaylorSeer schedule as a steps mask: steps < ``warmup`` compute, then the steps
    with ``(step - warmup - 1) % interval == 0`` (its ``_measure_should_compute``)."""
    return [1 if i < warmup or (i - warmup - 1) % interval == 0 else 0 for i in range(steps)]
