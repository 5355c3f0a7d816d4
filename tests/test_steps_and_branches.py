"""Steps, CFG branches and generations are read from the timestep, with no hints (runtime level)."""

import pytest
import torch

from dit_fx import DBCacheConfig
from dit_fx.runtime import CacheContext

BASE = torch.arange(1.0, 7.0).reshape(2, 3)


def body(hidden):
    return hidden + 1.0


class Loop:
    """Drives a CacheContext like a denoising loop would drive a transformer."""

    def __init__(self, **cfg):
        cfg.setdefault("fn_blocks", 1)
        cfg.setdefault("residual_diff_threshold", 0.5)
        cfg.setdefault("max_warmup_steps", 1)
        self.ctx = CacheContext(DBCacheConfig(**cfg))
        self.log = []  # (generation, step, branch, reused)

    def call(self, t, residual=BASE):
        ts = None if t is None else torch.tensor([t, t])
        reuse = self.ctx.decide(residual, torch.zeros_like(residual), ts)
        self.ctx.run_middle(reuse, body, (torch.zeros(2, 3),), (torch.zeros(2, 3),))
        self.log.append((self.ctx.generation, self.ctx.step, self.ctx.branch, reuse))
        return reuse

    def run(self, timesteps, calls_per_step=1, drift=0.0):
        for k, t in enumerate(timesteps):
            for c in range(calls_per_step):
                # each branch sees its own residual: the uncond one is offset
                self.call(t, BASE * (1 + drift * k) + 10.0 * c)


def decreasing(n):
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(n)
    return [float(t) for t in sched.timesteps]


def test_decreasing_schedule_two_back_to_back_generations():
    loop = Loop()
    ts = decreasing(6)
    loop.run(ts)
    first = loop.ctx.stats
    assert [(g, s) for g, s, _, _ in loop.log] == [(1, k) for k in range(6)]
    assert first.executed_steps == 6 and first.cached_steps == [1, 2, 3, 4, 5] and not first.separate_cfg
    loop.run(ts)  # the timestep jumps back up: a new generation, no hint needed
    assert [(g, s) for g, s, _, _ in loop.log[6:]] == [(2, k) for k in range(6)]
    assert loop.ctx.stats.cached_steps == first.cached_steps and loop.ctx.stats.generation == 2


def test_increasing_schedule_is_learned_from_the_first_two_timesteps():
    loop = Loop()
    ts = [k / 10 for k in range(5)]  # Lumina2-style: 0.0 -> 0.4
    loop.run(ts)
    loop.run(ts)  # drops back to 0.0: against the direction -> generation 2
    assert [(g, s) for g, s, _, _ in loop.log] == [(1, k) for k in range(5)] + [(2, k) for k in range(5)]


def test_cfg_two_calls_per_timestep_get_separate_branches():
    loop = Loop()
    loop.run(decreasing(5), calls_per_step=2)
    stats = loop.ctx.stats
    assert stats.separate_cfg and stats.executed_steps == 5 and stats.calls == 10
    assert [b for _, _, b, _ in loop.log] == ["cond", "uncond"] * 5
    # each branch is compared with its own reference: identical residuals per branch -> all cached
    assert stats.cached_steps == [1, 2, 3, 4] and stats.cfg_cached_steps == [1, 2, 3, 4]
    assert set(stats.branches) == {"cond", "uncond"}
    loop.run(decreasing(5), calls_per_step=2)
    assert loop.ctx.stats.generation == 2 and loop.ctx.stats.cfg_cached_steps == [1, 2, 3, 4]


def test_cfg_branches_may_carry_hidden_streams_of_different_lengths():
    """Lumina2 joins each prompt's valid tokens to the image tokens: the uncond call's hidden stream
    is longer. The shape is compared per branch, so that starts no generation; a change within a
    branch (a new resolution) still does."""
    loop = Loop()
    longer = torch.arange(1.0, 11.0).reshape(2, 5)
    ts = decreasing(5)
    for t in ts[:4]:
        loop.call(t, BASE)
        loop.call(t, longer)
    stats = loop.ctx.stats
    assert stats.generation == 1 and stats.executed_steps == 4 and stats.separate_cfg
    assert stats.cached_steps == [1, 2, 3] and stats.cfg_cached_steps == [1, 2, 3]
    loop.call(ts[4], torch.ones(4, 3))  # the cond branch's stream changed shape
    assert loop.ctx.stats.generation == 2 and loop.ctx.step == 0


