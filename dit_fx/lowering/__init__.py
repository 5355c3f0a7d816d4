"""Lowering: how the leaf partitions of a rewritten glue run.

Eager (as Python), or compiled with Inductor one region per block (``inductor.py``, regions
keyed by ``region_keys.py``), optionally replayed as CUDA graphs (``cuda_graphs.py``). The passes
that apply these are the "lowering" stage of ``dit_fx.passes`` (``split_block_regions``,
``compile_regions``, ``graph_partitions``, ``copy_graph_outputs``); this package holds the
mechanisms and the per-session ``Lowerer``: one compiler and one graph pool for every capture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch.fx as fx

from .cuda_graphs import GraphedPartition, GraphPool
from .inductor import CompiledRegion, RegionCompiler


@dataclass
class Lowerer:
    """Per session: the region compiler and the CUDA-graph pool every capture shares."""

    compiler: RegionCompiler = field(default_factory=RegionCompiler)
    graphs: GraphPool = field(default_factory=GraphPool)

    @classmethod
    def for_options(cls, options) -> "Lowerer":
        lowerer = cls()
        lowerer.compiler.options = dict(options.inductor_options)
        if options.compile is True:
            # Start Inductor's compile workers now, so they boot while Dynamo traces the model
            # (torch.compile's own inductor backend does the same when it is first called).
            from torch._inductor.async_compile import maybe_warm_pool

            maybe_warm_pool()
        return lowerer


def partition_module(glue: fx.GraphModule, name: str) -> Optional[fx.GraphModule]:
    """The FX module of a partition, whether lowered or not."""
    mod = getattr(glue, name, None)
    if isinstance(mod, GraphedPartition):
        mod = mod.fn
    return mod.gm if isinstance(mod, CompiledRegion) else mod


__all__ = ["Lowerer", "GraphPool", "GraphedPartition", "CompiledRegion", "RegionCompiler", "partition_module"]
