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
import textwrap
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx

from .regions import RawRegion

Signature = Optional[Tuple[Tuple[int, ...], torch.dtype]]

_ENCODER_WORDS = ("encoder", "context", "txt", "text")


def signature(node: fx.Node) -> Signature:
    value = node.meta.get("example_value", node.meta.get("val"))
    if isinstance(value, torch.Tensor):
        return tuple(int(s) for s in value.shape), value.dtype
    return None


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
