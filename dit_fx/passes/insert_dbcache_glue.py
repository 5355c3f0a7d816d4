"""Replace the parent graph's call of ``body`` by the DBCache decision and a guarded middle.

After this pass the parent graph reads like the algorithm::

    head = self.head(...)
    reuse = dbcache_decide(self.cache, hidden_after_fn, hidden_before_blocks, timestep)
    middle = dbcache_middle(self.cache, reuse, self.body, (body args...), (stream bases...))
    tail = self.tail(middle[0], ...)

Where the plan names ``fn_residual_tokens``, both values the decision reads are narrowed to those
tokens first (views).
"""

from __future__ import annotations

import re
import operator
from typing import Dict, List, Tuple

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from ..runtime import call_timestep, dbcache_decide, dbcache_middle, dbcache_outputs, dbcache_read_timestep
from .manager import RewriteContext


def _timestep_input(graph: fx.Graph):
    """The model's ``timestep`` input (Dynamo names it ``l_kwargs_timestep_`` / ``l_timestep_``).

    The runtime reads steps, CFG branches and generations from it; without one, each call is a step.
    """
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node in placeholders:  # the argument itself first (MiniMax-H3 also takes ``timestep_indices``)
        if re.fullmatch(r"l_(kwargs_)?timesteps?_", node.name):
            return node
    for node in placeholders:
        if re.search(r"(^|_)timesteps?(_|$)", node.name):
            return node
    return None


def timestep_node(graph: fx.Graph, ctx: RewriteContext, before: fx.Node):
    """The timestep the leading glue reads: the graph's own input, else (a graph that resumes after
    a graph break) the call's, read by a node inserted before ``before``; None without either."""
    timestep = _timestep_input(graph)
    if timestep is None and ctx.timestep_from_call:
        with graph.inserting_before(before):
            timestep = graph.call_function(call_timestep, ())
            timestep.name = "call_timestep"
    return timestep


def _body_output_index(node: fx.Node, body_call: fx.Node) -> int:
    if node is body_call:
        return 0
    if node.op == "call_function" and node.target is operator.getitem and node.args[0] is body_call:
        return int(node.args[1])
    raise ValueError(f"{node.name} is not an output of the body")


def insert_dbcache_glue(gm: fx.GraphModule, ctx: RewriteContext) -> fx.GraphModule:
    plan, graph = ctx.plan, gm.graph
    output = next(n for n in graph.nodes if n.op == "output")
    ret, routed_nodes = output.args[0]
    values: Dict[str, fx.Node] = dict(zip(ctx.glue_values, routed_nodes))
    output.args = (ret,)
    body_call = next(n for n in graph.nodes if n.op == "call_module" and n.target == "body")
    outputs: List[Tuple[int, fx.Node, fx.Node, str]] = []
    for stream in plan.middle_streams:
        out_node = values[stream.output]
        outputs.append((_body_output_index(out_node, body_call), out_node, values[stream.base], stream.role))
    outputs.sort(key=lambda t: t[0])
    if [t[0] for t in outputs] != list(range(len(outputs))):
        raise ValueError("body outputs and middle streams disagree")
    # Values routed out of the head may be unpacked after the body call; unpack them before it.
    order = {n: i for i, n in enumerate(graph.nodes)}
    for name in [plan.hidden_in, plan.hidden_fn] + [s.base for s in plan.middle_streams]:
        if order[values[name]] > order[body_call]:
            body_call.prepend(values[name])
    values[plan.hidden_in]._rename("hidden_before_blocks")
    for stream in plan.middle_streams:
        values[stream.base]._rename(f"{stream.role}_after_fn")
    gm.add_module("cache", ctx.cache)
    # Only the leading plan places the call; a nested list's glue follows it (no timestep read).
    head_call = next(n for n in graph.nodes if n.op == "call_module" and n.target == "head")
    timestep = timestep_node(graph, ctx, head_call) if plan.leads else None
    with graph.inserting_before(head_call):
        cache = graph.get_attr("cache")
        if timestep is not None:
            graph.call_function(dbcache_read_timestep, (cache, timestep))
    with graph.inserting_before(body_call):
        hidden_fn, hidden_in = values[plan.hidden_fn], values[plan.hidden_in]
        if plan.fn_residual_tokens is not None:  # the blocks' tokens only (views, no copy)
            dim, start, stop = plan.fn_residual_tokens
            hidden_fn = graph.call_function(torch.narrow, (hidden_fn, dim, start, stop - start))
            hidden_fn.name = "hidden_after_fn_tokens"
            hidden_in = graph.call_function(torch.narrow, (hidden_in, dim, start, stop - start))
            hidden_in.name = "hidden_before_blocks_tokens"
        # The runtime forms the Fn residual only when it reads it (not on static-mask cached steps).
        reuse = graph.call_function(dbcache_decide, (cache, hidden_fn, hidden_in, timestep))
        reuse.name = "reuse"
        body = graph.get_attr("body")
        middle = graph.call_function(
            dbcache_middle, (cache, reuse, body, tuple(body_call.args), tuple(t[2] for t in outputs))
        )
        middle.name = "middle"
        for k, out_node, _, role in outputs:
            new = graph.call_function(operator.getitem, (middle, k))
            new.name = f"{role}_after_middle"
            out_node.replace_all_uses_with(new)
    for _, out_node, _, _ in outputs:
        if out_node is not body_call:
            graph.erase_node(out_node)
    graph.erase_node(body_call)
    calibrator = ctx.config.calibrator
    if calibrator is not None and calibrator.cache_type == "output":
        _forecast_outputs(graph, output, cache, plan)
    return gm


def _forecast_outputs(graph: fx.Graph, output: fx.Node, cache: fx.Node, plan) -> None:
    """``cache_type="output"``: the graph's outputs go through
    ``dbcache_outputs`` (forecast on cached steps) before they are returned."""
    if not plan.leads:
        raise ValueError("calibrator cache_type='output' forecasts the transformer's outputs: give it to the "
                         "leading block list's config (or one config for all lists)")
    flat, spec = pytree.tree_flatten(output.args[0])
    picked = [i for i, n in enumerate(flat) if isinstance(n, fx.Node)]  # the runtime forecasts the float tensors
    if not picked:
        raise ValueError("calibrator cache_type='output': the captured graph returns no tensor")
    with graph.inserting_before(output):
        forecast = graph.call_function(dbcache_outputs, (cache, tuple(flat[i] for i in picked)))
        forecast.name = "outputs"
        for k, i in enumerate(picked):
            flat[i] = graph.call_function(operator.getitem, (forecast, k))
    output.args = (pytree.tree_unflatten(flat, spec),)
