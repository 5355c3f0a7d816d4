"""Split the captured graph into ``head`` / ``body`` / ``tail`` submodules with ``split_module``.

The values the glue needs (hidden entering block 0, the streams around the body) are routed through
the graph output, so ``split_module`` exposes them as partition outputs. The split graph returns
``(original_result, routed_values)`` until ``insert_dbcache_glue`` consumes them and restores it;
the routed names are recorded in ``ctx.glue_values``.
"""

from __future__ import annotations

import inspect
import operator
from typing import List

import torch.fx as fx
from torch.fx.passes.split_module import split_module

from ..fx_utils import recompile_shallow
from ..patterns import Plan
from .manager import RewriteContext

_IDS = {"head": 0, "body": 1, "tail": 2}


def glue_value_names(plan: Plan) -> List[str]:
    names = [plan.hidden_in, plan.hidden_fn]
    for s in plan.middle_streams:
        names += [s.base, s.output]
    return list(dict.fromkeys(names))


def split_partitions(gm: fx.GraphModule, ctx: RewriteContext) -> fx.GraphModule:
    plan = ctx.plan
    part = plan.partition_map()
    routed = glue_value_names(plan)
    by_name = {n.name: n for n in gm.graph.nodes}
    output = next(n for n in gm.graph.nodes if n.op == "output")
    original_ret = output.args[0]
    output.args = ((original_ret, tuple(by_name[r] for r in routed)),)
    try:
        split = split_module(gm, None, lambda node: _IDS[part[node.name]], **_split_options())
    finally:
        output.args = (original_ret,)
    for old, new in (("submod_0", "head"), ("submod_1", "body"), ("submod_2", "tail")):
        _rename_submodule(split, old, new)
    _name_partition_outputs(split)
    split.meta.update(gm.meta)
    ctx.glue_values = tuple(routed)
    recompile_shallow(split)  # split_module compiled the partitions
    return split


def _split_options() -> dict:
    """Readable names and stable order, where this torch's split_module supports them."""
    wanted = dict(keep_original_order=True, keep_original_node_name=True, keep_original_input_name=True)
    accepted = inspect.signature(split_module).parameters
    return {k: v for k, v in wanted.items() if k in accepted}


def _name_partition_outputs(gm: fx.GraphModule) -> None:
    """``getitem_3 = head[3]`` -> ``hidden_states_14 = head[3]``: the name the value had before."""
    for call in [n for n in gm.graph.nodes if n.op == "call_module"]:
        returned = next(n for n in getattr(gm, call.target).graph.nodes if n.op == "output").args[0]
        if not isinstance(returned, (tuple, list)):
            continue  # a single output is used directly, no getitem to name
        for user in list(call.users):
            if user.target is operator.getitem and isinstance(returned[user.args[1]], fx.Node):
                user._rename(returned[user.args[1]].name)


def _rename_submodule(gm: fx.GraphModule, old: str, new: str) -> None:
    if not hasattr(gm, old):
        return
    gm.add_submodule(new, getattr(gm, old))
    gm.delete_submodule(old)
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == old:
            node.target = new
            node.name = new if node.name == old else node.name

