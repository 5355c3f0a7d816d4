"""Serving: isolated requests (interleaved, threads, pipelines), no shared recompile budget,
memory given back, bare loops, and the defects a server meets (issue 15)."""

from __future__ import annotations

import copy
import gc
import random
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import dit_fx
from toy_models import ToyDiT

STEPS = 6
CFG = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.2, max_warmup_steps=1)


def make_model(seed: int, blocks: int = 6) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ToyDiT(num_blocks=blocks)


def request_inputs(seed: int, tokens: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, tokens, 8, generator=g), torch.randn(1, tokens, 8, generator=g)


def step_calls(x, neg, step, cfg):
    """The calls of one denoising step: cond (+ uncond with the same timestep)."""
    t = torch.full((1,), 1.0 - step / STEPS)
    calls = [dict(hidden_states=x, timestep=t)]
    if cfg:
        calls.append(dict(hidden_states=x + 0.1 * neg, timestep=t))
    return calls


def denoise(model, seed, tokens, cfg, fail_at=None, between=None):
    """A request's loop; ``between(step)`` runs after each step (another request's turn)."""
    x, neg = request_inputs(seed, tokens)
    with torch.no_grad():
        for step in range(STEPS):
            if step == fail_at:
                model(hidden_states=torch.randn(1, tokens, 5), timestep=torch.ones(1))  # wrong width: raises
            outs = [model(**kw)[0] for kw in step_calls(x, neg, step, cfg)]
            v = outs[0] if len(outs) == 1 else outs[1] + 2.0 * (outs[0] - outs[1])
            x = x - v / STEPS
            if between is not None:
                between(step)
    return x


def solo(model, seed, tokens, cfg):
    with dit_fx.request(model) as r:
        out = denoise(model, seed, tokens, cfg)
    stats = r.summary()
    return out, (stats.cached_steps, stats.cfg_cached_steps)


def test_interleaved_requests_each_get_their_solo_output_and_cached_steps():
    model = dit_fx.optimize(make_model(0), CFG)
    ref_a, ref_b = solo(model, 1, 6, True), solo(model, 2, 6, True)
    assert ref_a[1][0], "the config must cache some steps for this test to mean anything"
    a, b = dit_fx.new_request(model), dit_fx.new_request(model)
    xa, nega = request_inputs(1, 6)
    xb, negb = request_inputs(2, 6)
    with torch.no_grad():
        for tick in range(STEPS + 3):  # B starts 3 steps after A; steps alternate between them
            for r, state, step in ((a, "a", tick), (b, "b", tick - 3)):
                if not 0 <= step < STEPS:
                    continue
                x, neg = (xa, nega) if state == "a" else (xb, negb)
                with r:
                    outs = [model(**kw)[0] for kw in step_calls(x, neg, step, True)]
                x = x - (outs[1] + 2.0 * (outs[0] - outs[1])) / STEPS
                if state == "a":
                    xa = x
                else:
                    xb = x
    for r, x, ref in ((a, xa, ref_a), (b, xb, ref_b)):
        stats = r.summary()
        assert torch.equal(x, ref[0])
        assert (stats.cached_steps, stats.cfg_cached_steps) == ref[1]
        assert stats.generation == 1 and stats.executed_steps == STEPS
        r.close()
        assert r.buffer_bytes() == 0 and r.summary().cached_steps == ref[1][0]  # closed: buffers freed, stats kept
    with pytest.raises(ValueError, match="closed"):
        with a:
            pass


