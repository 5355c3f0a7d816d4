"""Parallelism across ranks of a ``torch.distributed`` process group the user started.

``dit_fx.optimize(model, config, parallel=dit_fx.ParallelConfig(ulysses=U, ring=R))``: context
parallelism derived from the graph (``passes/shard_sequence.py``): each rank holds ``1/(U*R)`` of
the tokens inside the blocks, attention spans the ranks (Ulysses all-to-all over heads, ring
all-gather of keys/values, or both on a ``ring x ulysses`` grid), the outputs are gathered, and
the cache decision's diff is summed over the group so every rank decides alike. Every rank
passes the same inputs (same seed, same latents) and gets the whole output.

``ParallelConfig(cfg=2)``: CFG parallelism for batched-CFG calls (cond and uncond in one batch,
FLUX/SD3 style pipelines): each rank of the group runs its share of the batch (rank r: rows
``r*B/2 .. (r+1)*B/2``), with its own cache decisions (a branch of its own: its diff is not
reduced, since no collective sits inside the model), and the outputs are all-gathered along the
batch so every rank returns the whole batch. Every tensor argument whose first dimension is the
batch size of ``hidden_states`` is split; others (position ids, rotary tables) go whole.

Not built yet, refused with ``ValueError``: tensor parallelism (``tp > 1``), and ``cfg=2``
together with context parallelism. A model parallelized with diffusers' own
``enable_parallelism`` also works (its split/gather hooks are captured, and the decision's diff
is all-reduced over its context-parallel group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
import torch.utils._pytree as pytree


@dataclass(frozen=True)
class ParallelConfig:
    """ulysses / ring: degrees of context parallelism (all-to-all over heads; all-gather of keys
    and values); their product shards the tokens. tp: tensor parallelism (1 only, for now).
    cfg: 1 or 2 (CFG parallelism over batched-CFG calls). group: the process group (default: the
    whole world); the degrees must multiply to its size."""

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
        if self.tp > 1:
            raise ValueError("ParallelConfig.tp > 1: tensor parallelism is not built yet (use ulysses/ring context "
                             "parallelism, or diffusers' enable_parallelism(config=TensorParallelConfig(...)))")
        if self.cfg > 1 and self.sequence_degree > 1:
            raise ValueError("ParallelConfig.cfg=2 together with ulysses/ring is not built yet: use one of them")

    @property
    def degree(self) -> int:
        return self.ulysses * self.ring * self.cfg * self.tp

    @property
    def sequence_degree(self) -> int:
        return self.ulysses * self.ring

    def check_model(self, model: torch.nn.Module) -> None:
        """Checks that need the model: attention heads divisible by ``ulysses``."""
        heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
        if self.ulysses > 1 and isinstance(heads, int) and heads % self.ulysses:
            raise ValueError(f"ParallelConfig.ulysses={self.ulysses} must divide the model's attention heads ({heads})")

    def sequence_groups(self) -> Optional["SequenceGroups"]:
        """The context-parallel groups (collective: every rank of the group calls it, in the same
        order); None without context parallelism."""
        if self.sequence_degree == 1:
            return None
        import torch.distributed as dist

        from .runtime.sequence_ops import SequenceGroups

        ranks = dist.get_process_group_ranks(self.group) if self.group is not None else list(range(dist.get_world_size()))
        rank = dist.get_rank(self.group)
        u, r = self.ulysses, self.ring
        rows = [dist.new_group([ranks[i * u + j] for j in range(u)]) if u > 1 else None for i in range(r)]
        cols = [dist.new_group([ranks[i * u + j] for i in range(r)]) if r > 1 else None for j in range(u)]
        group = self.group if self.group is not None else dist.group.WORLD
        return SequenceGroups(rank=rank, world=u * r, ulysses=u, ring=r, group=group,
                              ulysses_group=rows[rank // u], ring_group=cols[rank % u])

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
