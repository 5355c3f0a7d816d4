"""Graph rewrites, one per file, each ``(gm, plan, config) -> gm``, run in the order of ``PASSES``."""

from __future__ import annotations

import logging

from typing import Callable, Sequence

import torch
import torch.fx as fx
from torch._dynamo.utils import lazy_format_graph_code

from ..capture import recompile_shallow, tensor_attributes
from ..config import DBCacheConfig, DBPruneConfig
from ..patterns import Plan
from .bind_partition_parameters import bind_partition_parameters
from .insert_dbcache_glue import insert_dbcache_glue
from .insert_dbprune_guards import insert_dbprune_guards
from .split_body_blocks import split_body_blocks
from .split_partitions import split_partitions

log = logging.getLogger(__name__)

PASSES = (
    split_partitions,  # head / body / tail submodules
    bind_partition_parameters,  # parameters become attributes: partitions take activations only
    insert_dbcache_glue,  # body call -> decision + guarded middle
)

DBPRUNE_PASSES = (
    split_partitions,  # head / body / tail submodules
    bind_partition_parameters,  # parameters become attributes: partitions take activations only
    split_body_blocks,  # body -> one submodule per middle block
    insert_dbprune_guards,  # each middle block call -> its own prune guard
)


def passes_for(config: DBCacheConfig):
    return DBPRUNE_PASSES if isinstance(config, DBPruneConfig) else PASSES


def run_passes(gm: fx.GraphModule, plan: Plan, config: DBCacheConfig) -> fx.GraphModule:
    for rewrite in passes_for(config):
        gm = rewrite(gm, plan, config)
        # No eliminate_dead_code here: it recurses into get_attr'd partitions and, with FX's default
        # purity rules, deletes in-place ops whose results are unused (user hooks, counters).
        # Each pass erases the nodes it replaces itself.
        gm.graph.lint()
        recompile_shallow(gm)  # each pass recompiles the partitions it edits itself
        log.debug("%s", lazy_format_graph_code(f"dit_fx after {rewrite.__name__}", gm))
    return gm


def rewrite_nested(
    gm: fx.GraphModule, plans: Sequence[Plan], configs: Sequence[DBCacheConfig], make_cache: Callable[[Plan], torch.nn.Module]
) -> fx.GraphModule:
    """Run ``PASSES`` for ``plans[0]``, then again on the resulting ``tail`` for each later plan.

    Block lists with their own cache contexts nest: the second list sits in the first list's
    tail, so that tail becomes a glue graph of its own (head / body / tail around its decision).
    ``make_cache(plan)`` gives the context each glue graph calls.
    """
    gm = run_passes(gm, plans[0], configs[0])
    gm.cache = make_cache(plans[0])
    if hasattr(gm.body, "cache"):  # DBPrune: the body's guards call the same context
        gm.body.cache = gm.cache
    if len(plans) > 1:
        tail = gm.tail
        # Parameters reach the tail as its own get_attr nodes: bind those inside its partitions.
        tail.meta["dit_fx_static_inputs"] = tensor_attributes(tail)
        gm.tail = rewrite_nested(tail, plans[1:], configs[1:], make_cache)
    return gm


__all__ = ["PASSES", "DBPRUNE_PASSES", "passes_for", "run_passes", "rewrite_nested", "split_body_blocks", "insert_dbprune_guards", "split_partitions", "bind_partition_parameters", "insert_dbcache_glue"]