def test_soak_thread_pool_of_8_serving_64_mixed_requests_on_two_models():
    models = [dit_fx.optimize(make_model(10), CFG), dit_fx.optimize(make_model(11, blocks=5), CFG)]
    rng = random.Random(0)
    jobs = [(rng.randrange(2), rng.randrange(1000), rng.choice([6, 10]), rng.random() < 0.5) for _ in range(64)]
    expected = {job: solo(models[job[0]], *job[1:]) for job in set(jobs)}

    def serve(job):
        return solo(models[job[0]], *job[1:])

    def live_tensors():
        gc.collect()
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    for round_ in range(2):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(serve, jobs))
        for job, (out, cached) in zip(jobs, results):
            assert torch.equal(out, expected[job][0]), job
            assert cached == expected[job][1], job
        if round_ == 0:
            after_first = live_tensors()
    assert live_tensors() <= after_first + 16, "request buffers are freed: memory stays flat"
    for m in models:
        info = dit_fx.inspect(m)
        assert info.captures_total == 2 and info.signatures == 2  # two resolutions per model, captured once each


def test_a_failing_request_leaves_the_others_correct_and_the_model_usable():
    model = dit_fx.optimize(make_model(20), CFG)
    jobs = [(s, 6, s % 2 == 0) for s in range(8)]
    expected = [solo(model, *job) for job in jobs]

    def serve(i):
        job = jobs[i]
        with dit_fx.request(model) as r:
            out = denoise(model, *job, fail_at=3 if i == 5 else None)
        return out, (r.summary().cached_steps, r.summary().cfg_cached_steps)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(serve, i) for i in range(len(jobs))]
    for i, fut in enumerate(futures):
        if i == 5:
            assert isinstance(fut.exception(), RuntimeError)
            continue
        out, cached = fut.result()
        assert torch.equal(out, expected[i][0]) and cached == expected[i][1]
    assert torch.equal(solo(model, *jobs[5])[0], expected[5][0])  # usable afterwards, same result


