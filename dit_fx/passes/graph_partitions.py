"""Lowering passes for ``cuda_graphs``: replay every leaf partition as a CUDA graph, and make the
top glue return copies of its outputs (the next replay overwrites graph memory).

The cache decision stays in the glue, between graphs, so cached and computed steps both replay
(see ``lowering/cuda_graphs.py`` for the rules that keep this correct).
"""

from __future__ import annotations

import torch.fx as fx

from ..lowering.cuda_graphs import GraphedPartition, copy_outputs_out_of_graphs
from .manager import LoweringContext
from .split_block_regions import leaf_partitions


def graph_partitions(glue: fx.GraphModule, ctx: LoweringContext) -> fx.GraphModule:
    prefixes = {id(g): p for p, g in _glue_paths(glue, ctx)}
    for parent, name, leaf in leaf_partitions(ctx):
        setattr(parent, name, GraphedPartition(leaf, f"{prefixes.get(id(parent), '')}{name}", ctx.graphs))
    return glue


def copy_graph_outputs(glue: fx.GraphModule, ctx: LoweringContext) -> fx.GraphModule:
    return copy_outputs_out_of_graphs(glue)


def _glue_paths(glue: fx.GraphModule, ctx: LoweringContext, prefix: str = ""):
    yield prefix, glue
    for name, child in glue.named_children():
        if ctx.is_glue(child):
            yield from _glue_paths(child, ctx, f"{prefix}{name}.")
