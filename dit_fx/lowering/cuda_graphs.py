"""CUDA graphs for the leaf partitions (head, body, tail) of the rewritten graph.

Caching and CUDA graphs coexist because the cache decision lives in the glue, between graphs:
each partition is captured once per input signature and replayed on computed and cached steps
alike; a cached step just never replays the body. Rules that keep this correct:
- the first call of a partition runs it normally (warm-up: Inductor and cuBLAS initialise lazily);
  the second captures it, then replays it;
- every graph of a session shares one memory pool. Graphs always run in the order head, body,
  tail, and nothing reads a graph's outputs after the next graph in that order has run, so
  reusing one pool is safe; the runtime keeps what it must across calls (residuals, reference
  residual, DBPrune's block inputs) in tensors of its own;
- a partition's inputs are copied into static buffers before a replay, except inputs that are
  another graph's static outputs (the head's outputs feeding the body): those are read in place.
  A partition captured before such a producer had its graph (the tail, captured on a cached step
  before the body's capture) is captured once more when the producer's static output arrives,
  so from then on it reads that input in place too;
- the glue copies its outputs out of graph memory (``copy_outputs_out_of_graphs``) before they
  reach the caller;
- a partition with an input that is not a CUDA tensor, or whose capture fails, runs without a
  graph, with one warning saying why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Set, Tuple

import torch
import torch.fx as fx

from ..fx_utils import recompile_shallow


@dataclass
class GraphPool:
    """Per session: the shared memory pool, the static outputs of its graphs, and counters."""

    pool: Any = None
    static_output_ids: Set[int] = field(default_factory=set)  # the tensors are kept alive by their graphs
    captures: int = 0
    recaptures: int = 0
    replays: int = 0
    input_copies: int = 0  # inputs copied into a graph's static buffer before a replay
    warned: Set[str] = field(default_factory=set)

    def warn_once(self, reason: str) -> None:
        if reason not in self.warned:
            self.warned.add(reason)
            warnings.warn(f"dit_fx: CUDA graphs off for part of the model: {reason}", RuntimeWarning, stacklevel=4)


class GraphedPartition(torch.nn.Module):
    """Runs ``fn`` (a partition, eager or compiled) as a CUDA graph from its second call on."""

    def __init__(self, fn: torch.nn.Module, name: str, pool: GraphPool):
        super().__init__()
        self.fn = fn
        self.name = name
        self._pool = pool
        self._warmed_up = False
        self._graph: Optional[torch.cuda.CUDAGraph] = None
        self._inputs: Tuple[torch.Tensor, ...] = ()
        self._in_place: Tuple[bool, ...] = ()  # per input: another graph's static output, read as is
        self._recaptured = False
        self._outputs: Any = None
        self._off: Optional[str] = None  # why this partition runs without a graph

    def forward(self, *args):
        if self._graph is not None:
            for kept, static, arg in zip(self._in_place, self._inputs, args):
                if static.data_ptr() != arg.data_ptr():
                    if not kept and not self._recaptured and id(arg) in self._pool.static_output_ids:
                        return self._recapture(args)
                    static.copy_(arg)
                    self._pool.input_copies += 1
            self._graph.replay()
            self._pool.replays += 1
            return self._outputs
        if self._off is None:
            self._off = _ineligible(args)
            if self._off is not None:  # one warning per reason, not per partition
                self._pool.warn_once(f"a partition {self._off}; it runs without a CUDA graph")
        if self._off is not None or not self._warmed_up:
            self._warmed_up = True
            return self.fn(*args)
        return self._capture(args)

    def _recapture(self, args: Tuple[torch.Tensor, ...]):
        """Capture again, once, now that an input arrives as another graph's static output
        (those keep their addresses from now on), so it is read in place."""
        self._recaptured = True
        self._pool.recaptures += 1
        for out in self._outputs if isinstance(self._outputs, tuple) else (self._outputs,):
            self._pool.static_output_ids.discard(id(out))  # whoever reads them in place keeps them alive
        self._graph = None
        return self._capture(args)

    def _capture(self, args: Tuple[torch.Tensor, ...]):
        pool = self._pool
        # Another graph's static outputs are read in place; anything else gets a buffer of its own.
        self._in_place = tuple(id(a) in pool.static_output_ids for a in args)
        self._inputs = tuple(a if kept else a.clone() for a, kept in zip(args, self._in_place))
        if pool.pool is None:
            pool.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, pool=pool.pool):
                outputs = self.fn(*self._inputs)
        except Exception as exc:  # e.g. a host sync inside the partition
            self._off = f"could not be captured ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            pool.warn_once(f"partition {self.name!r} {self._off}; it runs without a CUDA graph")
            self._inputs = ()
            return self.fn(*args)
        self._graph, self._outputs = graph, outputs
        for out in outputs if isinstance(outputs, tuple) else (outputs,):
            if isinstance(out, torch.Tensor):
                pool.static_output_ids.add(id(out))
        pool.captures += 1
        return self.forward(*args)


def _ineligible(args: Tuple[Any, ...]) -> Optional[str]:
    for a in args:
        if not isinstance(a, torch.Tensor):
            return f"takes a non-tensor input ({type(a).__name__})"
        if a.device.type != "cuda":
            return f"has inputs on {a.device.type}, and CUDA graphs need CUDA tensors"
    return None


def copy_out_of_graph(value: Any) -> Any:
    """A fresh copy of a tensor that may live in CUDA-graph memory; other values unchanged."""
    return value.clone() if isinstance(value, torch.Tensor) else value


def copy_outputs_out_of_graphs(glue: fx.GraphModule) -> fx.GraphModule:
    """Make the glue return copies: the caller may hold an output across the next replay."""
    graph = glue.graph
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):
        output.args = fx.node.map_arg(output.args, lambda n: graph.call_function(copy_out_of_graph, (n,)))
    graph.lint()
    recompile_shallow(glue)
    return glue
