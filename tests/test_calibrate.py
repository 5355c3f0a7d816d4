"""``dit_fx.calibrate``: a steps mask from uncached generations (error model + local search from uniform)."""

import importlib

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


def test_calibrated_mask_with_the_dynamic_policy_caches_only_zeros_the_threshold_allows():
    spec = MODELS["flux"]
    model = spec.build()
    cal = dit_fx.calibrate(model, _loop(model, spec), computed_steps=4, warmup=2)
    assert cal.config(fn_blocks=1).steps_computation_policy == "static"
    zeros = [k for k, m in enumerate(cal.mask) if not m]
    for threshold, expected in ((1e9, zeros), (0.0, [])):  # every 0 step passes the check / none does
        dit_fx.optimize(model, cal.config(fn_blocks=1, steps_computation_policy="dynamic",
                                          residual_diff_threshold=threshold))
        with torch.no_grad():
            _loop(model, spec)()
        assert dit_fx.summary(model).cached_steps == expected, threshold
        dit_fx.disable(model)


def test_uniform_mask_spacing():
    assert uniform_mask(10, 4, warmup=1) == [1, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    assert sum(uniform_mask(28, 12, warmup=3)) == 12


# ------------------------------------------------------------------ the error model and the search


class Scripted(torch.nn.Module):
    """A "transformer" whose call k returns ``outputs[k % n]``: the error model's input, chosen by the test."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.calls = outputs, 0

    def forward(self, hidden_states, timestep):
        out = self.outputs[self.calls % len(self.outputs)]
        self.calls += 1
        return (out.clone(),)


def _scripted_run(model, timesteps):
    def run():
        x = torch.zeros(64)
        for t in timesteps:
            x = x + 0.1 * model(hidden_states=x, timestep=torch.tensor([t]))[0]
        return x

    return run


def test_predicted_error_is_the_propagated_vector_sum():
    from dit_fx.calibrate import gram_matrix, predicted_error, step_weights

    g = torch.Generator().manual_seed(0)
    n = 7
    timesteps = [1.0 - k / n for k in range(n)]
    gens = [[(t, torch.randn(5, 9, generator=g).reshape(-1)) for t in timesteps] for _ in range(2)]
    gram = gram_matrix(gens)
    for growth in ("inverse", "exponential"):
        w = step_weights(timesteps, growth)
        for mask in ([1, 0, 1, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0, 0], [1] * n):
            want = 0.0  # the deviation of the final sample, accumulated step by step, per generation
            for gen in gens:
                dev = torch.zeros_like(gen[0][1], dtype=torch.float64)
                last = 0
                for k, m in enumerate(mask):
                    if m:
                        last = k
                    else:
                        dev += w[k] * (gen[last][1].double() - gen[k][1].double())
                want += float((dev ** 2).mean()) / len(gens)
            assert predicted_error(mask, w, gram) == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert predicted_error([1] * n, step_weights(timesteps), gram) == 0.0


def test_step_weights_are_step_length_times_growth():
    import math

    from dit_fx.calibrate import noise_levels, step_weights

    ts = [1000.0, 800.0, 500.0, 200.0]  # any timestep scale: sigma = t / t_0, then 0 after the last step
    assert noise_levels(ts) == pytest.approx([1.0, 0.8, 0.5, 0.2, 0.0])
    inv, exp = step_weights(ts, "inverse"), step_weights(ts, "exponential")
    assert inv == pytest.approx([0.2 / math.sqrt(1 - 0.75), 0.3 / math.sqrt(1 - 0.5), 0.3 / math.sqrt(1 - 0.2), 0.2])
    assert exp == pytest.approx([0.2 * math.exp(1.5 * 0.75), 0.3 * math.exp(1.5 * 0.5), 0.3 * math.exp(1.5 * 0.2), 0.2])
    # the first cap is 1 - 1/n = 0.75 < 0.8; the last step's error reaches the sample as it is (growth 1)
    assert noise_levels([None, 3.0, 1.0]) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])  # no timesteps: even


def test_calibrate_moves_compute_to_where_the_output_changes():
    import math

    timesteps = [1.0 - k / 10 for k in range(10)]
    u = torch.randn(64, generator=torch.Generator().manual_seed(0))
    front = [(1 - math.exp(-k / 1.5)) * u for k in range(10)]  # the output changes early, then hardly at all
    model = Scripted(front)
    cal = dit_fx.calibrate(model, _scripted_run(model, timesteps), computed_steps=5)
    uniform = uniform_mask(10, 5)
    assert cal.computed_steps == 5 and cal.mask[0] == 1
    assert sum(cal.mask[:4]) > sum(uniform[:4])  # more compute where the output changes
    assert cal.cost < cal.uniform_cost and cal.gain_db >= importlib.import_module("dit_fx.calibrate").MIN_GAIN_DB
    limited = dit_fx.calibrate(model, _scripted_run(model, timesteps), computed_steps=5, max_cached_run=2, warmup=2)
    assert limited.mask[:2] == (1, 1) and sum(limited.mask) == 5
    assert max(len(r) for r in "".join(map(str, limited.mask)).split("1")) <= 2


def test_calibrate_keeps_the_uniform_mask_below_the_gain_floor():
    import itertools
    import math

    C = importlib.import_module("dit_fx.calibrate")
    timesteps = [1.0 - k / 10 for k in range(10)]
    u = torch.randn(64, generator=torch.Generator().manual_seed(0))
    outputs = [math.sqrt(k) * u for k in range(10)]
    model = Scripted(outputs)
    cal = dit_fx.calibrate(model, _scripted_run(model, timesteps), computed_steps=3)
    uniform = uniform_mask(10, 3)
    # brute force: the best any mask could be predicted, under the worse of the two growth curves
    rec = list(zip(timesteps, outputs))
    gram = C.gram_matrix([rec])
    ws = {g: C.step_weights(timesteps, g) for g in C.GROWTH}
    base = {g: C.predicted_error(uniform, w, gram) for g, w in ws.items()}
    best = min(max(C.predicted_error([1] + list(r), w, gram) / base[g] for g, w in ws.items())
               for r in itertools.product((0, 1), repeat=9) if sum(r) == 2)
    assert 0 < -10 * math.log10(best) < C.MIN_GAIN_DB  # a departure would gain, but too little to trust
    assert list(cal.mask) == uniform and cal.gain_db == 0.0
