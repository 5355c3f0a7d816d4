"""TorchDynamo capture helpers: bind lifted parameters back onto the graph, detect graph breaks.

Dynamo lifts every parameter and buffer to a graph input. ``bind_placeholders`` turns those
placeholders into ``get_attr`` nodes that reference the very same tensors (no copies), so the
rewritten partitions take only activations and print with readable names.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx

from .patterns.regions import module_stack, parse_module_path

_ATTR = re.compile(r"_(parameters|buffers)_(\w+?)_?$")
# L['self'].__dict__['_modules']['blocks']._modules['0']._parameters['weight']: a plain attribute
# path (not a hook's tensor or anything reached through calls)
_MODULE_ATTR_SOURCE = re.compile(r"^[A-Za-z_]\w*\['\w+'\]((\.__dict__)?(\['_(modules|parameters|buffers)'\]|\._(modules|parameters|buffers))\['\w+'\])+$")


@dataclass(frozen=True)
class StaticInputs:
    """Dynamo inputs that are parameters/buffers: placeholder name -> (readable name, tensor)."""

    by_placeholder: Dict[str, Tuple[str, torch.Tensor]]
    activation_indices: Tuple[int, ...]


def _is_static_input(node: fx.Node, example: object) -> bool:
    if isinstance(example, torch.nn.Parameter):
        return True
    tensor_dict = node.meta.get("tensor_dict") or {}
    return isinstance(example, torch.Tensor) and "_dynamo_static_input_type" in tensor_dict


def _attr_name(node: fx.Node, taken: set) -> str:
    """``transformer_blocks.0.attn.to_q.weight``: from Dynamo's source of the input, else from
    the owner module path and Dynamo's name."""
    match = _ATTR.search(node.name)
    stack = module_stack(node)
    source = getattr(getattr(node.meta.get("grapharg"), "source", None), "name", None)
    if isinstance(source, str) and _MODULE_ATTR_SOURCE.match(source):
        name = ".".join(parse_module_path(source))
    elif match and stack and stack[-1][0]:
        name = ".".join(stack[-1][0] + (match.group(2),))
    else:
        name = re.sub(r"\W", "_", node.name).strip("_")
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    taken.add(candidate)
    return candidate


def find_static_inputs(gm: fx.GraphModule, example_inputs: Sequence[object]) -> StaticInputs:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise ValueError(f"graph has {len(placeholders)} inputs but {len(example_inputs)} examples")
    taken: set = set()
    static: Dict[str, Tuple[str, torch.Tensor]] = {}
    activations: List[int] = []
    for i, (node, example) in enumerate(zip(placeholders, example_inputs)):
        if _is_static_input(node, example):
            static[node.name] = (_attr_name(node, taken), example)
        else:
            activations.append(i)
    return StaticInputs(static, tuple(activations))


def bind_placeholders(gm: fx.GraphModule, binding: Dict[str, Tuple[str, torch.Tensor]], recompile: bool = True) -> fx.GraphModule:
    """In place: each placeholder named in ``binding`` becomes a ``get_attr`` of that tensor (no copy).

    ``recompile=False`` leaves ``gm``'s Python code stale: for graphs only analysed, never called
    (generating code for a whole DiT's graph takes a noticeable part of the capture)."""
    graph = gm.graph
    first_op = next((n for n in graph.nodes if n.op != "placeholder"), None)
    for node in [n for n in graph.nodes if n.op == "placeholder" and n.name in binding]:
        name, tensor = binding[node.name]
        _set_nested(gm, name, tensor)
        with graph.inserting_before(first_op):
            attr = graph.get_attr(name)
        attr.meta = dict(node.meta)
        node.replace_all_uses_with(attr)
        graph.erase_node(node)
    graph.lint()
    if recompile:
        recompile_shallow(gm)
    return gm


