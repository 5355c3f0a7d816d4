"""Lowering pass: compile every region with Inductor, once per distinct region (``RegionCompiler``).

A leaf partition that ``split_block_regions`` split gets each region wrapped in a
``CompiledRegion`` (compiled lazily on its first call; blocks of one structure share an
artifact); an unsplit leaf is compiled whole. Regions made only of ops the plan deferred from the
head into the body (``LoweringContext.eager_nodes``: they run on computed steps only, a sliver of
the step) stay eager instead of costing a compile of their own, and so do regions that read sizes
from tensors' values (a forward captured in pieces).

A region's weights reach it from its parent as ``get_attr`` values; they are moved into the
``CompiledRegion`` (its inputs reordered: activations first, weights last), so each call of the
parent fetches no parameter and passes only activations (FLUX: about 1200 attribute lookups and
as many arguments less per computed step).
"""

from __future__ import annotations

import torch.fx as fx

from typing import Tuple

import torch

from ..fx_utils import get_nested, recompile_shallow
from ..lowering.inductor import CompiledRegion
from .manager import LoweringContext
from .split_block_regions import leaf_partitions


def compile_regions(glue: fx.GraphModule, ctx: LoweringContext) -> fx.GraphModule:
    split = {id(s) for s in ctx.split_leaves}
    for parent, name, leaf in leaf_partitions(ctx):
        if id(leaf) not in split:
            if not _reads_sizes_from_tensors(leaf):
                setattr(parent, name, CompiledRegion(leaf, ctx.compiler))
            continue
        for call in [n for n in leaf.graph.nodes if n.op == "call_module"]:
            region = getattr(leaf, call.target)
            if (isinstance(region, fx.GraphModule) and not _only(region, ctx.eager_nodes)
                    and not _reads_sizes_from_tensors(region)):
                setattr(leaf, call.target, CompiledRegion(region, ctx.compiler, _weights_last(leaf, call, region)))
        for node in [n for n in leaf.graph.nodes if n.op == "get_attr" and not n.users]:
            leaf.graph.erase_node(node)
        leaf.graph.lint()
        recompile_shallow(leaf)
    return glue


def _weights_last(parent: fx.GraphModule, call: fx.Node, region: fx.GraphModule) -> Tuple[torch.Tensor, ...]:
    """Move the region's ``get_attr``-fed inputs to the end of its inputs and out of ``call``;
    returns those tensors, in their new order."""
    fed = [i for i, a in enumerate(call.args) if isinstance(a, fx.Node) and a.op == "get_attr"]
    if not fed or call.kwargs:
        return ()
    tensors = tuple(get_nested(parent, call.args[i].target) for i in fed)
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return ()
    placeholders = [n for n in region.graph.nodes if n.op == "placeholder"]
    moved = set(fed)
    order = [p for i, p in enumerate(placeholders) if i not in moved] + [placeholders[i] for i in fed]
    first_op = next(n for n in region.graph.nodes if n.op != "placeholder")
    for p in order:
        first_op.prepend(p)
    region.graph.lint()
    region.recompile()
    call.args = tuple(a for i, a in enumerate(call.args) if i not in moved)
    return tensors


def _reads_sizes_from_tensors(region: fx.GraphModule) -> bool:
    """Whether an op of ``region`` makes a size from a tensor's values (boolean-mask indexing,
    ``.item()``: a forward captured in pieces, ``frontend/pieces.py``). Inductor cannot compile it
    from the region's static example inputs; it stays eager (its neighbours still compile)."""
    return any(n.meta.get("unbacked_bindings") for n in region.graph.nodes)


def _only(region: fx.GraphModule, names: frozenset) -> bool:
    """Whether every op of ``region`` is among ``names``."""
    ops = [n.name for n in region.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    return bool(ops) and all(n in names for n in ops)
