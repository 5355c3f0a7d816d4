"""The functions the glue graph calls. Free functions so the printed glue code reads plainly:
``reuse = dbcache_decide(self.cache, hidden_after_fn, hidden_before_blocks, timestep)``.
"""

from __future__ import annotations

import contextvars
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch.fx.node import has_side_effect

from .context import CacheContext

# The timestep tensor of the transformer call in progress, for a glue whose graph does not take it
# as an input: with graph breaks allowed (``frontend/pieces.py``) the graph holding the blocks
# resumes after the break and Dynamo passes it only the values it still reads, often not the
# timestep. Set by the capture wrapper around each call (``frontend/captures.py``).
CALL_TIMESTEP: contextvars.ContextVar = contextvars.ContextVar("dit_fx_call_timestep", default=None)


@has_side_effect
def dbcache_read_timestep(cache: CacheContext, timestep: Optional[torch.Tensor]) -> None:
    """Start reading the timestep (asynchronously on CUDA) before the head runs."""
    cache.prefetch_timestep(timestep)


@has_side_effect  # read once per call, where the glue starts: never moved or removed
def call_timestep() -> Optional[torch.Tensor]:
    """The timestep the current transformer call received (None: none, or not known)."""
    return CALL_TIMESTEP.get()


@has_side_effect  # advances the step counter: never dead-code eliminated
def dbcache_decide(
    cache: CacheContext, hidden_fn: torch.Tensor, hidden_in: torch.Tensor, timestep: Optional[torch.Tensor] = None
) -> bool:
    """Place this call (step, CFG branch, generation) and decide whether to skip the middle blocks
    from the Fn residual ``hidden_fn - hidden_in`` (formed only when read)."""
    return cache.decide(hidden_fn, hidden_in, timestep)


@has_side_effect
def dbcache_middle(
    cache: CacheContext,
    reuse: bool,
    body: Callable[..., object],
    body_args: Sequence[torch.Tensor],
    stream_bases: Sequence[torch.Tensor],
) -> Tuple[torch.Tensor, ...]:
    """Run the middle (storing residuals) or rebuild its outputs from the stored residuals."""
    return cache.run_middle(reuse, body, body_args, stream_bases)


@has_side_effect
def dbcache_outputs(cache: CacheContext, outputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """``cache_type="output"``: the forecast outputs on a cached step, else the outputs (recorded)."""
    return cache.finish_outputs(outputs)


@has_side_effect
def dbprune_begin(cache, hidden: torch.Tensor, timestep: Optional[torch.Tensor] = None) -> None:
    """Place this call (step, CFG branch, generation) before the guarded middle blocks run."""
    cache.begin(hidden, timestep)


@has_side_effect
def dbprune_block(cache, block_id: int, block, args: Sequence[torch.Tensor], bases: Sequence[torch.Tensor], hidden_index: int):
    """Prune block ``block_id`` (input + its stored residual) or run it and store its residual."""
    return cache.run_block(block_id, block, args, bases, hidden_index)
