"""The frozen, printable result of pattern analysis: blocks, patterns, stream roles, partitions."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch.fx as fx

from .regions import RawRegion, compute_nodes, find_block_regions, list_order
from .streams import BlockIO, analyze_block_io, block_token_range, classify_pattern, return_order, signature, streams_read

PARTITIONS = ("head", "body", "tail")


@dataclass(frozen=True)
class BlockInfo:
    index: int
    list_name: str
    list_index: int
    class_name: str
    pattern: int
    carried_inputs: Tuple[str, ...]
    context_inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    num_nodes: int


@dataclass(frozen=True)
class MiddleStream:
    """A value leaving the body; on cached steps it is rebuilt as ``base`` + stored residual."""

    output: str
    base: str
    role: str  # "hidden" | "encoder"


@dataclass(frozen=True)
class ScopeRequest:
    """What the planner is asked for one cache context.

    scope: the one block list to cache (None: every list joined into one stack).
    fn_blocks / bn_blocks: blocks always computed at the front / back.
    defer_middle_only_ops: move ops of the last Fn block that only the middle reads into the body
        (DBCache: cached steps skip them); DBPrune passes False (its body holds whole blocks only).
    """

    scope: Optional[str]
    fn_blocks: int
    bn_blocks: int
    defer_middle_only_ops: bool = True


@dataclass(frozen=True)
class PlannerInput:
    """The planner's whole input besides the graph: one ``ScopeRequest`` per cache context."""

    scopes: Tuple[ScopeRequest, ...]


@dataclass(frozen=True)
class Plan:
    """What the rewrite will do, or ``reason`` why it will not (then the model runs unmodified)."""

    block_lists: Tuple[Tuple[str, int], ...] = ()
    blocks: Tuple[BlockInfo, ...] = ()
    fn_blocks: int = 0
    bn_blocks: int = 0
    hidden_in: Optional[str] = None
    hidden_fn: Optional[str] = None
    # (dim, start, stop): the tokens of hidden_in and hidden_fn the Fn residual is measured on, when
    # the forward joins to the stream, between blocks, values the previous block did not compute
    # (HiDream's per-block Llama tokens, FIBO's per-block text-encoder channels: their change is no
    # block's work); the tokens left are the ones the block computed. None: the whole values.
    fn_residual_tokens: Optional[Tuple[int, int, int]] = None
    middle_streams: Tuple[MiddleStream, ...] = ()
    hoisted_to_head: Tuple[str, ...] = ()
    # Ops of the last Fn block that only the middle reads (FLUX: the text stream's output layers
    # when nothing after the middle uses that stream): run in the body, so cached steps skip them.
    deferred_to_body: Tuple[str, ...] = ()
    partition_of: Tuple[Tuple[str, str], ...] = field(default=(), repr=False)
    reason: Optional[str] = None
    scope: Optional[str] = None  # the one block list this plan caches; None: all lists joined
    leads: bool = True  # decides first in a call (places it); later lists follow its step and branch
    # Every block of the graph (all lists, not only this plan's): node name -> "list.index".
    # Lowering splits partitions into per-block regions from this, as the planner saw them.
    block_of: Tuple[Tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def supported(self) -> bool:
        return self.reason is None

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def partition_map(self) -> Dict[str, str]:
        return dict(self.partition_of)

    def block_map(self) -> Dict[str, str]:
        return dict(self.block_of)

    def partition_blocks(self) -> Dict[str, List[str]]:
        names = [f"{b.list_name}.{b.list_index}" for b in self.blocks]
        n, fn, bn = len(names), self.fn_blocks, self.bn_blocks
        return {"head": names[:fn], "body": names[fn : n - bn], "tail": names[n - bn :]}

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("partition_of")
        data.pop("block_of")
        data["supported"] = self.supported
        data["partitions"] = self.partition_blocks() if self.blocks and self.supported else {}
        return data

    def __str__(self) -> str:
        if not self.blocks:
            return f"Plan(unsupported: {self.reason})"
        lines = [f"Plan: {self.num_blocks} blocks in " + ", ".join(f"{n} x{c}" for n, c in self.block_lists)]
        if self.scope is not None:
            lines[0] += " (own cache context" + ("" if self.leads else ", follows the first list's steps") + ")"
        for b in self.blocks:
            lines.append(
                f"  [{b.index:>3}] {b.list_name}.{b.list_index} {b.class_name} Pattern_{b.pattern} "
                f"carried={len(b.carried_inputs)} context={len(b.context_inputs)} outputs={len(b.outputs)}"
            )
        if self.supported:
            parts = self.partition_blocks()
            lines.append(f"  head: pre-ops + {len(parts['head'])} blocks (Fn={self.fn_blocks})")
            lines.append(f"  body: {len(parts['body'])} blocks")
            lines.append(f"  tail: {len(parts['tail'])} blocks (Bn={self.bn_blocks}) + output ops")
            if self.fn_residual_tokens is not None:
                dim, start, stop = self.fn_residual_tokens
                lines.append(f"  Fn residual on tokens [{start}:{stop}] (dim {dim}) of {self.hidden_fn} - {self.hidden_in}")
            for s in self.middle_streams:
                lines.append(f"  middle stream {s.role}: {s.output} = {s.base} + residual")
            if self.deferred_to_body:
                lines.append(f"  deferred to the body: {len(self.deferred_to_body)} ops of the last Fn block only the middle reads")
        else:
            lines.append(f"  unsupported: {self.reason}")
        return "\n".join(lines)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str)