def test_cfg_branches_never_share_buffers():
    """Were the branches mixed, the uncond call (residual +10) would never be similar enough."""
    loop = Loop(residual_diff_threshold=0.05)
    loop.run(decreasing(4), calls_per_step=2)
    assert loop.ctx.stats.cfg_cached_steps == [1, 2, 3]


def test_separate_cfg_false_makes_every_call_a_step():
    loop = Loop(enable_separate_cfg=False, residual_diff_threshold=0.05)
    loop.run(decreasing(3), calls_per_step=2)
    stats = loop.ctx.stats
    assert stats.executed_steps == 6 and not stats.separate_cfg and stats.cfg_cached_steps == []
    assert [b for _, _, b, _ in loop.log] == ["cond"] * 6


def test_forced_separate_cfg_without_timestep_alternates_by_parity():
    loop = Loop(enable_separate_cfg=True)
    for k in range(6):
        loop.call(None, BASE + 10.0 * (k % 2))
    assert [(s, b) for _, s, b, _ in loop.log] == [(0, "cond"), (0, "uncond"), (1, "cond"), (1, "uncond"), (2, "cond"), (2, "uncond")]
    assert loop.ctx.stats.cached_steps == [1, 2] and loop.ctx.stats.cfg_cached_steps == [1, 2]


def test_cfg_compute_first_names_the_first_call_uncond():
    loop = Loop(cfg_compute_first=True)
    loop.run(decreasing(2), calls_per_step=2)
    assert [b for _, _, b, _ in loop.log] == ["uncond", "cond", "uncond", "cond"]


def test_cfg_diff_compute_separate_false_reuses_the_cond_diff():
    loop = Loop(cfg_diff_compute_separate=False, residual_diff_threshold=0.3, max_warmup_steps=1)
    loop.run(decreasing(5), calls_per_step=2, drift=0.1)
    stats = loop.ctx.stats
    assert stats.cfg_residual_diffs == stats.residual_diffs and stats.cached_steps == stats.cfg_cached_steps
    separate = Loop(residual_diff_threshold=0.3, max_warmup_steps=1)
    separate.run(decreasing(5), calls_per_step=2, drift=0.1)
    assert separate.ctx.stats.cfg_residual_diffs != separate.ctx.stats.residual_diffs


def test_num_inference_steps_with_cfg_counts_steps_not_calls():
    loop = Loop(num_inference_steps=3)
    ts = [900.0, 800.0, 700.0, 600.0]  # a 4th step in the same direction: only N=3 says it is new
    loop.run(ts, calls_per_step=2)
    assert [(g, s) for g, s, _, _ in loop.log] == [(1, 0), (1, 0), (1, 1), (1, 1), (1, 2), (1, 2), (2, 0), (2, 0)]


def test_explicit_generation_context_wins(tiny):
    import dit_fx
    from helpers import run_steps
    from tiny_models import make_trajectory

    spec = tiny("wan")
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.22, max_warmup_steps=1))
    steps = make_trajectory("wan", 6)
    with dit_fx.generation(model, num_inference_steps=3):
        run_steps(model, steps)  # 6 decreasing timesteps, but the context says 3 per generation
        assert dit_fx.summary(model).generation == 2 and dit_fx.summary(model).executed_steps == 3
    run_steps(model, steps[3:4])  # leaving the context: the next call starts a new generation
    assert dit_fx.summary(model).generation == 3 and dit_fx.summary(model).executed_steps == 1
    with pytest.raises(ValueError, match="num_inference_steps"):
        with dit_fx.generation(model, num_inference_steps=0):
            pass


def test_separate_cfg_config_values_are_validated():
    with pytest.raises(ValueError, match="enable_separate_cfg"):
        DBCacheConfig(enable_separate_cfg="yes")
    with pytest.raises(ValueError, match="cfg_compute_first"):
        DBCacheConfig(cfg_compute_first=None)


