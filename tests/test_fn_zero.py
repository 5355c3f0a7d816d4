"""fn_blocks=0 with a static steps mask: cached steps run no block at all (the reuse or forecast of
the whole block stack's residual), like diffusers' TaylorSeer "lite" (which forecasts the
transformer's output). cache-dit refuses Fn=0 (``Fn_compute_blocks must be >= 1``), so these
tests compare with the unmodified model and with a reference built from it."""

import pytest
import torch

import dit_fx
from helpers import lite_schedule, run_steps
from tiny_models import make_trajectory, output_tensor

MASK = [1, 1, 0, 1, 0, 0, 1, 0]


def _config(mask, **kw):
    return dit_fx.DBCacheConfig(fn_blocks=0, bn_blocks=0, max_warmup_steps=0, steps_computation_mask=list(mask),
                                steps_computation_policy="static", **kw)


class _AddResidual(torch.nn.Module):
    """Stands in for Wan's whole block list on a cached step: hidden + the stored residual."""

    def __init__(self, residual):
        super().__init__()
        self.residual = residual

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states + self.residual


def _reference_wan(model, steps, mask):
    """The unmodified Wan model; on cached steps its block list is one module adding the block stack's
    residual (output of the last block minus input of the first) of the last computed step."""
    seen = {}
    first = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0]))
    last = model.blocks[-1].register_forward_hook(lambda m, args, out: seen.__setitem__("out", out))
    outs, residual = [], None
    blocks = model.blocks
    with torch.no_grad():
        for inputs, computed in zip(steps, mask):
            if computed:
                outs.append(output_tensor(model(**inputs)).clone())
                residual = seen["out"] - seen["in"]
            else:
                model.blocks = torch.nn.ModuleList([_AddResidual(residual)])
                try:
                    outs.append(output_tensor(model(**inputs)).clone())
                finally:
                    model.blocks = blocks
    first.remove()
    last.remove()
    return outs


def test_cached_steps_reuse_the_whole_stack_residual(tiny):
    spec = tiny("wan")
    steps = make_trajectory("wan", len(MASK))
    expected = _reference_wan(spec.build(), steps, MASK)
    model = spec.build()
    dit_fx.optimize(model, _config(MASK))
    got = run_steps(model, steps)
    assert dit_fx.summary(model).cached_steps == [i for i, m in enumerate(MASK) if not m]
    plan = dit_fx.inspect(model).plan
    assert plan.supported and plan.fn_blocks == 0
    for step, (a, b) in enumerate(zip(got, expected)):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), f"step {step}: {(a - b).abs().max():.3g}"
    uncached = run_steps(spec.build(), steps)
    assert not torch.allclose(got[2], uncached[2], atol=1e-4), "a cached step differs from computing it"


@pytest.mark.parametrize("name", ["flux", "wan"])
def test_all_computed_is_the_unmodified_model(tiny, name):
    spec = tiny(name)
    steps = make_trajectory(name, 4)
    model = spec.build()
    dit_fx.optimize(model, _config([1, 1, 1, 1]))
    got = run_steps(model, steps)
    for a, b in zip(got, run_steps(spec.build(), steps)):
        assert torch.equal(a, b)


def test_forecast_with_no_block_computed_runs_on_flux(tiny):
    """Two streams (FLUX): the forecast continues both; each cached step differs from plain reuse."""
    spec = tiny("flux")
    steps = make_trajectory("flux", len(MASK))
    outs = {}
    for name, cal in (("reuse", None), ("taylor", dit_fx.TaylorSeerConfig(order=1))):
        model = spec.build()
        dit_fx.optimize(model, _config(MASK, calibrator=cal))
        outs[name] = run_steps(model, steps)
        assert dit_fx.summary(model).cached_steps == [i for i, m in enumerate(MASK) if not m]
    differs = [not torch.equal(a, b) for a, b in zip(outs["reuse"], outs["taylor"])]
    assert not any(d for d, computed in zip(differs, MASK) if computed), "computed steps are the model's"
    assert [i for i, d in enumerate(differs) if d] == [4, 5, 7], (
        "forecast where the ladder has a difference: after the computed step 3 (TAYLOR_MIN_AGE: no difference "
        "before the state is 3 steps old, as the reference does)")
    assert all(torch.isfinite(o).all() for o in outs["taylor"])


