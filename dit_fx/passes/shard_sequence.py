"""Context parallelism derived from the graph: shard the tokens where the blocks begin, make every
attention in the blocks span the ranks, gather where the blocks end. No per-model plan.

Pass ``shard_sequence(gm, ctx)`` runs on the captured graph before the cache rewrite (the cache
then caches sharded residuals). It is a dataflow analysis over the block region followed by an
edit:

1. **Seeds.** The carried streams entering the first block (``[B, S, C]``) are the token streams;
   each is cut into equal chunks per rank (``runtime/sequence_ops.Layout``; a length that does
   not divide is padded, never refused).
2. **Propagation.** For every op in the blocks, which dimension of its result holds which
   streams' tokens. Ops known to act per token (elementwise, linear, norms and reductions over
   other dims, views, permutes, splits and concatenations) carry it; a concatenation along the
   token dimension joins layouts (joint attention), a slice or split at a stream boundary selects
   streams. Any other op touching tokens refuses the whole shard with its reason.
3. **Per-token context.** Where an elementwise op meets a token tensor and a tensor from outside
   the blocks whose matching dimension has the full token length (rotary tables, masks), that
   tensor is traced back through views to where it enters the blocks and sharded in the same
   layout; propagation restarts.
4. **Attention.** ``scaled_dot_product_attention`` with token-carrying keys becomes
   ``SequenceAttention`` (Ulysses all-to-all and/or ring K/V gather; padded keys dropped); with
   replicated keys (cross-attention) it stays local.
5. **Edit.** Literal sizes in views/expands/slices/splits become the local ones; values leaving
   the blocks with tokens are all-gathered; with padding, every block output's pad tokens are
   zeroed (the decision's diff then sums exactly what one process sums).
6. **Check.** Fake-tensor propagation of the edited graph must give every token tensor its
   expected local shape; otherwise the shard is refused.

What was done is recorded in ``ShardRecord`` (``ctx.record``); ``dit_fx.dump`` shows the graph
with its ``ShardTokens`` / ``SequenceAttention`` / ``GatherTokens`` calls.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.fx as fx
import torch.nn.functional as F

from .graph_ops import (
    ELEMENTWISE_FUNCS as _ELEMENTWISE_FUNCS, ELEMENTWISE_METHODS as _ELEMENTWISE_METHODS, LAST_DIMS_FUNCS as _LAST_DIMS_FUNCS,
    LIKE as _LIKE, PERMUTES as _PERMUTES, REDUCTIONS as _REDUCTIONS, SDPA as _SDPA, SOFTMAX as _SOFTMAX, SPLITS as _SPLITS,
    VIEW_FUNCS as _VIEW_FUNCS, VIEW_METHODS as _VIEW_METHODS, arg as _arg, index_items as _index_items, map_dim,
    name as _name, permutation, norm_dim as _norm_dim, shape as _shape, value as _value,
)
from ..runtime.sequence_ops import GatherTokens, Layout, SequenceAttention, SequenceGroups, ShardTokens, ZeroPads


class ShardRefused(Exception):
    """The graph cannot be sharded: the reason is the message."""


@dataclass(frozen=True)
class Tok:
    dim: int
    layout: Layout


Info = Union[Tok, Tuple[Optional["Tok"], ...], None]


@dataclass
class ShardRecord:
    """What the pass did: inputs sharded (name, dim, streams), attentions replaced (name, kind),
    values gathered, pad zeroings, and the refusal reason if any."""

    sharded: List[Tuple[str, int, Tuple[str, ...]]] = field(default_factory=list)
    attentions: List[Tuple[str, str]] = field(default_factory=list)
    gathered: List[Tuple[str, int]] = field(default_factory=list)
    zeroed: int = 0
    reason: Optional[str] = None


@dataclass
class ShardContext:
    groups: SequenceGroups
    block_of: Dict[str, str]  # node name -> block, from the plan of the unsharded graph
    first_block: str
    carried: Tuple[str, ...]  # the first block's carried inputs (the token streams)
    block_outputs: Tuple[str, ...]
    example_inputs: Tuple[Any, ...] = ()  # the capture's inputs, for the shape check
    record: ShardRecord = field(default_factory=ShardRecord)
    region: Set[str] = field(default_factory=set)  # the blocks and every op between them (filled by the pass)


def _getitem_source_dim(items: Optional[List[Any]], out_dim: int) -> Optional[int]:
    """The input dim that output dim ``out_dim`` of ``x[items]`` comes from, if a whole slice."""
    if items is None:
        return None
    o, d = 0, 0
    for it in items:
        if it is None:
            if o == out_dim:
                return None
            o += 1
        elif isinstance(it, int):
            d += 1
        else:
            if o == out_dim:
                return d if it == slice(None) else None
            o, d = o + 1, d + 1
    return None


class _Analysis:
    """One propagation over the blocks from the current seeds: token info per node, the edits,
    and the context requests (entering values to seed and restart)."""

    def __init__(self, gm: fx.GraphModule, ctx: ShardContext, seeds: Dict[str, Tok]):
        self.gm, self.ctx, self.seeds = gm, ctx, seeds
        self.info: Dict[str, Info] = {}
        self.requests: Dict[str, Tok] = {}
        self.edits: List[Callable[[], None]] = []
        self.attentions: List[Tuple[fx.Node, Layout]] = []
        self.world = ctx.groups.world

    # -- helpers ----------------------------------------------------------------------------------
    def in_blocks(self, node: Any) -> bool:
        """Inside the sharded region: a block, or an op between the first and the last block
        (FLUX.2 joins its streams between its two block lists)."""
        return isinstance(node, fx.Node) and node.name in self.ctx.region

    def tok(self, a: Any) -> Info:
        if not isinstance(a, fx.Node):
            return None
        if a.name in self.info:
            return self.info[a.name]
        return self.seeds.get(a.name)

    def refuse(self, node: fx.Node, why: str) -> None:
        raise ShardRefused(f"{node.name} ({_name(node)}): {why}")

    def request(self, node: fx.Node, dim: int, layout: Layout, at: fx.Node) -> None:
        """``node`` (no token info) must carry ``layout`` at ``dim``: trace it back out of the blocks."""
        cur, d = node, dim
        while cur.name in self.ctx.block_of:  # a value made between blocks is sharded where it is made
            src = cur.args[0] if cur.args else None
            src_shape, cur_shape = _shape(src), _shape(cur)
            if cur.op not in ("call_method", "call_function") or src_shape is None or cur_shape is None:
                self.refuse(at, f"a per-token input ({node.name}) is made inside the blocks ({cur.name}); cannot shard it")
            name = _name(cur)
            if cur.target is operator.getitem:
                back = _getitem_source_dim(_index_items(len(src_shape), cur.args[1]), d)
                if back is None:
                    self.refuse(at, f"cannot follow the token dimension of {node.name} back through {cur.name}")
                d = back
            elif name in _PERMUTES:
                perm = permutation(cur, len(src_shape))
                d = perm[d]
            elif name in _ELEMENTWISE_METHODS or name in _VIEW_METHODS or cur.target in _VIEW_FUNCS:
                back = map_dim(cur_shape, d, src_shape)
                if back is None:
                    self.refuse(at, f"cannot follow the token dimension of {node.name} back through {cur.name}")
                d = back
            else:
                self.refuse(at, f"a per-token input ({node.name}) is computed in the blocks by {name}")
            cur = src
        shape = _shape(cur)
        if shape is None or shape[d] != layout.full:
            self.refuse(at, f"per-token input {cur.name} has no dimension of {layout.full} tokens")
        known = self.requests.get(cur.name) or self.seeds.get(cur.name)
        if known is not None and known != Tok(d, layout):
            self.refuse(at, f"{cur.name} is used with two token layouts")
        self.requests[cur.name] = Tok(d, layout)

    # -- the walk ---------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if not self.in_blocks(node):
                continue
            if not any(self.tok(a) is not None for a in node.all_input_nodes):
                continue
            self.info[node.name] = self.visit(node)

    def visit(self, node: fx.Node) -> Info:
        if node.op not in ("call_function", "call_method"):
            self.refuse(node, f"{node.op} on token tensors")
        target, name = node.target, _name(node)
        src = node.args[0] if node.args else None
        if target is operator.getitem and isinstance(self.tok(src), tuple):
            return self.tok(src)[node.args[1]]
        if target in _SDPA:
            return self.attention(node)
        if target is operator.getitem:
            return self.getitem(node)
        if target in (torch.cat, torch.concat, torch.stack):
            return self.cat(node)
        if name in _SPLITS or target in (torch.chunk, torch.split, torch.unbind):
            return self.split(node)
        if name in _PERMUTES or target in (torch.permute, torch.transpose, torch.movedim):
            t = self.single(node)
            perm = permutation(node, len(_shape(src)))
            return Tok(perm.index(t.dim), t.layout)
        if name in ("view_as_complex", "view_as_real"):
            t = self.single(node)
            if t.dim >= len(_shape(src)) - 1:
                self.refuse(node, "a complex view of the token dimension")
            return t
        if name in _VIEW_METHODS or target in _VIEW_FUNCS:
            return self.view(node)
        if name == "repeat_interleave" or target is torch.repeat_interleave:
            t = self.single(node)
            dim = _arg(node, 2, "dim")
            if dim is None or _norm_dim(dim, len(_shape(src))) == t.dim:
                self.refuse(node, "repeats tokens")
            return t
        if name == "type_as":  # the second tensor gives only its dtype
            t = self.tok(src)
            if not isinstance(t, Tok):
                self.refuse(node, "casts a tensor without tokens like a token tensor")
            return t
        if target in _LIKE:
            return self.single(node)
        if target is operator.setitem:
            return self.setitem(node)
        if target in _LAST_DIMS_FUNCS:
            return self.last_dims(node)
        if name in _REDUCTIONS or name in _SOFTMAX or target in (torch.mean, torch.sum, torch.softmax, F.softmax):
            return self.reduction(node)
        if target in _ELEMENTWISE_FUNCS or (node.op == "call_method" and name in _ELEMENTWISE_METHODS):
            return self.elementwise(node)
        self.refuse(node, "not known to act per token")

    def single(self, node: fx.Node) -> Tok:
        t = self.tok(node.args[0]) if node.args else None
        others = [a for a in node.all_input_nodes if self.tok(a) is not None and a is not node.args[0]]
        if not isinstance(t, Tok) or others:
            self.refuse(node, "expects one token tensor as its first input")
        return t

    def elementwise(self, node: fx.Node) -> Tok:
        out = _shape(node)
        if out is None:
            self.refuse(node, "result is not a tensor")
        found: Optional[Tok] = None
        for a in node.all_input_nodes:
            t = self.tok(a)
            if isinstance(t, Tok):
                aligned = Tok(t.dim + len(out) - len(_shape(a)), t.layout)
                if found is not None and found != aligned:
                    self.refuse(node, f"mixes tensors of different token layouts ({found}, {aligned} from {a.name})")
                found = aligned
        for a in node.all_input_nodes:
            shape = _shape(a)
            if self.tok(a) is None and shape is not None:
                d = found.dim - (len(out) - len(shape))
                if d >= 0 and shape[d] != 1:
                    self.request(a, d, found.layout, node)
        return found

    def last_dims(self, node: fx.Node) -> Tok:
        t = self.single(node)
        ndim = len(_shape(node.args[0]))
        if node.target in (torch._C._nn.linear, F.linear, torch.matmul):
            if t.dim >= ndim - (2 if node.target is torch.matmul else 1) and not (node.target is torch.matmul and t.dim == ndim - 2):
                self.refuse(node, "contracts the token dimension")
            return Tok(t.dim + len(_shape(node)) - ndim, t.layout)
        normalized = _arg(node, 1, "normalized_shape")
        if t.dim >= ndim - len(normalized):
            self.refuse(node, "normalizes over the token dimension")
        return t

    def reduction(self, node: fx.Node) -> Tok:
        t = self.single(node)
        ndim = len(_shape(node.args[0]))
        dims = _arg(node, 1, "dim")
        if dims is None:
            self.refuse(node, "reduces over every dimension")
        dims = [_norm_dim(x, ndim) for x in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if t.dim in dims:
            self.refuse(node, "reduces over the token dimension")
        keep = _arg(node, 2, "keepdim", False) if _name(node) in _REDUCTIONS else True
        return t if keep else Tok(t.dim - sum(1 for x in dims if x < t.dim), t.layout)

    def view(self, node: fx.Node) -> Tok:
        t = self.single(node)
        src, out = _shape(node.args[0]), _shape(node)
        e = map_dim(src, t.dim, out)
        if e is None:
            self.refuse(node, "a view merges or splits the token dimension")
        name = _name(node)
        if name in ("view", "reshape", "expand") or node.target is torch.reshape:
            self.edits.append(lambda: _set_size(node, e, t.layout))
        return Tok(e, t.layout)

    def getitem(self, node: fx.Node) -> Tok:
        t = self.single(node)
        ndim = len(_shape(node.args[0]))
        items = _index_items(ndim, node.args[1])
        if items is None:
            self.refuse(node, "advanced indexing of a token tensor")
        out_dim, d = 0, 0
        for i, it in enumerate(items):
            if it is None:
                out_dim += 1
                continue
            if d == t.dim:
                if isinstance(it, int):
                    self.refuse(node, "indexes one token")
                layout = self.select(node, t.layout, it.start, it.stop, it.step)
                if layout is not t.layout:
                    self.edits.append(lambda i=i, layout=layout, full=t.layout, it=it: _set_slice(node, i, full, it))
                return Tok(out_dim, layout)
            out_dim += 0 if isinstance(it, int) else 1
            d += 1
        self.refuse(node, "lost the token dimension")

    def setitem(self, node: fx.Node) -> None:
        """``x[index] = value`` on a token tensor, the index leaving the token dimension whole."""
        t = self.tok(node.args[0])
        if not isinstance(t, Tok):
            self.refuse(node, "writes token values into a tensor without tokens")
        items = _index_items(len(_shape(node.args[0])), node.args[1])
        if items is None or any(it is None for it in items) or not isinstance(items[t.dim], slice):
            self.refuse(node, "writes tokens through an index this pass does not follow")
        it = items[t.dim]
        layout = self.select(node, t.layout, it.start, it.stop, it.step)  # whole streams only
        if layout is not t.layout:
            if any(i is Ellipsis for i in (node.args[1] if isinstance(node.args[1], tuple) else [node.args[1]])):
                self.refuse(node, "writes a token slice after an Ellipsis")
            self.edits.append(lambda: _set_slice(node, t.dim, t.layout, it))
        value = self.tok(node.args[2])
        if value is not None and (not isinstance(value, Tok) or value.layout != layout):
            self.refuse(node, "writes values of another token layout")
        return None

    def select(self, node: fx.Node, layout: Layout, start, stop, step) -> Layout:
        """Streams ``start:stop`` of the full token order cover (they must start and end at stream edges)."""
        full = layout.full
        start = 0 if start is None else _norm_dim(start, full)
        stop = full if stop is None else min(_norm_dim(stop, full) if stop < 0 else stop, full)
        if step not in (None, 1):
            self.refuse(node, "strided slice of tokens")
        if (start, stop) == (0, full):
            return layout
        edges = layout.full_offsets()
        if start not in edges or stop not in edges:
            self.refuse(node, f"slices tokens {start}:{stop} inside a stream (edges {edges})")
        return layout.sub(edges.index(start), edges.index(stop))

    def cat(self, node: fx.Node) -> Tok:
        tensors = list(node.args[0])
        out = _shape(node)
        dim = _norm_dim(_arg(node, 1, "dim", 0), len(out))
        toks = [self.tok(a) for a in tensors]
        if any(not isinstance(t, Tok) for t in toks):
            self.refuse(node, "joins token tensors with tensors without tokens")
        if node.target is torch.stack:
            if len({t for t in toks}) != 1:
                self.refuse(node, "stacks different token layouts")
            t = toks[0]
            return Tok(t.dim + (1 if dim <= t.dim else 0), t.layout)
        if all(t.dim == dim for t in toks):
            streams = tuple(s for t in toks for s in t.layout.streams)
            return Tok(dim, Layout(streams, self.world))
        if len(set(toks)) != 1:
            self.refuse(node, "concatenates different token layouts")
        return toks[0]

    def split(self, node: fx.Node) -> Tuple[Optional[Tok], ...]:
        t = self.single(node)
        name = _name(node)
        ndim = len(_shape(node.args[0]))
        outs = _value(node)
        if name == "unbind" or node.target is torch.unbind:
            dim = _norm_dim(_arg(node, 1, "dim", 0), ndim)
            if dim == t.dim:
                self.refuse(node, "unbinds tokens")
            return tuple(Tok(t.dim - (1 if dim < t.dim else 0), t.layout) for _ in outs)
        default_dim = 0
        dim = _norm_dim(_arg(node, 2, "dim", default_dim), ndim)
        if dim != t.dim:
            return tuple(t for _ in outs)
        if name != "split_with_sizes" and not (name == "split" and isinstance(node.args[1], (list, tuple))):
            self.refuse(node, f"{name} of the token dimension into equal parts")
        sizes = list(node.args[1])
        edges = [0]
        for s in sizes:
            edges.append(edges[-1] + s)
        layouts = [self.select(node, t.layout, a, b, None) for a, b in zip(edges, edges[1:])]
        self.edits.append(lambda: _set_split(node, layouts))
        return tuple(Tok(t.dim, lay) for lay in layouts)

    def attention(self, node: fx.Node) -> Tok:
        names = ("query", "key", "value", "attn_mask")
        q, k, v, mask = (_arg(node, i, n) for i, n in enumerate(names))
        tq, tk, tv = self.tok(q), self.tok(k), self.tok(v)
        if not isinstance(tq, Tok) or tq.dim != len(_shape(q)) - 2:
            self.refuse(node, "queries without tokens at dim -2")
        if tk is None and tv is None:  # cross-attention to replicated keys: per query, nothing to do
            if self.tok(mask) is not None:
                self.refuse(node, "a token mask on replicated keys")
            return tq
        if not (isinstance(tk, Tok) and tk == tv and tk.dim == len(_shape(k)) - 2):
            self.refuse(node, "keys and values with different token layouts")
        if _arg(node, 5, "is_causal", False):
            self.refuse(node, "causal attention")
        if mask is not None:
            mshape = _shape(mask)
            tm = self.tok(mask)
            if mshape is None or len(mshape) != 4 or mshape[1] != 1 or mshape[2] != 1:
                self.refuse(node, "an attention mask that is not a key-padding mask [B, 1, 1, S]")
            if tm is None:
                self.request(mask, 3, tk.layout, node)
            elif tm != Tok(3, tk.layout):
                self.refuse(node, "a mask in another token layout than the keys")
        self.attentions.append((node, tk.layout))
        return tq


def _set_size(node: fx.Node, dim: int, layout: Layout) -> None:
    args = list(node.args)
    if len(args) == 2 and isinstance(args[1], (list, tuple)):
        sizes, packed = list(args[1]), True
    elif "size" in node.kwargs or "shape" in node.kwargs:
        key = "size" if "size" in node.kwargs else "shape"
        sizes = list(node.kwargs[key])
        if sizes[dim] not in (-1, layout.local):
            sizes[dim] = layout.local
        node.kwargs = {**node.kwargs, key: tuple(sizes)}
        return
    else:
        sizes, packed = args[1:], False
    if sizes[dim] != -1:
        if sizes[dim] != layout.full:
            raise ShardRefused(f"{node.name}: size {sizes[dim]} at the token dimension is not the token count {layout.full}")
        sizes[dim] = layout.local
    node.args = (args[0], tuple(sizes)) if packed else (args[0], *sizes)


def _set_slice(node: fx.Node, position: int, full: Layout, item: slice) -> None:
    index = node.args[1]
    items = list(index) if isinstance(index, tuple) else [index]
    # position counts expanded items; map back through a leading Ellipsis-free index
    if any(it is Ellipsis for it in items):
        raise ShardRefused(f"{node.name}: token slice after an Ellipsis")
    edges, local = full.full_offsets(), full.local_offsets()
    start = 0 if item.start is None else item.start
    stop = full.full if item.stop is None else item.stop
    start = start + full.full if start < 0 else start
    stop = stop + full.full if stop < 0 else min(stop, full.full)
    items[position] = slice(local[edges.index(start)], local[edges.index(stop)], None)
    node.args = (node.args[0], tuple(items) if isinstance(index, tuple) else items[0])


def _set_split(node: fx.Node, layouts: Sequence[Layout]) -> None:
    node.args = (node.args[0], [lay.local for lay in layouts], *node.args[2:])


def _seeds(gm: fx.GraphModule, ctx: ShardContext) -> Dict[str, Tok]:
    """The carried streams entering the first block: ``[B, S, C]``, tokens at dim 1."""
    by_name = {n.name: n for n in gm.graph.nodes}
    first = [n for n in gm.graph.nodes if ctx.block_of.get(n.name) == ctx.first_block]
    entering = []
    for n in first:
        for a in n.all_input_nodes:
            if a.name not in ctx.block_of and a not in entering and _shape(a) is not None and len(_shape(a)) == 3:
                entering.append(a)
    seeds = {}
    streams = [a for a in entering if a.name in ctx.carried]
    if not streams:
        raise ShardRefused("no token stream enters the first block")
    for a in streams:
        seeds[a.name] = Tok(1, Layout(((a.name, _shape(by_name[a.name])[1]),), ctx.groups.world))
    return seeds


def _region(gm: fx.GraphModule, block_of: Dict[str, str]) -> Set[str]:
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    tagged = [i for i, n in enumerate(nodes) if n.name in block_of]
    return {n.name for n in nodes[tagged[0]:tagged[-1] + 1]} if tagged else set()


def analyze(gm: fx.GraphModule, ctx: ShardContext) -> _Analysis:
    ctx.region = _region(gm, ctx.block_of)
    seeds = _seeds(gm, ctx)
    for _ in range(8):
        analysis = _Analysis(gm, ctx, seeds)
        analysis.run()
        new = {k: v for k, v in analysis.requests.items() if k not in seeds}
        if not new:
            return analysis
        seeds = {**seeds, **new}
    raise ShardRefused("per-token inputs did not settle")


def shard_sequence(gm: fx.GraphModule, ctx: ShardContext) -> fx.GraphModule:
    """Shard ``gm``'s blocks over ``ctx.groups`` (in place); raises ``ShardRefused``."""
    analysis = analyze(gm, ctx)
    expected = expected_shapes(gm, analysis.info)
    for edit in analysis.edits:
        edit()
    graph, groups, record = gm.graph, ctx.groups, ctx.record
    counter = iter(range(10**6))

    def add(module: torch.nn.Module, prefix: str) -> str:
        name = f"{prefix}_{next(counter)}"
        gm.add_submodule(name, module)
        return name

    by_name = {n.name: n for n in graph.nodes}
    for name, tok in analysis.seeds.items():
        node = by_name[name]
        users = [u for u in node.users if u.name in ctx.region]
        with graph.inserting_after(node):
            shard = graph.call_module(add(ShardTokens(tok.layout, groups.rank, tok.dim), "shard_tokens"), (node,))
        for u in users:
            u.replace_input_with(node, shard)
        record.sharded.append((name, tok.dim, tuple(s for s, _ in tok.layout.streams)))
    for node, layout in analysis.attentions:
        target = add(SequenceAttention(layout, groups), "sequence_attention")
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        kwargs = {n: _arg(node, i, n) for i, n in enumerate(names) if len(node.args) > i or n in node.kwargs}
        if kwargs.pop("enable_gqa", False):
            raise ShardRefused(f"{node.name}: grouped-query attention")
        q, k, v = kwargs.pop("query"), kwargs.pop("key"), kwargs.pop("value")
        with graph.inserting_after(node):
            new = graph.call_module(target, (q, k, v), kwargs)
        new.meta = dict(node.meta)
        ctx.block_of[new.name] = ctx.block_of[node.name]
        ctx.region.add(new.name)
        analysis.info[new.name] = analysis.info[node.name]
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        record.attentions.append((new.name, f"ulysses={groups.ulysses} ring={groups.ring}"))
    _zero_pads(gm, ctx, analysis, add)
    for node in list(graph.nodes):
        tok = analysis.info.get(node.name)
        if not isinstance(tok, Tok):
            continue
        outside = [u for u in node.users if u.name not in ctx.region]
        if not outside:
            continue
        order = {n: i for i, n in enumerate(graph.nodes)}
        # Before the first outside user, not right after ``node``: that may sit inside the block's
        # span, and the planner counts untagged nodes inside a span as the block's.
        with graph.inserting_before(min(outside, key=order.__getitem__)):
            gather = graph.call_module(add(GatherTokens(tok.layout, tok.dim, groups.group), "gather_tokens"), (node,))
        for u in outside:
            u.replace_input_with(node, gather)
        record.gathered.append((node.name, tok.dim))
    graph.lint()
    gm.recompile()
    check_shapes(gm, ctx.example_inputs, expected)
    return gm


