"""``dit_fx.calibrate``: a fixed steps mask chosen from a few uncached generations.

A fixed schedule needs no runtime diff, no host sync and no collective, so it suits CUDA graphs
and context parallelism; the question is which steps to compute. ``calibrate`` answers it from
measurements on the user's own model and sampler:

1. **Record.** It runs ``run()`` (one uncached generation: the user's loop or pipeline call)
   ``generations`` times with a temporary forward hook on the transformer (removed after) that
   keeps each call's timestep and first output. Calls with one timestep form one step (CFG
   branches called separately are joined).
2. **Error model.** Caching step ``k`` after the last computed step ``i`` makes the sampler use
   (about) ``v_i`` for ``v_k``, so the sample moves by ``h_k (v_i - v_k)`` more, where
   ``h_k = sigma_k - sigma_(k+1)`` is the step's length (``sigma`` = timestep / first timestep,
   0 after the last step; ``1 - k/n`` when timesteps are missing), and that error grows by the end
   of the trajectory: its square by ``G(sigma_(k+1))`` (errors made early propagate further). The
   errors of all cached steps add as vectors (a cache lags the output's drift, so they point the
   same way). Predicted error of a mask: ``|sum over cached k of w_k (v_last(k) - v_k)|^2 / numel``
   with ``w_k = h_k sqrt(G)``, averaged over the generations, from the Gram matrix of the recorded
   outputs (``O(steps^2)`` per mask, whatever their size).
3. **Search.** From the uniform mask (``uniform_mask``; the most even mask within
   ``max_cached_run`` when uniform breaks that cap), move one computed step by one position at a
   time while that lowers the predicted error *under both growth curves* (the larger of the two
   ratios to the start), the first ``warmup`` steps forced. Unless the result is predicted at least
   ``MIN_GAIN_DB`` better under both, the uniform mask is returned: never worse than uniform by
   the model's own prediction.

Decisions, from measurements on the shipped Fashion-MNIST FLUX model (CPU, F1B0 static masks, PSNR
of 10 images against the uncached ones; ``benchmarks/quality.py``, ``docs/quality.md``):

- *Output change times step length, not relative change alone.* The old model,
  ``h_k |v_k - v_i|_1 / |v_k|_1`` summed per step with dynamic programming, computed the last
  steps (the output changes most there) and lost to uniform: 8/28 computed 29.57 vs 30.40 dB,
  15/28 35.37 vs 38.32 dB. The real DBCache error of a cached step is 0.9-1.3x ``|v_i - v_k|``.
- *Growth.* Caching one step, the final deviation over ``h_k^2 |v_(k-1) - v_k|^2`` is 0.7-1.2 at
  the last five of 28 steps, about 10 in the middle and 38 at step 1. ``1 / (1 - sigma)`` (the
  Gaussian-data flow) fits steps 2-3 and the end but is up to 3.4x low in the middle;
  ``exp(3 sigma)`` (a constant rate; 2.96 fitted) fits the middle but is 1.5x high at step 3 and
  1.6-1.7x high at steps 24-26: neither alone, so a move must pay under both.
- *Errors add as vectors.* Summed as vectors (inverse growth) the model predicted the final error
  of 20 masks on the calibration samples within a log-spread of 0.17 (ratio 1.08); summed as
  squares per run of cached steps, 0.42 (ratio 0.45).
- *Local moves from uniform, and a floor on the gain.* Optimized globally (dynamic programming on
  per-run variants of the model, greedy), models found masks predicted 0.5-4 dB better than uniform
  that measured 0.5-5 dB worse; moves predicted < 0.2 dB better measured -0.05 to +0.34 dB. "Always compute the last step" did not pay:
  at 15/28 such masks measured 38.23-38.29 dB against uniform's 38.32 (which caches it).
- Result: at least as good as uniform at every budget tried (6, 8, 11, 15, 18 of 28 steps; 5-14
  of 20; five calibration sets), e.g. 8/28 30.62 vs 30.40 dB, 18/28 40.26 vs 39.74 dB,
  11/20 36.84 vs 35.61 dB; near half the steps uniform (alternating) is hard to beat
  (15/28: 38.38 vs 38.32 dB). Sample noise is of that order there: on 40 other samples
  (``benchmarks/results/quality_cpu_adaptive.json``) 15/28 measured 38.47 vs 38.92 dB, while the other
  budgets gained 0.14-0.96 dB (6/28 27.79 vs 27.30, 11/28 34.74 vs 33.78, 18/28 41.14 vs 40.20).
- *No adaptive variant by default.* The calibrated mask with a runtime check on top
  (``cal.config(steps_computation_policy="dynamic", residual_diff_threshold=t)``: a 0 step is
  computed when the F1B0 diff reaches ``t``) spends its extra steps where the diff is large, not
  where the error model puts them. Against the static calibrated masks at the same computed
  fraction it measured -3.28 to +0.05 dB over 9 rows (3 thresholds x the budgets in range); the
  three near 0 are those where the check added no step (15/28 and 18/28 at t=0.216) or made 15/28
  an 18-step schedule (+0.05 dB). Plain DBCache F1B0 measured -1.9 to -4.2 dB there (CPU, 40
  samples, ``quality_cpu_adaptive.json``) and -2.1 to -4.5 dB on the H200 run (200 samples,
  ``quality_h200_fashion.json``, ``docs/quality.md``). It also brings back the per-step diff and
  host sync a static schedule avoids. So ``config()`` keeps the static policy; the dynamic one is
  there to ask for.

Use the result as ``cal.config(fn_blocks=..)`` (a ``DBCacheConfig`` with the mask and the static
policy) or pass ``cal.mask`` as ``steps_computation_mask``. Calibrate the model before
``dit_fx.optimize`` (it must run uncached); a model already optimized raises ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch


@dataclass(frozen=True)
class Calibration:
    """mask: 1 = compute, 0 = cache, one entry per step. cost: the predicted error of the final sample
    (mean square) under ``growth``, the growth curve least favourable to the mask; uniform_cost: the
    same for ``uniform_mask`` of the same count (``gain_db`` compares them). timesteps /
    step_weights: what the model used (the weights of ``growth``)."""

    mask: Tuple[int, ...]
    cost: float
    uniform_cost: float
    timesteps: Tuple[float, ...]
    step_weights: Tuple[float, ...]
    growth: str = "inverse"

    @property
    def gain_db(self) -> float:
        """Predicted PSNR gain over the uniform mask (0 when it is the uniform mask)."""
        return 10.0 * math.log10(self.uniform_cost / self.cost) if self.cost > 0 and self.uniform_cost > 0 else 0.0

    @property
    def computed_steps(self) -> int:
        return sum(self.mask)

    def config(self, **fields: Any):
        """A ``DBCacheConfig`` that runs this schedule: the static policy (no runtime diff) unless
        ``steps_computation_policy="dynamic"`` is given, which also computes a 0 step whose diff
        reaches ``residual_diff_threshold`` (the adaptive variant; see the module docstring for
        why it is not the default). Other fields are ``DBCacheConfig``'s."""
        from .config import DBCacheConfig

        fields.setdefault("max_warmup_steps", _leading_ones(self.mask))
        fields.setdefault("steps_computation_policy", "static")
        return DBCacheConfig(steps_computation_mask=list(self.mask), **fields)


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


