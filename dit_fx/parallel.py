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

``ParallelConfig(tp=T)``: tensor parallelism derived from the graph (``passes/shard_features.py``):
each rank computes ``1/T`` of the heads of every attention and of the hidden features of every
MLP in the blocks, from its own copy of its rows/columns of those weights, and one all-reduce
after each row-parallel linear gives every rank the whole hidden stream (so the cache, its
residuals and its decision are those of one process). With ``ulysses``/``ring`` too: a 2-D
layout, ``tp`` neighbouring ranks per tensor-parallel group, context parallelism across groups.
Once split, the model's whole values of the split weights are freed (``release_weights=True``,
the default): each rank keeps only its parts, and a later capture (another input shape) splits
from those. ``dit_fx.disable`` gathers them back whole, so every rank must call it.

Not built yet, refused with ``ValueError``: ``cfg=2`` together with context or tensor parallelism. A model parallelized with diffusers' own
``enable_parallelism`` also works (its split/gather hooks are captured, and the decision's diff
is all-reduced over its context-parallel group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import torch
import torch.utils._pytree as pytree

if TYPE_CHECKING:  # pragma: no cover
    from .runtime.sequence_ops import SequenceGroups
    from .runtime.tensor_ops import FeatureGroup


@dataclass(frozen=True)
class ParallelConfig:
    """ulysses / ring: degrees of context parallelism (all-to-all over heads; all-gather of keys
    and values); their product shards the tokens. tp: tensor parallelism (the block linears' features
    split over ``tp`` ranks, ``passes/shard_features.py``); with both, ``ulysses x ring`` groups of
    ``tp`` ranks. release_weights (tp only): once a capture is split, the model's whole values of
    the split weights are freed (each rank keeps its parts, so weight memory per rank shrinks to
    about ``1/tp`` of the block linears); ``dit_fx.disable`` gathers them back (collective).
    cfg: 1 or 2 (CFG parallelism over batched-CFG calls). group: the process group (default: the
    whole world); the degrees must multiply to its size."""

    ulysses: int = 1
    ring: int = 1
    cfg: int = 1
    tp: int = 1
    group: Any = None
    release_weights: bool = True

    def __post_init__(self) -> None:
        for name in ("ulysses", "ring", "cfg", "tp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ParallelConfig.{name} must be an int >= 1, got {value!r}")
        if self.cfg > 2:
            raise ValueError(f"ParallelConfig.cfg must be 1 or 2 (cond and uncond), got {self.cfg}")
        if not isinstance(self.release_weights, bool):
            raise ValueError(f"ParallelConfig.release_weights must be a bool, got {self.release_weights!r}")
        if self.cfg > 1 and (self.sequence_degree > 1 or self.tp > 1):
            raise ValueError("ParallelConfig.cfg=2 together with ulysses/ring/tp is not built yet: use cfg alone")

    @property
    def degree(self) -> int:
        return self.ulysses * self.ring * self.cfg * self.tp

    @property
    def sequence_degree(self) -> int:
        return self.ulysses * self.ring

    def check_model(self, model: torch.nn.Module) -> None:
        """Checks that need the model: attention heads divisible by ``tp`` and then by ``ulysses``
        (Ulysses spreads the heads a tensor-parallel rank holds)."""
        heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
        if not isinstance(heads, int):
            return
        if self.tp > 1 and heads % self.tp:
            raise ValueError(f"ParallelConfig.tp={self.tp} must divide the model's attention heads ({heads})")
        if self.ulysses > 1 and (heads // self.tp) % self.ulysses:
            raise ValueError(f"ParallelConfig.ulysses={self.ulysses} must divide the model's attention heads "
                             f"({heads}, {heads // self.tp} per tensor-parallel rank)")

    def _ranks(self) -> list:
        import torch.distributed as dist

        return dist.get_process_group_ranks(self.group) if self.group is not None else list(range(dist.get_world_size()))

    def feature_group(self) -> Optional["FeatureGroup"]:
        """This rank's tensor-parallel group (collective, like ``sequence_groups``); None without
        tensor parallelism. Ranks ``s*tp .. s*tp+tp-1`` form tensor-parallel group ``s`` (neighbours:
        the all-reduces after every block's row-parallel linears stay within a node)."""
        if self.tp == 1:
            return None
        import torch.distributed as dist

        from .runtime.tensor_ops import FeatureGroup

        ranks, me = self._ranks(), dist.get_rank(self.group)
        t = self.tp
        groups = [dist.new_group(ranks[s * t:(s + 1) * t]) for s in range(len(ranks) // t)] if len(ranks) > t else None
        group = groups[me // t] if groups else (self.group if self.group is not None else dist.group.WORLD)
        return FeatureGroup(rank=me % t, world=t, group=group)

    def sequence_groups(self) -> Optional["SequenceGroups"]:
        """The context-parallel groups (collective: every rank of the group calls it, in the same
        order); None without context parallelism."""
        if self.sequence_degree == 1:
            return None
        import torch.distributed as dist

        from .runtime.sequence_ops import SequenceGroups

        everyone, me = self._ranks(), dist.get_rank(self.group)
        t = self.tp
        # With tensor parallelism, context-parallel group ``k`` holds the ranks at position ``k`` of
        # every tensor-parallel group (``feature_group``). Every rank creates every subgroup.
        by_lane = [everyone[k::t] for k in range(t)]
        u, r = self.ulysses, self.ring
        made = []
        for ranks in by_lane:
            rows = [dist.new_group([ranks[i * u + j] for j in range(u)]) if u > 1 else None for i in range(r)]
            cols = [dist.new_group([ranks[i * u + j] for i in range(r)]) if r > 1 else None for j in range(u)]
            whole = dist.new_group(ranks) if t > 1 else (self.group if self.group is not None else dist.group.WORLD)
            made.append((rows, cols, whole))
        rows, cols, group = made[me % t]
        rank = me // t
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
