"""DBPrune: give every middle block its own guard.

After this pass the parent graph places the call before the body, and the body reads::

    hidden_states_29 = dbprune_block(self.cache, 2, self.block_2, (args...), (stream inputs...), 0)

one guard per prunable block (blocks in ``non_prune_block_ids`` are plain calls). A guard prunes
its block (input + stored residual) or runs it and stores the residual (see runtime/prune.py).
"""

from __future__ import annotations

from typing import Dict

import torch.fx as fx

from ..config import DBCacheConfig
from ..fx_utils import recompile_shallow
from ..patterns import Plan
from ..patterns.streams import signature
from ..runtime import dbprune_begin, dbprune_block
from .insert_dbcache_glue import timestep_node
from .manager import RewriteContext


def insert_dbprune_guards(gm: fx.GraphModule, ctx: RewriteContext) -> fx.GraphModule:
    plan, config, graph = ctx.plan, ctx.config, gm.graph
    output = next(n for n in graph.nodes if n.op == "output")
    ret, routed_nodes = output.args[0]
    values: Dict[str, fx.Node] = dict(zip(ctx.glue_values, routed_nodes))
    output.args = (ret,)
    body_call = next(n for n in graph.nodes if n.op == "call_module" and n.target == "body")
    hidden = values[plan.hidden_fn]
    if list(graph.nodes).index(hidden) > list(graph.nodes).index(body_call):
        body_call.prepend(hidden)
    gm.add_module("cache", ctx.cache)
    timestep = timestep_node(graph, ctx, body_call) if plan.leads else None
    with graph.inserting_before(body_call):
        graph.call_function(dbprune_begin, (graph.get_attr("cache"), hidden, timestep))
    gm.body.add_module("cache", ctx.cache)  # the body's guards call the same context
    ctx.inner_glues.append(("body.", gm.body))
    _guard_blocks(gm.body, plan, config)
    return gm


def _guard_blocks(body: fx.GraphModule, plan: Plan, config: DBCacheConfig) -> None:
    graph = body.graph
    hidden_sig = signature(next(n for n in graph.nodes if n.op == "placeholder" and n.name == plan.hidden_fn))
    skip = set(config.non_prune_block_ids)
    for call in [n for n in graph.nodes if n.op == "call_module" and n.target.startswith("block_")]:
        block_id = int(call.target.split("_")[1])
        if block_id in skip:
            continue
        sub = getattr(body, call.target)
        placeholders = [n for n in sub.graph.nodes if n.op == "placeholder"]
        arg_of = {p.name: a for p, a in zip(placeholders, call.args)}
        returned = next(n for n in sub.graph.nodes if n.op == "output").args[0]
        outs = list(returned) if isinstance(returned, (tuple, list)) else [returned]
        carried = [p for p in placeholders if p.name in plan.blocks[block_id].carried_inputs]
        bases = []
        for out in outs:  # each output continues the carried input of its shape and dtype
            match = [p for p in carried if signature(p) == signature(out)]
            if len(match) != 1:
                raise ValueError(f"block {block_id}: output {out.name} continues {len(match)} input streams, not one")
            bases.append(arg_of[match[0].name])
        hidden_index = next((k for k, o in enumerate(outs) if signature(o) == hidden_sig), None)
        if hidden_index is None:
            raise ValueError(f"block {block_id} has no hidden-stream output")
        with graph.inserting_before(call):
            guarded = graph.call_function(
                dbprune_block,
                (graph.get_attr("cache"), block_id, graph.get_attr(call.target), tuple(call.args), tuple(bases), hidden_index),
            )
        call.replace_all_uses_with(guarded)
        guarded.meta = dict(call.meta)
        graph.erase_node(call)
    graph.lint()
    recompile_shallow(body)  # the blocks were compiled when their parameters were bound


__all__ = ["insert_dbprune_guards"]
