"""``dit_fx.calibrate``: a fixed steps mask chosen from a few uncached generations.

A fixed schedule needs no runtime diff, no host sync and no collective, so it suits CUDA graphs
and context parallelism; the question is which steps to compute. ``calibrate`` answers it from
measurements on the user's own model and sampler:

1. **Record.** It runs ``run()`` (one uncached generation: the user's loop or pipeline call)
   ``generations`` times with a temporary forward hook on the transformer (removed after) that
   keeps each call's timestep and first output. Calls with one timestep form one step (CFG
   branches called separately are joined).
2. **Error model.** Caching step ``k`` after the last computed step ``i`` reuses what step ``i``
   computed; its cost is the change of the model output since then, relative to the output,
   weighted by the step's share of the trajectory: ``e(i, k) = w_k * |v_k - v_i|_1 / |v_k|_1``
   with ``w_k = |t_k - t_(k+1)|`` (the Euler step length; uniform when timesteps are missing),
   averaged over the generations. A run of cached steps after ``i`` costs the sum of its ``e``.
   (The cache reuses the middle blocks' residual while the first blocks are recomputed, so the
   real error is smaller than the output change; the model only has to rank the choices.)
3. **Search.** Dynamic programming over (computed steps so far, last computed step) gives the
   mask with exactly ``computed_steps`` computed steps (the first ``warmup`` forced) whose total
   cost is least: the shortest path through the step graph with that many nodes, optionally
   with no more than ``max_cached_run`` cached steps in a row.

Use the result as ``cal.config(fn_blocks=..)`` (a ``DBCacheConfig`` with the mask and the static
policy) or pass ``cal.mask`` as ``steps_computation_mask``. Decision recorded in the module
docstring: calibrate the model before ``dit_fx.optimize`` (it must run uncached); a model already
optimized raises ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch


@dataclass(frozen=True)
class Calibration:
    """mask: 1 = compute, 0 = cache, one entry per step. cost: the error model's total for it.
    uniform_cost: the same model's total for evenly spaced computed steps (for comparison).
    step_weights / timesteps: what the model used."""

    mask: Tuple[int, ...]
    cost: float
    uniform_cost: float
    timesteps: Tuple[float, ...]
    step_weights: Tuple[float, ...]

    @property
    def computed_steps(self) -> int:
        return sum(self.mask)

    def config(self, **fields: Any):
        """A ``DBCacheConfig`` that runs this schedule (static policy: no runtime diff)."""
        from .config import DBCacheConfig

        fields.setdefault("max_warmup_steps", _leading_ones(self.mask))
        return DBCacheConfig(steps_computation_mask=list(self.mask), steps_computation_policy="static", **fields)


def _leading_ones(mask: Sequence[int]) -> int:
    n = 0
    while n < len(mask) and mask[n]:
        n += 1
    return max(n, 1)


def _first_tensor(out: Any) -> Optional[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    sample = getattr(out, "sample", None)
    return sample if isinstance(sample, torch.Tensor) else None


def _timestep(args: tuple, kwargs: dict) -> Optional[float]:
    t = kwargs.get("timestep")
    if t is None:
        t = next((a for a in args[1:] if isinstance(a, torch.Tensor) and a.numel() >= 1 and a.dim() <= 1), None)
    return float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else None


def record(model: torch.nn.Module, run: Callable[[], Any]) -> List[Tuple[Optional[float], torch.Tensor]]:
    """One generation's calls: (timestep, output as fp32), joined per step (same timestep)."""
    calls: List[Tuple[Optional[float], torch.Tensor]] = []

    def hook(module, args, kwargs, out):
        v = _first_tensor(out)
        if v is not None:
            calls.append((_timestep(args, kwargs), v.detach().float().clone()))

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    steps: List[Tuple[Optional[float], torch.Tensor]] = []
    for t, v in calls:
        if steps and t is not None and steps[-1][0] == t:
            steps[-1] = (t, torch.cat([steps[-1][1].reshape(-1), v.reshape(-1)]))
        else:
            steps.append((t, v.reshape(-1)))
    return steps


def _weights(timesteps: Sequence[Optional[float]]) -> List[float]:
    n = len(timesteps)
    if n < 2 or any(t is None for t in timesteps):
        return [1.0 / n] * n
    gaps = [abs(timesteps[k] - timesteps[k + 1]) for k in range(n - 1)]
    gaps.append(gaps[-1])
    total = sum(gaps) or 1.0
    return [g / total for g in gaps]


