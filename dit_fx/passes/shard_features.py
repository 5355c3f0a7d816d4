"""Tensor parallelism derived from the graph: split the features of the block linears over the
ranks, column-parallel where a linear's outputs fan out (attention Q/K/V, MLP up-projections),
row-parallel where they come back (attention output, MLP down-projection), with one all-reduce
after each row-parallel linear. No per-model plan.

Pass ``shard_features(gm, ctx)`` runs on the captured graph before the cache rewrite (after
``shard_sequence`` when both run). It is a dataflow analysis over the block region:

1. **Candidates.** Every linear in the blocks whose input is replicated and whose weight is a
   parameter starts a *group*: its outputs are split along the feature dimension, rank ``r``
   holding the ``r``-th ``1/T`` of each *segment* (one segment, or the parts a ``chunk``/``split``
   of its output cuts it into: a fused QKV projection).
2. **Propagation.** Which dimension of each value holds split features, and in which segments:
   through ops that act per feature (elementwise ops with operands that broadcast over it, norms
   and reductions over other dims, views that split a feature dim into heads or merge heads back,
   permutes, ``cat`` / ``stack`` / splits along it or along other dims) and through attention,
   split by heads. Groups that meet in one op merge (Q, K and V meet in the attention; FLUX's
   single block joins the attention and the MLP in one ``cat``).
3. **Closing.** A linear whose input features are split is row-parallel: its weight is split
   along the input features like its input, and its partial result is summed over the ranks
   (``runtime/tensor_ops.AllReduceSum``) before its bias is added.
4. **Refusal per group.** A group whose split values meet anything else (an operand with the
   whole feature dimension, a reduction over the features, a value leaving the blocks, a size
   that does not divide) is left whole, with its reason (AdaLN modulation linears stay
   replicated this way), and the analysis runs again without it, until every group left closes.
5. **Edit.** Each rank's weight rows / columns are copied into the graph module (its own
   tensors; the model's are untouched); literal sizes of views at a split dimension (the head
   count) become local. Fake-tensor propagation of the edited graph must give every split value
   its local shape, or the whole pass is refused.

What was done is recorded in ``FeatureShardRecord`` (``ctx.record``): column- and row-parallel
linears and the linears kept whole with the reason. ``dit_fx.dump`` shows the ``all_reduce_sum``
calls.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..runtime.tensor_ops import AllReduceSum, FeatureGroup, SplitNorm
from .graph_ops import (
    ELEMENTWISE_FUNCS, ELEMENTWISE_METHODS, LIKE, PERMUTES, REDUCTIONS, SDPA, SOFTMAX, SPLITS, VIEW_FUNCS,
    VIEW_METHODS, arg, index_items, map_dim, name, norm_dim, permutation, shape,
)
from ..runtime.sequence_ops import SequenceAttention
from .shard_sequence import ShardRefused, check_shapes

_LINEAR = {torch._C._nn.linear, F.linear}
_NORMS = {F.layer_norm, torch.layer_norm, torch.rms_norm, F.rms_norm} if hasattr(F, "rms_norm") else {F.layer_norm, torch.layer_norm, torch.rms_norm}


@dataclass(frozen=True)
class Feat:
    """Dimension ``dim`` holds split features: runs of ``segments`` (whole sizes); each rank holds
    its ``1/world`` of every run, in order."""

    dim: int
    segments: Tuple[int, ...]

    def local(self, world: int) -> int:
        return sum(s // world for s in self.segments)


@dataclass
class FeatureShardRecord:
    """What the pass did: column-parallel linears (node, segments), row-parallel linears, and the
    linears left whole with the reason; ``reason`` when the whole pass was refused."""

    columns: List[Tuple[str, Tuple[int, ...]]] = field(default_factory=list)
    rows: List[str] = field(default_factory=list)
    kept: List[Tuple[str, str]] = field(default_factory=list)
    reason: Optional[str] = None
    # The model's parameters the split graph reads only through its own parts (releasable).
    unread: List[torch.nn.Parameter] = field(default_factory=list, repr=False)
    released_bytes: int = 0


class SplitWeights:
    """Each rank's parts of the split parameters, kept for every capture of one model (a new input
    shape captures again and must find the same parts), and the model's parameters whose whole
    values were released after the split (``release``): their storage becomes one NaN element
    viewed at the full shape, so a later capture still traces full shapes, and anything running
    the model outside dit_fx computes NaN, never a plausible wrong image. ``restore`` gathers the
    parts back into whole parameters (a collective over the tensor-parallel group)."""

    def __init__(self, group: FeatureGroup):
        self.group = group
        self.parts: Dict[Tuple[int, int, Tuple[int, ...]], torch.Tensor] = {}
        self.released: Dict[int, Tuple[torch.nn.Parameter, int, Tuple[int, ...]]] = {}

    def local(self, param: torch.Tensor, dim: int, segments: Tuple[int, ...]) -> torch.Tensor:
        key = (id(param), dim, segments)
        part = self.parts.get(key)
        if part is None:
            if id(param) in self.released:
                raise ShardRefused(f"a parameter released by an earlier split is now needed split as {segments} "
                                   f"along dim {dim}; reload the model")
            part = self.parts[key] = _local(param, dim, segments, self.group)
        return part

    def release(self, params: Sequence[torch.nn.Parameter]) -> int:
        """Free the whole values of ``params`` (each split along one dim); returns bytes freed."""
        freed = 0
        for p in params:
            if id(p) in self.released:
                continue
            keys = [k for k in self.parts if k[0] == id(p)]
            if len(keys) != 1:
                continue  # split two ways (or not at all): keep it whole
            _, dim, segments = keys[0]
            freed += p.numel() * p.element_size()
            self.released[id(p)] = (p, dim, segments)
            p.data = torch.full((), float("nan"), dtype=p.dtype, device=p.device).expand(p.shape)
        return freed

    def restore(self) -> None:
        """Whole parameters again, gathered from every rank's parts (every rank must call it)."""
        import torch.distributed as dist

        for p, dim, segments in self.released.values():
            part = self.parts[(id(p), dim, segments)]
            gathered = [torch.empty_like(part) for _ in range(self.group.world)]
            dist.all_gather(gathered, part.contiguous(), group=self.group.group)
            pieces, offset = [], 0
            for s in segments:  # rank r's chunk of every segment, in order
                chunk = s // self.group.world
                for r in range(self.group.world):
                    pieces.append(gathered[r].narrow(dim, offset, chunk))
                offset += chunk
            p.data = torch.cat(pieces, dim=dim).contiguous()
        self.released.clear()