def _zero_pads(gm, ctx: ShardContext, analysis: _Analysis, add) -> None:
    graph = gm.graph
    by_name = {n.name: n for n in graph.nodes}
    for name in ctx.block_outputs:
        tok = analysis.info.get(name)
        if not isinstance(tok, Tok) or not tok.layout.padded:
            continue
        node = by_name[name]
        users = list(node.users)
        with graph.inserting_after(node):
            zero = graph.call_module(add(ZeroPads(tok.layout, ctx.groups.rank, tok.dim, len(_shape(node))), "zero_pads"), (node,))
        zero.meta = dict(node.meta)  # stays in the block: the planner sees it as the block's output
        analysis.info[zero.name] = tok
        ctx.block_of[zero.name] = ctx.block_of[name]
        ctx.region.add(zero.name)
        for u in users:
            u.replace_input_with(node, zero)
        ctx.record.zeroed += 1


def check_shapes(gm: fx.GraphModule, example_inputs: Sequence[Any], expected: Dict[str, Tuple[int, ...]]) -> None:
    """Fake-propagate the sharded graph (fills ``example_value``) and compare token tensors' shapes."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes = [mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in example_inputs]
    try:
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*fakes)
    except Exception as exc:
        raise ShardRefused(f"the sharded graph does not run: {exc}") from exc
    for node in gm.graph.nodes:
        if "val" in node.meta:
            node.meta["example_value"] = node.meta["val"]
        want = expected.get(node.name)
        if want is not None and _shape(node) != want:
            raise ShardRefused(f"{node.name}: sharded shape {_shape(node)}, expected {want}")


def expected_shapes(gm: fx.GraphModule, analysis_info: Dict[str, Info]) -> Dict[str, Tuple[int, ...]]:
    out = {}
    by_name = {n.name: n for n in gm.graph.nodes}
    for name, tok in analysis_info.items():
        if isinstance(tok, Tok) and name in by_name and _shape(by_name[name]) is not None:
            shape = list(_shape(by_name[name]))
            shape[tok.dim] = tok.layout.local
            out[name] = tuple(shape)
    return out