def _blocks_info(regions: Sequence[RawRegion], ios: Sequence[BlockIO]) -> Tuple[BlockInfo, ...]:
    infos = []
    for i, (r, io) in enumerate(zip(regions, ios)):
        has_encoder = len(io.carried) >= 2 or io.encoder_context
        order = return_order(r.ref.cls)
        infos.append(
            BlockInfo(
                index=i,
                list_name=r.ref.list_name,
                list_index=r.ref.list_index,
                class_name=r.ref.cls.__name__,
                pattern=classify_pattern(has_encoder, order, len(io.outputs)),
                carried_inputs=io.carried,
                context_inputs=io.context,
                outputs=io.outputs,
                num_nodes=len(r.nodes),
            )
        )
    return tuple(infos)


def _unique(candidates: List[str], what: str) -> Tuple[Optional[str], Optional[str]]:
    if len(candidates) == 1:
        return candidates[0], None
    if not candidates:
        return None, f"no {what} found"
    return None, f"{what} is ambiguous ({len(candidates)} streams of the same shape and dtype: {candidates})"


def build_plan(graph: fx.Graph, fn_blocks: int, bn_blocks: int, scope: Optional[str] = None) -> Plan:
    """Analyze ``graph`` and decide the head/body/tail split for DBCache with Fn/Bn blocks.

    ``scope``: cache only the block list of that name (its blocks are the Fn/body/Bn blocks; other
    lists are ordinary ops around them). None joins every block list into one stack.
    """
    return build_plans(graph, PlannerInput((ScopeRequest(scope, fn_blocks, bn_blocks),)))[0]


