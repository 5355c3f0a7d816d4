"""``dit_fx.steps_mask``: which steps must compute (1) and which may cache (0)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

# Alternating (compute, cache) run lengths for a 28-step schedule: a computed start while the
# image forms, then ever longer cached runs. Same presets as the reference library.
PRESETS_28: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    "slow": ((8, 3, 3, 2, 1, 1), (1, 2, 2, 2, 3)),  # 18 computed
    "medium": ((6, 2, 2, 2, 2, 1), (1, 3, 3, 3, 3)),  # 15 computed
    "fast": ((6, 1, 1, 1, 1, 1), (1, 3, 4, 5, 4)),  # 11 computed
    "ultra": ((4, 1, 1, 1, 1), (2, 5, 6, 7)),  # 8 computed
}


def _from_bins(compute_bins: Sequence[int], cache_bins: Sequence[int]) -> List[int]:
    mask: List[int] = []
    for k in range(max(len(compute_bins), len(cache_bins))):
        if k < len(compute_bins):
            mask += [1] * compute_bins[k]
        if k < len(cache_bins):
            mask += [0] * cache_bins[k]
    return mask


def _check_bins(name: str, bins: Sequence[int]) -> None:
    if isinstance(bins, (str, bytes)) or not isinstance(bins, Sequence):
        raise ValueError(f"steps_mask({name}=...) must be a list of ints, got {bins!r}")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in bins):
        raise ValueError(f"steps_mask({name}=...) must hold ints >= 0, got {list(bins)}")


def steps_mask(
    policy: Optional[str] = None,
    total_steps: Optional[int] = None,
    *,
    compute_bins: Optional[Sequence[int]] = None,
    cache_bins: Optional[Sequence[int]] = None,
) -> List[int]:
    """A ``steps_computation_mask``: a preset (``policy="slow"|"medium"|"fast"|"ultra"`` with
    ``total_steps``) or alternating runs (``compute_bins=[4, 1, 1], cache_bins=[2, 3]``: four
    computed, two cached, one computed, ...). The last step always computes.

    Presets are defined for 28 steps and resampled to ``total_steps`` (step ``i`` takes the
    value of step ``i * 28 // total_steps``), which keeps their shape and computed fraction.
    Bins longer than ``total_steps`` are cut; shorter ones raise ``ValueError``.
    """
    if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1):
        raise ValueError(f"steps_mask(total_steps=...) must be an int >= 1, got {total_steps!r}")
    if compute_bins is not None or cache_bins is not None:
        if policy is not None:
            raise ValueError("steps_mask: give either policy or compute_bins/cache_bins, not both")
        compute_bins, cache_bins = compute_bins or [], cache_bins or []
        _check_bins("compute_bins", compute_bins)
        _check_bins("cache_bins", cache_bins)
        mask = _from_bins(compute_bins, cache_bins)
        if not mask:
            raise ValueError("steps_mask: compute_bins and cache_bins cover no step")
        if total_steps is not None:
            if len(mask) < total_steps:
                raise ValueError(f"steps_mask: the bins cover {len(mask)} steps, fewer than total_steps={total_steps}")
            mask = mask[:total_steps]
    else:
        policy = "medium" if policy is None else policy
        if policy not in PRESETS_28:
            raise ValueError(f"steps_mask(policy=...) must be one of {sorted(PRESETS_28)}, got {policy!r}")
        if total_steps is None:
            raise ValueError("steps_mask(policy=...) needs total_steps")
        base = _from_bins(*PRESETS_28[policy])
        mask = [base[i * len(base) // total_steps] for i in range(total_steps)]
    mask[-1] = 1
    return mask
