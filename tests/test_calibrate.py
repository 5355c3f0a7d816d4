"""``dit_fx.calibrate``: a steps mask from uncached generations (error model + shortest path)."""

import pytest
import torch

import dit_fx
from dit_fx.calibrate import best_mask, mask_cost, uniform_mask
from tiny_models import MODELS

STEPS = 10


def _loop(model, spec):
    def run():
        x = None
        for i in range(STEPS):
            kw = spec.make_inputs(0, 1000.0 * (1 - i / STEPS))
            if x is not None:
                kw["hidden_states"] = x
            out = model(**kw)[0]
            x = kw["hidden_states"] - 0.1 * out  # an Euler-like update: the trajectory moves with the model
        return x

    return run


def test_search_is_the_least_cost_mask_and_respects_the_constraints():
    n = 9
    e = [[((k - i) ** 2) * (3.0 if k < 4 else 0.3) for k in range(n)] for i in range(n)]
    mask, cost = best_mask(e, 5, warmup=2)
    assert sum(mask) == 5 and mask[:2] == [1, 1]
    assert cost == pytest.approx(mask_cost(e, mask))
    # brute force over every mask with the same constraints
    import itertools

    best = min(mask_cost(e, [1, 1] + list(rest)) for rest in itertools.product((0, 1), repeat=n - 2) if sum(rest) == 3)
    assert cost == pytest.approx(best)
    limited, _ = best_mask(e, 5, warmup=2, max_cached_run=2)
    runs = "".join(map(str, limited)).split("1")
    assert max(len(r) for r in runs) <= 2
    with pytest.raises(ValueError, match="computed_steps"):
        best_mask(e, 1, warmup=2)


def test_calibrated_mask_runs_as_a_static_schedule():
    spec = MODELS["flux"]
    model = spec.build()
    cal = dit_fx.calibrate(model, _loop(model, spec), computed_steps=5, generations=2, warmup=2)
    assert len(cal.mask) == STEPS and cal.computed_steps == 5 and cal.mask[:2] == (1, 1)
    assert cal.cost <= cal.uniform_cost + 1e-12  # never worse than even spacing under its own model
    assert len(cal.timesteps) == STEPS and cal.timesteps[0] > cal.timesteps[-1]
    dit_fx.optimize(model, cal.config(fn_blocks=1))
    with torch.no_grad():
        _loop(model, spec)()
    cached = dit_fx.summary(model).cached_steps
    assert cached == [k for k, m in enumerate(cal.mask) if not m]  # exactly the mask's zeros
    with pytest.raises(ValueError, match="optimized"):
        dit_fx.calibrate(model, _loop(model, spec), computed_steps=5)


def test_uniform_mask_spacing():
    assert uniform_mask(10, 4, warmup=1) == [1, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    assert sum(uniform_mask(28, 12, warmup=3)) == 12
