"""Trace each transformer-block class once, then inline the copies back into one flat graph.

Dynamo's trace of a whole DiT forward is a large part of a cold compile (FLUX.1: 57 blocks, about
8 s of symbolic execution). ``optimize`` routes each block's forward through one
``torch.compiler.nested_compile_region`` per block class, so Dynamo traces the first block of a
class and reuses that subgraph for its siblings (``invoke_subgraph`` calls that take each block's
weights as operands). Only where Dynamo reuses regions without tracing them again
(``dynamo_reuses_regions``: torch 2.13 here; a FLUX-structured CPU trace went from 8.5 to 4.4 s);
elsewhere the forward is traced flat as before. The backend then inlines every call (``inline_subgraph_calls``): the graph
the planner sees is the one a flat trace gives, with each op's ``nn_module_stack`` pointing at
its own block.

Outputs are copied inside the region while tracing (``region_output``), because
``invoke_subgraph`` refuses outputs that alias each other or an input (FLUX's single blocks
return two views of one tensor); the inliner removes exactly those copies, so the rewritten graph
holds none. Outside a
trace the wrapper just calls the block's forward.

What differs from a flat trace: an input a block returns untouched, or never reads, may stay as
an unused graph input (Dynamo lifts it for the region); ops inside a model's own region inside a
block carry the block's module path only. Neither changes the plan or the outputs
(``tests/test_block_tracing.py`` compares graphs, plans and outputs with flat traces).
"""

from __future__ import annotations

import functools
import operator
import re
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from ..fx_utils import lazy_graph_module
from ..patterns.regions import module_block_lists, parse_module_path

_INVOKE = getattr(getattr(torch.ops, "higher_order", None), "invoke_subgraph", None)
_RUNNERS: "weakref.WeakKeyDictionary[type, Tuple[Callable, Callable]]" = weakref.WeakKeyDictionary()  # class -> (forward, runner)
_FORWARD_ARG = re.compile(re.escape(".forward.args[0]"))  # how Dynamo names a block passed to its region


@torch.library.custom_op("dit_fx::region_output", mutates_args=())
def region_output(x: torch.Tensor) -> torch.Tensor:
    """A copy of a block's output while tracing, so no region output aliases another; an op of
    its own, so the inliner finds exactly these copies (Dynamo may inline a region itself)."""
    return x.clone()


@region_output.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


_REGION_OUTPUT = torch.ops.dit_fx.region_output.default


def _clone_outputs(out: Any) -> Any:
    return pytree.tree_map_only(torch.Tensor, region_output, out)


def _runner(cls: type) -> Callable:
    """One marked function per block class (Dynamo reuses a region per marked function)."""
    forward = cls.forward
    cached = _RUNNERS.get(cls)
    run = cached[1] if cached is not None and cached[0] is forward else None  # the class's forward may be patched later
    if run is None:

        @torch.compiler.nested_compile_region
        def run(block, *args, **kwargs):
            out = forward(block, *args, **kwargs)
            return _clone_outputs(out) if torch.compiler.is_compiling() else out

        _RUNNERS[cls] = (forward, run)
    return run


Marks = List[Tuple[torch.nn.Module, Any]]


def dynamo_reuses_regions() -> bool:
    """Whether this torch's Dynamo stamps out a traced region for later calls with matching
    inputs instead of tracing each call again. Without that (torch 2.11 measured: FLUX.1's trace
    took 10.6 s with regions against 7.6 s flat) regions only cost time, so blocks are traced flat."""
    if _INVOKE is None or not hasattr(torch.compiler, "nested_compile_region"):
        return False
    try:
        from torch._dynamo.variables import invoke_subgraph
    except ImportError:
        return False
    return hasattr(invoke_subgraph, "stamp_out_subgraph") and hasattr(invoke_subgraph, "find_reuse_match")


def mark_blocks(model: torch.nn.Module) -> Marks:
    """Route the forward of every block of ``model``'s block lists through its class's region.

    Blocks whose ``forward`` is already replaced on the instance (accelerate or diffusers hooks)
    are left alone. Returns what ``unmark_blocks`` needs to restore them exactly."""
    if not dynamo_reuses_regions():
        return []
    marks: Marks = []
    for name in module_block_lists(model):
        for block in model.get_submodule(name):
            if "forward" in block.__dict__ or hasattr(block, "_hf_hook"):
                continue
            block.forward = functools.partial(_runner(type(block)), block)
            marks.append((block, block.forward))
    return marks


def unmark_blocks(marks: Marks) -> None:
    for block, routed in marks:
        if block.__dict__.get("forward") is routed:  # not replaced since by someone else
            del block.forward
    marks.clear()


class RegionInlineError(RuntimeError):
    """The regions of blocks ``optimize`` routed could not be inlined: trace the forward flat."""


