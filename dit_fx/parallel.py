"""Parallelism across ranks of a ``torch.distributed`` process group the user started.

``dit_fx.optimize(model, config, parallel=dit_fx.ParallelConfig(cfg=2))``: CFG parallelism for
batched-CFG calls (cond and uncond in one batch, FLUX/SD3 style pipelines): each rank of the
group runs its share of the batch (rank r: rows ``r*B/2 .. (r+1)*B/2``), with its own cache
decisions (a branch of its own: its diff is not reduced, since no collective sits inside the
model), and the outputs are all-gathered along the batch so every rank returns the whole batch.
Every tensor argument whose first dimension is the batch size of ``hidden_states`` is split;
others (position ids, rotary tables) go whole.

Context parallelism (``ulysses``/``ring``) and tensor parallelism (``tp``) derived from the graph
are not built yet: they are refused with the way that works today, which is a model parallelized
with diffusers' own ``enable_parallelism`` and then optimized (its split/gather hooks are captured,
and the decision's diff is all-reduced over its context-parallel group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
import torch.utils._pytree as pytree


@dataclass(frozen=True)
class ParallelConfig:
    """ulysses / ring / tp: degrees of context (all-to-all, ring) and tensor parallelism (1 only,
    for now). cfg: 1 or 2 (CFG parallelism over batched-CFG calls). group: the process group
    (default: the whole world); the degrees must multiply to its size."""

    ulysses: int = 1
    ring: int = 1
    cfg: int = 1
    tp: int = 1
    group: Any = None

    def __post_init__(self) -> None:
        for name in ("ulysses", "ring", "cfg", "tp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ParallelConfig.{name} must be an int >= 1, got {value!r}")
        if self.cfg > 2:
            raise ValueError(f"ParallelConfig.cfg must be 1 or 2 (cond and uncond), got {self.cfg}")
        for name in ("ulysses", "ring", "tp"):
            if getattr(self, name) > 1:
                raise ValueError(
                    f"ParallelConfig.{name} > 1 needs dit_fx's own sharding, which is not built yet: parallelize the "
                    "model with diffusers' enable_parallelism(config=ContextParallelConfig(...)) and optimize that "
                    "model (dit_fx captures its collectives and agrees on the decision across ranks)"
                )

    @property
    def degree(self) -> int:
        return self.ulysses * self.ring * self.cfg * self.tp

    def check(self) -> None:
        """Checks that need the process group: it exists and its size is the product of the degrees."""
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("ParallelConfig needs a torch.distributed process group: start one first "
                             "(torchrun + dist.init_process_group)")
        world = dist.get_world_size(self.group)
        if world != self.degree:
            raise ValueError(f"ParallelConfig degrees (ulysses x ring x cfg x tp = {self.degree}) must multiply to the "
                             f"group's size ({world})")


def cfg_parallel_forward(forward: Callable, parallel: ParallelConfig) -> Callable:
    """``forward(*args, **kwargs)`` on this rank's half of a batched-CFG call, outputs gathered."""
    import torch.distributed as dist

    rank, world = dist.get_rank(parallel.group), dist.get_world_size(parallel.group)

    def run(*args, **kwargs):
        batch = _batch_size(args, kwargs)
        if batch is None or batch % world:
            raise ValueError(f"ParallelConfig.cfg={world} needs batched-CFG calls whose hidden_states batch is a "
                             f"multiple of {world}, got {batch}")
        share = batch // world

        def local(x):
            if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == batch:
                return x[rank * share:(rank + 1) * share]
            return x

        out = forward(*[local(a) for a in args], **{k: local(v) for k, v in kwargs.items()})
        leaves, spec = pytree.tree_flatten(out)
        return pytree.tree_unflatten([_gather(x, world, parallel.group) for x in leaves], spec)

    return run


def _batch_size(args, kwargs) -> Optional[int]:
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    return hidden.shape[0] if isinstance(hidden, torch.Tensor) and hidden.dim() >= 1 else None


def _gather(x: Any, world: int, group: Any) -> Any:
    if not isinstance(x, torch.Tensor):
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def describe(parallel: Optional[ParallelConfig]) -> Dict[str, Any]:
    return {} if parallel is None else dict(ulysses=parallel.ulysses, ring=parallel.ring, cfg=parallel.cfg, tp=parallel.tp)
