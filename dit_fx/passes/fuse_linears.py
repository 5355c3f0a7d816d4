"""Capture pass: Linears of one block that read the same value become one GEMM, split after it.

q / k / v of an attention (FLUX's single blocks: q / k / v and the MLP's input projection, Wan's
cross-attention k / v) read one normalized value each. One Linear over the joined weight, then a
``split`` of its output along the features, computes the same numbers in one GEMM. With dynamic
fp8 activations the value is also quantized once instead of once per Linear. Measured on an H200
(``benchmarks/fused_linears.py``, ``benchmarks/results/fused_linears_h200.json``): fp8 row-wise,
FLUX.1-dev-sized, double block q/k/v at 4096 tokens 0.62x the separate Linears, single block
q/k/v + MLP 0.76x; bf16 within a few percent either way.

Which Linears. ``linear`` calls in one block (the plan's membership: never across blocks, so
block regions and the cache's Fn / Bn split stay as they are) with the same input node, weights
of one layout (below) with the same input features, dtype and device, each weight and bias read
by that Linear only, and either every bias or none. A group that cannot be joined is left as it
was, with the reason recorded (``FusionRecord.kept``).

The joined weight is the model's memory. ``JoinedWeights`` makes one tensor per group (once per
model: every later capture, a new resolution say, finds the same one) and then points each of
the model's parameters at its rows of it (``param.data`` becomes a view), so nothing is held
twice and the model computes exactly what it computed before. An in-place change of a weight
(``load_state_dict``, ``copy_``, a fused LoRA) is therefore seen by the joined GEMM too. A
parameter given new storage later (``param.data = ...``) is no longer a view: before each call
``JoinedWeights.refresh`` finds it (a data-pointer check) and copies it into the joined weight.

Layouts (strategy objects, ``LAYOUTS``): plain tensors (rows joined with ``torch.cat``), and
torchao's ``Float8Tensor`` with one scale per output row (``fp8`` on Hopper: its rows and scales
are joined, each row keeps its own scale, so the joined weight dequantizes to exactly the
separate ones). Other torchao weights (per-tensor fp8 scales, int8, int4) stay separate.
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx

from .graph_ops import arg, shape

LINEARS = {torch._C._nn.linear, torch.nn.functional.linear}


# ----------------------------------------------------------------------------- weight layouts


class PlainRows:
    """Ordinary tensors: ``torch.cat`` along the output features; a parameter's rows are a view."""

    name = "plain"

    def accepts(self, t: torch.Tensor) -> bool:
        return type(t) in (torch.Tensor, torch.nn.Parameter) and t.is_contiguous()

    def join(self, ts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.detach() for t in ts], dim=0)

    def point(self, param: torch.Tensor, joined: torch.Tensor, start: int, stop: int) -> None:
        param.data = joined[start:stop]

    def pointers(self, param: torch.Tensor) -> Tuple[int, ...]:
        return (param.data_ptr(),)

    def same_rows(self, param: torch.Tensor, joined: torch.Tensor, start: int, stop: int) -> bool:
        return (tuple(param.shape) == (stop - start, *joined.shape[1:]) and param.dtype == joined.dtype
                and param.device == joined.device)

    def copy_into(self, param: torch.Tensor, joined: torch.Tensor, start: int, stop: int) -> None:
        joined[start:stop].copy_(param.detach())