@pytest.mark.parametrize("calls_per_step", [1, 2])
@pytest.mark.parametrize("increasing", [False, True])
def test_bare_transformer_in_a_scheduler_loop(tiny, calls_per_step, increasing):
    """A bare Wan transformer driven like ComfyUI drives it: no hints, two generations back to back."""
    import dit_fx

    spec = tiny("wan")
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    timesteps = decreasing(5)
    if increasing:
        timesteps = [1000.0 - t for t in timesteps]
    for generation in (1, 2):
        x = spec.make_inputs(0, 0.0)["hidden_states"]
        for t in timesteps:
            outs = []
            for branch in range(calls_per_step):  # cond, then uncond with another prompt
                with torch.no_grad():
                    outs.append(model(**dict(spec.make_inputs(branch, t), hidden_states=x))[0])
            x = x - 0.05 * outs[-1]
        stats = dit_fx.summary(model)
        assert stats.generation == generation and stats.executed_steps == 5
        assert stats.calls == 5 * calls_per_step
        assert stats.separate_cfg == (calls_per_step == 2)
        assert set(stats.branches) == ({"cond", "uncond"} if calls_per_step == 2 else {"cond"})


def test_repeated_timestep_does_not_grow_branches_without_bound():
    loop = Loop()
    for _ in range(12):
        loop.call(500.0)
    assert len(loop.ctx.branches) <= 4 and loop.ctx.stats.executed_steps == 3
    each_call_a_step = Loop(enable_separate_cfg=False)
    for _ in range(6):
        each_call_a_step.call(500.0)
    assert each_call_a_step.ctx.stats.executed_steps == 6
    assert each_call_a_step.ctx.stats.cached_steps == [1, 2, 3, 4, 5]


class _NoReads:
    """A HostReads that fails on any timestep read: ``step_source="calls"`` must never make one."""

    def scalar(self, value):
        raise AssertionError("the timestep was read on the host")

    def floats(self, values):
        raise AssertionError("the timestep was read on the host")

    def diff_sums(self, num, den):
        from dit_fx.runtime.host import LOCAL

        return LOCAL.diff_sums(num, den)


def test_counted_calls_place_steps_without_reading_the_timestep():
    loop = Loop(step_source="calls", num_inference_steps=3, enable_separate_cfg=False)
    loop.ctx.host = _NoReads()
    ts = [900.0, 800.0, 700.0]
    loop.run(ts)
    loop.run(ts)  # N=3 steps: the 4th call starts generation 2
    assert [(g, s) for g, s, _, _ in loop.log] == [(1, k) for k in range(3)] + [(2, k) for k in range(3)]
    loop.ctx.reset()  # a marked generation starts at once, mid-count
    loop.run(ts[:1])
    assert loop.log[-1][:2] == (3, 0)


def test_counted_calls_with_separate_cfg_alternate_by_parity():
    loop = Loop(step_source="calls", num_inference_steps=2, enable_separate_cfg=True)
    loop.ctx.host = _NoReads()
    loop.run([900.0, 800.0], calls_per_step=2)
    assert [(g, s, b) for g, s, b, _ in loop.log] == [(1, 0, "cond"), (1, 0, "uncond"), (1, 1, "cond"), (1, 1, "uncond")]


def test_counted_calls_warn_about_an_unmarked_restart_and_keep_counting():
    """The documented trade: a loop restarted early without dit_fx.reset is counted on (placement
    never depends on when a copy lands); its timestep, checked once landed, gives one warning.
    The timestep source finds the restart itself."""
    ts = [900.0, 800.0, 700.0, 600.0]
    counted, read = (Loop(step_source="calls", num_inference_steps=6, enable_separate_cfg=False),
                     Loop(num_inference_steps=6))
    with pytest.warns(RuntimeWarning, match="moved back at call 3 without dit_fx.reset") as caught:
        for loop in (counted, read):
            loop.run(ts[:2])
            loop.run(ts)  # restarted after two steps, unmarked
    assert len(caught) == 1
    assert [(g, s) for g, s, _, _ in counted.log] == [(1, k) for k in range(6)]
    assert [(g, s) for g, s, _, _ in read.log] == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)]


