"""Run the rewritten partitions eagerly (as Python) or compiled with Inductor.

The glue graph itself always stays Python: its one data-dependent decision per step must not be
traced. Each partition is compiled once, lazily, with the first real inputs it sees (shapes are
static per rewritten graph: a new resolution gets a new capture and a new rewrite).
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.fx as fx

LOWERINGS = ("eager", "inductor")
PARTITION_NAMES = ("head", "body", "tail")


class InductorPartition(torch.nn.Module):
    """A partition compiled by Inductor on its first call; keeps the FX module for printing/dumps."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__()
        self.gm = gm
        self._compiled: Optional[Callable] = None

    def forward(self, *args):
        if self._compiled is None:
            self._compiled = torch._inductor.compile(self.gm, list(args))
        out = self._compiled(*args)
        return tuple(out) if isinstance(out, list) else out  # Inductor returns lists


def lower(glue: fx.GraphModule, mode: str) -> fx.GraphModule:
    if mode not in LOWERINGS:
        raise ValueError(f"lowering must be one of {LOWERINGS}, got {mode!r}")
    if mode == "inductor":
        for name, sub in list(glue.named_children()):
            if is_glue(sub):
                lower(sub, mode)  # nested glue (a block list's own context, DBPrune's body)
            elif isinstance(sub, fx.GraphModule):
                setattr(glue, name, InductorPartition(sub))
    return glue


def is_glue(module: object) -> bool:
    """A glue graph (has a cache context), as opposed to a leaf partition."""
    return isinstance(module, fx.GraphModule) and hasattr(module, "cache")


def partition_module(glue: fx.GraphModule, name: str) -> Optional[fx.GraphModule]:
    """The FX module of a partition, whether lowered or not."""
    mod = getattr(glue, name, None)
    return mod.gm if isinstance(mod, InductorPartition) else mod


def iter_glues(glue: fx.GraphModule, prefix: str = "") -> Iterator[Tuple[str, fx.GraphModule]]:
    """``("", glue)``, then nested glue graphs by dotted path (``"tail"``, ``"tail.tail"``)."""
    yield prefix, glue
    for name, sub in glue.named_children():
        if is_glue(sub):
            yield from iter_glues(sub, f"{prefix}{name}.")