class Float8Rows:
    """torchao ``Float8Tensor`` with row-wise scales (``block_size == [1, in_features]``): its
    ``qdata`` rows and ``scale`` rows are joined (torchao's own ``cat``), and a parameter's
    ``qdata`` / ``scale`` become views of the joined ones."""

    name = "float8_rowwise"

    def accepts(self, t: torch.Tensor) -> bool:
        if type(t).__name__ != "Float8Tensor" or not all(hasattr(t, a) for a in ("qdata", "scale", "block_size")):
            return False
        return (t.dim() == 2 and list(t.block_size) == [1, t.shape[1]] and tuple(t.scale.shape) == (t.shape[0], 1)
                and t.qdata.is_contiguous())

    def join(self, ts: Sequence[torch.Tensor]) -> torch.Tensor:
        joined = torch.cat(list(ts), dim=0)
        if not torch.equal(joined.scale, torch.cat([t.scale for t in ts], dim=0)):  # pragma: no cover - torchao's cat
            raise ValueError("torchao's cat changed the row scales")
        return joined

    def point(self, param: torch.Tensor, joined: torch.Tensor, start: int, stop: int) -> None:
        param.qdata = joined.qdata[start:stop]
        param.scale = joined.scale[start:stop]

    def pointers(self, param: torch.Tensor) -> Tuple[int, ...]:
        return (param.qdata.data_ptr(), param.scale.data_ptr())

    def same_rows(self, param: torch.Tensor, joined: torch.Tensor, start: int, stop: int) -> bool:
        rows = joined.qdata[start:stop]
        return (param.qdata.shape == rows.shape and param.qdata.dtype == rows.dtype and param.qdata.device == rows.device
                and param.scale.shape == joined.scale[start:stop].shape and param.scale.dtype == joined.scale.dtype)

    def copy_into(self, param: torch.Tensor, joined: torch.Tensor, start: int, stop: int) -> None:
        joined.qdata[start:stop].copy_(param.qdata)
        joined.scale[start:stop].copy_(param.scale)


LAYOUTS = (PlainRows(), Float8Rows())
# What ``fuse_linears=None`` (the default, on CUDA) joins: fp8 row-wise only. Plain bf16 blocks
# were a little slower joined on the H200 (Wan 2.1 1.027x, FLUX double 1.011x, single 0.992x:
# ``benchmarks/results/fused_linears_h200.json``); ``fuse_linears=True`` joins every layout.
AUTO_LAYOUTS = frozenset({"float8_rowwise"})


def layout_of(t: Any):
    return next((layout for layout in LAYOUTS if isinstance(t, torch.Tensor) and layout.accepts(t)), None)


# ----------------------------------------------------------------------------- records and state


@dataclass(frozen=True)
class FusedGroup:
    block: str
    linears: Tuple[str, ...]  # node names, in graph order
    out_features: Tuple[int, ...]
    layout: str
    fused: str  # the joined linear's node name
    attributes: Tuple[str, ...]  # the joined weight (and bias) registered on the graph module


@dataclass
class FusionRecord:
    """What one capture's pass did: the groups joined, the groups kept separate (with why)."""

    groups: List[FusedGroup] = field(default_factory=list)
    kept: List[Tuple[Tuple[str, ...], str]] = field(default_factory=list)

    @property
    def fused_linears(self) -> int:
        return sum(len(g.linears) for g in self.groups)


class JoinedWeights:
    """The joined weights of one model (every capture shares them), keyed by the parameters' ids.

    ``refresh()`` (before every call of a capture that reads them) keeps them the model's: a
    parameter given new storage since (``param.data = ...``) is copied into its rows of the joined
    tensor, which keeps its address (CUDA graphs replay it), and made a view again. A change of
    shape, dtype, device or layout cannot be copied and raises: call ``dit_fx.optimize`` again."""

    def __init__(self):
        self.joined: Dict[Tuple[int, ...], _Joined] = {}
        self._watched: Tuple[List[torch.Tensor], List[torch.Tensor]] = ([], [])  # (plain, torchao) parameters
        self._expected: List[int] = []  # their data pointers when last seen intact

    def get(self, params: Sequence[torch.Tensor], layout) -> torch.Tensor:
        key = tuple(id(p) for p in params)
        entry = self.joined.get(key)
        if entry is not None and entry.params == tuple(params):
            entry.refresh()
        else:
            with torch.no_grad():
                joined = layout.join(params)
            entry = self.joined[key] = _Joined(joined, tuple(params), tuple(_bounds([p.shape[0] for p in params])), layout)
            entry.point_all()
        self._watch()
        return entry.tensor

    def refresh(self) -> None:
        """Per call: one data-pointer read per parameter (about 50 ns each) when nothing changed."""
        if self._pointers() == self._expected:
            return
        for entry in self.joined.values():
            entry.refresh()
        self._watch()

    def check(self) -> None:
        """At a capture: joined tensors whose parameters cannot be copied back are dropped (the
        capture joins them again from the new values)."""
        for key, entry in list(self.joined.items()):
            if not entry.intact() and not entry.copyable():
                del self.joined[key]
        self._watch()

    def _watch(self) -> None:
        params = [p for entry in self.joined.values() for p in entry.params]
        self._watched = ([p for p in params if type(p) in (torch.Tensor, torch.nn.Parameter)],
                         [p for p in params if type(p) not in (torch.Tensor, torch.nn.Parameter)])
        self._expected = self._pointers()

    def _pointers(self) -> List[int]:
        plain, wrapped = self._watched
        return list(map(torch.Tensor.data_ptr, plain)) + [p.qdata.data_ptr() for p in wrapped]


