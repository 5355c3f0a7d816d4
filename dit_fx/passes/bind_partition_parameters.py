"""Bind parameters inside each partition, so partitions (and the glue) take only activations.

``split_module`` passes tensors held by ``get_attr`` as partition inputs, so the split runs on the
graph with Dynamo's parameter placeholders; this pass then turns those placeholders into
``get_attr`` nodes of the same tensors inside each partition and drops them from the calls.
In a nested split (a tail split again for the next block list, a body split per block) the
parameters arrive as ``get_attr`` nodes: those are bound the same way, keyed by target.
"""

from __future__ import annotations

import torch.fx as fx

from typing import Dict, Tuple

import torch

from ..fx_utils import bind_placeholders
from .manager import RewriteContext


_STATIC_OPS = ("placeholder", "get_attr")


def _key(node: fx.Node) -> str:
    """Placeholders are known by name, tensor attributes by their target (split_module renames
    the get_attr nodes it recreates, the target stays)."""
    return node.target if node.op == "get_attr" else node.name


def bind_partition_parameters(gm: fx.GraphModule, ctx: RewriteContext) -> fx.GraphModule:
    return bind_in_partitions(gm, ctx.static_inputs)


def bind_in_partitions(gm: fx.GraphModule, static: Dict[str, Tuple[str, torch.Tensor]]) -> fx.GraphModule:
    """Bind the tensors of ``static`` (by placeholder name or ``get_attr`` target) inside every
    partition ``gm`` calls, drop them from the calls and from ``gm``."""
    for call in [n for n in gm.graph.nodes if n.op == "call_module"]:
        sub = getattr(gm, call.target)
        placeholders = [n for n in sub.graph.nodes if n.op == "placeholder"]
        bound = {p.name: static[_key(a)] for a, p in zip(call.args, placeholders) if a.op in _STATIC_OPS and _key(a) in static}
        call.args = tuple(a for a, p in zip(call.args, placeholders) if p.name not in bound)
        bind_placeholders(sub, bound)
    for node in [n for n in gm.graph.nodes if n.op in _STATIC_OPS and _key(n) in static]:
        if node.users:
            raise ValueError(f"parameter {static[_key(node)][0]} is used outside the partitions")
        gm.graph.erase_node(node)
    return gm
