"""General torch.fx helpers shared by the frontend, the passes and lowering (no Dynamo, no dit_fx state)."""

from __future__ import annotations

import re
from typing import Dict, Tuple

import torch
import torch.fx as fx


def bind_placeholders(gm: fx.GraphModule, binding: Dict[str, Tuple[str, torch.Tensor]], recompile: bool = True) -> fx.GraphModule:
    """In place: each placeholder named in ``binding`` becomes a ``get_attr`` of that tensor (no copy).

    Tensors are registered flat on ``gm`` (``transformer_blocks.0.attn.to_q.weight`` becomes
    ``transformer_blocks_0_attn_to_q_weight``): the generated code then fetches each with one
    attribute lookup instead of a chain through empty holder modules (FLUX: 1160 lookups per
    computed step, about 5 ms of host time on the CPU proxy with nested names).

    ``recompile=False`` leaves ``gm``'s Python code stale: for graphs only analysed, never called
    (generating code for a whole DiT's graph takes a noticeable part of the capture)."""
    graph = gm.graph
    first_op = next((n for n in graph.nodes if n.op != "placeholder"), None)
    for node in [n for n in graph.nodes if n.op == "placeholder" and n.name in binding]:
        name, tensor = binding[node.name]
        with graph.inserting_before(first_op):
            attr = graph.get_attr(set_flat_attr(gm, name, tensor))
        attr.meta = dict(node.meta)
        node.replace_all_uses_with(attr)
        graph.erase_node(node)
    graph.lint()
    if recompile:
        recompile_shallow(gm)
    return gm


def recompile_shallow(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm.recompile()`` without regenerating the code of its GraphModule children.

    ``GraphModule.recompile`` recompiles every child GraphModule too; a rewritten DiT has hundreds
    (partitions, block regions), and regenerating them after each pass took seconds of a FLUX
    capture. Use only where the children are already up to date (each edit recompiles its own).
    Generates the code now even for a lazy graph module (see ``lazy_graph_module``)."""
    gm._recompile_submodules = list  # shadows the method for this one call: returns []
    try:
        fx.GraphModule.recompile(gm)
    finally:
        del gm._recompile_submodules
    return gm


def lazy_graph_module(root: torch.nn.Module, graph: fx.Graph, class_name: str) -> fx.GraphModule:
    """A GraphModule whose Python code is generated on first use, not at construction: the whole
    captured DiT is copied twice per capture (analysis copy, working copy) and generating code
    for a FLUX-sized graph costs about half a second each time, for code nobody runs."""
    try:
        from torch.fx._lazy_graph_module import _LazyGraphModule
    except ImportError:  # pragma: no cover - older torch
        return fx.GraphModule(root, graph, class_name=class_name)
    return _LazyGraphModule(root, graph, class_name=class_name)


def get_nested(root: torch.nn.Module, dotted: str):
    obj = root
    for atom in dotted.split("."):
        obj = getattr(obj, atom)
    return obj


def tensor_attributes(gm: fx.GraphModule) -> Dict[str, Tuple[str, torch.Tensor]]:
    """``{target: (target, tensor)}`` for the tensors ``gm`` reads with ``get_attr`` (what a split
    of ``gm`` hands to its partitions as inputs, to be bound back inside them)."""
    out = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = get_nested(gm, node.target)
            if isinstance(value, torch.Tensor):
                out[node.target] = (node.target, value)
    return out


def set_flat_attr(root: torch.nn.Module, dotted: str, tensor: torch.Tensor) -> str:
    """Register ``tensor`` on ``root`` under a one-level name made from ``dotted``; returns it.
    The same tensor under the same name is registered once; a clash gets a numbered suffix."""
    base = re.sub(r"\W", "_", dotted.replace(".", "_")) or "tensor"
    if base[0].isdigit():
        base = f"_{base}"
    name, i = base, 1
    while True:
        existing = root._parameters.get(name, root._buffers.get(name))
        if existing is tensor:
            return name
        if existing is None and not hasattr(root, name):
            break
        name, i = f"{base}_{i}", i + 1
    if isinstance(tensor, torch.nn.Parameter):
        root.register_parameter(name, tensor)
    else:
        root.register_buffer(name, tensor)
    return name
