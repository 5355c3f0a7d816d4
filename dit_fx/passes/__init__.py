"""Graph rewrites, one per file, each ``(gm, plan, config) -> gm``, run in the order of ``PASSES``."""

from __future__ import annotations

import logging

import torch.fx as fx
from torch._dynamo.utils import lazy_format_graph_code

from ..config import DBCacheConfig
from ..patterns import Plan
from .bind_partition_parameters import bind_partition_parameters
from .insert_dbcache_glue import insert_dbcache_glue
from .split_partitions import split_partitions

log = logging.getLogger(__name__)

PASSES = (
    split_partitions,  # head / body / tail submodules
    bind_partition_parameters,  # parameters become attributes: partitions take activations only
    insert_dbcache_glue,  # body call -> decision + guarded middle
)


def run_passes(gm: fx.GraphModule, plan: Plan, config: DBCacheConfig) -> fx.GraphModule:
    for rewrite in PASSES:
        gm = rewrite(gm, plan, config)
        # No eliminate_dead_code here: it recurses into get_attr'd partitions and, with FX's default
        # purity rules, deletes in-place ops whose results are unused (user hooks, counters).
        # Each pass erases the nodes it replaces itself.
        gm.graph.lint()
        gm.recompile()
        log.debug("%s", lazy_format_graph_code(f"dit_fx after {rewrite.__name__}", gm))
    return gm


__all__ = ["PASSES", "run_passes", "split_partitions", "bind_partition_parameters", "insert_dbcache_glue"]
