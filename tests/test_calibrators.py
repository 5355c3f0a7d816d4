"""TaylorSeer / FoCa forecasts, steps masks and forced refreshes: math, parity with cache-dit, checks."""

import pytest
import torch

import dit_fx
from dit_fx.runtime.calibrators import TAYLOR_MIN_AGE, FoCa, TaylorSeer
from helpers import rel_err, run_steps
from reference_harness import run_cache_dit
from tiny_models import make_trajectory

STEPS = 20


# -- the forecasts on synthetic sequences ---------------------------------------------------------
def _feed(cal, fn, steps):
    for s in steps:
        cal.update(s, fn(s))


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("computed", [[0, 1, 2, 3, 4], [0, 2, 4, 7, 10]])  # uniform and uneven windows
def test_taylorseer_extrapolates_a_line_exactly(order, computed):
    line = lambda s: torch.full((3,), 2.0 + 0.5 * s, dtype=torch.float64)  # noqa: E731
    cal = TaylorSeer(order)
    _feed(cal, line, computed)
    for ahead in (1, 2, 5):
        assert torch.allclose(cal.predict(computed[-1] + ahead), line(computed[-1] + ahead), rtol=0, atol=1e-12)


def test_taylorseer_order2_on_a_quadratic():
    """The second difference is exact; the backward first difference lags by half a window."""
    c = 0.25
    quad = lambda s: torch.tensor([c * s * s], dtype=torch.float64)  # noqa: E731
    cal = TaylorSeer(2)
    _feed(cal, quad, [0, 2, 4, 6, 8])
    window = 2
    assert cal.ladder[2].item() == pytest.approx(2 * c, abs=1e-12)
    for e in (1, 2, 3):
        want = quad(8 + e).item() - c * window * e
        assert cal.predict(8 + e).item() == pytest.approx(want, abs=1e-12)
    order1 = TaylorSeer(1)
    _feed(order1, quad, [0, 2, 4, 6, 8])
    assert abs(order1.predict(11).item() - quad(11).item()) > abs(cal.predict(11).item() - quad(11).item())


def test_taylorseer_waits_for_its_minimum_age_and_reuses_before():
    cal = TaylorSeer(1)
    _feed(cal, lambda s: torch.tensor([float(s)]), range(TAYLOR_MIN_AGE))
    assert len(cal.ladder) == 1 and cal.predict(5).item() == TAYLOR_MIN_AGE - 1  # plain reuse
    cal.update(TAYLOR_MIN_AGE, torch.tensor([float(TAYLOR_MIN_AGE)]))
    assert cal.predict(TAYLOR_MIN_AGE + 2).item() == pytest.approx(TAYLOR_MIN_AGE + 2)


def test_foca_heun_step_and_damping():
    line = lambda s: torch.tensor([1.0 + 3.0 * s], dtype=torch.float64)  # noqa: E731
    cal = FoCa()
    _feed(cal, line, [0, 2])  # slope between computed steps: 3 per step (gap 2)
    assert cal.predict(3).item() == pytest.approx(line(3).item())  # Heun on a line is exact
    assert cal.predict(4).item() == pytest.approx(line(4).item())  # rolling slope from the forecast
    cal = FoCa()
    _feed(cal, line, [0, 1])
    far = cal.predict(7).item()  # 6 steps ahead: 3 steps of Heun, damped with weight 3/6
    assert far == pytest.approx(0.5 * line(4).item() + 0.5 * line(1).item())


# -- through the model, against the reference ----------------------------------------------------
CASES = [
    # model, Fn, Bn, threshold, calibrator order, extra
    ("flux_deep", 1, 0, 0.39, 1, {}),
    ("flux_deep", 1, 0, 0.39, 2, {}),
    ("wan_deep", 1, 0, 0.22, 1, {}),
    ("wan_deep", 2, 0, 0.22, 2, {}),
]


