"""A model the user parallelized with diffusers' own ``enable_parallelism`` (Ulysses context
parallelism over 2 CPU ranks, gloo), then optimized: its split/gather hooks are captured with the
forward (before, dit_fx bypassed the root's hooks and the output came back gathered twice: a shape
mismatch), the result equals the single-process dit_fx run, and the cache decision agrees across
ranks (the diff's sums are all-reduced at the ``HostReads`` seam)."""

import os
import sys

import pytest
import torch
import torch.multiprocessing as mp

from parallel_harness import gloo_group, rendezvous

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 6
THRESHOLDS = {"flux": 1.28}  # random weights: between the tiny models' step-to-step diffs


def _rank(rank: int, world: int, where: str, out_dir: str, name: str = "flux") -> None:
    sys.path.insert(0, HERE)
    with gloo_group(rank, world, where):
        import dit_fx
        from diffusers import ContextParallelConfig
        from torch.distributed.device_mesh import init_device_mesh
        from tiny_models import MODELS

        spec = MODELS[name]
        steps = [spec.make_inputs(i, 900.0 - 80 * i) for i in range(STEPS)]
        cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=THRESHOLDS[name], max_warmup_steps=1)
        single = dit_fx.optimize(spec.build(), cfg)
        with torch.no_grad():
            expected = [single(**kw)[0] for kw in steps]
        expected_stats = dit_fx.summary(single)
        model = spec.build()
        torch.accelerator.device_count = lambda: 1  # diffusers picks a device by this; CPU has none
        mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("ring", "ulysses"))
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world, mesh=mesh))
        dit_fx.optimize(model, cfg)
        with torch.no_grad():
            got = [model(**kw)[0] for kw in steps]
        stats = dit_fx.summary(model)
        # diffusers' own context parallelism (no dit_fx) against dit_fx's, derived from the graph.
        plain = spec.build()
        plain.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world, mesh=mesh))
        ours = dit_fx.optimize(spec.build(), dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0),
                               parallel=dit_fx.ParallelConfig(ulysses=world))
        with torch.no_grad():
            diffusers_cp = [_plain(plain(**kw)[0]) for kw in steps]
            ours_cp = [ours(**kw)[0] for kw in steps]
        torch.save(dict(got=got, expected=expected, cached=stats.cached_steps, diffs=stats.residual_diffs,
                        diffusers_cp=diffusers_cp, ours_cp=ours_cp,
                        expected_cached=expected_stats.cached_steps, expected_diffs=expected_stats.residual_diffs,
                        supported=dit_fx.inspect(model).captures[-1].supported),
                   os.path.join(out_dir, f"rank{rank}.pt"))


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A diffusers CP output may be a functional collective's lazy tensor: wait for it."""
    return x.wait() if hasattr(x, "wait") else x


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["flux"])  # tiny Wan: diffusers skips a split with a logger call Dynamo cannot trace
def test_optimize_on_a_diffusers_context_parallel_model_agrees_across_ranks(tmp_path, name):
    pytest.importorskip("diffusers.models._modeling_parallel")
    mp.spawn(_rank, args=(2, rendezvous(tmp_path), str(tmp_path), name), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in ranks:
        assert r["supported"]
        for a, b in zip(r["ours_cp"], r["diffusers_cp"]):  # dit_fx's CP equals diffusers' CP
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max())), float((a - b).abs().max())
        assert r["expected_cached"], "the config must cache some steps for this test to mean anything"
        assert r["cached"] == r["expected_cached"]  # same decisions as one process, on every rank
        for step, diff in r["expected_diffs"].items():
            assert r["diffs"][step] == pytest.approx(diff, rel=1e-5)
        for a, b in zip(r["got"], r["expected"]):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert ranks[0]["diffs"] == ranks[1]["diffs"]  # bit-identical: the all-reduced sums


def _decide_rank(rank: int, world: int, where: str, out_dir: str) -> None:
    with gloo_group(rank, world, where):
        import dit_fx
        from dit_fx.runtime import CacheContext
        from dit_fx.runtime.host import ReducedHostReads

        full = _shards()
        ctx = CacheContext(dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.1, max_warmup_steps=1),
                           host=ReducedHostReads())
        decisions = []
        for step, shards in enumerate(full):
            fn = shards[rank]  # each rank sees only its shard, whose local diff differs from the other's
            reuse = ctx.decide(fn, torch.zeros_like(fn), torch.tensor([1.0 - 0.1 * step]))
            ctx.run_middle(reuse, lambda h: h + 1.0, (fn,), (fn,))
            decisions.append(reuse)
        torch.save(dict(decisions=decisions, diffs=ctx.stats.residual_diffs), os.path.join(out_dir, f"d{rank}.pt"))


