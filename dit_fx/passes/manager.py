"""The pass manager: named passes ``(gm, ctx) -> gm`` in ordered, editable lists, each one observed.

A stage ("rewrite", "lowering") is a ``PassList``; its passes read and write a typed context
(``RewriteContext`` / ``LoweringContext``) instead of ``gm.meta`` keys or attributes poked onto
modules. Passes are inserted by name (``insert_after("bind_partition_parameters", quantize)``).
Every run records each pass's name and wall time in ``ctx.timings``; with debug logging of
``dit_fx.passes`` the graph before the first pass and after each pass is logged too (formatted
only when logged).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

import torch
import torch.fx as fx

if TYPE_CHECKING:  # pragma: no cover
    from ..config import DBCacheConfig
    from ..lowering.cuda_graphs import GraphPool
    from ..lowering.inductor import RegionCompiler
    from ..options import CompileOptions
    from ..patterns import Plan

log = logging.getLogger("dit_fx.passes")

Pass = Callable[[fx.GraphModule, Any], fx.GraphModule]


@dataclass(frozen=True)
class PassTiming:
    stage: str
    name: str
    seconds: float


@dataclass
class RewriteContext:
    """What the rewrite passes of one cache context (one plan) share.

    plan / config: the plan and the config of this context. cache: the runtime context the glue
    graph calls (built before the passes, with its final configuration). static_inputs: the
    parameters and buffers to bind inside partitions, by placeholder name or ``get_attr`` target.
    timestep_from_call: see the field. glue_values: the names ``split_partitions`` routed out of the partitions for the glue (it
    fills them; the glue pass reads them).
    """

    plan: "Plan"
    config: "DBCacheConfig"
    cache: torch.nn.Module
    static_inputs: Dict[str, Tuple[str, torch.Tensor]]
    glue_values: Tuple[str, ...] = ()
    # The graph is one of several Dynamo made of the forward (graph breaks allowed): without a
    # timestep input of its own, the glue reads the call's timestep (``runtime.call_timestep``).
    timestep_from_call: bool = False
    # Glue graphs a pass made inside ``gm`` besides ``gm`` itself, by dotted path ("body." for
    # DBPrune's guarded body): lowering treats their children as partitions.
    inner_glues: List[Tuple[str, fx.GraphModule]] = field(default_factory=list)
    timings: List[PassTiming] = field(default_factory=list)


@dataclass
class LoweringContext:
    """What the lowering passes share: the options, the session's compiler and graph pool, the
    glue graphs of the rewrite (every other GraphModule child is a leaf partition), where each
    node's block is (from the Plan), and ops that stay eager (deferred into the body)."""

    options: "CompileOptions"
    compiler: "RegionCompiler"
    graphs: "GraphPool"
    glues: Tuple[fx.GraphModule, ...]
    block_of: Dict[str, str]
    eager_nodes: FrozenSet[str] = frozenset()
    split_leaves: List[fx.GraphModule] = field(default_factory=list)  # filled by split_block_regions
    timings: List[PassTiming] = field(default_factory=list)

    def is_glue(self, module: object) -> bool:
        return any(module is g for g in self.glues)


class PassList:
    """An ordered, named list of passes for one stage."""

    def __init__(self, stage: str, passes: Iterable[Pass]):
        self.stage = stage
        self._passes: List[Pass] = list(passes)

    @property
    def names(self) -> List[str]:
        return [p.__name__ for p in self._passes]

    def __iter__(self):
        return iter(list(self._passes))

    def __len__(self) -> int:
        return len(self._passes)

    def copy(self) -> "PassList":
        return PassList(self.stage, self._passes)

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no pass named {name!r} in stage {self.stage!r} (passes: {self.names})") from None

    def insert_before(self, name: str, new: Pass) -> "PassList":
        self._passes.insert(self._index(name), new)
        return self

    def insert_after(self, name: str, new: Pass) -> "PassList":
        self._passes.insert(self._index(name) + 1, new)
        return self

    def append(self, new: Pass) -> "PassList":
        self._passes.append(new)
        return self

    def remove(self, name: str) -> "PassList":
        del self._passes[self._index(name)]
        return self

    def __call__(self, gm: fx.GraphModule, ctx: Any) -> fx.GraphModule:
        if self._passes and log.isEnabledFor(logging.DEBUG):
            log.debug("dit_fx %s: before %s:\n%s", self.stage, self._passes[0].__name__, _LazyCode(gm))
        for run in self._passes:
            start = time.perf_counter()
            gm = run(gm, ctx)
            ctx.timings.append(PassTiming(self.stage, run.__name__, time.perf_counter() - start))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("dit_fx %s/%s (%.3f s):\n%s", self.stage, run.__name__, ctx.timings[-1].seconds, _LazyCode(gm))
        return gm

    def __repr__(self) -> str:
        return f"PassList({self.stage!r}, {self.names})"


class _LazyCode:
    """The readable code of a graph module, formatted only when printed."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm

    def __str__(self) -> str:
        try:
            return self.gm.print_readable(print_output=False)
        except Exception as exc:  # pragma: no cover - logging must never break a compile
            return f"<unprintable: {exc!r}>"


def stage_names(*lists: Optional[PassList]) -> Dict[str, List[str]]:
    return {pl.stage: pl.names for pl in lists if pl is not None}