@dataclass
class _Joined:
    tensor: torch.Tensor
    params: Tuple[torch.Tensor, ...]
    bounds: Tuple[Tuple[int, int], ...]
    layout: Any
    pointers: Tuple[Tuple[int, ...], ...] = ()

    def point_all(self) -> None:
        with torch.no_grad():
            for p, (start, stop) in zip(self.params, self.bounds):
                self.layout.point(p, self.tensor, start, stop)
        self.pointers = tuple(self.layout.pointers(p) for p in self.params)

    def intact(self) -> bool:
        """Every parameter still views its rows (data pointers only: cheap enough per call)."""
        return all(self.layout.pointers(p) == ptrs for p, ptrs in zip(self.params, self.pointers))

    def copyable(self) -> bool:
        return all(self.layout.accepts(p) and self.layout.same_rows(p, self.tensor, a, b)
                   for p, (a, b) in zip(self.params, self.bounds))

    def refresh(self) -> None:
        if self.intact():
            return
        if not self.copyable():
            raise RuntimeError("dit_fx fuse_linears: a joined parameter changed shape, dtype, device or type after "
                               "capture; call dit_fx.optimize(model, ...) again")
        with torch.no_grad():
            for p, (start, stop) in zip(self.params, self.bounds):
                self.layout.copy_into(p, self.tensor, start, stop)
        self.point_all()


def _bounds(sizes: Sequence[int]) -> List[Tuple[int, int]]:
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


@dataclass
class FusionContext:
    block_of: Dict[str, str]  # node name -> block, from the plan
    params: Dict[str, torch.Tensor]  # placeholder name -> the parameter it carries
    weights: JoinedWeights
    layouts: Optional[frozenset] = None  # the layout names to join (None: every one)
    record: FusionRecord = field(default_factory=FusionRecord)


# ----------------------------------------------------------------------------- the pass


def fuse_linears(gm: fx.GraphModule, ctx: FusionContext) -> fx.GraphModule:
    """Join each block's sibling Linears in ``gm`` (in place); returns ``gm``."""
    graph = gm.graph
    for members in _sibling_groups(graph, ctx):
        why = _refusal(members, ctx)
        names = tuple(n.name for n in members)
        if why:
            ctx.record.kept.append((names, why))
            continue
        _join(gm, members, ctx)
    graph.lint()
    gm.recompile()
    return gm


def _sibling_groups(graph: fx.Graph, ctx: FusionContext) -> List[List[fx.Node]]:
    groups: Dict[Tuple[str, str], List[fx.Node]] = {}
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in LINEARS or node.name not in ctx.block_of:
            continue
        x = node.args[0] if node.args else node.kwargs.get("input")
        if isinstance(x, fx.Node):
            groups.setdefault((ctx.block_of[node.name], x.name), []).append(node)
    return [g for g in groups.values() if len(g) > 1]


