"""Dataflow of each block region: carried streams, context inputs, outputs, and the Pattern_0-5 label.

Carried inputs come from the previous block (directly or through ops between blocks); context inputs
(temb, rotary embeddings, masks) do not depend on any block. The hidden stream is the carried stream
whose shape matches the last block's output that reaches the model output; the other carried stream
is the encoder stream. Two streams of identical shape and dtype cannot be told apart this way, so the
planner refuses them with a stated reason rather than guess.
"""

from __future__ import annotations

import ast
import functools
import inspect
import operator
import textwrap
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx

from .regions import RawRegion

Signature = Optional[Tuple[Tuple[int, ...], torch.dtype]]

_ENCODER_WORDS = ("encoder", "context", "txt", "text")


def signature(node: fx.Node) -> Signature:
    value = node.meta.get("example_value", node.meta.get("val"))
    if isinstance(value, torch.Tensor):
        return tuple(_size(s) for s in value.shape), value.dtype
    return None


def _size(s) -> object:
    """A static size as an int; a symbolic one (a size read from a tensor, graph breaks allowed:
    ``frontend/pieces.py``) as its expression, so two values of one symbolic size still match."""
    if isinstance(s, torch.SymInt):
        static = s.node.maybe_as_int()
        return int(static) if static is not None else str(s.node.expr)
    return int(s)


@dataclass(frozen=True)
class BlockIO:
    carried: Tuple[str, ...]
    context: Tuple[str, ...]
    outputs: Tuple[str, ...]
    encoder_context: bool


def _is_encoder_name(name: str) -> bool:
    return any(word in name.lower() for word in _ENCODER_WORDS)


@functools.lru_cache(maxsize=None)
def return_order(cls: type) -> Optional[str]:
    """How the block's forward returns: "single", "hidden_first", "encoder_first" (None: unknown).

    Read from the last ``return a, b`` of ``cls.forward``'s source; only used for the Pattern label.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    except (OSError, TypeError, SyntaxError):
        return None
    returns = [n for n in ast.walk(tree) if isinstance(n, ast.Return) and n.value is not None]
    if not returns:
        return None
    value = returns[-1].value
    if isinstance(value, ast.Tuple) and len(value.elts) >= 2:
        first = value.elts[0]
        name = first.id if isinstance(first, ast.Name) else ast.unparse(first)
        return "encoder_first" if _is_encoder_name(name) else "hidden_first"
    return "single"


def classify_pattern(has_encoder_input: bool, order: Optional[str], num_outputs: int) -> int:
    """Map block I/O to cache-dit's Pattern_0-5 numbering."""
    if order is None:
        order = "hidden_first" if num_outputs >= 2 else "single"
    if has_encoder_input:
        return {"hidden_first": 0, "encoder_first": 1, "single": 2}[order]
    return {"hidden_first": 4, "encoder_first": 5, "single": 3}[order]


def _placeholder_ancestry(graph: fx.Graph) -> Dict[fx.Node, frozenset]:
    """For every node, the activation placeholders it depends on."""
    anc: Dict[fx.Node, frozenset] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            anc[node] = frozenset([node.name])
        else:
            acc: Set[str] = set()
            for inp in node.all_input_nodes:
                acc |= anc.get(inp, frozenset())
            anc[node] = frozenset(acc)
    return anc


def _external_inputs(region: RawRegion, by_name: Dict[str, fx.Node]) -> List[fx.Node]:
    members = set(region.nodes)
    ext: List[fx.Node] = []
    for name in region.nodes:
        for inp in by_name[name].all_input_nodes:
            if inp.name not in members and inp.op != "get_attr" and inp not in ext:
                ext.append(inp)
    return ext


def analyze_block_io(graph: fx.Graph, regions: Sequence[RawRegion], first: int = 0) -> List[BlockIO]:
    """Block I/O for every region. ``first``: the first block of the stack being planned (a scope
    that caches one block list); it has no previous block, so its carried inputs are found like
    block 0's: inputs with the shape and dtype of one of its outputs that the next block does not
    read as well (a value every block reads, such as a rotary or positional embedding of the
    hidden stream's shape, is context)."""
    by_name = {n.name: n for n in graph.nodes}
    region_of: Dict[str, int] = {name: i for i, r in enumerate(regions) for name in r.nodes}
    # Values that are (or derive from) some block's computation.
    stream_derived: Set[str] = set()
    for node in graph.nodes:
        if node.name in region_of or any(i.name in stream_derived for i in node.all_input_nodes):
            stream_derived.add(node.name)
    ancestry = _placeholder_ancestry(graph)
    result: List[BlockIO] = []
    for i, region in enumerate(regions):
        members = set(region.nodes)
        ext: List[fx.Node] = []
        outs: List[str] = []
        for name in region.nodes:
            node = by_name[name]
            for inp in node.all_input_nodes:
                if inp.name not in members and inp.op != "get_attr" and inp not in ext:
                    ext.append(inp)
            if any(u.name not in members for u in node.users):
                outs.append(name)
        if i == first:
            out_sigs = {signature(by_name[o]) for o in outs}
            shared = set(_external_inputs(regions[i + 1], by_name)) if i + 1 < len(regions) else set()
            carried = [n for n in ext if signature(n) is not None and signature(n) in out_sigs and n not in shared]
        else:
            carried = [n for n in ext if n.name in stream_derived]
        context = [n for n in ext if n not in carried]
        enc_ctx = any(
            any(_is_encoder_name(p) for p in ancestry[c]) and not any("timestep" in p for p in ancestry[c])
            for c in context
        )
        result.append(BlockIO(tuple(n.name for n in carried), tuple(n.name for n in context), tuple(outs), enc_ctx))
    return result


