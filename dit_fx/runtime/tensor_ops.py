"""What a feature-sharded (tensor-parallel) graph calls: the partial sums of a row-parallel linear
added over the ranks. ``passes/shard_features.py`` decides where; this only computes. The
collective is functional (``torch.distributed._functional_collectives``), so the graph stays one
graph that Dynamo/Inductor trace and CUDA graphs capture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed._functional_collectives as funcol


@dataclass(frozen=True)
class FeatureGroup:
    """The tensor-parallel group of this rank: ``world`` ranks, this one at ``rank``."""

    rank: int
    world: int
    group: Any


class AllReduceSum(torch.nn.Module):
    """The sum of ``x`` over the ranks of ``group`` (every rank gets the same tensor)."""

    def __init__(self, group: Any, world: int):
        super().__init__()
        self.group, self.world = group, world

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return funcol.wait_tensor(funcol.all_reduce(x.contiguous(), "sum", self.group))

    def extra_repr(self) -> str:
        return f"world={self.world}"


class SplitNorm(torch.nn.Module):
    """``rms_norm`` / ``layer_norm`` over a last dimension whose ``features`` are split over the
    ranks of ``group``: the statistics are summed over the ranks (in fp32), each rank normalizes
    its part (with its part of the weight and bias)."""

    def __init__(self, kind: str, features: int, eps: Any, group: Any, world: int):
        super().__init__()
        self.kind, self.features, self.eps, self.group, self.world = kind, features, eps, group, world

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return funcol.wait_tensor(funcol.all_reduce(x.sum(-1, keepdim=True), "sum", self.group))

    def forward(self, x: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        xf = x.float()
        if self.kind == "rms":
            y = xf * torch.rsqrt(self._sum(xf * xf) / self.features + eps)
        else:
            centred = xf - self._sum(xf) / self.features
            y = centred * torch.rsqrt(self._sum(centred * centred) / self.features + eps)
        y = y.to(x.dtype)
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        return y

    def extra_repr(self) -> str:
        return f"{self.kind}, features={self.features}, eps={self.eps}, world={self.world}"