def _compare(stats, ref, got):
    assert ref["cached_steps"], "the case must cache something to be meaningful"
    assert stats.cached_steps == ref["cached_steps"]
    assert stats.residual_diffs.keys() == ref["residual_diffs"].keys()
    for step, diff in ref["residual_diffs"].items():
        assert stats.residual_diffs[step] == pytest.approx(diff, rel=1e-4, abs=1e-6)
    for step, (a, b) in enumerate(zip(got, ref["outputs"])):
        assert rel_err(a, b) <= 1e-5, f"step {step}"


@pytest.mark.parametrize("name, fn, bn, threshold, order, extra", CASES)
def test_taylorseer_parity_with_cache_dit(tiny, name, fn, bn, threshold, order, extra):
    import cache_dit

    model = tiny(name).build()
    steps = make_trajectory(name, STEPS)
    kwargs = dict(max_warmup_steps=3, **extra)
    ref = run_cache_dit(
        model, steps, Fn=fn, Bn=bn, residual_diff_threshold=threshold,
        calibrator_config=cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=order), **kwargs,
    )
    plain = run_cache_dit(model, steps, Fn=fn, Bn=bn, residual_diff_threshold=threshold, **kwargs)
    cfg = dit_fx.DBCacheConfig(
        fn_blocks=fn, bn_blocks=bn, residual_diff_threshold=threshold, calibrator=dit_fx.TaylorSeerConfig(order=order), **kwargs
    )
    dit_fx.optimize(model, cfg)
    got = run_steps(model, steps)
    _compare(dit_fx.summary(model), ref, got)
    assert any(rel_err(a, b) > 1e-4 for a, b in zip(got, plain["outputs"])), "the forecast must change outputs"


MASK = [1, 1, 1, 1] + [1, 0, 0] * 5 + [0]
MASK[-1] = 1


@pytest.mark.parametrize("policy", ["static", "dynamic"])
def test_steps_mask_parity_with_cache_dit(tiny, policy):
    name = "wan_deep"
    model = tiny(name).build()
    steps = make_trajectory(name, len(MASK))
    kwargs = dict(max_warmup_steps=2, steps_computation_mask=list(MASK), steps_computation_policy=policy)
    ref = run_cache_dit(model, steps, Fn=1, Bn=0, residual_diff_threshold=0.22, **kwargs)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=0, residual_diff_threshold=0.22, **kwargs))
    got = run_steps(model, steps)
    stats = dit_fx.summary(model)
    _compare(stats, ref, got)
    forced = [s for s, m in enumerate(MASK) if m == 1]
    assert not set(stats.cached_steps) & set(forced), "mask 1 steps always compute"
    if policy == "static":
        assert stats.cached_steps == [s for s, m in enumerate(MASK) if m == 0] and stats.residual_diffs == {}
    else:
        assert set(stats.residual_diffs) == {s for s, m in enumerate(MASK) if m == 0}


class LineBody:
    """A middle whose output moves along a line in the step number: h + 1 + 0.5*k (and the
    encoder: e + 2 - 0.25*k), so forecasts can be checked exactly."""

    def __init__(self):
        self.k = 0

    def __call__(self, hidden, encoder):
        return hidden + 1.0 + 0.5 * self.k, encoder + 2.0 - 0.25 * self.k


@pytest.mark.parametrize("cache_type", ["residual", "hidden_states"])
@pytest.mark.parametrize("calibrator", ["taylorseer", "foca"])
def test_calibrated_cached_steps_continue_the_line(calibrator, cache_type):
    """On a linear trajectory both calibrators forecast the cached steps exactly, for either
    cache_type; the plain cache would repeat the last computed value instead."""
    from dit_fx.runtime import CacheContext

    cal = dit_fx.TaylorSeerConfig(order=1, cache_type=cache_type) if calibrator == "taylorseer" else dit_fx.FoCaConfig(cache_type)
    mask = [1, 1, 1, 1, 1, 0, 0, 1, 0, 0]
    ctx = CacheContext(dit_fx.DBCacheConfig(fn_blocks=1, max_warmup_steps=0, steps_computation_mask=mask,
                                            steps_computation_policy="static", calibrator=cal))
    body = LineBody()
    # The stream bases move too, so "residual" and "hidden_states" caching differ unless handled.
    for k, m in enumerate(mask):
        body.k = k
        hidden, encoder = torch.full((2, 3), 0.1 * k), torch.full((2, 4), -0.2 * k)
        reuse = ctx.decide(torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([1000.0 - k]))
        out = ctx.run_middle(reuse, body, (hidden, encoder), (hidden, encoder))
        assert reuse == (m == 0)
        want = body(hidden, encoder)
        for got, expected in zip(out, want):
            assert torch.allclose(got, expected, atol=1e-5), (k, got, expected)
    assert ctx.stats.cached_steps == [5, 6, 8, 9]