def build_plans(graph: fx.Graph, request: PlannerInput) -> Tuple[Plan, ...]:
    """One plan per ``ScopeRequest``, in the graph order of their block lists.

    With several scopes, each later plan's blocks lie in the previous plan's tail, so the rewrite
    nests: the tail of the first list's split is split again for the next. On a refusal the
    result is that one unsupported plan.
    """
    regions, reason = find_block_regions(graph)
    if reason:
        return (Plan(reason=reason),)
    ios = analyze_block_io(graph, regions)
    by_name = {nd.name: nd for nd in graph.nodes}
    # The hidden stream is what the last block of the whole model returns for later use; with
    # several streams (LTX-2: video and audio), the one the model's first output is made from.
    final_sigs = {signature(by_name[o]) for o in ios[-1].outputs}
    if len(final_sigs) > 1:
        feeding = _ancestors(_first_output(graph))
        final_sigs = {signature(by_name[o]) for o in ios[-1].outputs if o in feeding} or final_sigs
    read = None
    if len(final_sigs) > 1 and _first_output(graph) is not None:
        # Both reach it: the one whose tokens it reads (ConsisID joins the text stream to the
        # image stream for a norm after its last block, then keeps the image tokens).
        read = streams_read(graph, [o for o in ios[-1].outputs if o in feeding], _first_output(graph))
        final_sigs = {signature(by_name[o]) for o in read} or final_sigs
    if len(final_sigs) != 1:
        how = (" and the model's first output reads all of them (through an op not followed by token range: a "
               "gather by indices, a reshape)") if read else ""
        why = f"the last block has {len(final_sigs)} distinct outputs used later{how}; cannot tell the hidden stream"
        return (Plan(block_lists=tuple(list_order(regions)), blocks=_blocks_info(regions, ios), reason=why),)
    hidden_sig = final_sigs.pop()
    order = [name for name, _ in list_order(regions)]
    block_of = tuple((name, f"{r.ref.list_name}.{r.ref.list_index}") for r in regions for name in r.nodes)
    plans = []
    for req in sorted(request.scopes, key=lambda s: order.index(s.scope) if s.scope in order else -1):
        scope, fn, bn = req.scope, req.fn_blocks, req.bn_blocks
        keep = [k for k, r in enumerate(regions) if scope is None or r.ref.list_name == scope]
        if not keep:
            return (Plan(scope=scope, reason=f"no block list named {scope!r} in this graph (found: {order})"),)
        scope_ios = ios if keep[0] == 0 else analyze_block_io(graph, regions, first=keep[0])
        sig = hidden_sig
        if scope is not None and not any(signature(by_name[c]) == sig for c in scope_ios[keep[0]].carried):
            # The list's stream is reshaped by blocks of another list run between its blocks
            # (Latte: temporal blocks over frames between spatial blocks over tokens): its hidden
            # stream is what its own last block returns, if that is one shape.
            own = {signature(by_name[o]) for o in scope_ios[keep[-1]].outputs}
            sig = own.pop() if len(own) == 1 else sig
        plan = _plan_one(graph, [regions[k] for k in keep], [scope_ios[k] for k in keep], sig, fn, bn,
                         defer=req.defer_middle_only_ops, before=ios[keep[0] - 1].outputs if keep[0] else ())
        plan = _with(plan, scope=scope, leads=not plans, block_of=block_of)
        if not plan.supported:
            return (plan,)
        if plans and not _nested_in_tail(plans[-1], plan):
            return (_with(plan, reason=f"block list {scope!r} does not run after the middle of {plans[-1].scope!r}"),)
        plans.append(plan)
    return tuple(plans)


def _first_output(graph: fx.Graph) -> Optional[fx.Node]:
    """The first value the graph returns (the ``sample`` of a diffusers output)."""
    output = next(n for n in graph.nodes if n.op == "output")
    return next(iter(output.all_input_nodes), None)


def _ancestors(node: Optional[fx.Node]) -> set:
    seen, todo = set(), [node] if node is not None else []
    while todo:
        n = todo.pop()
        if n.name not in seen:
            seen.add(n.name)
            todo.extend(n.all_input_nodes)
    return seen


def _nested_in_tail(outer: Plan, inner: Plan) -> bool:
    """Every node the inner plan puts in its body or tail sits in the outer plan's tail."""
    where = outer.partition_map()
    return all(where.get(name) == "tail" for name, part in inner.partition_of if part != "head")


def _plan_one(graph, regions, ios, hidden_sig, fn_blocks: int, bn_blocks: int, defer: bool = True,
              before: Sequence[str] = ()) -> Plan:
    blocks = _blocks_info(regions, ios)
    base = Plan(block_lists=tuple(list_order(regions)), blocks=blocks, fn_blocks=fn_blocks, bn_blocks=bn_blocks)
    n = len(regions)
    if fn_blocks + bn_blocks >= n:
        return _with(base, reason=f"{n} blocks found; Fn + Bn = {fn_blocks + bn_blocks} leaves no middle block to cache")
    return _partition(graph, base, regions, ios, hidden_sig, defer, before)


def _with(plan: Plan, **changes) -> Plan:
    return replace(plan, **changes)


