"""The cache decision, step counting and generations, on plain tensors (no graph involved)."""

import pytest
import torch

from dit_fx import DBCacheConfig
from dit_fx.runtime import CacheContext, relative_l1


class Body:
    """A stand-in middle: adds a constant to each stream and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, hidden, encoder):
        self.calls += 1
        return hidden + 1.0, encoder + 2.0


def step(ctx, body, fn_residual, hidden, encoder, timestep=None):
    reuse = ctx.decide(fn_residual, torch.zeros_like(fn_residual), timestep)
    return ctx.run_middle(reuse, body, (hidden, encoder), (hidden, encoder)), reuse


def run(cfg, residuals):
    ctx, body = CacheContext(cfg), Body()
    h, e = torch.zeros(2, 3), torch.zeros(2, 4)
    for r in residuals:
        step(ctx, body, r, h, e)
    return ctx, body


def near(base, eps):
    return base * (1 + eps)


BASE = torch.arange(1.0, 7.0).reshape(2, 3)


def test_relative_l1_is_mean_abs_diff_over_mean_abs_ref():
    ref, cur = torch.tensor([1.0, -3.0]), torch.tensor([1.5, -2.0])
    assert relative_l1(ref, cur) == pytest.approx((0.5 + 1.0) / 2 / 2.0)
    assert relative_l1(torch.zeros(3), torch.zeros(3)) == 0.0
    assert relative_l1(torch.zeros(3), torch.ones(3)) == float("inf")


def test_warmup_then_threshold_decides():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.1, max_warmup_steps=2)
    ctx, body = run(cfg, [BASE, BASE, near(BASE, 0.05), near(BASE, 0.5), near(BASE, 0.52)])
    # steps 0,1 warm up; step 2 diff 0.05 < 0.1 caches; step 3 diff 0.5 computes (new ref);
    # step 4 diff vs step-3 ref is 0.02/1.5 < 0.1 -> cached.
    assert ctx.stats.cached_steps == [2, 4]
    assert body.calls == 3
    assert set(ctx.stats.residual_diffs) == {2, 3, 4}
    assert ctx.stats.residual_diffs[3] == pytest.approx(0.5, rel=1e-6)


def test_reference_is_replaced_only_on_computed_steps():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.1, max_warmup_steps=1)
    # Drift of 6% per step: each diff is measured against step 0 (the last computed step),
    # so the accumulated drift forces a compute at step 2.
    ctx, _ = run(cfg, [BASE, near(BASE, 0.06), near(BASE, 0.12), near(BASE, 0.18)])
    assert ctx.stats.cached_steps == [1, 3]
    assert ctx.stats.residual_diffs[2] == pytest.approx(0.12, rel=1e-5)


def test_warmup_interval():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=6, warmup_interval=3)
    ctx, _ = run(cfg, [BASE] * 8)
    # steps 0 and 3 are warmup; everything else may cache (reference exists after step 0)
    assert ctx.stats.cached_steps == [1, 2, 4, 5, 6, 7]


def test_max_cached_steps():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1, max_cached_steps=2)
    ctx, body = run(cfg, [BASE] * 6)
    assert ctx.stats.cached_steps == [1, 2]
    assert body.calls == 4


def test_max_continuous_cached_steps_plain_definition():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1, max_continuous_cached_steps=2)
    ctx, _ = run(cfg, [BASE] * 8)
    # two cached in a row, then one compute, repeat
    assert ctx.stats.cached_steps == [1, 2, 4, 5, 7]


def test_max_accumulated_residual_diff_threshold():
    cfg = DBCacheConfig(
        fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1, max_accumulated_residual_diff_threshold=0.25
    )
    ctx, _ = run(cfg, [BASE] + [near(BASE, 0.1)] * 5)
    # diffs of 0.1 accumulate: 0.1, 0.2 (< 0.25 so still decided by threshold), then 0.3 >= 0.25
    assert ctx.stats.cached_steps == [1, 2, 3]
    assert 4 not in ctx.stats.residual_diffs


def test_threshold_zero_never_caches_and_records_nothing():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0, max_warmup_steps=0)
    ctx, body = run(cfg, [BASE] * 4)
    assert ctx.stats.cached_steps == [] and body.calls == 4 and ctx.stats.residual_diffs == {}


def test_cached_step_returns_base_plus_stored_residual():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1)
    ctx, body = CacheContext(cfg), Body()
    h0, e0 = torch.zeros(2, 3), torch.zeros(2, 4)
    (h, e), reuse = step(ctx, body, BASE, h0, e0)
    assert not reuse and torch.equal(h, h0 + 1) and torch.equal(e, e0 + 2)
    h1, e1 = torch.full((2, 3), 5.0), torch.full((2, 4), -1.0)
    (h, e), reuse = step(ctx, body, BASE, h1, e1)
    assert reuse and body.calls == 1
    assert torch.equal(h, h1 + 1) and torch.equal(e, e1 + 2)


def test_shape_change_never_reuses():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=1)
    ctx, body = run(cfg, [BASE, torch.ones(4, 3)])
    assert ctx.stats.cached_steps == [] and body.calls == 2


def test_num_inference_steps_starts_a_new_generation_on_call_n_plus_1():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1, num_inference_steps=3)
    ctx, body = CacheContext(cfg), Body()
    h, e = torch.zeros(2, 3), torch.zeros(2, 4)
    for _ in range(3):
        step(ctx, body, BASE, h, e)
    assert ctx.stats.cached_steps == [1, 2] and ctx.stats.generation == 1
    _, reuse = step(ctx, body, BASE, h, e)  # call 4 = step 0 of generation 2: warmup, computes
    assert not reuse and ctx.step == 0 and ctx.stats.generation == 2
    assert ctx.stats.cached_steps == [] and ctx.stats.executed_steps == 1


def test_reset_clears_buffers_and_stats_at_next_call():
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1)
    ctx, body = run(cfg, [BASE] * 3)
    assert ctx.stats.cached_steps == [1, 2]
    ctx.reset()
    h, e = torch.zeros(2, 3), torch.zeros(2, 4)
    _, reuse = step(ctx, body, BASE, h, e)
    assert not reuse and ctx.stats.cached_steps == [] and ctx.stats.generation == 2


class CountsSubs(torch.Tensor):
    """A tensor that counts the subtractions it takes part in."""

    subs = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.sub, torch.Tensor.sub, torch.Tensor.__sub__):
            cls.subs += 1
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("policy", ["static", "dynamic"])
def test_fn_residual_is_formed_only_when_read(policy):
    # Static-mask cached steps read no diff, so they must not pay for hidden_fn - hidden_in;
    # dynamic ones form it for the diff, and every computed step forms it as the reference.
    mask = [1, 1, 0, 0, 1, 0]
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=10.0, max_warmup_steps=0,
                        steps_computation_mask=mask, steps_computation_policy=policy)
    ctx, body = CacheContext(cfg), Body()
    h, e = torch.zeros(2, 3), torch.zeros(2, 4)
    formed = []
    for k in range(len(mask)):
        CountsSubs.subs = 0
        hidden_fn = (BASE + k).as_subclass(CountsSubs)
        reuse = ctx.decide(hidden_fn, torch.zeros(2, 3), None)
        ctx.run_middle(reuse, body, (h, e), (h, e))
        formed.append(CountsSubs.subs)
    assert ctx.stats.cached_steps == [2, 3, 5]
    # dynamic cached steps: the residual, then the diff's own reference - residual
    assert formed == ([1, 1, 0, 0, 1, 0] if policy == "static" else [1, 1, 2, 2, 1, 2])
    assert torch.equal(ctx.branches["cond"].reference_residual, BASE + 4)  # the last computed step's


def test_cached_step_writes_into_the_bodys_reused_outputs():
    # With CUDA graphs the body's outputs are its graph's static buffers: a cached step writes
    # base + residual there, so the tail's graph reads its input in place (no copy).
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1)
    ctx = CacheContext(cfg)
    ctx.outputs_are_reused = True
    statics = (torch.empty(2, 3), torch.empty(2, 4))

    def graphed_body(hidden, encoder):
        statics[0].copy_(hidden + 1.0)
        statics[1].copy_(encoder + 2.0)
        return statics

    h, e = torch.zeros(2, 3), torch.zeros(2, 4)
    step(ctx, graphed_body, BASE, h, e)
    h2, e2 = torch.full((2, 3), 5.0), torch.full((2, 4), -1.0)
    (out_h, out_e), reuse = step(ctx, graphed_body, BASE, h2, e2)
    assert reuse
    assert out_h is statics[0] and out_e is statics[1]
    assert torch.equal(out_h, h2 + 1.0) and torch.equal(out_e, e2 + 2.0)
    # Without reused outputs (eager partitions) a cached step returns fresh tensors.
    ctx = CacheContext(cfg)
    step(ctx, graphed_body, BASE, h, e)
    (out_h, _), reuse = step(ctx, graphed_body, BASE, h2, e2)
    assert reuse and out_h is not statics[0] and torch.equal(out_h, h2 + 1.0)


def test_cached_step_never_writes_into_a_body_output_that_is_a_body_input():
    # A stream the middle passes through unchanged comes back as the head's own tensor: writing
    # base + residual into it would change what the rest of the call reads.
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1)
    ctx = CacheContext(cfg)
    ctx.outputs_are_reused = True
    h, e = torch.zeros(2, 3), torch.zeros(2, 4)
    step(ctx, lambda hidden, encoder: (hidden + 1.0, encoder), BASE, h, e)
    h2, e2 = torch.ones(2, 3), torch.full((2, 4), 3.0)
    (out_h, out_e), reuse = step(ctx, lambda hidden, encoder: (hidden + 1.0, encoder), BASE, h2, e2)
    assert reuse and torch.equal(out_h, h2 + 1.0) and torch.equal(out_e, e2)
    assert torch.equal(e, torch.zeros(2, 4)) and out_e is not e


@pytest.mark.parametrize("reused", [False, True])
def test_steps_with_autograd_on_reuse_no_buffers(reused):
    # Called without torch.no_grad (a hand-written loop): ``out=`` refuses operands that require
    # grad, so the residual buffer and the body's outputs are not written into then.
    cfg = DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=1)
    ctx = CacheContext(cfg)
    ctx.outputs_are_reused = reused
    weight = torch.ones(2, 3, requires_grad=True)
    body = lambda hidden, encoder: (hidden * weight, encoder + 2.0)  # noqa: E731
    h, e = torch.ones(2, 3), torch.zeros(2, 4)
    for k in range(3):
        (out_h, out_e), reuse = step(ctx, body, BASE * (1 + 0.5 * (k == 1)), h, e)
        assert torch.equal(out_h, h * weight)
        # Stored residuals are detached (a constant on cached steps), so a loop calling backward()
        # every step never backpropagates into an earlier step's freed graph.
        assert out_h.requires_grad == (not reuse)
        if out_h.requires_grad:
            out_h.sum().backward()
    assert ctx.stats.cached_steps == [2]
