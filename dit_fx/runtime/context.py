"""Per-transformer cache state that the rewritten graph calls into on every step.

Nothing here knows about graphs: the glue graph hands in tensors and a callable body, so the
decision logic can be tested with plain tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..config import DBCacheConfig


@dataclass
class CacheStats:
    """Statistics of the current generation (cleared when a new one starts).

    cached_steps: sorted 0-based step indices whose middle blocks were skipped.
    residual_diffs: {step: relative L1 diff of the Fn residual}, for steps that reached the
        threshold test.
    executed_steps: number of steps (transformer calls) seen in this generation.
    generation: how many generations this context has started (1 for the first).
    """

    cached_steps: List[int] = field(default_factory=list)
    residual_diffs: Dict[int, float] = field(default_factory=dict)
    executed_steps: int = 0
    generation: int = 0

    @property
    def computed_steps(self) -> List[int]:
        cached = set(self.cached_steps)
        return [s for s in range(self.executed_steps) if s not in cached]


def relative_l1(reference: torch.Tensor, current: torch.Tensor) -> float:
    """mean|ref - cur| / mean|ref|, accumulated in fp32; inf when the reference is all zeros.

    The difference is taken in the tensors' dtype and the sums are accumulated in fp32 without
    materialising fp32 copies (fp32 models: exact fp32). One host sync for both sums.
    """
    num = torch.linalg.vector_norm(reference - current, 1, dtype=torch.float32)
    den = torch.linalg.vector_norm(reference, 1, dtype=torch.float32)
    num_v, den_v = torch.stack([num, den]).tolist()
    if den_v == 0.0:
        return 0.0 if num_v == 0.0 else float("inf")
    return num_v / den_v


class CacheContext(torch.nn.Module):
    """Step counter, reference Fn residual, middle residuals and stats of one optimized transformer.

    One transformer call is one denoising step. ``begin_step`` is called first on every call;
    ``should_reuse`` decides; ``run_middle`` runs or replaces the middle blocks. It is an
    ``nn.Module`` (without parameters) only so the glue graph can reference it with ``get_attr``.
    """

    def __init__(self, config: DBCacheConfig):
        super().__init__()
        self.config = config
        self.stats = CacheStats()
        self._new_generation_pending = True
        self._graph_id = None
        self._clear_buffers()

    # -- generations -------------------------------------------------------------------------
    def _clear_buffers(self) -> None:
        self.step = -1
        self.reference_residual: Optional[torch.Tensor] = None
        self.middle_residuals: Optional[Tuple[torch.Tensor, ...]] = None
        self.continuous_cached = 0
        self.accumulated_diff = 0.0

    def reset(self) -> None:
        """Start a new generation at the next call: buffers and stats are cleared then."""
        self._new_generation_pending = True

    def begin_step(self, graph_id: int = 0) -> int:
        """Advance the step counter; start a new generation first when one is due.

        ``graph_id`` names the rewritten graph making the call: each input shape gets its own
        graph, so a change of resolution, batch size or dtype starts a new generation.
        """
        n = self.config.num_inference_steps
        switched = graph_id != self._graph_id
        self._graph_id = graph_id
        if self._new_generation_pending or switched or (n is not None and self.step + 1 >= n):
            self._clear_buffers()
            self.stats = CacheStats(generation=self.stats.generation + 1)
            self._new_generation_pending = False
        self.step += 1
        self.stats.executed_steps = self.step + 1
        return self.step

    # -- decision ------------------------------------------------------------------------------
    def should_reuse(self, fn_residual: torch.Tensor) -> bool:
        """True iff this step may reuse the stored middle residuals (gates in documented order)."""
        cfg, step = self.config, self.step
        if step in range(0, cfg.max_warmup_steps, cfg.warmup_interval):
            return False
        if cfg.max_cached_steps >= 0 and len(self.stats.cached_steps) >= cfg.max_cached_steps:
            return False
        if cfg.max_continuous_cached_steps >= 0 and self.continuous_cached >= cfg.max_continuous_cached_steps:
            return False
        limit = cfg.max_accumulated_residual_diff_threshold
        if limit is not None and self.accumulated_diff >= limit:
            return False
        ref = self.reference_residual
        if cfg.residual_diff_threshold <= 0 or ref is None or self.middle_residuals is None:
            return False
        if ref.shape != fn_residual.shape:
            return False
        diff = relative_l1(ref, fn_residual)
        self.stats.residual_diffs[step] = diff
        self.accumulated_diff += diff
        return diff < cfg.residual_diff_threshold

    # -- middle --------------------------------------------------------------------------------
    def run_middle(
        self,
        reuse: bool,
        fn_residual: torch.Tensor,
        body: Callable[..., object],
        body_args: Sequence[torch.Tensor],
        stream_bases: Sequence[torch.Tensor],
    ) -> Tuple[torch.Tensor, ...]:
        """Run the middle blocks, or rebuild their outputs as ``base + stored residual``.

        ``stream_bases[k]`` is the stream entering the middle that output ``k`` continues
        (hidden after Fn, encoder after Fn, ...).
        """
        if reuse:
            self.stats.cached_steps.append(self.step)
            self.continuous_cached += 1
            return tuple(base + res for base, res in zip(stream_bases, self.middle_residuals))
        self.continuous_cached = 0
        self.reference_residual = fn_residual
        out = body(*body_args)
        outs = out if isinstance(out, tuple) else (out,)
        self.middle_residuals = tuple(o - base for o, base in zip(outs, stream_bases))
        return outs
