"""Forecasts of the middle blocks' contribution on cached steps (one state per stream and branch).

A calibrator sees the true value (residual or hidden states, per ``cache_type``) on computed
steps through ``update(step, value)`` and forecasts it on cached steps through ``predict(step)``.
Steps are the context's 0-based step numbers, so windows and elapsed times are step distances.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch

# cache-dit forms no finite difference until its state is 3 steps old (its per-stream counter
# starts at the first update and lags by one). Kept for parity: the first differences would mix
# the warmup's fastest-changing steps.
TAYLOR_MIN_AGE = 3


class TaylorSeer:
    """Ladder ``[y, d1, d2, ...]`` of backward finite differences, extrapolated as a Taylor series.

    ``d_{i+1} = (d_i - d_i_prev) / window``; prediction ``sum_i d_i * elapsed^i / i!``. The first
    difference is a backward difference, so a linear trajectory is extrapolated exactly and a
    quadratic one with error ``c * window * elapsed`` (its second difference is exact).
    """

    def __init__(self, order: int, min_age: int = TAYLOR_MIN_AGE):
        self.order, self.min_age = order, min_age
        self.ladder: List[torch.Tensor] = []
        self.last_step: Optional[int] = None
        self.first_step: Optional[int] = None

    def update(self, step: int, value: torch.Tensor) -> None:
        if self.first_step is None:
            self.first_step = step
        ladder = [value]
        if self.ladder and step - self.first_step >= self.min_age:
            window = step - self.last_step
            for i in range(min(self.order, len(self.ladder))):
                ladder.append((ladder[i] - self.ladder[i]) / window)
        self.ladder, self.last_step = ladder, step

    def predict(self, step: int) -> torch.Tensor:
        elapsed = step - self.last_step
        out = self.ladder[0]
        for i, d in enumerate(self.ladder[1:], start=1):
            out = out + d * (elapsed**i / math.factorial(i))
        return out


class FoCa:
    """Heun (trapezoid) forecast from the last computed value ``F``:
    ``F + elapsed/2 * (slope between the last two computed steps + slope of the last step)``,
    damped toward ``F`` with weight ``3/elapsed`` beyond 3 steps.

    Both slopes are per step: each difference is divided by its step gap (cache-dit leaves the
    computed-to-computed one undivided, overshooting after a cached run); the last-step slope
    comes from the rolling pair of the latest values, forecasts included.
    """

    HORIZON = 3.0

    def __init__(self):
        self.full: Optional[torch.Tensor] = None
        self.full_prev: Optional[torch.Tensor] = None
        self.full_step = self.full_prev_step = -1
        self.latest: Optional[torch.Tensor] = None  # rolling pair: the two latest values
        self.before_latest: Optional[torch.Tensor] = None
        self.latest_step = self.before_latest_step = -1

    def _roll(self, step: int, value: torch.Tensor) -> None:
        self.before_latest, self.before_latest_step = self.latest, self.latest_step
        self.latest, self.latest_step = value, step

    def update(self, step: int, value: torch.Tensor) -> None:
        self.full_prev, self.full_prev_step = self.full, self.full_step
        self.full, self.full_step = value, step
        self._roll(step, value)

    def predict(self, step: int) -> torch.Tensor:
        if self.full_prev is None or self.before_latest is None:
            return self.full
        elapsed = float(step - self.full_step)
        slope_full = (self.full - self.full_prev) / (self.full_step - self.full_prev_step)
        slope_last = (self.latest - self.before_latest) / (self.latest_step - self.before_latest_step)
        horizon = min(elapsed, self.HORIZON)
        pred = self.full + (horizon / 2.0) * (slope_full + slope_last)
        if elapsed > self.HORIZON:
            w = self.HORIZON / elapsed
            pred = w * pred + (1.0 - w) * self.full
        self._roll(step, pred)
        return pred


def make_calibrator(config) -> object:
    """A fresh per-stream state for a ``TaylorSeerConfig`` / ``FoCaConfig`` (duck-typed by field)."""
    if not hasattr(config, "order"):
        return FoCa()
    # The outputs' forecast follows diffusers' TaylorSeer (differences from the second update on);
    # the middle's follows cache-dit's (TAYLOR_MIN_AGE).
    return TaylorSeer(config.order, min_age=1 if config.cache_type == "output" else TAYLOR_MIN_AGE)