def test_fn_zero_needs_a_static_mask():
    with pytest.raises(ValueError, match="fn_blocks"):
        dit_fx.DBCacheConfig(fn_blocks=0)
    with pytest.raises(ValueError, match="fn_blocks"):
        dit_fx.DBCacheConfig(fn_blocks=0, steps_computation_mask=MASK)  # dynamic policy
    with pytest.raises(ValueError, match="fn_blocks"):
        dit_fx.DBPruneConfig(fn_blocks=0, steps_computation_mask=MASK, steps_computation_policy="static")
    assert _config(MASK).fn_blocks == 0


@pytest.mark.parametrize("interval", [2, 3])
def test_output_forecast_equals_diffusers_taylorseer_lite(tiny, interval):
    """fn_blocks=0 + TaylorSeer order 1 on the outputs (``cache_type="output"``) is diffusers'
    TaylorSeer lite: the same outputs on its own schedule (the reference run on the same model)."""
    from diffusers import TaylorSeerCacheConfig

    spec = tiny("flux")
    steps = make_trajectory("flux", 12)
    warmup = 3
    reference = spec.build()
    reference.enable_cache(TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup, max_order=1,
                                                 taylor_factors_dtype=torch.float32, use_lite_mode=True))
    with reference.cache_context("cond"):
        expected = run_steps(reference, steps)
    mask = lite_schedule(len(steps), warmup, interval)
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=0, bn_blocks=0, max_warmup_steps=warmup, steps_computation_mask=mask,
                                                steps_computation_policy="static",
                                                calibrator=dit_fx.TaylorSeerConfig(order=1, cache_type="output")))
    got = run_steps(model, steps)
    assert dit_fx.summary(model).cached_steps == [i for i, m in enumerate(mask) if not m]
    for step, (a, b) in enumerate(zip(got, expected)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), f"step {step}: {(a - b).abs().max():.3g}"
    plain = run_steps(spec.build(), steps)
    assert not torch.allclose(got[-1], plain[-1], atol=1e-4), "the last step is a forecast"


@pytest.mark.parametrize("step_source", ["timestep", "calls"])
def test_output_forecast_in_a_wan_pipeline_equals_diffusers_lite(step_source):
    """A WanPipeline (cond and uncond calls per step, each its own branch): the same frames as
    diffusers' TaylorSeer lite on the same pipeline, and not the uncached frames. With counted
    calls (no timestep read) the pipeline's branch names place the cond/uncond calls, and a second
    generation gives the same frames."""
    from diffusers import TaylorSeerCacheConfig
    from tiny_pipelines import build_wan, wan_call_kwargs

    steps, warmup, interval = 8, 3, 2

    def frames(pipe):
        with torch.no_grad():
            return torch.as_tensor(pipe(**wan_call_kwargs(num_inference_steps=steps, seed=0, output_type="pt")).frames)

    reference = build_wan()
    reference.transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup,
                                                             max_order=1, taylor_factors_dtype=torch.float32,
                                                             use_lite_mode=True))
    expected = frames(reference)
    pipe = build_wan()
    dit_fx.optimize(pipe, dit_fx.DBCacheConfig(fn_blocks=0, steps_computation_mask=lite_schedule(steps, warmup, interval),
                                               steps_computation_policy="static", max_warmup_steps=warmup,
                                               calibrator=dit_fx.TaylorSeerConfig(order=1, cache_type="output"),
                                               num_inference_steps=steps, step_source=step_source,
                                               enable_separate_cfg=True))
    got = frames(pipe)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6), float((got - expected).abs().max())
    stats = dit_fx.summary(pipe)["transformer"]
    assert stats.separate_cfg and stats.executed_steps == steps
    if step_source == "calls":
        assert torch.equal(frames(pipe), got)
    assert not torch.allclose(got, frames(build_wan()), atol=1e-4)
