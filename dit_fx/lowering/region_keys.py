"""Keys that decide which regions share one compiled artifact."""

from __future__ import annotations

from typing import Any, Dict

import torch.fx as fx

from ..fx_utils import get_nested
from ..runtime.direct_calls import Unkeyable, key_of


def structure_key(gm: fx.GraphModule) -> str:
    """The op structure of ``gm`` with node names replaced by positions: two blocks that differ
    only in their weights (inputs here) give the same key. Tensor attributes are keyed by identity,
    so regions holding different constants never share an artifact."""
    index: Dict[fx.Node, int] = {}
    lines = []
    for node in gm.graph.nodes:
        index[node] = len(index)
        args = fx.node.map_arg((node.args, node.kwargs), lambda n: f"%{index[n]}")
        if node.op == "placeholder":
            target = ""  # inputs are known by position
        elif node.op == "get_attr":
            target = f"{node.target}@{id(get_nested(gm, node.target))}"
        elif callable(node.target):
            target = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__qualname__', repr(node.target))}"
        else:
            target = str(node.target)
        lines.append(f"{node.op} {target} {args!r}")
    return "\n".join(lines)


def input_key(value: Any):
    try:
        return key_of(value)  # what direct calls key on: shape, stride, dtype, device, requires_grad
    except Unkeyable:
        return (type(value), repr(value))


