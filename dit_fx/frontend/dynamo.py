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

from ..fx_utils import bind_placeholders, lazy_graph_module
from ..patterns.regions import module_stack, parse_module_path

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


def bound_copy(gm: fx.GraphModule, static: StaticInputs) -> fx.GraphModule:
    """A copy of the captured graph with parameters bound, for analysis and dumps: never called,
    so its code is not regenerated (``print_readable`` reads the graph)."""
    copy_gm = lazy_graph_module(gm, copy.deepcopy(gm.graph), "CapturedTransformer")
    return bind_placeholders(copy_gm, static.by_placeholder, recompile=False)


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