def _partition(graph: fx.Graph, plan: Plan, regions: Sequence[RawRegion], ios: Sequence[BlockIO], hidden_sig, defer: bool,
               before: Sequence[str] = ()) -> Plan:
    """``before``: the outputs of the block that runs just before the stack (none: the stack starts
    the graph's blocks)."""
    by_name = {nd.name: nd for nd in graph.nodes}
    nodes = compute_nodes(graph)
    n, fn, bn = len(regions), plan.fn_blocks, plan.bn_blocks
    block_part = {}
    for k, r in enumerate(regions):
        part = "head" if k < fn else ("body" if k < n - bn else "tail")
        for name in r.nodes:
            block_part[name] = part
    first_pos = regions[0].span[0]
    last_pos = regions[-1].span[1]
    body_start = regions[fn].span[0]
    tail_start = regions[n - bn].span[0] if bn else last_pos + 1

    assign: Dict[str, str] = {}
    hoisted: List[str] = []
    body_dep: set = set()
    for pos, node in enumerate(nodes):
        if node.name in block_part:
            part = block_part[node.name]
        elif pos < first_pos or pos < body_start:
            part = "head"
        elif pos > last_pos or pos >= tail_start:
            part = "tail"
        elif any(i.name in body_dep for i in node.all_input_nodes):
            part = "body"
        else:
            part = "head"
            hoisted.append(node.name)
        if part == "body":
            body_dep.add(node.name)
        assign[node.name] = part

    # A skipped block must not owe the caller a write: a tensor the call passes in (a KV cache
    # the blocks fill) written in place by a middle block would keep its old contents on
    # cached steps.
    written = _writes_to_call_inputs([by_name[nm] for nm, part in assign.items() if part == "body"])
    if written:
        node, source = written
        return _with(plan, reason=f"a middle block writes in place into a tensor the call passes in ({source}, by "
                                  f"{node}): skipping the block would skip the write")

    # Values leaving the body: each must continue a stream entering it.
    exits: List[str] = []
    for name, part in assign.items():
        if part == "body" and any(u.op == "output" or assign.get(u.name) == "tail" for u in by_name[name].users):
            exits.append(name)
    # Head values used after the body must be consumed in the head's order; check no back edges.
    for name, part in assign.items():
        for inp in by_name[name].all_input_nodes:
            ip = assign.get(inp.name)
            if ip is not None and PARTITIONS.index(ip) > PARTITIONS.index(part):
                return _with(plan, reason=f"node {name} ({part}) depends on {inp.name} ({ip}): ops out of order")

    entry = list(ios[fn].carried)
    hidden_fn, why = _unique([e for e in entry if signature(by_name[e]) == hidden_sig], "hidden stream entering the middle")
    if why:
        return _with(plan, reason=why)
    hidden_in, why = _unique(
        [c for c in ios[0].carried if signature(by_name[c]) == hidden_sig], "hidden stream entering block 0"
    )
    if why:
        return _with(plan, reason=why)
    # The Fn residual is the blocks' change of their stream: tokens the forward joins to it between
    # blocks that the previous block did not compute (the same range of both values) are left out.
    tokens = block_token_range(graph, ios[fn - 1].outputs, by_name[hidden_fn]) if fn and before else None
    if tokens is not None and block_token_range(graph, before, by_name[hidden_in]) != tokens:
        tokens = None
    streams = []
    bypassing = None  # streams the body reads past its first block, computed when needed
    for x in exits:
        sig = signature(by_name[x])
        base, why = _unique([e for e in entry if signature(by_name[e]) == sig], f"stream entering the middle for {x}")
        if why and not any(signature(by_name[e]) == sig for e in entry):
            # No carried input of the first middle block has its shape: a stream that bypasses
            # that block (ConsisID's text stream passes its perceiver cross-attention blocks),
            # read by a later middle block. It must be the only such value of its shape.
            bypassing = _stream_inputs_of_body(graph, regions, fn, assign) if bypassing is None else bypassing
            base, why2 = _unique([e for e in bypassing if e not in entry and signature(by_name[e]) == sig],
                                 f"stream entering the middle for {x}")
            why = why2 and why
        if why:
            return _with(
                plan, reason=f"a middle-block value ({x}) is used after the middle and matches no input stream: {why}"
            )
        if any(s.base == base for s in streams):
            return _with(plan, reason=f"two middle-block values used after the middle continue the same stream {base}")
        streams.append(MiddleStream(output=x, base=base, role="hidden" if base == hidden_fn else "encoder"))
    deferred: List[str] = []
    if defer and fn:
        glue_values = {hidden_in, hidden_fn} | {s.base for s in streams}
        deferred = _defer_middle_only(nodes[regions[fn - 1].span[0] : body_start], assign, glue_values)
    return _with(
        plan,
        hidden_in=hidden_in,
        hidden_fn=hidden_fn,
        fn_residual_tokens=tokens,
        middle_streams=tuple(streams),
        hoisted_to_head=tuple(hoisted),
        deferred_to_body=tuple(deferred),
        partition_of=tuple(assign.items()),
    )


