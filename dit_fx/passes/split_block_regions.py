"""Lowering pass: split each leaf partition (head, body or tail) into a submodule per block and per
run of other ops (compiled lowering only; ``compile_regions`` then compiles them).

For compiled lowering: blocks of one class usually have the same op structure and differ only in
weights, so each block region takes its parameters as inputs (``split_module`` passes the
partition's ``get_attr`` tensors in as arguments) and identical regions can share one compiled
artifact. Submodules are named for what they hold: ``transformer_blocks_3`` for a block,
``ops_0``, ``ops_1`` ... for the ops before, between and after blocks.

Which block a node belongs to comes from the Plan (``LoweringContext.block_of``), the same
membership the planner used. Regions follow graph order, and each region only reads values of earlier ones, so the split is
always acyclic. A block interleaved with other ops simply yields several regions (correct, just
not shared).
"""

from __future__ import annotations

import operator
import re

import torch.fx as fx
from torch.fx.passes.split_module import split_module

from typing import Dict, Optional

from ..fx_utils import recompile_shallow
from .manager import LoweringContext
from .split_partitions import _rename_submodule, _split_options


def split_block_regions(glue: fx.GraphModule, ctx: LoweringContext) -> fx.GraphModule:
    for parent, name, leaf in leaf_partitions(ctx):
        split = split_partition(leaf, ctx.block_of)
        if split is not leaf:
            setattr(parent, name, split)
            ctx.split_leaves.append(split)
    return glue


def leaf_partitions(ctx: LoweringContext):
    """``(glue, name, partition)`` for every leaf partition of the rewritten glue graphs."""
    for glue in ctx.glues:
        for name, child in list(glue.named_children()):
            if name != "cache" and not ctx.is_glue(child):
                yield glue, name, child


def split_partition(partition: fx.GraphModule, block_of: Dict[str, str]) -> fx.GraphModule:
    """One partition split into regions (``partition`` itself when it holds no ops)."""
    region_of, names = {}, []
    current: object = object()
    for node in partition.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        key: Optional[str] = block_of.get(node.name)
        if key != current or not names:
            current = key
            names.append(f"ops_{sum(n.startswith('ops_') for n in names)}" if key is None else _block_name(key))
        region_of[node.name] = len(names) - 1
    if not names:
        return partition
    split = split_module(partition, None, lambda node: region_of[node.name], **_split_options())
    for k, name in enumerate(names):
        _rename_submodule(split, f"submod_{k}", name if not hasattr(split, name) else f"{name}_{k}")
    for call in [n for n in split.graph.nodes if n.op == "call_module"]:
        _order_outputs(split, call)
    split.meta.update(partition.meta)
    split.graph.lint()
    recompile_shallow(split)  # split_module compiled the regions; _order_outputs recompiles those it edits
    return split


def _order_outputs(split: fx.GraphModule, call: fx.Node) -> None:
    """Return a region's outputs in its own graph order. ``split_module`` orders them by where the
    *next* regions use them, so two identical blocks could otherwise differ only in output order."""
    region = getattr(split, call.target)
    output = next(n for n in region.graph.nodes if n.op == "output")
    returned = output.args[0]
    if not isinstance(returned, (tuple, list)) or len(returned) < 2:
        return
    position = {n: i for i, n in enumerate(region.graph.nodes)}
    order = sorted(range(len(returned)), key=lambda i: position.get(returned[i], -1))
    if order == list(range(len(returned))):
        return
    output.args = (tuple(returned[i] for i in order),)
    region.recompile()
    new_index = {old: new for new, old in enumerate(order)}
    for user in list(call.users):
        if user.target is operator.getitem:
            user.args = (call, new_index[user.args[1]])
        else:
            raise ValueError(f"region {call.target} output used whole by {user.name}")


def _block_name(key: str) -> str:
    return re.sub(r"\W", "_", key)