def recompile_shallow(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm.recompile()`` without regenerating the code of its GraphModule children.

    ``GraphModule.recompile`` recompiles every child GraphModule too; a rewritten DiT has hundreds
    (partitions, block regions), and regenerating them after each pass took seconds of a FLUX
    capture. Use only where the children are already up to date (each edit recompiles its own).
    Generates the code now even for a lazy graph module (see ``lazy_graph_module``)."""
    gm._recompile_submodules = list  # shadows the method for this one call: returns []
    try:
        fx.GraphModule.recompile(gm)
    finally:
        del gm._recompile_submodules
    return gm


def lazy_graph_module(root: torch.nn.Module, graph: fx.Graph, class_name: str) -> fx.GraphModule:
    """A GraphModule whose Python code is generated on first use, not at construction: the whole
    captured DiT is copied twice per capture (analysis copy, working copy) and generating code
    for a FLUX-sized graph costs about half a second each time, for code nobody runs."""
    try:
        from torch.fx._lazy_graph_module import _LazyGraphModule
    except ImportError:  # pragma: no cover - older torch
        return fx.GraphModule(root, graph, class_name=class_name)
    return _LazyGraphModule(root, graph, class_name=class_name)


def bound_copy(gm: fx.GraphModule, static: StaticInputs) -> fx.GraphModule:
    """A copy of the captured graph with parameters bound, for analysis and dumps: never called,
    so its code is not regenerated (``print_readable`` reads the graph)."""
    copy_gm = lazy_graph_module(gm, copy.deepcopy(gm.graph), "CapturedTransformer")
    return bind_placeholders(copy_gm, static.by_placeholder, recompile=False)


def get_nested(root: torch.nn.Module, dotted: str):
    obj = root
    for atom in dotted.split("."):
        obj = getattr(obj, atom)
    return obj


def tensor_attributes(gm: fx.GraphModule) -> Dict[str, Tuple[str, torch.Tensor]]:
    """``{target: (target, tensor)}`` for the tensors ``gm`` reads with ``get_attr`` (what a split
    of ``gm`` hands to its partitions as inputs, to be bound back inside them)."""
    out = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = get_nested(gm, node.target)
            if isinstance(value, torch.Tensor):
                out[node.target] = (node.target, value)
    return out


def _set_nested(root: torch.nn.Module, dotted: str, tensor: torch.Tensor) -> None:
    *path, leaf = dotted.split(".")
    mod = root
    for part in path:
        if not hasattr(mod, part):
            mod.add_module(part, torch.nn.Module())
        mod = getattr(mod, part)
    if isinstance(tensor, torch.nn.Parameter):
        mod.register_parameter(leaf, tensor)
    else:
        mod.register_buffer(leaf, tensor)


def graph_input_sources(num_inputs: int) -> Optional[List[str]]:
    """Inside a Dynamo backend call: where each graph input came from (``L['kwargs']['x']``)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        names = [arg.source.name for arg in InstructionTranslator.current_tx().output.graphargs]
    except Exception:
        return None
    return names if len(names) == num_inputs else None


def has_python_side_effects() -> bool:
    """Inside a Dynamo backend call: does the frame mutate Python state (lists, attributes)?

    Dynamo replays such side effects after the graph; a direct call of the graph would skip them.
    Only mutations of objects that existed before the call count (building the output object does
    not). Unknown -> True (be safe).
    """
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        effects = InstructionTranslator.current_tx().output.side_effects
        touched = [v for v in effects.id_to_variable.values() if effects.is_modified(v)]
        touched += list(effects.store_attr_mutations)
        return any("Existing" in type(getattr(v, "mutation_type", None)).__name__ for v in touched)
    except Exception:
        return True


def graph_break_reason() -> Optional[str]:
    """Inside a Dynamo backend call: why the graph is partial (a graph break), or None."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
    except Exception:  # no translator: not called from Dynamo (e.g. a test passing a graph directly)
        return None
    if tx is None:
        return None
    if tx.f_code.co_name.startswith("torch_dynamo_resume_in"):
        return "graph break: this graph resumes after an earlier break, so it misses the model's start"
    reason = getattr(tx.output, "compile_subgraph_reason", None)
    if reason is not None and getattr(reason, "graph_break", False):
        first = str(getattr(reason, "reason", "")).strip().splitlines()[:1]
        return "graph break: " + (first[0] if first else "the forward could not be captured whole")
    return None
