"""Run the rewritten partitions eagerly (as Python) or compiled with Inductor, optionally as CUDA graphs.

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
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.fx as fx

from .capture import get_nested
from .cuda_graphs import GraphedPartition, GraphPool, copy_outputs_out_of_graphs
from .fast_path import Unkeyable, _key_of
from .passes.split_block_regions import split_block_regions

LOWERINGS = ("eager", "inductor")
PARTITION_NAMES = ("head", "body", "tail")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_inductor_options(options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Inductor config values for every region compile (what torch.compile's ``options`` holds),
    checked: unknown keys and values of the wrong type raise ``ValueError`` naming the key.
    ``triton.cudagraphs`` is refused: dit_fx replays head, body and tail as CUDA graphs itself
    (``cuda_graphs=True``), with the cache decision between them."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"inductor_options must be a dict of Inductor config values, got {type(options).__name__}")
    known = torch._inductor.config.get_config_copy()
    for key, value in options.items():
        if key == "triton.cudagraphs":
            raise ValueError("inductor_options 'triton.cudagraphs': use cuda_graphs=True (dit_fx graphs head, body and tail itself)")
        if key not in known:
            raise ValueError(f"inductor_options {key!r} is not an Inductor config option (torch._inductor.config)")
        if not _same_kind(known[key], value):
            raise ValueError(f"inductor_options {key!r} must be a {type(known[key]).__name__} like its default, got {value!r}")
    return dict(options)


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True  # None defaults and structured values: Inductor checks them


def mode_options(mode: str) -> Tuple[bool, Dict[str, Any]]:
    """torch.compile's ``mode`` as dit_fx settings: (cuda_graphs, inductor_options). Inductor's
    CUDA graphs (reduce-overhead, max-autotune) become dit_fx's own graphs of head, body and tail."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"mode must be one of {COMPILE_MODES}, got {mode!r}")
    options = dict(torch._inductor.list_mode_options(mode))
    return bool(options.pop("triton.cudagraphs", False)), options


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

    def artifact(self, structure: str, gm: fx.GraphModule, args: Tuple[Any, ...]) -> Callable:
        inputs = tuple(_input_key(a) for a in args)
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
    """One region, compiled (or fetched from the compiler's artifacts) on its first call."""

    def __init__(self, gm: fx.GraphModule, compiler: RegionCompiler):
        super().__init__()
        self.gm = gm
        self.structure = structure_key(gm)
        self._compiler = compiler
        self._compiled: Optional[Callable] = None
        self._to_contiguous: Tuple[int, ...] = ()

    def forward(self, *args):
        if self._compiled is None:
            # Inductor specialises on strides, so blocks fed slices (FLUX's single blocks read
            # views of one concatenated stream) would compile apart from identical neighbours.
            # Inputs are made canonical: contiguous ones are re-viewed (free), others copied.
            self._to_contiguous = tuple(
                i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.stride() != _contiguous_strides(a)
            )
            self._compiled = self._compiler.artifact(self.structure, self.gm, self._contiguous(args))
        out = self._compiled(*(self._contiguous(args) if self._to_contiguous else args))
        return tuple(out) if isinstance(out, list) else out  # Inductor returns lists

    def _contiguous(self, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        out = list(args)
        for i in self._to_contiguous:
            a = out[i]
            # A contiguous tensor may still carry an odd stride on a size-1 dim: view it flat and back.
            out[i] = a.reshape(-1).view(a.shape) if a.is_contiguous() else a.contiguous()
        return tuple(out)


def _contiguous_strides(t: torch.Tensor) -> Tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(t.shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


@dataclass
class Lowering:
    """How leaf partitions run: ``mode`` ("eager" | "inductor"), whether as CUDA graphs, and the
    Inductor config values (``inductor_options``) every region compile uses."""

    mode: str = "eager"
    cuda_graphs: bool = False
    inductor_options: Dict[str, Any] = field(default_factory=dict)
    compiler: RegionCompiler = field(default_factory=RegionCompiler)
    graphs: GraphPool = field(default_factory=GraphPool)

    def __post_init__(self):
        if self.mode not in LOWERINGS:
            raise ValueError(f"lowering must be one of {LOWERINGS}, got {self.mode!r}")
        self.compiler.options = check_inductor_options(self.inductor_options)
        if self.compiler.options and self.mode != "inductor":
            raise ValueError("inductor_options need compiled lowering (compile=True)")
        if self.mode == "inductor":
            # Start Inductor's compile workers now, so they boot while Dynamo traces the model
            # (torch.compile's own inductor backend does the same when it is first called).
            from torch._inductor.async_compile import maybe_warm_pool

            maybe_warm_pool()

    def lower(self, glue: fx.GraphModule, eager_nodes: frozenset = frozenset()) -> fx.GraphModule:
        """Lower every leaf partition of ``glue``. Regions made only of ``eager_nodes`` (ops a plan
        deferred from the head into the body: they run on computed steps only, where they are a
        sliver of the step) stay eager instead of costing a compile of their own."""
        self._lower_children(glue, "", eager_nodes)
        if self.cuda_graphs:
            copy_outputs_out_of_graphs(glue)
        return glue

    def _lower_children(self, glue: fx.GraphModule, prefix: str, eager_nodes: frozenset) -> None:
        for name, sub in list(glue.named_children()):
            if is_glue(sub):
                self._lower_children(sub, f"{prefix}{name}.", eager_nodes)  # a block list's own context, DBPrune's body
            elif isinstance(sub, fx.GraphModule):
                setattr(glue, name, self._lower_leaf(sub, f"{prefix}{name}", eager_nodes))

    def _lower_leaf(self, partition: fx.GraphModule, name: str, eager_nodes: frozenset) -> torch.nn.Module:
        leaf: torch.nn.Module = partition
        if self.mode == "inductor":
            split = split_block_regions(partition)
            if split is partition:
                leaf = CompiledRegion(partition, self.compiler)
            else:
                for region_name, region in list(split.named_children()):
                    if isinstance(region, fx.GraphModule) and not _only(region, eager_nodes):
                        setattr(split, region_name, CompiledRegion(region, self.compiler))
                leaf = split
        if self.cuda_graphs:
            leaf = GraphedPartition(leaf, name, self.graphs)
        return leaf


def _only(region: fx.GraphModule, names: frozenset) -> bool:
    """Whether every op of ``region`` is among ``names``."""
    ops = [n.name for n in region.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    return bool(ops) and all(n in names for n in ops)


def structure_key(gm: fx.GraphModule) -> str:
    """The op structure of ``gm`` with node names replaced by positions: two blocks that differ
    only in their weights (inputs here) give the same key. Tensor attributes are keyed by identity,
    so regions holding different constants never share an artifact."""
    index: Dict[fx.Node, int] = {}
    lines = []
    for node in gm.graph.nodes:
        index[node] = len(index)
        args = fx.node.map_arg((node.args, node.kwargs), lambda n: f"%{index[n]}")
        if node.op == "placeholder":
            target = ""  # inputs are known by position
        elif node.op == "get_attr":
            target = f"{node.target}@{id(get_nested(gm, node.target))}"
        elif callable(node.target):
            target = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__qualname__', repr(node.target))}"
        else:
            target = str(node.target)
        lines.append(f"{node.op} {target} {args!r}")
    return "\n".join(lines)


def _input_key(value: Any):
    try:
        return _key_of(value)  # what direct calls key on: shape, stride, dtype, device, requires_grad
    except Unkeyable:
        return (type(value), repr(value))


def is_glue(module: object) -> bool:
    """A glue graph (has a cache context), as opposed to a leaf partition."""
    return isinstance(module, fx.GraphModule) and hasattr(module, "cache")


def partition_module(glue: fx.GraphModule, name: str) -> Optional[fx.GraphModule]:
    """The FX module of a partition, whether lowered or not."""
    mod = getattr(glue, name, None)
    if isinstance(mod, GraphedPartition):
        mod = mod.fn
    return mod.gm if isinstance(mod, CompiledRegion) else mod


def iter_glues(glue: fx.GraphModule, prefix: str = "") -> Iterator[Tuple[str, fx.GraphModule]]:
    """``("", glue)``, then nested glue graphs by dotted path (``"tail"``, ``"tail.tail"``)."""
    yield prefix, glue
    for name, sub in glue.named_children():
        if is_glue(sub):
            yield from iter_glues(sub, f"{prefix}{name}.")
