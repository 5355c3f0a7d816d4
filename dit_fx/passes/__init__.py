"""Graph rewrites, one per file, each ``(gm, plan, config) -> gm``, run in the order of ``PASSES``."""

from __future__ import annotations

import logging

from typing import Callable, Sequence

import torch
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
    if len(plans) > 1:
        tail = gm.tail
        # Parameters reach the tail as its own get_attr nodes: bind those inside its partitions.
        tail.meta["dit_fx_static_inputs"] = {
            n.name: (n.target, t)
            for n in tail.graph.nodes
            if n.op == "get_attr" and isinstance(t := _attr(tail, n.target), torch.Tensor)
        }
        gm.tail = rewrite_nested(tail, plans[1:], configs[1:], make_cache)
    return gm


def _attr(gm: fx.GraphModule, target: str):
    obj = gm
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj


__all__ = ["PASSES", "run_passes", "rewrite_nested", "split_partitions", "bind_partition_parameters", "insert_dbcache_glue"]
