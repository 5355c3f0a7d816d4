"""Regions compiled with Inductor: one compile per distinct region, shared by every capture of a session.

The glue graph itself always stays Python: its one data-dependent decision per step must not be
traced. Compiled lowering is regional: each partition is split into one region per block and one
per run of other ops (``passes/split_block_regions.py``); regions take their weights as inputs,
so blocks with the same op structure share one Inductor artifact (FLUX.1: one compile for its 19
double blocks, one for its 38 single blocks, the last of which drops an unused output). Each
region is compiled lazily with the first real inputs it sees. Shapes are static per capture: a new resolution is a new Dynamo capture and
compiles each distinct region once more (CUDA graphs need static shapes anyway).

With ``cuda_graphs``, every leaf partition is wrapped by ``cuda_graphs.GraphedPartition`` and the
glue's outputs are copied out of graph memory (the next replay overwrites it).
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.fx as fx

from .region_keys import input_key, structure_key


@dataclass
class RegionCompiler:
    """Compiles regions with Inductor, once per distinct (op structure, input metadata).

    ``compiles`` counts Inductor compiles; ``artifacts`` holds one entry per distinct region.
    Shared by all captures of one session, so a second capture of the same signature (or a
    glue rebuilt after ``torch._dynamo.reset``) recompiles nothing.
    """

    artifacts: Dict[Any, Callable] = field(default_factory=dict)
    compiles: int = 0
    compile_seconds: List[float] = field(default_factory=list)  # wall time of each Inductor compile
    sources: Dict[Any, fx.GraphModule] = field(default_factory=dict)  # key -> graph it was compiled from
    options: Dict[str, Any] = field(default_factory=dict)  # Inductor config for every compile (checked)
    _lock: Any = field(default_factory=threading.RLock, repr=False, compare=False)

    def artifact(self, structure: str, gm: fx.GraphModule, args: Tuple[Any, ...]) -> Callable:
        with self._lock:  # threads of concurrent requests: each distinct region compiles once
            return self._artifact(structure, gm, args)

    def _artifact(self, structure: str, gm: fx.GraphModule, args: Tuple[Any, ...]) -> Callable:
        inputs = tuple(input_key(a) for a in args)
        key = (structure, inputs)
        fn = self.artifacts.get(key)
        if fn is None:
            fn = self._from_larger_region(structure, gm, inputs)
        if fn is None:
            start = time.perf_counter()
            fn = inductor_compile(gm, args, self.options)
            self.compile_seconds.append(round(time.perf_counter() - start, 3))
            self.sources[key] = gm
            self.compiles += 1
        self.artifacts[key] = fn
        return fn

    def _from_larger_region(self, structure: str, gm: fx.GraphModule, inputs) -> Optional[Callable]:
        """The last block of a list often drops an output nobody reads (FLUX's last single block
        returns no text stream): when a compiled region with the same inputs becomes this one once
        pruned to some of its outputs, call it and keep those outputs."""
        as_tuple = isinstance(_output_arg(gm), (tuple, list))
        wanted = len(_returned(gm))
        for key, source in self.sources.items():
            available = len(_returned(source))
            if key[1] != inputs or available <= wanted:
                continue
            for keep in itertools.permutations(range(available), wanted):
                if structure_key(_pruned(source, keep, as_tuple)) == structure:
                    return _Selected(self.artifacts[key], keep, as_tuple)
        return None


def inductor_compile(gm: fx.GraphModule, args: Tuple[Any, ...], options: Optional[Dict[str, Any]] = None) -> Callable:
    """``torch._inductor.compile`` as Dynamo calls it: static fake inputs under a tracing context
    whose fake mode has a ShapeEnv. Called bare, Inductor skips its on-disk FX graph cache ("No
    shape env"), so every process compiled every region from scratch. A region with int or bool
    inputs is compiled bare: under a ShapeEnv, AOTAutograd would make those symbolic.
    ``options``: Inductor config values patched in for this compile (part of the cache key)."""
    options = options or None
    if not all(a is None or isinstance(a, (torch.Tensor, float)) for a in args):
        return torch._inductor.compile(gm, list(args), options)
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    fake_mode = FakeTensorMode(shape_env=ShapeEnv())
    with tracing(TracingContext(fake_mode)):
        fake_args = [fake_mode.from_tensor(a, static_shapes=True) if isinstance(a, torch.Tensor) else a for a in args]
        return torch._inductor.compile(gm, fake_args, options)


class _Selected:
    """A larger region's artifact, returning only the outputs a smaller region has."""

    def __init__(self, fn: Callable, keep: Tuple[int, ...], as_tuple: bool):
        self.fn, self.keep, self.as_tuple = fn, keep, as_tuple

    def __call__(self, *args):
        out = self.fn(*args)
        picked = tuple(out[i] for i in self.keep)
        return picked if self.as_tuple else picked[0]


def _output_arg(gm: fx.GraphModule):
    return next(n for n in gm.graph.nodes if n.op == "output").args[0]


def _returned(gm: fx.GraphModule) -> Tuple[Any, ...]:
    out = _output_arg(gm)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _pruned(gm: fx.GraphModule, keep: Tuple[int, ...], as_tuple: bool) -> fx.GraphModule:
    """A copy of ``gm`` returning only outputs ``keep``, without the ops nothing reads any more."""
    pruned = fx.GraphModule(gm, copy.deepcopy(gm.graph))
    kept = tuple(_returned(pruned)[i] for i in keep)
    next(n for n in pruned.graph.nodes if n.op == "output").args = (kept if as_tuple else kept[0],)
    pruned.graph.eliminate_dead_code()
    return pruned


class CompiledRegion(torch.nn.Module):
    """One region, compiled (or fetched from the compiler's artifacts) on its first call.

    ``static``: tensors (the region's weights) passed after the call's own arguments, held here
    so the calling graph fetches and passes only activations (``compile_regions`` reorders the
    region's inputs so its weights come last)."""

    def __init__(self, gm: fx.GraphModule, compiler: RegionCompiler, static: Tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.gm = gm
        self.structure = structure_key(gm)
        self._compiler = compiler
        self._compiled: Optional[Callable] = None
        self._to_contiguous: Tuple[int, ...] = ()
        self._strides: Dict[int, Tuple[int, ...]] = {}
        self._static = tuple(static)

    def forward(self, *args):
        if self._static:
            args = args + self._static
        if self._compiled is None:
            # Inductor specialises on strides, so blocks fed slices (FLUX's single blocks read
            # views of one concatenated stream) would compile apart from identical neighbours.
            # Inputs are made canonical: contiguous ones are re-viewed (free), others copied.
            self._to_contiguous = tuple(
                i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.stride() != _contiguous_strides(a)
            )
            self._strides = {i: _contiguous_strides(args[i]) for i in self._to_contiguous}  # static shapes
            self._compiled = self._compiler.artifact(self.structure, self.gm, self._contiguous(args))
        out = self._compiled(*(self._contiguous(args) if self._to_contiguous else args))
        return tuple(out) if isinstance(out, list) else out  # Inductor returns lists

    def _contiguous(self, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        out = list(args)
        for i in self._to_contiguous:
            a = out[i]
            # A contiguous tensor may still carry an odd stride on a size-1 dim: re-view it (one op, no copy).
            out[i] = a.as_strided(a.shape, self._strides[i]) if a.is_contiguous() else a.contiguous()
        return tuple(out)


def _contiguous_strides(t: torch.Tensor) -> Tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(t.shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