# ------------------------------------------------------------------------------------------------
# Which streams a value reads, by token range: a ``cat`` of two streams followed by a slice that
# keeps one of them (ConsisID normalises text and image tokens together after its last block,
# then keeps the image tokens) reads only that one, though both are its ancestors.

_ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.tanh, torch.sigmoid, torch.exp,
    torch.sqrt, torch.rsqrt, torch.clamp, torch.where,
    torch.nn.functional.silu, torch.nn.functional.gelu, torch.nn.functional.relu, torch.nn.functional.dropout,
}
_ELEMENTWISE_METHODS = {
    "to", "float", "half", "bfloat16", "type_as", "contiguous", "clone", "add", "sub", "mul", "div",
    "pow", "neg", "sigmoid", "tanh", "exp", "sqrt", "rsqrt", "clamp",
}


@dataclass(frozen=True)
class _Reads:
    """The candidate streams a value reads: along ``dim`` (None: the whole value, no token
    ranges known), consecutive ranges of ``length`` tokens each reading its own streams."""

    dim: Optional[int]
    segments: Tuple[Tuple[int, FrozenSet[str]], ...]

    @property
    def streams(self) -> FrozenSet[str]:
        return frozenset().union(*(s for _, s in self.segments)) if self.segments else frozenset()


def _shape(node) -> Optional[Tuple[int, ...]]:
    if not isinstance(node, fx.Node):
        return None
    value = node.meta.get("example_value", node.meta.get("val"))
    if not isinstance(value, torch.Tensor):
        return None
    if any(not isinstance(s, int) and getattr(s.node, "maybe_as_int", lambda: None)() is None for s in value.shape):
        return None  # symbolic: no token ranges
    return tuple(int(s) for s in value.shape)


def _whole(streams: FrozenSet[str]) -> _Reads:
    return _Reads(None, ((0, frozenset(streams)),))


def _along(reads: _Reads, node: fx.Node, dim: int) -> Optional[Tuple[Tuple[int, FrozenSet[str]], ...]]:
    """The token ranges of ``node`` along ``dim`` (a whole value, or ranges along another
    dimension: one range reading all its streams)."""
    shape = _shape(node)
    if shape is None or not -len(shape) <= dim < len(shape):
        return None
    dim %= len(shape)
    if reads.dim is None or reads.dim != dim:
        return ((shape[dim], reads.streams),)
    return reads.segments


def _slice(segments, start: int, stop: int):
    out, pos = [], 0
    for length, streams in segments:
        lo, hi = max(pos, start), min(pos + length, stop)
        if lo < hi:
            out.append((hi - lo, streams))
        pos += length
    return tuple(out)


def _getitem(reads: _Reads, source: fx.Node, index) -> _Reads:
    shape = _shape(source)
    if reads.dim is None or shape is None:
        return _whole(reads.streams)
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index) or any(isinstance(i, fx.Node) for i in index):
        return _whole(reads.streams)
    in_dim, out_dim = 0, 0
    for item in index:
        if item is None:
            out_dim += 1
            continue
        if in_dim == reads.dim:
            if not isinstance(item, slice) or item.step not in (None, 1):
                return _whole(reads.streams)
            start, stop, _ = item.indices(shape[in_dim])
            if not all(isinstance(v, int) for v in (start, stop)):
                return _whole(reads.streams)
            return _Reads(out_dim, _slice(reads.segments, start, stop))
        if isinstance(item, int):
            in_dim += 1
        elif isinstance(item, slice):
            in_dim, out_dim = in_dim + 1, out_dim + 1
        else:
            return _whole(reads.streams)
    return _Reads(out_dim + (reads.dim - in_dim), reads.segments)  # the token dim is not indexed