def _refusal(members: List[fx.Node], ctx: FusionContext) -> Optional[str]:
    weights = [arg(n, 1, "weight") for n in members]
    biases = [arg(n, 2, "bias") for n in members]
    if any(not isinstance(w, fx.Node) or w.name not in ctx.params for w in weights):
        return "a weight is not a parameter of the model"
    if any(b is not None and (not isinstance(b, fx.Node) or b.name not in ctx.params) for b in biases):
        return "a bias is not a parameter of the model"
    if len({b is None for b in biases}) > 1:
        return "some have a bias, some not"
    for p in weights + [b for b in biases if b is not None]:
        if len(p.users) != 1:
            return f"{p.name} is read elsewhere too"
    ws = [ctx.params[w.name] for w in weights]
    layouts = {getattr(layout_of(w), "name", None) for w in ws}
    if None in layouts or len(layouts) > 1:
        kinds = sorted({type(w).__name__ for w in ws})
        return f"weights of type {', '.join(kinds)} cannot be joined exactly (plain, or torchao fp8 with row scales)"
    if ctx.layouts is not None and not layouts <= ctx.layouts:
        return f"{layouts.pop()} weights are joined only with fuse_linears=True (measured slower joined)"
    if len({(w.dim(), w.shape[1:], w.dtype, w.device) for w in ws}) > 1 or ws[0].dim() != 2:
        return "weights differ in input features, dtype or device"
    if any(shape(n) is None for n in members):
        return "an output shape is unknown"
    if biases[0] is not None:
        bs = [ctx.params[b.name] for b in biases]
        if any(layout_of(b) is None or b.dim() != 1 for b in bs) or len({(b.dtype, b.device) for b in bs}) > 1:
            return "biases differ in dtype or device"
    return None


def _join(gm: fx.GraphModule, members: List[fx.Node], ctx: FusionContext) -> None:
    graph = gm.graph
    weights = [ctx.params[arg(n, 1, "weight").name] for n in members]
    layout = layout_of(weights[0])
    joined_w = ctx.weights.get(weights, layout)
    first = members[0]
    index = len(ctx.record.groups)
    attrs = [_register(gm, f"fused_weight_{index}", joined_w)]
    if arg(first, 2, "bias") is not None:
        biases = [ctx.params[arg(n, 2, "bias").name] for n in members]
        attrs.append(_register(gm, f"fused_bias_{index}", ctx.weights.get(biases, layout_of(biases[0]))))
    args = [first.args[0]]
    with graph.inserting_before(first):
        args += [graph.get_attr(a) for a in attrs]
        fused = graph.call_function(first.target, tuple(args))
        sizes = [w.shape[0] for w in weights]
        parts = graph.call_method("split", (fused, sizes, -1))
    fused.meta, parts.meta = _joined_meta(first, members)
    block = ctx.block_of[first.name]
    ctx.block_of[fused.name] = ctx.block_of[parts.name] = block
    for i, node in enumerate(members):
        with graph.inserting_after(parts):
            piece = graph.call_function(operator.getitem, (parts, i))
        piece.meta = dict(node.meta)
        ctx.block_of[piece.name] = block
        node.replace_all_uses_with(piece)
    for node in members:
        graph.erase_node(node)
    ctx.record.groups.append(FusedGroup(block, tuple(n.name for n in members), tuple(sizes), layout.name, fused.name,
                                        tuple(attrs)))


def _joined_meta(first: fx.Node, members: List[fx.Node]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Meta of the joined linear and of its split: the first member's (module stack, source),
    with example values made from the members' (a fake tensor joined in its own fake mode)."""
    base = {k: v for k, v in first.meta.items() if k not in ("example_value", "val")}
    values = [n.meta.get("example_value", n.meta.get("val")) for n in members]
    fused, parts = dict(base), dict(base)
    if all(isinstance(v, torch.Tensor) for v in values):
        mode = getattr(values[0], "fake_mode", None)
        with (mode if mode is not None else contextlib.nullcontext()):
            joined = torch.cat(values, dim=-1)
        fused["example_value"] = joined
        parts["example_value"] = tuple(values)
    return fused, parts


def _register(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> str:
    attr, i = name, 1
    while hasattr(gm, attr):
        attr, i = f"{name}_{i}", i + 1
    gm.register_buffer(attr, tensor)
    return attr