def error_matrix(generations: Sequence[Sequence[Tuple[Optional[float], torch.Tensor]]]) -> Tuple[List[List[float]], List[float]]:
    """``e[i][k]`` (k > i): the cost of step k reusing step i, averaged over the generations."""
    n = len(generations[0])
    if any(len(g) != n for g in generations):
        raise ValueError(f"calibrate: every generation must run the same steps, got {[len(g) for g in generations]}")
    weights = _weights([t for t, _ in generations[0]])
    e = [[0.0] * n for _ in range(n)]
    for gen in generations:
        outs = [v for _, v in gen]
        for i in range(n):
            for k in range(i + 1, n):
                den = float(outs[k].abs().sum()) or 1.0
                e[i][k] += weights[k] * float((outs[k] - outs[i]).abs().sum()) / den / len(generations)
    return e, weights


def _run_cost(e: List[List[float]], i: int, j: int) -> float:
    """Steps i+1 .. j-1 cached after computing i."""
    return sum(e[i][k] for k in range(i + 1, j))


def best_mask(e: List[List[float]], computed: int, warmup: int = 1, max_cached_run: Optional[int] = None) -> Tuple[List[int], float]:
    """The least-cost mask with exactly ``computed`` computed steps, the first ``warmup`` forced."""
    n = len(e)
    warmup = max(1, warmup)
    if not warmup <= computed <= n:
        raise ValueError(f"calibrate: computed_steps must be between warmup ({warmup}) and the step count ({n}), got {computed}")
    inf = math.inf
    # cost[c][j]: best cost with c computed steps, the last at j (steps after j not yet counted)
    cost = [[inf] * n for _ in range(computed + 1)]
    back = [[-1] * n for _ in range(computed + 1)]
    cost[warmup][warmup - 1] = 0.0
    for c in range(warmup + 1, computed + 1):
        for j in range(warmup, n):
            for i in range(warmup - 1, j):
                if cost[c - 1][i] == inf or (max_cached_run is not None and j - i - 1 > max_cached_run):
                    continue
                total = cost[c - 1][i] + _run_cost(e, i, j)
                if total < cost[c][j]:
                    cost[c][j], back[c][j] = total, i
    best, last = inf, -1
    for j in range(n):
        if cost[computed][j] == inf or (max_cached_run is not None and n - j - 1 > max_cached_run):
            continue
        total = cost[computed][j] + _run_cost(e, j, n)
        if total < best:
            best, last = total, j
    if last < 0:
        raise ValueError("calibrate: no mask satisfies max_cached_run with that many computed steps")
    mask, c, j = [0] * n, computed, last
    while j >= 0 and c >= warmup:
        mask[j] = 1
        j, c = back[c][j], c - 1
    for k in range(warmup):
        mask[k] = 1
    return mask, best


def mask_cost(e: List[List[float]], mask: Sequence[int]) -> float:
    computed = [k for k, m in enumerate(mask) if m]
    ends = computed[1:] + [len(mask)]
    return sum(_run_cost(e, i, j) for i, j in zip(computed, ends))


def uniform_mask(steps: int, computed: int, warmup: int = 1) -> List[int]:
    """Evenly spaced computed steps after a computed warmup (the baseline a calibration must beat)."""
    warmup = max(1, min(warmup, computed))
    rest = computed - warmup
    mask = [1] * warmup + [0] * (steps - warmup)
    span = steps - warmup
    for r in range(rest):
        mask[warmup + int(round(r * span / rest))] = 1
    return mask


def calibrate(
    model: Any,
    run: Callable[[], Any],
    computed_steps: int,
    *,
    generations: int = 1,
    warmup: int = 1,
    max_cached_run: Optional[int] = None,
) -> Calibration:
    """Run ``run()`` ``generations`` times uncached on ``model`` (a transformer, or a pipeline:
    its transformer) and return the steps mask with ``computed_steps`` computed steps that the
    error model (module docstring) ranks best."""
    from .api import optimized_state  # calibration must run uncached
    from .integrations.diffusers import is_pipeline, transformer_components

    transformer = next(iter(transformer_components(model).values())) if is_pipeline(model) else model
    if not isinstance(transformer, torch.nn.Module):
        raise ValueError(f"calibrate: model must be a transformer or a diffusers pipeline, got {type(model).__name__}")
    if optimized_state(transformer) is not None:
        raise ValueError("calibrate: the model is optimized; calibrate before dit_fx.optimize (or dit_fx.disable first)")
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ValueError(f"calibrate: generations must be an int >= 1, got {generations!r}")
    recorded = [record(transformer, run) for _ in range(generations)]
    if not recorded[0]:
        raise ValueError("calibrate: run() made no transformer call")
    e, weights = error_matrix(recorded)
    mask, cost = best_mask(e, computed_steps, warmup, max_cached_run)
    uniform = uniform_mask(len(mask), computed_steps, warmup)
    return Calibration(tuple(mask), cost, mask_cost(e, uniform), tuple(t for t, _ in recorded[0]), tuple(weights))
