"""Split the ``body`` partition into one submodule per middle block (``block_<index>``), for DBPrune.

Each node goes to the block whose module it runs in (``nn_module_stack``); a node without module
information belongs to the block around it. The body must hold nothing but blocks (true of every
family tested); anything else is refused. Parameters, which reach the body as its own ``get_attr``
nodes, are bound inside each block again.
"""

from __future__ import annotations

import torch.fx as fx
from torch.fx.passes.split_module import split_module

from ..fx_utils import recompile_shallow, tensor_attributes
from ..patterns.regions import block_candidates
from .bind_partition_parameters import bind_in_partitions
from .manager import RewriteContext
from .split_partitions import _rename_submodule, _split_options


def split_body_blocks(gm: fx.GraphModule, ctx: RewriteContext) -> fx.GraphModule:
    plan, body = ctx.plan, gm.body
    index = {(b.list_name, b.list_index): b.index for b in plan.blocks}
    owner = {}
    current = None
    for node in body.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        cand = block_candidates(node)
        if cand is not None:
            ref = cand[1]
            current = index.get((ref.list_name, ref.list_index))
            if current is None:
                raise ValueError(f"body node {node.name} runs in {ref.list_name}.{ref.list_index}, not a planned block")
        if current is None:
            raise ValueError(f"body node {node.name} sits before the first middle block: cannot guard blocks one by one")
        owner[node.name] = current
    order = sorted(set(owner.values()))
    split = split_module(body, None, lambda node: order.index(owner[node.name]), **_split_options())
    for k, block in enumerate(order):
        _rename_submodule(split, f"submod_{k}", f"block_{block}")
    gm.body = recompile_shallow(bind_in_partitions(split, tensor_attributes(body)))  # runnable right away
    return gm