def noise_levels(timesteps: Sequence[Optional[float]]) -> List[float]:
    """``sigma_0 .. sigma_n``: each step's timestep over the first one, and 0 after the last step (the
    sampler ends at t = 0). Missing, non-positive or non-decreasing timesteps give ``1 - k / n``."""
    n = len(timesteps)
    ts = list(timesteps)
    if n >= 2 and all(t is not None for t in ts) and ts[0] > 0 and all(a > b for a, b in zip(ts, ts[1:])) and ts[-1] >= 0:
        return [t / ts[0] for t in ts] + [0.0]
    return [1.0 - k / n for k in range(n)] + [0.0]


GROWTH = {  # how much the squared error of a change made at noise level sigma has grown by the end (sigma = 0)
    "inverse": lambda sigma: 1.0 / (1.0 - sigma),  # Gaussian-data flow: fits the shipped model early and late
    "exponential": lambda sigma: math.exp(3.0 * sigma),  # a constant growth rate: fits its middle steps
}
MIN_GAIN_DB = 0.2  # a departure from the uniform mask must be predicted at least this much better (under both curves)


def step_weights(timesteps: Sequence[Optional[float]], growth: str = "inverse") -> List[float]:
    """``w_k = h_k * sqrt(G(sigma_(k+1)))``: how far a unit change of the model output at step k moves the
    final sample. ``h_k = sigma_k - sigma_(k+1)`` is the step's length (an Euler step adds ``h_k * v_k``)
    and ``G`` (``GROWTH[growth]``) how much an error entering the sample at ``sigma_(k+1)`` grows by the
    end of the trajectory (module docstring)."""
    n = len(timesteps)
    sig = noise_levels(timesteps)
    g = GROWTH[growth]
    return [(sig[k] - sig[k + 1]) * math.sqrt(g(min(sig[k + 1], 1.0 - 1.0 / n))) for k in range(n)]


