"""Graph breaks outside the block stack: a forward Dynamo cannot capture as one graph.

``optimize`` captures with ``fullgraph=True``. When that fails (data-dependent branching, sizes
read from tensors, ``.tolist()``: Lumina2, OmniGen, HunyuanVideo 1.5), it captures again with
graph breaks allowed and ``capture_scalar_outputs`` / ``capture_dynamic_output_shape_ops`` on
(sizes read from tensors stay symbolic instead of breaking the graph; the ops are the same, so
outputs are too). Dynamo then hands the backend several graphs per call, in pieces, with Python
(and the breaking code) between them. ``Pieces`` sorts each piece:

- no block of the cached lists in it: it runs as Dynamo captured it (``passthrough``);
- every block of the cached lists in it (each list whole, in one graph): it is planned and
  rewritten as a whole-graph capture is. The glue still decides once per call; when the piece
  resumes after a break and Dynamo passes it no ``timestep`` (it passes only the values the rest
  of the forward reads), the glue reads the timestep of the call (``runtime.CALL_TIMESTEP``, set
  by ``frontend/captures.py`` around each call). Such a capture is never called directly
  (``runtime/direct_calls.py``): the other pieces and the Python between them must run;
- some blocks of a cached list in it but not all (a break inside the stack: HiDream's MoE
  routing breaks inside every block): refused, recorded once, and the piece runs as captured.

If no piece of a call held the whole stack, ``optimize`` runs the model unmodified from then on,
with one warning naming the first break inside the stack (``api.py``). Sizes read from tensors
are symbolic first; if that capture fails, or the planner refuses its stack (each block splits a
joined stream into lengths of new symbols: HunyuanVideo FramePack), the call is captured again
with them specialized (a recompile per distinct value, as Dynamo does for Python ints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx

from ..patterns.regions import module_stack

# What the capture with graph breaks allowed turns on: sizes read from tensors stay symbolic
# (unbacked) inside a graph instead of breaking it.
DYNAMO_CONFIG = {"capture_scalar_outputs": True, "capture_dynamic_output_shape_ops": True}

PASSTHROUGH, STACK = "passthrough", "stack"


class RetrySpecialized(RuntimeError):
    """Raised from the backend when the piece holding the stack, captured with symbolic sizes, is
    refused by the planner (a stream's length is a new symbol after every block): the call is
    captured again with sizes specialized (``api.py``)."""


@dataclass
class Pieces:
    """What a session captured with graph breaks allowed knows: why the whole-graph capture
    failed, the model's block lists and the lists its cache contexts cache."""

    whole_graph_reason: str
    block_lists: Dict[str, int]
    scopes: Tuple[Optional[str], ...]
    dynamic: bool = True  # sizes read from tensors symbolic (``DYNAMO_CONFIG``); False: specialized
    # The whole forward was captured, but with sizes read from tensors symbolic the planner refused
    # its stack (``whole_graph_reason`` is the planner's reason then).
    refused_symbolic: bool = False
    refusal: Optional[str] = None  # the first piece holding part of the stack: why it was refused
    passthrough: int = 0  # pieces run as Dynamo captured them
    breaks: List[str] = field(default_factory=list)  # break reasons of the pieces seen, first few

    def cached_lists(self) -> Dict[str, int]:
        if None in self.scopes:
            return dict(self.block_lists)
        return {name: n for name, n in self.block_lists.items() if name in self.scopes}

    def classify(self, graph: fx.Graph, break_reason: Optional[str]) -> str:
        """``STACK`` (plan and rewrite it) or ``PASSTHROUGH`` (run it as captured)."""
        if break_reason and len(self.breaks) < 8 and break_reason not in self.breaks:
            self.breaks.append(break_reason)
        wanted = self.cached_lists()
        found = blocks_in(graph, wanted)
        if not found:
            self.passthrough += 1
            return PASSTHROUGH
        split = [(name, sorted(found.get(name, ())), n) for name, n in wanted.items() if found.get(name) != set(range(n))]
        if not split:
            return STACK
        if self.refusal is None:
            held = ", ".join(f"{name} {_ranges(idx)} of {n}" if idx else f"none of {name}" for name, idx, n in split)
            why = break_reason or (self.breaks[0] if self.breaks else "graph break")
            self.refusal = f"graph break inside the block stack: one graph holds {held} ({why})"
        self.passthrough += 1
        return PASSTHROUGH

    def reason(self) -> str:
        """Why no piece could be cached (for the one warning)."""
        inner = self.refusal or (
            "no graph holds the block stack (" + (self.breaks[0] if self.breaks else "graph break") + ")"
        )
        if self.refused_symbolic:
            first = f"with the sizes it reads from tensors kept symbolic, {self.whole_graph_reason}"
        else:
            first = f"could not capture the forward as one graph: {self.whole_graph_reason}"
        return f"{first}; with graph breaks allowed, {inner}"


def has_symbolic_sizes(graph: fx.Graph) -> bool:
    """Whether a value of ``graph`` has a size read from a tensor (an unbacked symbol)."""
    for node in graph.nodes:
        value = node.meta.get("example_value", node.meta.get("val"))
        if isinstance(value, torch.Tensor) and any(isinstance(s, torch.SymInt) and s.node.maybe_as_int() is None
                                                   for s in value.shape):
            return True
    return False


def blocks_in(graph: fx.Graph, lists: Dict[str, int]) -> Dict[str, Set[int]]:
    """The blocks of ``lists`` (dotted names) that have ops in ``graph``: list name -> indices."""
    paths = {name: tuple(name.split(".")) for name in lists}
    found: Dict[str, Set[int]] = {}
    for node in graph.nodes:
        for tokens, _ in module_stack(node):
            hit = _block_of(tokens, paths)
            if hit is not None:
                found.setdefault(hit[0], set()).add(hit[1])
                break
    return found


def _block_of(tokens: Sequence[str], paths: Dict[str, Tuple[str, ...]]) -> Optional[Tuple[str, int]]:
    for name, path in paths.items():
        k = len(path)
        if len(tokens) > k and tuple(tokens[:k]) == path and tokens[k].isdigit():
            return name, int(tokens[k])
    return None


def _ranges(indices: Sequence[int]) -> str:
    if not indices:
        return "no block"
    if list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f"block {indices[0]}" if len(indices) == 1 else f"blocks {indices[0]}-{indices[-1]}"
    return "blocks " + ",".join(str(i) for i in indices)