def test_force_refresh_starts_a_new_context(tiny):
    model = tiny("wan").build()
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=100.0, max_warmup_steps=2, force_refresh_step_hint=4)
    dit_fx.optimize(model, cfg)
    run_steps(model, make_trajectory("wan", 9))
    stats = dit_fx.summary(model)
    # steps 4..8 are a new context (its steps 0..4): warmup again, then cached
    assert stats.generation == 2 and stats.executed_steps == 5 and stats.cached_steps == [2, 3, 4]
    repeat = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=100.0, max_warmup_steps=2,
                                  force_refresh_step_hint=3, force_refresh_step_policy="repeat")
    dit_fx.optimize(model, repeat)
    run_steps(model, make_trajectory("wan", 8))
    stats = dit_fx.summary(model)
    assert stats.generation == 3 and stats.executed_steps == 2 and stats.cached_steps == []


def test_steps_mask_presets_and_bins():
    for policy in ("slow", "medium", "fast", "ultra"):
        for n in (8, 28, 50):
            mask = dit_fx.steps_mask(policy, n)
            assert len(mask) == n and mask[-1] == 1 and mask[0] == 1 and set(mask) <= {0, 1}
    computed = [sum(dit_fx.steps_mask(p, 28)) for p in ("slow", "medium", "fast", "ultra")]
    assert computed == sorted(computed, reverse=True) and computed[0] == 18 and computed[-1] == 8
    assert dit_fx.steps_mask(compute_bins=[2, 1], cache_bins=[2, 2], total_steps=6) == [1, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="policy"):
        dit_fx.steps_mask("turbo", 28)
    with pytest.raises(ValueError, match="total_steps"):
        dit_fx.steps_mask(compute_bins=[1], cache_bins=[1], total_steps=5)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(calibrator=dit_fx.TaylorSeerConfig), "calibrator"),
        (dict(steps_computation_mask=[1, 0, 2]), "steps_computation_mask"),
        (dict(steps_computation_mask=[1, 0], num_inference_steps=3), "steps_computation_mask"),
        (dict(steps_computation_policy="sometimes"), "steps_computation_policy"),
        (dict(force_refresh_step_hint=0), "force_refresh_step_hint"),
        (dict(force_refresh_step_policy="twice"), "force_refresh_step_policy"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        dit_fx.DBCacheConfig(**kwargs)


def test_bad_calibrator_values():
    with pytest.raises(ValueError, match="order"):
        dit_fx.TaylorSeerConfig(order=0)
    with pytest.raises(ValueError, match="cache_type"):
        dit_fx.TaylorSeerConfig(cache_type="latents")


def test_calibrator_from_a_plain_dict():
    cfg = dit_fx.DBCacheConfig.from_dict({"calibrator": {"type": "taylorseer", "order": 2}})
    assert cfg.calibrator == dit_fx.TaylorSeerConfig(order=2)
    assert dit_fx.DBCacheConfig.from_dict({"calibrator": {"type": "foca"}}).calibrator == dit_fx.FoCaConfig()
    with pytest.raises(ValueError, match="calibrator"):
        dit_fx.DBCacheConfig.from_dict({"calibrator": {"type": "dmd"}})
    with pytest.raises(ValueError, match="TaylorSeerConfig"):
        dit_fx.DBCacheConfig.from_dict({"calibrator": {"type": "taylorseer", "taylorseer_order": 2}})