def test_counted_calls_equal_timestep_placement_on_a_marked_loop(tiny):
    """F0B0 + an output forecast on a static mask: counted calls give the outputs of the timestep
    source, bit for bit, over two generations marked with dit_fx.generation."""
    import dit_fx
    from helpers import run_steps
    from tiny_models import make_trajectory

    spec = tiny("flux")
    steps = make_trajectory("flux", 6)
    mask = [1, 1, 0, 1, 0, 1]
    outs = {}
    for source in ("timestep", "calls"):
        model = spec.build()
        dit_fx.optimize(model, dit_fx.DBCacheConfig(
            fn_blocks=0, bn_blocks=0, steps_computation_mask=mask, steps_computation_policy="static", max_warmup_steps=2,
            num_inference_steps=6, calibrator=dit_fx.FoCaConfig(cache_type="output"), step_source=source,
            enable_separate_cfg=False))
        runs = []
        for _ in range(2):
            with dit_fx.generation(model):
                runs.append(run_steps(model, steps))
            assert dit_fx.summary(model).cached_steps == [2, 4]
        outs[source] = runs
    for a, b in zip(outs["timestep"], outs["calls"]):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert all(torch.equal(x, y) for x, y in zip(outs["calls"][0], outs["calls"][1]))  # nothing leaked


def test_step_source_is_validated():
    with pytest.raises(ValueError, match="step_source"):
        DBCacheConfig(step_source="steps")
    with pytest.raises(ValueError, match="step_source='calls' needs num_inference_steps"):
        DBCacheConfig(step_source="calls", enable_separate_cfg=False)
    with pytest.raises(ValueError, match="enable_separate_cfg True or False"):
        DBCacheConfig(step_source="calls", num_inference_steps=4)


def test_a_loop_past_the_steps_mask_warns_once_per_generation():
    """A mask is indexed by step: a loop longer than it gets one warning naming the mask's length."""
    import warnings

    loop = Loop(steps_computation_mask=[1, 0, 1, 0], steps_computation_policy="static", max_warmup_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in (900, 800, 700, 600):  # exactly the mask's length: no warning
            loop.call(t)
        assert not [w for w in caught if "steps_computation_mask" in str(w.message)]
        for t in (1000, 900, 800, 700, 600, 500, 400):  # a new generation of 7 steps
            loop.call(t)
    past = [str(w.message) for w in caught if "steps_computation_mask" in str(w.message)]
    assert len(past) == 1 and "has 4 entries" in past[0] and "step 4" in past[0], past


def test_a_pipeline_call_with_another_step_count_than_the_mask_warns():
    """A pipeline call with fewer steps than the mask is told when it sets its timesteps, one with more when it
    runs past the mask's end: one warning each, also inside a request the caller bound (no second warning from
    the other check); the matching count gives none."""
    import warnings

    pytest.importorskip("diffusers")
    import dit_fx
    from tiny_pipelines import build_flux, flux_call_kwargs

    pipe = build_flux()
    mask = [1, 1, 0, 0, 1, 0]
    dit_fx.optimize(pipe, DBCacheConfig(fn_blocks=1, steps_computation_mask=mask, steps_computation_policy="static",
                                        max_warmup_steps=2))
    cases = ((6, None), (4, "num_inference_steps=4: only its first 4 entries"), (8, "past its end (step 6)"))
    for (steps, expect), bound in [(c, False) for c in cases] + [(c, True) for c in cases]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if bound:
                with dit_fx.request(pipe):
                    pipe(**flux_call_kwargs(num_inference_steps=steps))
            else:
                pipe(**flux_call_kwargs(num_inference_steps=steps))
        said = [str(w.message) for w in caught if "steps_computation_mask" in str(w.message)]
        if expect is None:
            assert not said, said
        else:
            assert len(said) == 1 and expect in said[0], said
        if not bound:
            cached = dit_fx.summary(pipe)["transformer"].cached_steps
            assert cached[: len([k for k in (2, 3, 5) if k < steps])] == [k for k in (2, 3, 5) if k < steps]
