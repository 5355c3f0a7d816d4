"""Parallelism across ranks of a ``torch.distributed`` process group the user started.

``dit_fx.optimize(model, config, parallel=dit_fx.ParallelConfig(ulysses=U, ring=R))``: context
parallelism derived from the graph (``passes/shard_sequence.py``): each rank holds ``1/(U*R)`` of
the tokens inside the blocks, attention spans the ranks (Ulysses all-to-all over heads, ring
all-gather of keys/values, or both on a ``ring x ulysses`` grid), the outputs are gathered, and
the cache decision's diff is summed over the group so every rank decides alike. Every rank
passes the same inputs (same seed, same latents) and gets the whole output.

``ParallelConfig(cfg=2)``: CFG parallelism. A batched-CFG call (cond and uncond in one batch,
FLUX/SD3 style pipelines): each rank of the group runs its share of the batch (rank r: rows
``r*B/2 .. (r+1)*B/2``), with its own cache decisions (a branch of its own: its diff is not
reduced, since no collective sits inside the model), and the outputs are all-gathered along the
batch so every rank returns the whole batch. Every tensor argument whose first dimension is the
batch size of ``hidden_states`` is split; others (position ids, rotary tables) go whole.
Separate cond / uncond calls (Wan, Qwen-Image: diffusers names them by ``cache_context``, or a
call's batch is odd): rank 0 computes every first call, rank 1 every second one, at the same
time, the second foreseen from the first (``SeparateCfg``); each rank's cache sees one branch.

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

import contextlib

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

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
    cfg: 1 or 2 (CFG parallelism). group: the process group (default: the whole world), or mesh: a
    1-D ``DeviceMesh`` whose group is used; the degrees must multiply to its size."""

    ulysses: int = 1
    ring: int = 1
    cfg: int = 1
    tp: int = 1
    group: Any = None
    release_weights: bool = True
    mesh: Any = None  # a 1-D torch DeviceMesh instead of ``group`` (its process group is used)

    def __post_init__(self) -> None:
        if self.mesh is not None:
            if self.group is not None:
                raise ValueError("ParallelConfig: pass group or mesh, not both")
            if getattr(self.mesh, "ndim", None) != 1:
                raise ValueError(f"ParallelConfig.mesh must be a 1-D DeviceMesh (dit_fx lays out the degrees on "
                                 f"it), got {self.mesh!r}")
            object.__setattr__(self, "group", self.mesh.get_group())
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
        groups = [subgroup(ranks[s * t:(s + 1) * t]) for s in range(len(ranks) // t)] if len(ranks) > t else None
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
            rows = [subgroup([ranks[i * u + j] for j in range(u)]) if u > 1 else None for i in range(r)]
            cols = [subgroup([ranks[i * u + j] for i in range(r)]) if r > 1 else None for j in range(u)]
            whole = subgroup(ranks) if t > 1 else (self.group if self.group is not None else dist.group.WORLD)
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


# Subgroups made so far, by (the default process group's id, ranks): see ``subgroup``.
_SUBGROUPS: Dict[Tuple[int, Tuple[int, ...]], Any] = {}


def subgroup(ranks: Sequence[int]) -> Any:
    """``dist.new_group(ranks)``, made once per default process group and reused after: optimizing
    several models (or one model again) with the same ``ParallelConfig`` opens no new connections
    and gloo/NCCL threads per model (before, each optimize made its own, kept until the process
    group was destroyed). Collective like ``new_group``: every rank makes the same calls in the
    same order, so a reuse on one rank is a reuse on all. A group destroyed since (a new default
    group, ``destroy_process_group``) is made again."""
    import torch.distributed as dist

    key = (id(dist.group.WORLD), tuple(ranks))
    group = _SUBGROUPS.get(key)
    if group is not None:
        try:
            dist.get_process_group_ranks(group)  # KeyError once the group is destroyed
            return group
        except (KeyError, ValueError, RuntimeError):
            pass
    group = _SUBGROUPS[key] = dist.new_group(list(ranks))
    return group


def cfg_parallel_forward(forward: Callable, parallel: ParallelConfig, branch: Callable[[], Optional[str]] = lambda: None,
                         names: Optional[Sequence[str]] = None, restart: Callable[[], None] = lambda: None,
                         new_generation: Callable[[], bool] = lambda: False,
                         in_branch: Callable[[Optional[str]], Any] = lambda name: contextlib.nullcontext()) -> Callable:
    """``forward(*args, **kwargs)`` with CFG parallelism. A batched-CFG call (cond and uncond rows
    in one batch) runs this rank's half of the batch, outputs gathered. A call of a pipeline that
    calls the transformer once per branch (``branch()`` names it, from diffusers'
    ``cache_context``, or its batch is odd) goes to ``SeparateCfg``."""
    import torch.distributed as dist

    rank, world = dist.get_rank(parallel.group), dist.get_world_size(parallel.group)
    separate = SeparateCfg(forward, rank, world, parallel.group, restart, new_generation, branch, in_branch)

    def run(*args, **kwargs):
        if args and names is not None and len(args) <= len(names):
            args, kwargs = (), {**dict(zip(names, args)), **kwargs}
        batch, hint = _batch_size(args, kwargs), branch()
        if hint not in (None, "cond", "uncond", "cond_uncond"):
            raise ValueError(f"ParallelConfig.cfg=2 places two CFG branches per step (cond, uncond); this pipeline "
                             f"also calls a {hint!r} branch")
        if not args and (separate.engaged or hint in ("cond", "uncond") or (hint is None and batch is not None and batch % world)):
            return separate(kwargs)
        if batch is None or batch % world:
            raise ValueError(f"ParallelConfig.cfg={world} needs batched-CFG calls whose hidden_states batch is a "
                             f"multiple of {world}, or calls by keyword, got batch {batch}")
        share = batch // world

        def local(x):
            if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == batch:
                return x[rank * share:(rank + 1) * share]
            return x

        out = forward(*[local(a) for a in args], **{k: local(v) for k, v in kwargs.items()})
        leaves, spec = pytree.tree_flatten(out)
        return pytree.tree_unflatten([_gather(x, world, parallel.group) for x in leaves], spec)

    run.separate = separate  # type: ignore[attr-defined]
    return run


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b)))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that do not compare are not the same
        return False