@dataclass
class FeatureContext:
    group: FeatureGroup
    block_of: Dict[str, str]  # node name -> block, from the plan of the unsharded graph
    example_inputs: Tuple[Any, ...] = ()
    record: FeatureShardRecord = field(default_factory=FeatureShardRecord)
    weights: Optional[SplitWeights] = None  # the parts of every capture of this model (default: this capture's own)


class _Poison(Exception):
    pass


@dataclass
class _Group:
    columns: List[Tuple[fx.Node, Tuple[int, ...]]] = field(default_factory=list)
    rows: List[Tuple[fx.Node, Feat]] = field(default_factory=list)
    norms: List[Tuple[fx.Node, Feat]] = field(default_factory=list)  # rms/layer norms over the split features
    sums: List[Tuple[fx.Node, float]] = field(default_factory=list)  # reductions over them: (node, local/whole)
    params: List[Tuple[fx.Node, fx.Node, int, Feat]] = field(default_factory=list)  # (user, parameter, dim, layout)
    edits: List[Callable[[], None]] = field(default_factory=list)
    poison: Optional[str] = None


Info = Union[Tuple[Feat, int], Tuple[Optional[Tuple[Feat, int]], ...]]


class _Analysis:
    """One propagation over the blocks with the candidate linears not yet refused."""

    def __init__(self, gm: fx.GraphModule, ctx: FeatureContext, refused: Dict[str, str]):
        self.gm, self.ctx, self.refused = gm, ctx, refused
        self.world = ctx.group.world
        self.info: Dict[str, Any] = {}
        self.pending_norm = self.pending_sum = None
        self.pending_params: List[Tuple[fx.Node, fx.Node, int, Feat]] = []
        self.groups: Dict[int, _Group] = {}
        self.parent: Dict[int, int] = {}
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        self.param_of = {n.name: x for n, x in zip(placeholders, ctx.example_inputs) if isinstance(x, torch.nn.Parameter)}

    # -- groups -----------------------------------------------------------------------------------
    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, ids: Sequence[int]) -> int:
        roots = sorted({self.find(g) for g in ids})
        root = roots[0]
        for other in roots[1:]:
            self.parent[other] = root
            a, b = self.groups[root], self.groups.pop(other)
            for part in ("columns", "rows", "norms", "sums", "params", "edits"):
                getattr(a, part).extend(getattr(b, part))
            a.poison = a.poison or b.poison
        return root

    def new_group(self) -> int:
        g = len(self.parent)
        self.parent[g] = g
        self.groups[g] = _Group()
        return g

    def group(self, g: int) -> _Group:
        return self.groups[self.find(g)]

    # -- the walk ---------------------------------------------------------------------------------
    def run(self) -> None:
        region = self.ctx.block_of
        for node in self.gm.graph.nodes:
            if node.name not in region:
                continue
            if node.op == "call_function" and node.target in _LINEAR:
                self.linear(node)
                continue
            ins = [self.info[a.name] for a in node.all_input_nodes if a.name in self.info]
            if not ins:
                continue
            ids = [g for i in ins for g in _ids(i)]
            self.pending_norm = self.pending_sum = None
            self.pending_params = []
            try:
                out = self.visit(node)
            except _Poison as exc:
                self.group(self.union(ids)).poison = f"{node.name} ({name(node)}): {exc}"
                continue
            root = self.union(ids)
            grp = self.group(root)
            if self.pending_norm:
                grp.norms.append(self.pending_norm)
            if self.pending_sum:
                grp.sums.append(self.pending_sum)
            grp.params.extend(self.pending_params)
            if out is not None:
                self.info[node.name] = _with_group(out, root)
        for n in self.gm.graph.nodes:  # split values must not leave the blocks
            if n.name in self.info:
                for u in n.users:
                    if u.name not in region or u.op == "output":
                        for g in _ids(self.info[n.name]):
                            grp = self.group(g)
                            grp.poison = grp.poison or f"{n.name}: a value with split features leaves the blocks ({u.name})"

    def feat(self, a: Any) -> Optional[Feat]:
        i = self.info.get(a.name) if isinstance(a, fx.Node) else None
        if i is None:
            return None
        if isinstance(i, tuple) and i and isinstance(i[0], Feat):
            return i[0]
        raise _Poison("a tuple of split values used as one")

    def linear(self, node: fx.Node) -> None:
        x, weight = node.args[0], arg(node, 1, "weight")
        bias = arg(node, 2, "bias")
        w = self.param_of.get(weight.name) if isinstance(weight, fx.Node) else None
        b_ok = bias is None or (isinstance(bias, fx.Node) and bias.name in self.param_of)
        i = self.info.get(x.name) if isinstance(x, fx.Node) else None
        if i is not None:  # split inputs: row-parallel
            feat, g = i
            grp = self.group(g)
            if w is None or w.dim() != 2 or not b_ok or feat.dim != len(shape(x)) - 1:
                grp.poison = grp.poison or f"{node.name}: a linear over split features that cannot be split by columns"
            else:
                grp.rows.append((node, feat))
            return
        if node.name in self.refused or w is None or w.dim() != 2 or not b_ok:
            return
        segments = _output_segments(node, w.shape[0])
        if any(s % self.world for s in segments):
            self.refused[node.name] = f"{w.shape[0]} output features do not split into {self.world} equal parts"
            return
        g = self.new_group()
        self.groups[g].columns.append((node, segments))
        self.info[node.name] = (Feat(len(shape(node)) - 1, segments), g)

    def visit(self, node: fx.Node) -> Any:
        if node.op == "call_module":
            if isinstance(self.gm.get_submodule(node.target), SequenceAttention):
                return self.attention(node)  # context parallelism ran first: attention across its ranks
            raise _Poison("a module call on split features")
        if node.op not in ("call_function", "call_method"):
            raise _Poison(f"{node.op} on split features")
        target, op = node.target, name(node)
        src = node.args[0] if node.args else None
        if target is operator.getitem and isinstance(src, fx.Node) and isinstance(self.info.get(src.name), tuple) \
                and not isinstance(self.info[src.name][0], Feat):
            part = self.info[src.name][node.args[1]]
            return part[0] if part is not None else None
        if target in SDPA:
            return self.attention(node)
        if target is operator.getitem:
            return self.getitem(node)
        if target is operator.setitem:
            return self.setitem(node)
        if target in (torch.cat, torch.concat, torch.stack):
            return self.cat(node)
        if op in SPLITS or target in (torch.chunk, torch.split, torch.unbind):
            return self.split(node)
        if op in PERMUTES or target in (torch.permute, torch.transpose, torch.movedim):
            f = self.single(node)
            return Feat(permutation(node, len(shape(src))).index(f.dim), f.segments)
        if op in ("view_as_complex", "view_as_real"):
            f = self.single(node)
            if f.dim >= len(shape(src)) - 1:
                raise _Poison("a complex view of the split dimension")
            return f
        if op in VIEW_METHODS or target in VIEW_FUNCS:
            return self.view(node)
        if op == "type_as":
            f = self.feat(src)
            if f is None:
                raise _Poison("casts a whole tensor like a split one")
            return f
        if target in LIKE:
            return self.single(node)
        if target in _NORMS:
            return self.norm(node)
        if op in REDUCTIONS or op in SOFTMAX or target in (torch.mean, torch.sum, torch.softmax, F.softmax):
            return self.reduction(node)
        if target in ELEMENTWISE_FUNCS or (node.op == "call_method" and op in ELEMENTWISE_METHODS):
            return self.elementwise(node)
        raise _Poison("not known to act per feature")

    def single(self, node: fx.Node) -> Feat:
        f = self.feat(node.args[0]) if node.args else None
        others = [a for a in node.all_input_nodes if a is not node.args[0] and a.name in self.info]
        if f is None or others:
            raise _Poison("expects one split tensor as its first input")
        return f

    def elementwise(self, node: fx.Node) -> Feat:
        out = shape(node)
        if out is None:
            raise _Poison("result is not a tensor")
        found: Optional[Feat] = None
        for a in node.all_input_nodes:
            f = self.feat(a)
            if f is not None:
                aligned = Feat(f.dim + len(out) - len(shape(a)), f.segments)
                if found is not None and found != aligned:
                    raise _Poison(f"mixes split tensors of different layouts ({found}, {aligned})")
                found = aligned
        for a in node.all_input_nodes:
            s = shape(a)
            if a.name not in self.info and s is not None:
                d = found.dim - (len(out) - len(s))
                if d >= 0 and s[d] != 1:
                    if a.name in self.param_of and s[d] == sum(found.segments):
                        self.pending_params.append((node, a, d, found))  # a norm's weight: this rank's part of it
                        continue
                    raise _Poison(f"{a.name} has the whole feature dimension ({s[d]})")
        return found

    def norm(self, node: fx.Node) -> Feat:
        """A norm over other dims acts per feature; one over the split features (Wan's QK norm spans
        every head) is computed from statistics summed over the ranks (``SplitNorm``)."""
        f = self.single(node)
        ndim = len(shape(node.args[0]))
        normalized = arg(node, 1, "normalized_shape")
        if f.dim < ndim - len(normalized):
            return f
        if len(normalized) != 1 or f.dim != ndim - 1:
            raise _Poison("normalizes over the split features and other dims")
        rms = node.target is torch.rms_norm or getattr(node.target, "__name__", "") == "rms_norm"
        for i, key in ((2, "weight"),) + (() if rms else ((3, "bias"),)):
            p = arg(node, i, key)
            if p is not None and not (isinstance(p, fx.Node) and p.name in self.param_of):
                raise _Poison(f"a norm over the split features with a {key} that is not a parameter")
        self.pending_norm = (node, f)
        return f

    def reduction(self, node: fx.Node) -> Optional[Feat]:
        f = self.single(node)
        ndim = len(shape(node.args[0]))
        dims = arg(node, 1, "dim")
        if dims is None:
            raise _Poison("reduces over every dimension")
        dims = [norm_dim(x, ndim) for x in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if f.dim in dims:
            # A sum or mean over the split features (an RMS norm written out): this rank's part,
            # then summed over the ranks; the result is whole.
            if name(node) not in ("sum", "mean") or node.target in (torch.softmax, F.softmax) or len(dims) != 1:
                raise _Poison("reduces over the split features")
            whole = sum(f.segments)
            self.pending_sum = (node, f.local(self.world) / whole if name(node) == "mean" else 1.0)
            return None
        keep = arg(node, 2, "keepdim", False) if name(node) in REDUCTIONS else True
        return f if keep else Feat(f.dim - sum(1 for x in dims if x < f.dim), f.segments)

    def view(self, node: fx.Node) -> Feat:
        f = self.single(node)
        src, out = shape(node.args[0]), shape(node)
        found = view_dim(src, f.dim, out, f.segments, self.world)
        if found is None:
            raise _Poison(f"a view {src} -> {out} that mixes the split features with other dims")
        e, segments = found
        new = Feat(e, segments)
        full, local = sum(segments), new.local(self.world)
        if full != local:
            self.group(self.info[node.args[0].name][1]).edits.append(lambda: _set_view_size(node, e, full, local))
        return new

    def getitem(self, node: fx.Node) -> Feat:
        f = self.single(node)
        items = index_items(len(shape(node.args[0])), node.args[1])
        if items is None:
            raise _Poison("advanced indexing of a split tensor")
        out_dim, d = 0, 0
        for it in items:
            if it is None:
                out_dim += 1
                continue
            if d == f.dim:
                if not (isinstance(it, slice) and it == slice(None)):
                    raise _Poison("indexes into the split features")
                return Feat(out_dim, f.segments)
            out_dim += 0 if isinstance(it, int) else 1
            d += 1
        raise _Poison("lost the split dimension")

    def setitem(self, node: fx.Node) -> None:
        """``x[index] = value`` on a split ``x``, the index leaving the split dimension whole (Wan's
        rotary writes the even and odd channels of each head)."""
        f = self.feat(node.args[0])
        if f is None:
            raise _Poison("writes split values into a whole tensor")
        items = index_items(len(shape(node.args[0])), node.args[1])
        if items is None or any(it is None for it in items) or items[f.dim] != slice(None):
            raise _Poison("writes through an index into the split features")
        pos = sum(1 for it in items[:f.dim] if not isinstance(it, int))
        kept = sum(1 for it in items if not isinstance(it, int))
        value = node.args[2]
        fv, vs = self.feat(value), shape(value)
        if fv is not None:
            if fv.segments != f.segments or fv.dim + kept - len(vs) != pos:
                raise _Poison("writes values split another way")
        elif vs is not None and 0 <= pos - (kept - len(vs)) < len(vs) and vs[pos - (kept - len(vs))] != 1:
            raise _Poison("writes whole features into split ones")
        return None

    def cat(self, node: fx.Node) -> Feat:
        tensors = list(node.args[0])
        out = shape(node)
        dim = norm_dim(arg(node, 1, "dim", 0), len(out))
        feats = [self.feat(a) for a in tensors]
        if any(f is None for f in feats):
            raise _Poison("joins split tensors with whole ones")
        if node.target is torch.stack:
            if len(set(feats)) != 1:
                raise _Poison("stacks different layouts")
            return Feat(feats[0].dim + (1 if dim <= feats[0].dim else 0), feats[0].segments)
        if all(f.dim == dim for f in feats):
            return Feat(dim, tuple(s for f in feats for s in f.segments))
        if len(set(feats)) != 1:
            raise _Poison("concatenates different layouts")
        return feats[0]

    def split(self, node: fx.Node) -> Tuple[Feat, ...]:
        f = self.single(node)
        op = name(node)
        ndim = len(shape(node.args[0]))
        outs = node.meta.get("example_value", node.meta.get("val"))
        if op == "unbind" or node.target is torch.unbind:
            dim = norm_dim(arg(node, 1, "dim", 0), ndim)
            if dim == f.dim:
                raise _Poison("unbinds the split features")
            return tuple(Feat(f.dim - (1 if dim < f.dim else 0), f.segments) for _ in outs)
        dim = norm_dim(arg(node, 2, "dim", 0), ndim)
        if dim != f.dim:
            return tuple(f for _ in outs)
        sizes = [int(o.shape[dim]) for o in outs]
        if tuple(sizes) != f.segments:
            raise _Poison(f"splits the features into {sizes}, not along their segments {list(f.segments)}")
        if op != "chunk" and node.target is not torch.chunk:
            local = [s // self.world for s in sizes]
            self.group(self.info[node.args[0].name][1]).edits.append(lambda: _set_split_sizes(node, local))
        return tuple(Feat(f.dim, (s,)) for s in sizes)

    def attention(self, node: fx.Node) -> Feat:
        names = ("query", "key", "value", "attn_mask")
        q, k, v, mask = (arg(node, i, n) for i, n in enumerate(names))
        fq, fk, fv = self.feat(q), self.feat(k), self.feat(v)
        heads = len(shape(q)) - 3
        if not (fq is not None and fq == fk == fv and fq.dim == heads):
            raise _Poison("queries, keys and values not split alike by heads")
        if arg(node, 7, "enable_gqa", False):
            raise _Poison("grouped-query attention")
        if mask is not None:
            if self.feat(mask) is not None:
                raise _Poison("a split mask")
            ms = shape(mask)
            d = heads - (len(shape(q)) - len(ms)) if ms is not None else -1
            if ms is None or (d >= 0 and ms[d] != 1):
                raise _Poison("a mask per head")
        return fq


def _ids(info: Any) -> List[int]:
    if isinstance(info, tuple) and info and isinstance(info[0], Feat):
        return [info[1]]
    return [g for part in info if part is not None for g in _ids(part)] if isinstance(info, tuple) else []


def _with_group(out: Any, g: int) -> Any:
    if out is None:
        return None
    if isinstance(out, Feat):
        return (out, g)
    return tuple((f, g) if f is not None else None for f in out)


def _output_segments(node: fx.Node, features: int) -> Tuple[int, ...]:
    """The runs a linear's outputs are split in: the parts its first split along the features cuts
    them into (a fused projection), else one."""
    for u in node.users:
        if name(u) in ("chunk", "split", "split_with_sizes") or u.target in (torch.chunk, torch.split):
            ndim = len(shape(node))
            if norm_dim(arg(u, 2, "dim", 0), ndim) == ndim - 1:
                outs = u.meta.get("example_value", u.meta.get("val"))
                sizes = tuple(int(o.shape[-1]) for o in outs)
                if sum(sizes) == features:
                    return sizes
    return (features,)


def view_dim(src: Sequence[int], d: int, dst: Sequence[int], segments: Tuple[int, ...],
             world: int) -> Optional[Tuple[int, Tuple[int, ...]]]:
    """Where split dim ``d`` of ``src`` is in ``dst`` under a view, with its segments: the same
    dim, the leading dim of the dims it splits into (heads from features: every segment must hold
    whole rows of the inner dims, a multiple of ``world`` of them), or the dim it is the leading
    part of (features from heads)."""
    e = map_dim(src, d, dst)
    if e is not None:
        return e, segments
    before = math.prod(src[:d])
    for e in range(len(dst)):
        if math.prod(dst[:e]) != before or (dst[e] == 1 and src[d] != 1):
            continue
        acc = 1
        for k in range(e, len(dst)):  # src[d] split into dst[e..k]
            acc *= dst[k]
            if acc == src[d] and k > e:
                inner = acc // dst[e]
                if all(s % inner == 0 and (s // inner) % world == 0 for s in segments):
                    return e, tuple(s // inner for s in segments)
                return None
            if acc > src[d]:
                break
        acc = 1
        for k in range(d, len(src)):  # src[d..k] merged into dst[e]
            acc *= src[k]
            if acc == dst[e] and k > d:
                inner = acc // src[d]
                return e, tuple(s * inner for s in segments)
            if acc > dst[e]:
                break
    return None


def _set_view_size(node: fx.Node, dim: int, full: int, local: int) -> None:
    """A literal size ``full`` at output dim ``dim`` of a view / reshape / expand / unflatten becomes ``local``."""
    op = name(node)
    if op == "unflatten" or node.target is torch.unflatten:
        start = norm_dim(arg(node, 1, "dim"), len(shape(node.args[0])))
        sizes = list(arg(node, 2, "sizes"))
        i = dim - start
        if 0 <= i < len(sizes) and sizes[i] != -1:
            sizes[i] = _local_size(node, sizes[i], full, local)
            node.args = (node.args[0], node.args[1], tuple(sizes)) if len(node.args) > 2 else node.args
            if "sizes" in node.kwargs:
                node.kwargs = {**node.kwargs, "sizes": tuple(sizes)}
        return
    if op in ("flatten", "unsqueeze", "squeeze", "view_as_real", "view_as_complex") or node.target in (
            torch.flatten, torch.unsqueeze, torch.squeeze):
        return
    args = list(node.args)
    if "size" in node.kwargs or "shape" in node.kwargs:
        key = "size" if "size" in node.kwargs else "shape"
        sizes = list(node.kwargs[key])
        if sizes[dim] != -1:
            sizes[dim] = _local_size(node, sizes[dim], full, local)
        node.kwargs = {**node.kwargs, key: tuple(sizes)}
        return
    packed = len(args) == 2 and isinstance(args[1], (list, tuple))
    sizes = list(args[1]) if packed else args[1:]
    if sizes[dim] != -1:
        sizes[dim] = _local_size(node, sizes[dim], full, local)
    node.args = (args[0], tuple(sizes)) if packed else (args[0], *sizes)


def _local_size(node: fx.Node, size: Any, full: int, local: int) -> int:
    if size != full:
        raise ShardRefused(f"{node.name}: size {size} at the split dimension is not its {full} features")
    return local


def _set_split_sizes(node: fx.Node, local: List[int]) -> None:
    node.args = (node.args[0], tuple(local), *node.args[2:])


def analyze(gm: fx.GraphModule, ctx: FeatureContext) -> _Analysis:
    """Propagate, drop every group that does not close, repeat until all close."""
    refused: Dict[str, str] = {}
    for _ in range(10_000):
        analysis = _Analysis(gm, ctx, refused)
        analysis.run()
        bad = {r: g for r, g in analysis.groups.items() if g.poison or not g.rows}
        if not bad:
            return analysis
        for g in bad.values():
            why = g.poison or "no linear takes its split features back"
            for node, _ in g.columns:
                refused[node.name] = why
    raise ShardRefused("the feature analysis did not settle")


def shard_features(gm: fx.GraphModule, ctx: FeatureContext) -> fx.GraphModule:
    """Split ``gm``'s block linears over ``ctx.group`` (in place); raises ``ShardRefused``."""
    analysis = analyze(gm, ctx)
    record, group = ctx.record, ctx.group
    record.kept = sorted(analysis.refused.items())
    groups = list(analysis.groups.values())
    if not groups:
        raise ShardRefused("no linear in the blocks can be split: " + (record.kept[0][1] if record.kept else "none found"))
    expected = {}
    for n in gm.graph.nodes:
        i = analysis.info.get(n.name)
        if isinstance(i, tuple) and i and isinstance(i[0], Feat) and shape(n) is not None:
            s = list(shape(n))
            s[i[0].dim] = i[0].local(group.world)
            expected[n.name] = tuple(s)
    for g in groups:
        for edit in g.edits:
            edit()
    graph = gm.graph
    counter = iter(range(10**6))
    weights = ctx.weights if ctx.weights is not None else SplitWeights(group)

    def tensor_attr(t: torch.Tensor, prefix: str, like: fx.Node) -> fx.Node:
        attr = f"{prefix}_{next(counter)}"
        gm.register_buffer(attr, t)
        with graph.inserting_before(like):
            node = graph.get_attr(attr)
        return node

    def add_module(module: torch.nn.Module, prefix: str) -> str:
        attr = f"{prefix}_{next(counter)}"
        gm.add_submodule(attr, module)
        return attr

    for g in groups:
        for node, segments in g.columns:
            weight, bias = arg(node, 1, "weight"), arg(node, 2, "bias")
            w = weights.local(analysis.param_of[weight.name], 0, segments)
            args = [node.args[0], tensor_attr(w, "tp_weight", node)]
            if bias is not None:
                args.append(tensor_attr(weights.local(analysis.param_of[bias.name], 0, segments), "tp_bias", node))
            node.args, node.kwargs = tuple(args), {}
            record.columns.append((node.name, segments))
        for node, feat in g.rows:
            weight, bias = arg(node, 1, "weight"), arg(node, 2, "bias")
            w = weights.local(analysis.param_of[weight.name], 1, feat.segments)
            attr = tensor_attr(w, "tp_weight", node)
            reduce_name = add_module(AllReduceSum(group.group, group.world), "all_reduce_sum")
            with graph.inserting_after(node):
                part = graph.call_function(node.target, (node.args[0], attr, None))
                with graph.inserting_after(part):
                    summed = graph.call_module(reduce_name, (part,))
                last = summed
                if bias is not None:
                    with graph.inserting_after(summed):
                        last = graph.call_function(operator.add, (summed, bias))
            for new in (part, summed, last):
                new.meta = dict(node.meta)
                ctx.block_of[new.name] = ctx.block_of[node.name]
            node.replace_all_uses_with(last)
            graph.erase_node(node)
            record.rows.append(last.name)
        for node, feat in g.norms:
            _split_norm(graph, node, feat, analysis, weights, group, tensor_attr, add_module, ctx)
        for node, ratio in g.sums:
            _summed(graph, node, ratio, group, add_module, ctx)
        for user, param, dim, feat in g.params:
            local = weights.local(analysis.param_of[param.name], dim, feat.segments)
            user.replace_input_with(param, tensor_attr(local, "tp_param", user))
    graph.lint()
    gm.recompile()
    check_shapes(gm, ctx.example_inputs, expected)
    record.unread = [analysis.param_of[n.name] for n in graph.nodes
                     if n.op == "placeholder" and n.name in analysis.param_of and not n.users]
    return gm


def _split_norm(graph, node, feat, analysis, weights, group, tensor_attr, add_module, ctx) -> None:
    """``rms_norm`` / ``layer_norm`` over the split features: ``SplitNorm`` with this rank's part
    of the weight and bias."""
    kind = "rms" if node.target is torch.rms_norm or getattr(node.target, "__name__", "") == "rms_norm" else "layer"
    weight, bias = arg(node, 2, "weight"), (arg(node, 3, "bias") if kind == "layer" else None)
    eps = arg(node, 3 if kind == "rms" else 4, "eps", None if kind == "rms" else 1e-5)
    module = add_module(SplitNorm(kind, sum(feat.segments), eps, group.group, group.world), f"split_{kind}_norm")
    args = [node.args[0]]
    for p in (weight, bias):
        args.append(None if p is None else tensor_attr(weights.local(analysis.param_of[p.name], 0, feat.segments),
                                                      "tp_param", node))
    with graph.inserting_after(node):
        new = graph.call_module(module, tuple(args))
    new.meta = dict(node.meta)
    ctx.block_of[new.name] = ctx.block_of[node.name]
    node.replace_all_uses_with(new)
    graph.erase_node(node)


def _summed(graph, node, ratio, group, add_module, ctx) -> None:
    """A sum / mean over the split features: this rank's part (a mean's scaled to the whole
    count), summed over the ranks."""
    users = list(node.users)
    with graph.inserting_after(node):
        last = graph.call_function(operator.mul, (node, ratio)) if ratio != 1.0 else node
    with graph.inserting_after(last):
        summed = graph.call_module(add_module(AllReduceSum(group.group, group.world), "all_reduce_sum"), (last,))
    for new in {last, summed} - {node}:
        new.meta = dict(node.meta)
        ctx.block_of[new.name] = ctx.block_of[node.name]
    for u in users:
        u.replace_input_with(node, summed)


def _local(t: torch.Tensor, dim: int, segments: Tuple[int, ...], group: FeatureGroup) -> torch.Tensor:
    """This rank's ``1/world`` of each run of ``segments`` along ``dim`` of ``t``, a copy."""
    parts, offset = [], 0
    for s in segments:
        chunk = s // group.world
        parts.append(t.detach().narrow(dim, offset + group.rank * chunk, chunk))
        offset += s
    return torch.cat(parts, dim=dim).contiguous()