_VIEWS = {"view", "reshape", "transpose", "permute", "narrow", "select", "unsqueeze", "squeeze", "flatten",
          "unflatten", "expand", "as_strided", "t", "view_as", "chunk", "split", "unbind", "movedim"}


def _is_in_place(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target is operator.setitem:
        return True
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return isinstance(name, str) and name.endswith("_") and not name.startswith("_") and node.op in ("call_method", "call_function")


def _viewed_input(node) -> Optional[fx.Node]:
    """The graph input ``node`` is a view of (through getitem, view, reshape, ...), or None."""
    while isinstance(node, fx.Node):
        if node.op == "placeholder":
            return node
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        if node.target is operator.getitem or name in _VIEWS:
            node = node.args[0] if node.args else None
            continue
        return None
    return None


def _writes_to_call_inputs(nodes: Sequence[fx.Node]) -> Optional[Tuple[str, str]]:
    """(node, source) of the first in-place write among ``nodes`` into a graph input that comes
    from the call's arguments (Dynamo's source of the input: not ``L['self']`` module state, not
    a global), or None."""
    for node in nodes:
        if not _is_in_place(node) or not node.args:
            continue
        target = _viewed_input(node.args[0])
        if target is None:
            continue
        source = getattr(getattr(target.meta.get("grapharg"), "source", None), "name", None)
        source = source() if callable(source) else source
        if isinstance(source, str) and not source.startswith(("L['self']", "L['model']", "G[")):
            return node.name, source
    return None


def _stream_inputs_of_body(graph: fx.Graph, regions: Sequence[RawRegion], fn: int, assign: Dict[str, str]) -> List[str]:
    """Head values computed from the Fn blocks that a body op reads (in graph order)."""
    derived: set = {name for r in regions[:fn] for name in r.nodes}
    for node in graph.nodes:
        if assign.get(node.name) == "head" and any(i.name in derived for i in node.all_input_nodes):
            derived.add(node.name)
    out: List[str] = []
    for node in graph.nodes:
        if assign.get(node.name) == "body":
            for inp in node.all_input_nodes:
                if inp.name in derived and inp.name not in out:
                    out.append(inp.name)
    return out


def _defer_middle_only(candidates: Sequence[fx.Node], assign: Dict[str, str], keep: set) -> List[str]:
    """Move head ops among ``candidates`` (the last Fn block and what follows it) whose every user
    is in the body into the body, in place in ``assign``. Cached steps then skip them; computed
    steps run the same ops in the same order. Values the glue reads (``keep``) and impure ops stay."""
    candidates = [n for n in candidates if assign.get(n.name) == "head"]  # so "body" below means moved
    for node in reversed(candidates):  # users first, so chains move whole
        if node.name in keep or not node.users or node.is_impure():
            continue
        if all(assign.get(u.name) == "body" for u in node.users):
            assign[node.name] = "body"
    # An item of a tuple that stays in the head stays with it: partitions exchange tensors, not tuples.
    for node in candidates:
        if node.target is operator.getitem and assign.get(node.args[0].name) == "head":
            assign[node.name] = "head"
    return [n.name for n in candidates if assign.get(n.name) == "body"]