def _shards():
    """Per step, two shards of one Fn residual: shard 0 barely moves, shard 1 moves a lot."""
    base = torch.arange(1.0, 9.0).reshape(2, 4)
    return [(base * (1 + 0.01 * k), base * (1 + 0.15 * k)) for k in range(5)]


def test_ranks_with_different_local_diffs_take_one_decision(tmp_path):
    """By construction: the diff's sums are all-reduced, so ranks whose own shards would decide
    differently (one alone would cache, the other would not) take the same branch, the one a
    single process on the whole tensor takes."""
    import dit_fx
    from dit_fx.runtime import CacheContext

    mp.spawn(_decide_rank, args=(2, rendezvous(tmp_path), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"d{r}.pt") for r in range(2)]
    whole = CacheContext(dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.1, max_warmup_steps=1))
    alone = [CacheContext(dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.1, max_warmup_steps=1)) for _ in range(2)]
    expected, local = [], [[], []]
    for step, shards in enumerate(_shards()):
        t = torch.tensor([1.0 - 0.1 * step])
        fn = torch.cat(shards)
        reuse = whole.decide(fn, torch.zeros_like(fn), t)
        whole.run_middle(reuse, lambda h: h + 1.0, (fn,), (fn,))
        expected.append(reuse)
        for r in range(2):
            own = alone[r].decide(shards[r], torch.zeros_like(shards[r]), t)
            alone[r].run_middle(own, lambda h: h + 1.0, (shards[r],), (shards[r],))
            local[r].append(own)
    assert local[0] != local[1], "the shards alone must disagree for this test to mean anything"
    assert ranks[0]["decisions"] == ranks[1]["decisions"] == expected
    assert ranks[0]["diffs"] == ranks[1]["diffs"]
    for step, diff in whole.stats.residual_diffs.items():
        assert ranks[0]["diffs"][step] == pytest.approx(diff, rel=1e-6)


def _cfg_rank(rank: int, world: int, where: str, out_dir: str) -> None:
    sys.path.insert(0, HERE)
    with gloo_group(rank, world, where):
        import dit_fx
        from tiny_models import MODELS

        spec = MODELS["flux"]
        steps = [spec.make_inputs(i, 900.0 - 80 * i, batch=2) for i in range(STEPS)]
        cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=THRESHOLDS["flux"], max_warmup_steps=1)
        model = dit_fx.optimize(spec.build(), cfg, parallel=dit_fx.ParallelConfig(cfg=world))
        with torch.no_grad():
            got = [model(**kw)[0] for kw in steps]
        torch.save(dict(got=got, cached=dit_fx.summary(model).cached_steps), os.path.join(out_dir, f"cfg{rank}.pt"))


def test_cfg_parallel_runs_each_half_of_a_batched_cfg_call_on_its_own_rank(tmp_path):
    """cfg=2: rank r runs row r of every batch-2 call with its own cache decisions (a branch of its
    own), and both ranks return the whole batch: exactly the single-process runs of each half."""
    import dit_fx
    from tiny_models import MODELS

    mp.spawn(_cfg_rank, args=(2, rendezvous(tmp_path), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"cfg{r}.pt") for r in range(2)]
    spec = MODELS["flux"]
    steps = [spec.make_inputs(i, 900.0 - 80 * i, batch=2) for i in range(STEPS)]
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=THRESHOLDS["flux"], max_warmup_steps=1)
    halves, cached = [], []
    for r in range(2):
        model = dit_fx.optimize(spec.build(), cfg)
        with torch.no_grad():
            halves.append([model(**{k: (v[r:r + 1] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == 2 else v)
                                    for k, v in kw.items()})[0] for kw in steps])
        cached.append(dit_fx.summary(model).cached_steps)
    assert cached[0] or cached[1], "the config must cache some steps for this test to mean anything"
    for r in range(2):
        assert ranks[r]["cached"] == cached[r]
        for step, out in enumerate(ranks[r]["got"]):
            assert out.shape[0] == 2
            assert torch.allclose(out, torch.cat([halves[0][step], halves[1][step]]), rtol=1e-5, atol=1e-6)


def test_parallel_config_is_validated():
    import dit_fx

    for kwargs, field in ((dict(cfg=3), "cfg"), (dict(ulysses=0), "ulysses"), (dict(ring=1.5), "ring"), (dict(tp=True), "tp"),
                          (dict(cfg=2, tp=2), "cfg"), (dict(cfg=2, ulysses=2), "cfg"),
                          (dict(mesh="cpu"), "mesh"), (dict(release_weights=1), "release_weights")):
        with pytest.raises(ValueError, match=field):
            dit_fx.ParallelConfig(**kwargs)
    with pytest.raises(ValueError, match="process group"):  # none started in this process
        dit_fx.optimize(torch.nn.Linear(2, 2), parallel=dit_fx.ParallelConfig(cfg=2))
    with pytest.raises(ValueError, match="ParallelConfig"):
        dit_fx.optimize(torch.nn.Linear(2, 2), parallel={"cfg": 2})