def inline_subgraph_calls(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` with every ``invoke_subgraph`` call replaced by the ops of its subgraph
    (``gm`` itself when it has none). A failure raises ``RegionInlineError`` when the graph holds
    our regions (``optimize`` then traces flat), else the error itself."""
    ours = any(n.target is _REGION_OUTPUT for n in gm.graph.nodes)
    if not ours and not any(n.target is _INVOKE for n in gm.graph.nodes):
        return gm
    try:
        return _inlined(gm)
    except Exception as exc:
        if ours:
            raise RegionInlineError(f"could not inline the block regions: {exc!r}") from exc
        raise


def _inlined(gm: fx.GraphModule) -> fx.GraphModule:
    graph = fx.Graph()
    env: Dict[fx.Node, Any] = {}
    for node in gm.graph.nodes:
        if node.target is _INVOKE:
            env[node] = _inline_call(graph, gm, node, env)
        elif node.op == "call_function" and node.target is operator.getitem and node.args[0].target is _INVOKE:
            env[node] = env[node.args[0]][node.args[1]]
        elif (node.op == "get_attr" and isinstance(getattr(gm, node.target, None), fx.GraphModule)
              and all(u.target is _INVOKE for u in node.users)):
            continue  # a subgraph, used only by the calls inlined here
        elif node.target is _REGION_OUTPUT:
            env[node] = env[node.args[0]]  # a region Dynamo inlined itself
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
            stack = node.meta.get("nn_module_stack")
            if stack:  # a block's lifted weights, or a region Dynamo inlined itself
                env[node].meta["nn_module_stack"] = _normalized(stack)
    _drop_unread(graph)
    graph.lint()
    flat = lazy_graph_module(gm, graph, type(gm).__name__)
    kept = {n.target.split(".")[0] for n in graph.nodes if n.op == "get_attr"}
    for name, child in list(flat.named_children()):
        if isinstance(child, fx.GraphModule) and name not in kept:
            delattr(flat, name)
    return flat


def _inline_call(graph: fx.Graph, gm: fx.GraphModule, call: fx.Node, env: Dict[fx.Node, Any]) -> Tuple[Any, ...]:
    sub = getattr(gm, call.args[0].target)
    operands = [fx.node.map_arg(a, lambda n: env[n]) for a in call.args[2:]]
    site = _normalized(call.meta.get("nn_module_stack") or {})  # empty for a model's own top-level region
    block_path = _traced_block_path(sub, site)
    inner_env: Dict[fx.Node, Any] = {}
    placeholders = [n for n in sub.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(operands):
        raise ValueError(f"{call.name}: {len(operands)} operands for {len(placeholders)} subgraph inputs")
    inner_env.update(zip(placeholders, operands))
    outputs: Tuple[Any, ...] = ()
    for node in sub.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            outputs = tuple(fx.node.map_arg(node.args[0], lambda n: inner_env[n]))
            break
        if node.target is _REGION_OUTPUT:
            inner_env[node] = inner_env[node.args[0]]
            continue
        if node.op == "get_attr":
            # An attribute of the region (a higher-order op's own subgraph: flex attention's
            # score_mod): reached through the region module, which the flat graph keeps.
            new = graph.get_attr(f"{call.args[0].target}.{node.target}")
            new.meta = dict(node.meta)
            inner_env[node] = new
            continue
        new = graph.node_copy(node, lambda n: inner_env[n])
        new.meta = dict(node.meta)
        new.meta["nn_module_stack"] = _moved_stack(node.meta.get("nn_module_stack") or {}, block_path, site, call.name)
        inner_env[node] = new
    return outputs


def _normalized(stack: Dict[str, Any]) -> Dict[str, Any]:
    """Module paths as a flat trace names them (Dynamo reaches a block through our runner's
    argument, ``blocks.0.forward.args[0]``, where a flat trace has ``blocks.0``)."""
    return {key: (_FORWARD_ARG.sub("", path), cls) for key, (path, cls) in stack.items()}


def _traced_block_path(sub: fx.GraphModule, site: Dict[str, Any]) -> Optional[str]:
    """The path of the block one of our regions was traced from (its class is the calling
    block's). None for a model's own region (no ``region_output`` copies) or no call site."""
    if not site or not any(n.target is _REGION_OUTPUT for n in sub.graph.nodes):
        return None
    block_cls = list(site.values())[-1][1]
    for node in sub.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            if cls is block_cls:
                return _FORWARD_ARG.sub("", path)
    return None


def _moved_stack(stack: Dict[str, Any], block_path: Optional[str], site: Dict[str, Any], tag: str) -> Dict[str, Any]:
    """The call site's module stack followed by the region's own entries: those inside the traced
    block moved to the calling block; the traced block and its parents dropped (the call site
    has its own); anything else (a module passed in as an argument) kept as it is."""
    if block_path is None:
        # A model's own region: its paths are those of its first call, so the call site's stack
        # is the truth; at top level (no site) the region's own is all there is.
        return site or _normalized(stack)
    site_path = list(site.values())[-1][0]
    block = parse_module_path(block_path)
    moved = dict(site)
    for key, (path, cls) in stack.items():
        path = _FORWARD_ARG.sub("", path)
        tokens = parse_module_path(path)
        if tokens[: len(block)] == block and len(tokens) > len(block):
            moved[f"{key}@{tag}"] = (site_path + "".join(f".{t}" for t in tokens[len(block) :]), cls)
        elif block[: len(tokens)] != tokens:  # not the traced block or a parent (the site has those)
            moved[f"{key}@{tag}"] = (path, cls)
    return moved


def _drop_unread(graph: fx.Graph) -> None:
    """Remove unread item accesses (``operator.getitem``: a region output its call site ignores,
    FLUX's last single block's text stream), then the item accesses that fed only them: what
    Dynamo's own clean-up drops from a flat trace. Nothing else goes (in-place ops, ``out=``)."""
    work, erased = [n for n in graph.nodes if n.target is operator.getitem], set()
    while work:
        node = work.pop()
        if node in erased or node.users or node.op != "call_function" or node.target is not operator.getitem:
            continue
        inputs = node.all_input_nodes
        graph.erase_node(node)
        erased.add(node)
        work.extend(inputs)
