"""Lowering pass: compile every region with Inductor, once per distinct region (``RegionCompiler``).

A leaf partition that ``split_block_regions`` split gets each region wrapped in a
``CompiledRegion`` (compiled lazily on its first call; blocks of one structure share an
artifact); an unsplit leaf is compiled whole. Regions made only of ops the plan deferred from the
head into the body (``LoweringContext.eager_nodes``: they run on computed steps only, a sliver of
the step) stay eager instead of costing a compile of their own.
"""

from __future__ import annotations

import torch.fx as fx

from ..lowering.inductor import CompiledRegion
from .manager import LoweringContext
from .split_block_regions import leaf_partitions


def compile_regions(glue: fx.GraphModule, ctx: LoweringContext) -> fx.GraphModule:
    split = {id(s) for s in ctx.split_leaves}
    for parent, name, leaf in leaf_partitions(ctx):
        if id(leaf) not in split:
            setattr(parent, name, CompiledRegion(leaf, ctx.compiler))
            continue
        for region_name, region in list(leaf.named_children()):
            if isinstance(region, fx.GraphModule) and not _only(region, ctx.eager_nodes):
                setattr(leaf, region_name, CompiledRegion(region, ctx.compiler))
    return glue


def _only(region: fx.GraphModule, names: frozenset) -> bool:
    """Whether every op of ``region`` is among ``names``."""
    ops = [n.name for n in region.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    return bool(ops) and all(n in names for n in ops)