def gram_matrix(generations: Sequence[Sequence[Tuple[Optional[float], torch.Tensor]]]) -> List[List[float]]:
    """``M[j][k] = <v_j, v_k> / numel``, averaged over the generations (float64): every inner product the
    error model needs, so a mask's predicted error costs O(steps^2) whatever the output's size."""
    n = len(generations[0])
    if any(len(g) != n for g in generations):
        raise ValueError(f"calibrate: every generation must run the same steps, got {[len(g) for g in generations]}")
    m = torch.zeros(n, n, dtype=torch.float64)
    for gen in generations:
        v = torch.stack([out.reshape(-1) for _, out in gen])
        acc = torch.zeros(n, n, dtype=torch.float64, device=v.device)  # on the outputs' device (CUDA)
        for chunk in v.split(1 << 20, dim=1):  # bounded float64 copies for large outputs
            c = chunk.double()
            acc += c @ c.T
        m += acc.cpu() / v.shape[1]
    return (m / len(generations)).tolist()


def predicted_error(mask: Sequence[int], weights: Sequence[float], gram: Sequence[Sequence[float]]) -> float:
    """The error model: mean squared deviation of the final sample from the uncached one when the
    zeros of ``mask`` are cached, ``|sum over cached k of w_k (v_last(k) - v_k)|^2 / numel``."""
    n = len(mask)
    if not mask or not mask[0]:
        raise ValueError("calibrate: the first step must be computed")
    c = [0.0] * n
    last = 0
    for k, m in enumerate(mask):
        if m:
            last = k
        else:
            c[last] += weights[k]
            c[k] -= weights[k]
    nz = [k for k in range(n) if c[k]]
    return max(0.0, sum(c[j] * c[k] * gram[j][k] for j in nz for k in nz))


def _feasible(mask: Sequence[int], warmup: int, max_cached_run: Optional[int]) -> bool:
    if not all(mask[:warmup]):
        return False
    if max_cached_run is not None:
        run = 0
        for m in mask:
            run = 0 if m else run + 1
            if run > max_cached_run:
                return False
    return True


def local_search(start: Sequence[int], cost: Callable[[Sequence[int]], float], warmup: int = 1,
                 max_cached_run: Optional[int] = None) -> Tuple[List[int], float]:
    """From ``start``, move one computed step (not a forced warm-up step) to a cached neighbour
    (one step earlier or later) while that lowers ``cost``; the best move each round."""
    mask = list(start)
    best = cost(mask)
    while True:
        found = None
        for a in range(warmup, len(mask)):
            if not mask[a]:
                continue
            for b in (a - 1, a + 1):
                if b < warmup or b >= len(mask) or mask[b]:
                    continue
                cand = list(mask)
                cand[a], cand[b] = 0, 1
                if not _feasible(cand, warmup, max_cached_run):
                    continue
                c = cost(cand)
                if c < (found[0] if found else best) * (1.0 - 1e-9):
                    found = (c, cand)
        if found is None:
            return mask, best
        best, mask = found


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
    its transformer) and return a steps mask with ``computed_steps`` computed steps (the first
    ``warmup`` among them; at most ``max_cached_run`` cached steps in a row when given).

    The mask is the uniform one moved step by step while the error model (module docstring)
    predicts it better under both of its growth curves; it stays uniform unless the predicted gain
    reaches ``MIN_GAIN_DB``, so it is never worse than uniform by the model's own prediction
    (measured on the shipped model: better than uniform at every budget of the 200-sample H200
    run; near half the steps the gain is within sample noise, and one 40-sample CPU run measured
    15/28 0.45 dB below uniform: module docstring)."""
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
    n = len(recorded[0])
    warmup = max(1, warmup)
    if isinstance(computed_steps, bool) or not isinstance(computed_steps, int) or not warmup <= computed_steps <= n:
        raise ValueError(f"calibrate: computed_steps must be between warmup ({warmup}) and the step count ({n}), got {computed_steps!r}")
    timesteps = [t for t, _ in recorded[0]]
    gram = gram_matrix(recorded)
    curves = {name: step_weights(timesteps, name) for name in GROWTH}
    uniform = uniform_mask(n, computed_steps, warmup)
    start = uniform
    if not _feasible(uniform, warmup, max_cached_run):  # the most even mask that keeps the cap
        start, _ = best_mask([[float(k - i) for k in range(n)] for i in range(n)], computed_steps, warmup, max_cached_run)
    base = {name: predicted_error(start, w, gram) for name, w in curves.items()}

    def ratios(mask: Sequence[int]) -> dict:  # predicted error relative to the start, per growth curve
        return {name: predicted_error(mask, w, gram) / base[name] if base[name] > 0 else 1.0 for name, w in curves.items()}

    mask, worst = local_search(start, lambda m: max(ratios(m).values()), warmup, max_cached_run)
    if worst > 10 ** (-MIN_GAIN_DB / 10):  # too small a predicted gain to trust: keep the even mask
        mask = list(start)
    r = ratios(mask)
    growth = max(r, key=r.get)  # the curve least favourable to the mask: its numbers are reported
    w = curves[growth]
    return Calibration(tuple(mask), predicted_error(mask, w, gram), predicted_error(uniform, w, gram), tuple(timesteps),
                       tuple(w), growth)
