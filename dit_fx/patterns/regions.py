"""Find transformer-block regions in a Dynamo graph from ``meta["nn_module_stack"]``.

A block is a child of a container attribute indexed by an integer (``transformer_blocks.3``).
Only containers at the shallowest depth count as block lists, so a ModuleList nested inside an
embedder (HunyuanVideo's token refiner) stays part of the ops around the blocks. Containers of
plain ``torch.nn`` layers (HiDream's ``caption_projection`` Linears) are not block lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx

_ROOT = re.compile(r"^[A-Za-z_]\w*\[['\"][^'\"]*['\"]\]")
_TOKEN = re.compile(r"\[['\"]([^'\"]*)['\"]\]|\.([A-Za-z_]\w*|\d+)|\[(\d+)\]")
_SKIP = {"__dict__", "_modules", "_parameters", "_buffers"}


def parse_module_path(path: str) -> Tuple[str, ...]:
    """``"L['self'].__dict__['_modules']['blocks'].0"`` -> ``("blocks", "0")``."""
    rest = _ROOT.sub("", path, count=1)
    tokens = []
    for match in _TOKEN.finditer(rest):
        tok = next(g for g in match.groups() if g is not None)
        if tok not in _SKIP:
            tokens.append(tok)
    return tuple(tokens)


def module_stack(node: fx.Node) -> List[Tuple[Tuple[str, ...], type]]:
    """The node's module stack, outermost first, as (path tokens, module class)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [(parse_module_path(p), cls) for p, cls in stack.values()]


@dataclass(frozen=True)
class BlockRef:
    list_name: str
    list_index: int
    cls: type


def _is_torch_layer(cls: type) -> bool:
    return getattr(cls, "__module__", "").startswith("torch.nn")


def block_candidates(node: fx.Node) -> Optional[Tuple[int, BlockRef]]:
    """Outermost indexed module in the node's stack, with the depth of its container."""
    for tokens, cls in module_stack(node):
        if len(tokens) >= 2 and tokens[-1].isdigit() and not _is_torch_layer(cls):
            return len(tokens) - 1, BlockRef(".".join(tokens[:-1]), int(tokens[-1]), cls)
    return None


@dataclass(frozen=True)
class RawRegion:
    """Nodes of one block, in graph order; ``span`` is (first, last) position among compute nodes."""

    ref: BlockRef
    nodes: Tuple[str, ...]
    span: Tuple[int, int]


def compute_nodes(graph: fx.Graph) -> List[fx.Node]:
    return [n for n in graph.nodes if n.op not in ("placeholder", "get_attr", "output")]


def find_block_regions(graph: fx.Graph) -> Tuple[List[RawRegion], Optional[str]]:
    """Return block regions in execution order, or a reason why the graph has no usable ones."""
    nodes = compute_nodes(graph)
    tagged: Dict[int, Tuple[int, BlockRef]] = {}
    for pos, node in enumerate(nodes):
        cand = block_candidates(node)
        if cand is not None:
            tagged[pos] = cand
    if not tagged:
        return [], (
            "no transformer block list found in this graph (no nodes inside an indexed module container); "
            "if the model has a graph break in its block loop, Dynamo compiles it in pieces: "
            "torch.compile(..., fullgraph=True) shows where"
        )
    depth = min(d for d, _ in tagged.values())
    members: Dict[Tuple[str, int], List[int]] = {}
    classes: Dict[Tuple[str, int], type] = {}
    for pos, (d, ref) in tagged.items():
        if d == depth:
            key = (ref.list_name, ref.list_index)
            members.setdefault(key, []).append(pos)
            classes[key] = ref.cls
    # A node without module info between two nodes of one block belongs to that block.
    owner = {pos: key for key, poss in members.items() for pos in poss}
    regions = []
    for key, poss in sorted(members.items(), key=lambda kv: kv[1][0]):
        first, last = poss[0], poss[-1]
        for pos in range(first, last + 1):
            other = owner.get(pos)
            if other is not None and other != key:
                return [], (
                    f"block {key[0]}.{key[1]} is not contiguous in the graph: nodes of "
                    f"{other[0]}.{other[1]} sit inside it (block reused or interleaved)"
                )
            if other is None and pos in tagged:
                return [], f"block {key[0]}.{key[1]} is not contiguous: a nested block list sits inside it"
            if other is None and any(tokens for tokens, _ in module_stack(nodes[pos])):
                return [], (
                    f"block {key[0]}.{key[1]} is not contiguous: node {nodes[pos].name} of another "
                    f"module sits inside it"
                )
        span_nodes = tuple(nodes[p].name for p in range(first, last + 1))
        regions.append(RawRegion(BlockRef(key[0], key[1], classes[key]), span_nodes, (first, last)))
    seen: Dict[str, int] = {}
    for region in regions:
        prev = seen.get(region.ref.list_name, -1)
        if region.ref.list_index <= prev:
            return [], f"blocks of {region.ref.list_name} run out of order ({prev} then {region.ref.list_index})"
        seen[region.ref.list_name] = region.ref.list_index
    return regions, None


def list_order(regions: Sequence[RawRegion]) -> List[Tuple[str, int]]:
    """Block lists in execution order with their number of blocks in the graph."""
    out: List[Tuple[str, int]] = []
    for region in regions:
        if out and out[-1][0] == region.ref.list_name:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((region.ref.list_name, 1))
    return out


def module_block_lists(module: torch.nn.Module) -> Dict[str, int]:
    """Block lists of the module (shallowest lists of non-``torch.nn`` modules, the graph's rule)
    by dotted name, with their lengths."""
    best_depth, lists = None, {}
    for name, child in module.named_modules():
        if not isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)) or not name:
            continue
        if not len(child) or any(_is_torch_layer(type(m)) for m in child):
            continue
        depth = name.count(".") + 1
        if best_depth is None or depth < best_depth:
            best_depth, lists = depth, {name: len(child)}
        elif depth == best_depth:
            lists[name] = len(child)
    return lists


def count_module_blocks(module: torch.nn.Module) -> int:
    return sum(module_block_lists(module).values())