def test_threads_without_requests_are_isolated_too():
    """Each thread has its own default state: bare loops on threads do not mix."""
    model = dit_fx.optimize(make_model(30), CFG)
    ref = [solo(model, s, 6, False) for s in range(4)]
    results = {}

    def bare(seed):
        dit_fx.reset(model)
        results[seed] = denoise(model, seed, 6, False)

    threads = [threading.Thread(target=bare, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in range(4):
        assert torch.equal(results[s], ref[s][0])


def test_concurrent_pipeline_calls_are_isolated_with_no_user_code():
    from tiny_pipelines import PIPELINES

    build, kwargs_fn = PIPELINES["flux"]
    pipe_a = build()
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=2)
    pipe_b = type(pipe_a)(**{**pipe_a.components, "scheduler": copy.deepcopy(pipe_a.scheduler)})  # shares the transformer
    dit_fx.optimize(pipe_a, cfg)
    dit_fx.optimize(pipe_b, cfg)

    def run(pipe, seed):
        with torch.no_grad():
            return pipe(**kwargs_fn(16, 16, 6, seed))[0]

    ref = {0: run(pipe_a, 0), 1: run(pipe_b, 1)}
    results = {}
    threads = [threading.Thread(target=lambda p=p, s=s: results.__setitem__(s, run(p, s))) for p, s in ((pipe_a, 0), (pipe_b, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(results[0], ref[0]) and torch.equal(results[1], ref[1])


def test_a_deep_copy_of_an_optimized_pipelines_scheduler_sets_its_own_timesteps():
    """Giving a thread its own scheduler after optimize (copy.deepcopy) must not leave the copy on a
    stale schedule while it sets the original's; each concurrent call still equals its solo run."""
    from tiny_pipelines import PIPELINES

    build, kwargs_fn = PIPELINES["flux"]
    pipe = build()
    dit_fx.optimize(pipe, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.9, max_warmup_steps=2))
    own = copy.deepcopy(pipe.scheduler)
    own.set_timesteps(7, mu=0.5)
    pipe.scheduler.set_timesteps(3, mu=0.5)
    assert len(own.timesteps) == 7 and len(pipe.scheduler.timesteps) == 3

    def run(p, seed, steps):
        with dit_fx.request(p), torch.no_grad():
            return p(**kwargs_fn(16, 16, steps, seed))[0]

    local = type(pipe)(**{**pipe.components, "scheduler": own})  # shares the transformer
    ref = {0: run(pipe, 0, 6), 1: run(local, 1, 4)}
    results = {}
    threads = [threading.Thread(target=lambda p=p, s=s, n=n: results.__setitem__(s, run(p, s, n)))
               for p, s, n in ((pipe, 0, 6), (local, 1, 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(results[0], ref[0]) and torch.equal(results[1], ref[1])


def test_many_models_and_resolutions_stay_accelerated_with_default_dynamo_settings(tiny):
    """FLUX, Wan and Qwen-Image models at three batch sizes each in one process (9 captures of
    diffusers' one shared forward code, past Dynamo's default recompile limit of 8): every call
    still runs the rewritten graph."""
    specs = [tiny(name) for name in ("flux", "wan", "qwenimage")]
    for spec in specs:
        model = spec.build()
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no "ran unmodified"
            with torch.no_grad():
                for batch in (1, 2, 3):
                    for i in range(3):
                        kw = spec.make_inputs(i, 900.0 - 100 * i, batch=batch)
                        model(**kw)
        info = dit_fx.inspect(model)
        assert info.captures_total == 3 and all(c.supported for c in info.captures)
        assert dit_fx.summary(model).executed_steps == 3 and info.direct_calls.hits == 6


def test_disable_and_del_free_the_weights_and_twenty_models_stay_flat():
    def cycle(disable):
        model = dit_fx.optimize(make_model(40), CFG)
        solo(model, 1, 6, True)
        refs = (weakref.ref(model), weakref.ref(model.proj_in.weight))
        if disable:
            dit_fx.disable(model)
        del model
        gc.collect()
        gc.collect()
        return refs

    for disable in (True, False):
        model_ref, weight_ref = cycle(disable)
        assert model_ref() is None and weight_ref() is None, f"disable={disable}"
    gc.collect()
    before = sum(isinstance(o, torch.Tensor) for o in gc.get_objects())
    for _ in range(20):
        cycle(False)
    gc.collect()
    assert sum(isinstance(o, torch.Tensor) for o in gc.get_objects()) <= before + 8


def test_positional_timestep_is_found_and_a_second_lower_pass_is_a_new_generation():
    model = dit_fx.optimize(make_model(50), dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=2))
    x, _ = request_inputs(0, 6)
    with torch.no_grad():
        for t in (1.0, 0.8, 0.6, 0.4):
            model(x, torch.full((1,), t))  # positional, as ComfyUI-style loops call
        first = dit_fx.summary(model)
        for t in (0.5, 0.3, 0.1):  # img2img / hires fix: a second pass starting lower, no reset
            model(x, timestep=torch.full((1,), t))
        second = dit_fx.summary(model)
    assert first.generation == 1 and first.executed_steps == 4 and first.cached_steps == [2, 3]
    assert second.generation == 2 and second.executed_steps == 3 and second.cached_steps == [2]  # its own warmup
    assert dit_fx.inspect(model).captures_total == 1  # positional and keyword calls share one capture


def test_deepcopy_of_an_optimized_model_runs_its_own_weights_with_one_warning():
    model = dit_fx.optimize(make_model(60), CFG)
    solo(model, 1, 6, False)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in clone.parameters():
            p.mul_(-1.0)
    x, _ = request_inputs(3, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            got = [clone(hidden_states=x, timestep=torch.ones(1))[0] for _ in range(2)]
            expected = type(clone).forward(clone, hidden_states=x, timestep=torch.ones(1))[0]
    assert all(torch.equal(g, expected) for g in got)
    assert sum("copy" in str(w.message) for w in caught) == 1
    assert dit_fx.summary(model).executed_steps == 0  # the copy's calls did not touch the original's state
    assert dit_fx.inspect(model).captures_total == 1


def test_backward_every_step_through_cached_steps():
    model = dit_fx.optimize(make_model(70), CFG)
    x, _ = request_inputs(4, 6)
    for step in range(STEPS):
        out = model(hidden_states=x, timestep=torch.full((1,), 1.0 - step / STEPS))[0]
        out.sum().backward()  # a second backward through a stored residual used to fail
    assert dit_fx.summary(model).cached_steps and model.proj_in.weight.grad is not None


def test_nan_threshold_is_rejected_and_a_mask_cancelled_by_warmup_warns():
    with pytest.raises(ValueError, match="residual_diff_threshold"):
        dit_fx.DBCacheConfig(residual_diff_threshold=float("nan"))
    with pytest.warns(UserWarning, match="warmup"):
        dit_fx.DBCacheConfig(steps_computation_mask=[1, 0, 1, 0, 1, 1, 1, 1, 1, 0])  # default warmup: 8 steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dit_fx.DBCacheConfig(max_warmup_steps=0, steps_computation_mask=[1, 0, 1, 0])


def test_load_state_dict_assign_recaptures_without_a_limit_warning():
    model = dit_fx.optimize(make_model(80), CFG)
    solo(model, 1, 6, False)
    fresh = make_model(81).state_dict()
    model.load_state_dict(fresh, assign=True)
    reference = make_model(81)
    x, _ = request_inputs(5, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            got = model(hidden_states=x, timestep=torch.ones(1))[0]
    assert not [w for w in caught if "dit_fx" in str(w.message)], [str(w.message) for w in caught]
    assert torch.equal(got, reference(hidden_states=x, timestep=torch.ones(1))[0])
    assert dit_fx.inspect(model).captures_total == 2  # captured afresh with the new parameters


def test_a_pool_of_worker_processes_serves_requests_without_recapturing():
    import os

    from dit_fx.tools.workers import WorkerPool
    from serving_jobs import build, generate

    config = dict(fn_blocks=1, residual_diff_threshold=0.2, max_warmup_steps=1)
    local = dit_fx.optimize(build(), config)
    expected = {}
    for seed in range(6):
        with dit_fx.request(local):
            expected[seed] = generate(local, seed)
    here = os.path.dirname(os.path.abspath(__file__))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, old) if p)  # spawned workers import the jobs
    try:
        with WorkerPool("serving_jobs:build", config, workers=2) as pool:
            results = pool.map("serving_jobs:generate", [dict(seed=s) for s in range(6)] * 2)
            stats = pool.stats()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    for i, out in enumerate(results):
        assert torch.equal(out, expected[i % 6])
    assert stats and all(s["captures_total"] == 1 for s in stats)  # captured once per worker, not per request
    with pytest.raises(ValueError, match="workers"):
        WorkerPool("serving_jobs:build", workers=0)


def test_the_backend_path_and_optimize_coexist_in_one_process(tiny):
    """A model compiled with torch.compile(backend="dit_fx") and then models of the same class
    optimized: each keeps its own captures (the optimized one used to crash with "found no
    compiled frames" on diffusers' shared forward code)."""
    spec = tiny("flux")
    steps = [spec.make_inputs(i, 900.0 - 100 * i) for i in range(3)]
    compiled_model = spec.build()
    compiled = torch.compile(compiled_model, backend="dit_fx", options={"compile": False,
                             "config": {"fn_blocks": 1, "residual_diff_threshold": 0.0}})
    with torch.no_grad():
        via_backend = [compiled(**kw)[0] for kw in steps]
        optimized = dit_fx.optimize(spec.build(), dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            via_optimize = [optimized(**kw)[0] for kw in steps]
    for a, b in zip(via_backend, via_optimize):
        assert torch.equal(a, b)
    assert dit_fx.summary(compiled).executed_steps == 3 and dit_fx.summary(optimized).executed_steps == 3
    assert dit_fx.inspect(optimized).captures[-1].supported