class SeparateCfg:
    """CFG parallelism for pipelines that call the transformer twice per step (cond, then uncond,
    same latents and timestep, other prompt embeddings): rank 0 computes every step's first call,
    rank 1 its second, at the same time.

    The second call's inputs are not known when the first call arrives, so they are foreseen: in
    the first step of a generation (a pipeline call, or the first call) both calls run in turn (rank 0 the first, rank 1 the second,
    each output broadcast) and the keywords in which the second differs from the first are learned
    (the negative prompt embeddings). From the next step on, at each first call rank 1 computes
    the second call on the first call's keywords with the learned ones swapped in, while rank 0
    computes the first; the two outputs are all-gathered. When the second call arrives, its
    keywords are compared with the foreseen ones (the same tensors, or equal): equal, it gets the
    output computed ahead; different, nothing foreseen is used: this rank's cache state is reset
    (its cached residual came from the foreseen call), the call runs as in a first step, and the
    difference is learned again (``mispredictions`` counts these; one warning if it happens
    after the first step of a generation). Each rank's cache thus sees one branch, every step,
    with exactly that branch's inputs. Calls must pass tensors by keyword (diffusers pipelines do).
    """

    def __init__(self, forward: Callable, rank: int, world: int, group: Any, restart: Callable[[], None],
                 new_generation: Callable[[], bool] = lambda: False, branch: Callable[[], Optional[str]] = lambda: None,
                 in_branch: Callable[[Optional[str]], Any] = lambda name: contextlib.nullcontext()):
        if world != 2:
            raise ValueError(f"ParallelConfig.cfg must be 2 for separate cond/uncond calls, got {world}")
        self.forward, self.rank, self.group, self.restart = forward, rank, group, restart
        self.new_generation, self.branch, self.in_branch = new_generation, branch, in_branch
        self.second_branch: Optional[str] = None  # the second call's branch name (its cache context)
        self.engaged = False
        self.first: Optional[Dict[str, Any]] = None  # the first call of the current (learning) step
        self.delta: Optional[Dict[str, Any]] = None  # second call's keywords that differ from the first's
        self.dropped: Tuple[str, ...] = ()  # first call's keywords the second does not pass
        self.ahead: Optional[Tuple[Any, Dict[str, Any]]] = None  # (second call's output, its keywords)
        self._previous_first: Optional[Dict[str, Any]] = None
        self._restarted = False
        self.mispredictions = 0
        self.steps_foreseen = 0
        self._warned = False

    def __call__(self, kwargs: Dict[str, Any]) -> Any:
        self.engaged = True
        if self.ahead is not None:
            out, foreseen = self.ahead
            self.ahead = None
            if kwargs.keys() == foreseen.keys() and all(_same(kwargs[k], foreseen[k]) for k in kwargs):
                return out
            self._mispredicted()
            if _same_step(kwargs, self._previous_first):
                return self._learn_second(kwargs, self._previous_first)
            self.delta, self.first = None, None  # no second call came: this one starts a step, learned afresh
        restarted, self._restarted = self._restarted, False
        # A pipeline call began: its negative prompt is learned afresh. (Not right after a restart:
        # the ranks' trackers then differ on whether a generation is pending; both know it began.)
        if self.first is None and not restarted and self.new_generation():
            self.delta, self.first, self.steps_foreseen = None, None, 0
        if self.delta is None:
            if self.first is not None and _same_step(kwargs, self.first):
                return self._learn_second(kwargs, self.first)
            self.first = kwargs
            return self._on(0, kwargs)
        foreseen = {k: v for k, v in kwargs.items() if k not in self.dropped}
        foreseen.update(self.delta)
        if self.rank == 0:
            mine = self.forward(**kwargs)
        else:
            with self.in_branch(self.second_branch):  # the foreseen call belongs to the second branch's cache
                mine = self.forward(**foreseen)
        leaves, spec = pytree.tree_flatten(mine)
        pairs = [_gather_pair(x, self.group) for x in leaves]
        self.ahead = (pytree.tree_unflatten([b for _, b in pairs], spec), foreseen)
        self._previous_first = kwargs
        self.steps_foreseen += 1
        return pytree.tree_unflatten([a for a, _ in pairs], spec)

    def _learn_second(self, kwargs: Dict[str, Any], first: Dict[str, Any]) -> Any:
        out = self._on(1, kwargs)
        self.delta = {k: v for k, v in kwargs.items() if k not in first or not _same(v, first[k])}
        self.dropped = tuple(k for k in first if k not in kwargs)
        self.second_branch = self.branch()
        self.first = None
        return out

    def _mispredicted(self) -> None:
        import warnings

        self.mispredictions += 1
        self.restart()  # this rank's cache state ran the foreseen call: start the generation afresh
        self._restarted = True
        if self.steps_foreseen > 1 and not self._warned:
            self._warned = True
            warnings.warn("dit_fx: CFG parallelism foresaw the second (uncond) call's inputs wrongly in the middle of a "
                          "generation; it ran again and the cache restarted (outputs stay exact, the speed-up is lost "
                          "for this step)", RuntimeWarning, stacklevel=4)
        self.steps_foreseen = 0

    def _on(self, owner: int, kwargs: Dict[str, Any]) -> Any:
        """``forward(**kwargs)`` on rank ``owner``, its output broadcast to the other."""
        import torch.distributed as dist

        out = self.forward(**kwargs) if self.rank == owner else None
        meta = [None]
        if self.rank == owner:
            leaves, spec = pytree.tree_flatten(out)
            meta = [(spec, [(tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else x for x in leaves])]
        dist.broadcast_object_list(meta, src=dist.get_global_rank(self.group, owner) if self.group is not None else owner,
                                   group=self.group)
        spec, described = meta[0]
        device = _device_of(kwargs)
        leaves = pytree.tree_flatten(out)[0] if self.rank == owner else [
            torch.empty(d[0], dtype=d[1], device=device) if isinstance(d, tuple) and len(d) == 2 and isinstance(d[1], torch.dtype)
            else d for d in described]
        src = dist.get_global_rank(self.group, owner) if self.group is not None else owner
        for x in leaves:
            if isinstance(x, torch.Tensor):
                dist.broadcast(x, src=src, group=self.group)
        return pytree.tree_unflatten(leaves, spec)


def _same_step(kwargs: Dict[str, Any], first: Dict[str, Any]) -> bool:
    """The second call of ``first``'s step: the same latents and the same timestep."""
    from .frontend.captures import call_timestep

    hidden = kwargs.get("hidden_states")
    return (hidden is not None and _same(hidden, first.get("hidden_states"))
            and _same(call_timestep(kwargs), call_timestep(first)))


def _device_of(kwargs: Dict[str, Any]) -> Any:
    for v in kwargs.values():
        if isinstance(v, torch.Tensor):
            return v.device
    return "cpu"


def _gather_pair(x: Any, group: Any) -> Tuple[Any, Any]:
    if not isinstance(x, torch.Tensor):
        return x, x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(2)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return parts[0], parts[1]


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