def _elementwise(node: fx.Node, known: Dict[fx.Node, _Reads]) -> _Reads:
    """Token ranges survive an elementwise op whose other operands read no stream."""
    out_shape = _shape(node)
    operands = [a for a in node.all_input_nodes if a in known]
    if len(operands) != 1 or out_shape is None or known[operands[0]].dim is None:
        return _whole(frozenset().union(*(known[a].streams for a in operands)))
    (source,) = operands
    reads, in_shape = known[source], _shape(source)
    if in_shape is None:
        return _whole(reads.streams)
    dim = reads.dim + len(out_shape) - len(in_shape)
    if dim < 0 or out_shape[dim] != in_shape[reads.dim]:
        return _whole(reads.streams)
    return _Reads(dim, reads.segments)


def _transfer(node: fx.Node, known: Dict[fx.Node, _Reads], joined: FrozenSet[str] = frozenset()) -> _Reads:
    """``joined``: what the part of a ``cat`` that reads no stream reads instead."""
    inputs = [a for a in node.all_input_nodes if a in known]
    if not inputs:
        return _whole(frozenset())
    if node.op == "call_function" and node.target is torch.cat:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        parts = []
        for t in tensors:
            shape = _shape(t)
            seg = _along(known[t], t, dim) if t in known else (((shape[dim], joined),) if shape is not None else None)
            if seg is None:
                return _whole(frozenset().union(*(known[a].streams for a in inputs)))
            parts.extend(seg)
        shape = _shape(node)
        return _Reads(dim % len(shape), tuple(parts)) if shape is not None else _whole(frozenset().union(*(s for _, s in parts)))
    source = node.args[0] if node.args else None
    if node.target is operator.getitem and source in known and len(inputs) == 1:
        return _getitem(known[source], source, node.args[1])
    reads = known.get(source) if isinstance(source, fx.Node) else None
    if reads is not None and reads.dim is not None and len(inputs) == 1:
        shape = _shape(source)
        if shape is not None:
            if node.target is torch.nn.functional.layer_norm or node.target == "layer_norm":
                normalized = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape")
                if isinstance(normalized, (tuple, list)) and reads.dim < len(shape) - len(normalized):
                    return reads
            if node.target is torch._C._nn.linear and reads.dim < len(shape) - 1:
                return reads
    if (node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ELEMENTWISE_METHODS
    ):
        return _elementwise(node, known)
    return _whole(frozenset().union(*(known[a].streams for a in inputs)))


def _reads_of(graph: fx.Graph, streams: Sequence[str], target: fx.Node, joined: FrozenSet[str] = frozenset()) -> Optional[_Reads]:
    """The token ranges of ``target`` and the ``streams`` each reads (None: it reads none);
    ``joined``: see ``_transfer``."""
    known: Dict[fx.Node, _Reads] = {}
    names = set(streams)
    for node in graph.nodes:
        if node.name in names:
            known[node] = _whole(frozenset([node.name]))
        elif node.op in ("call_function", "call_method", "call_module") and any(a in known for a in node.all_input_nodes):
            known[node] = _transfer(node, known, joined)
        if node is target:
            break
    return known.get(target)


def streams_read(graph: fx.Graph, streams: Sequence[str], target: fx.Node) -> FrozenSet[str]:
    """Which of ``streams`` (node names) ``target`` reads, following token ranges through
    ``cat``, slices, token-wise norms and linears and elementwise ops; any other op reads all
    the streams of its inputs (so the answer never misses a stream it reads)."""
    reads = _reads_of(graph, streams, target)
    return reads.streams if reads is not None else frozenset()


_JOINED = "<joined between blocks>"


def block_token_range(graph: fx.Graph, block_outputs: Sequence[str], target: fx.Node) -> Optional[Tuple[int, int, int]]:
    """``(dim, start, stop)``: the one range of ``target``'s tokens made only of the previous
    block's ``block_outputs``, when its other tokens hold values the forward joins to the stream
    between blocks (``cat`` of something that block did not compute). HiDream appends each
    single-stream block's own Llama-layer tokens to the stream entering it and slices them off its
    output; Bria FIBO overwrites half the channels of the text tokens of its joined stream with
    each block's own text-encoder layer. None when no token, or every token, is joined to, when the
    block's tokens are not one range, or when token ranges are unknown."""
    if target.name in set(block_outputs):
        return None
    reads = _reads_of(graph, block_outputs, target, joined=frozenset([_JOINED]))
    if reads is None or reads.dim is None:
        return None
    ranges, pos = [], 0
    for length, streams in reads.segments:
        if streams and _JOINED not in streams:
            if ranges and ranges[-1][1] == pos:
                ranges[-1][1] = pos + length
            else:
                ranges.append([pos, pos + length])
        pos += length
    if len(ranges) != 1 or ranges[0] == [0, pos]:
        return None
    return reads.dim, ranges[0][0], ranges[0][1]
