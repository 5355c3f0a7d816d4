"""Graph passes, one per file, each ``(gm, ctx) -> gm``, in named stages listed here.

Stage "rewrite" (per cache context, ``RewriteContext``): the captured graph becomes head / body /
tail partitions around the algorithm's decision. Stage "lowering" (per capture,
``LoweringContext``): the leaf partitions are split into block regions, compiled, and graphed.
``dit_fx.algorithms`` picks the rewrite list; ``lowering_passes(options)`` the lowering list.
Later passes (quantize, shard, ...) are inserted by name into a copy (``PassList.insert_after``).
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch.fx as fx

from ..fx_utils import recompile_shallow, tensor_attributes
from ..patterns import Plan
from .bind_partition_parameters import bind_partition_parameters
from .compile_regions import compile_regions
from .graph_partitions import copy_graph_outputs, graph_partitions
from .insert_dbcache_glue import insert_dbcache_glue
from .insert_dbprune_guards import insert_dbprune_guards
from .manager import LoweringContext, PassList, PassTiming, RewriteContext
from .split_block_regions import split_block_regions
from .split_body_blocks import split_body_blocks
from .split_partitions import split_partitions


def checked(rewrite: Callable) -> Callable:
    """A rewrite pass followed by a lint of its graph and a shallow recompile. No
    eliminate_dead_code: it recurses into get_attr'd partitions and, with FX's default purity
    rules, deletes in-place ops whose results are unused (user hooks, counters); each pass
    erases the nodes it replaces itself."""

    def run(gm: fx.GraphModule, ctx: RewriteContext) -> fx.GraphModule:
        gm = rewrite(gm, ctx)
        gm.graph.lint()
        recompile_shallow(gm)  # each pass recompiles the partitions it edits itself
        return gm

    run.__name__ = rewrite.__name__
    run.__doc__ = rewrite.__doc__
    return run


DBCACHE_REWRITE = tuple(checked(p) for p in (
    split_partitions,  # head / body / tail submodules
    bind_partition_parameters,  # parameters become attributes: partitions take activations only
    insert_dbcache_glue,  # body call -> decision + guarded middle
))

DBPRUNE_REWRITE = tuple(checked(p) for p in (
    split_partitions,  # head / body / tail submodules
    bind_partition_parameters,  # parameters become attributes: partitions take activations only
    split_body_blocks,  # body -> one submodule per middle block
    insert_dbprune_guards,  # each middle block call -> its own prune guard
))


def lowering_passes(options) -> PassList:
    """The lowering stage for ``options`` (a ``CompileOptions``): eager lowering runs none."""
    passes: List[Callable] = []
    if options.compile:
        passes += [split_block_regions, compile_regions]  # one region per block, one compile per distinct region
    if options.cuda_graphs:
        passes += [graph_partitions, copy_graph_outputs]  # leaves replay as CUDA graphs; glue returns copies
    return PassList("lowering", passes)


def rewrite_nested(
    gm: fx.GraphModule,
    plans: Sequence[Plan],
    static_inputs,
    build: Callable[[Plan, dict], Tuple[PassList, RewriteContext]],
    prefix: str = "",
) -> Tuple[fx.GraphModule, List[Tuple[str, fx.GraphModule]], List[RewriteContext]]:
    """Run the rewrite stage for ``plans[0]``, then again on the resulting ``tail`` for each later plan.

    Block lists with their own cache contexts nest: the second list sits in the first list's
    tail, so that tail becomes a glue graph of its own (head / body / tail around its decision).
    ``build(plan, static_inputs)`` gives the pass list and context of each. Returns the glue, every
    glue graph made (by dotted path: "", "tail.", ...; DBPrune's body is one too), and the contexts.
    """
    passes, ctx = build(plans[0], static_inputs)
    gm = passes(gm, ctx)
    glues = [(prefix, gm)] + [(prefix + path, inner) for path, inner in ctx.inner_glues]
    contexts = [ctx]
    if len(plans) > 1:
        # Parameters reach the tail as its own get_attr nodes: bind those inside its partitions.
        tail, inner, inner_ctx = rewrite_nested(gm.tail, plans[1:], tensor_attributes(gm.tail), build, f"{prefix}tail.")
        gm.tail = tail
        glues += inner
        contexts += inner_ctx
    return gm, glues, contexts


__all__ = [
    "DBCACHE_REWRITE",
    "DBPRUNE_REWRITE",
    "LoweringContext",
    "PassList",
    "PassTiming",
    "RewriteContext",
    "lowering_passes",
    "rewrite_nested",
    "bind_partition_parameters",
    "compile_regions",
    "copy_graph_outputs",
    "graph_partitions",
    "insert_dbcache_glue",
    "insert_dbprune_guards",
    "split_block_regions",
    "split_body_blocks",
    "split_partitions",
]