def _separate_loop(model, spec, negative, change_at=None):
    """A pipeline's loop with separate CFG: per step the cond call, then the uncond call on the same
    latents and timestep with the negative prompt embeddings (diffusers names them by cache_context)."""
    outs = []
    with torch.no_grad():
        for i in range(STEPS):
            kw = spec.make_inputs(i, 900.0 - 80 * i)
            neg = negative if change_at is None or i < change_at else negative + 1.0
            with model.cache_context("cond"):
                cond = model(**kw)[0]
            with model.cache_context("uncond"):
                uncond = model(**{**kw, "encoder_hidden_states": neg})[0]
            outs.append((cond, uncond))
    return outs


def _wan_pipeline_runs(parallel=None):
    """A tiny WanPipeline (separate CFG under ``cache_context``), two generations with other seeds
    and prompts: the latents each returns."""
    import dit_fx
    from tiny_pipelines import build_wan, wan_call_kwargs

    pipe = build_wan()
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.3, max_warmup_steps=1)
    dit_fx.optimize(pipe, cfg, parallel=parallel)
    with torch.no_grad():
        return [pipe(**wan_call_kwargs(num_inference_steps=6, seed=seed)).frames for seed in (0, 1)]


def _separate_rank(rank: int, world: int, where: str, out_dir: str) -> None:
    sys.path.insert(0, HERE)
    with gloo_group(rank, world, where):
        import warnings

        import dit_fx
        from tiny_models import MODELS

        spec = MODELS["wan"]
        shape = spec.make_inputs(0, 900.0)["encoder_hidden_states"].shape
        negative = torch.randn(shape, generator=torch.Generator().manual_seed(7))
        result = {}
        for threshold, change_at in ((1.0, None), (0.0, 3)):
            cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=threshold, max_warmup_steps=1)
            model = dit_fx.optimize(spec.build(), cfg, parallel=dit_fx.ParallelConfig(cfg=world))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                outs = _separate_loop(model, spec, negative, change_at)
            placement = model.forward.cfg_placement
            result[threshold] = dict(outs=outs, foreseen=placement.steps_foreseen, missed=placement.mispredictions,
                                     cached=dit_fx.summary(model).cached_steps,
                                     warnings=[str(w.message) for w in caught if "dit_fx" in str(w.message)])
        result["negative"] = negative
        result["pipeline"] = _wan_pipeline_runs(dit_fx.ParallelConfig(cfg=world))
        torch.save(result, os.path.join(out_dir, f"sep{rank}.pt"))


@pytest.mark.timeout(300)
def test_cfg_parallel_places_separate_cond_and_uncond_calls_on_their_own_ranks(tmp_path):
    """cfg=2 with a pipeline that calls the transformer once per branch: rank 0 computes the cond
    calls, rank 1 the uncond calls, the second foreseen from the first (same latents, learned
    negative embeddings) and computed at the same time; both ranks return both, exactly what one
    process returns. A negative that changes mid-generation is caught: computed again, exact."""
    import dit_fx
    from tiny_models import MODELS

    mp.spawn(_separate_rank, args=(2, rendezvous(tmp_path), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"sep{r}.pt") for r in range(2)]
    spec = MODELS["wan"]
    for threshold, change_at in ((1.0, None), (0.0, 3)):
        cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=threshold, max_warmup_steps=1)
        single = dit_fx.optimize(spec.build(), cfg)
        expected = _separate_loop(single, spec, ranks[0]["negative"], change_at)
        if threshold:
            assert dit_fx.summary(single).cached_steps, "the threshold must cache some steps"
        for r in ranks:
            res = r[threshold]
            # Every step after the first (after the misprediction: the step that relearned) computed both at once.
            assert res["foreseen"] == (STEPS - 1 if change_at is None else STEPS - 1 - change_at), res["foreseen"]
            assert res["missed"] == (0 if change_at is None else 1)
            assert len(res["warnings"]) == (0 if change_at is None else 1), res["warnings"]
            for (c, u), (ec, eu) in zip(res["outs"], expected):
                assert torch.allclose(c, ec, rtol=1e-5, atol=1e-6) and torch.allclose(u, eu, rtol=1e-5, atol=1e-6)
    assert ranks[0][1.0]["cached"], "rank 0's (cond) branch cached as one process's cond branch did"
    # The same through a WanPipeline (its cond/uncond calls under cache_context), two generations.
    expected = _wan_pipeline_runs()
    for r in ranks:
        for got, want in zip(r["pipeline"], expected):
            # Within fp32 rounding of the sampler and VAE, whose thread count differs between processes.
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max())), float((got - want).abs().max())
