"""One cache context per block list (HunyuanVideo-style stacks): own Fn/Bn, decision and stats."""

import json
import os

import pytest
import torch

import dit_fx
from helpers import BlockCounter, rel_err, run_steps
from reference_harness import run_cache_dit_lists
from tiny_models import MODELS, make_trajectory

DOUBLE, SINGLE = "transformer_blocks", "single_transformer_blocks"
STEPS = 16


def _cfg(fn, bn, threshold, warmup=3, **extra):
    return dit_fx.DBCacheConfig(fn_blocks=fn, bn_blocks=bn, residual_diff_threshold=threshold, max_warmup_steps=warmup, **extra)


def test_plans_nest_and_dump_shows_each_list(tmp_path):
    model = MODELS["hunyuanvideo"].build()
    dit_fx.optimize(model, {SINGLE: _cfg(2, 1, 0.1), DOUBLE: _cfg(1, 0, 0.1)})  # any order: graph order wins
    run_steps(model, make_trajectory("hunyuanvideo", 1))
    plans = dit_fx.plan(model)
    assert list(plans) == [DOUBLE, SINGLE]
    assert plans[DOUBLE].leads and not plans[SINGLE].leads
    assert plans[DOUBLE].partition_blocks() == {
        "head": [f"{DOUBLE}.0"],
        "body": [f"{DOUBLE}.{i}" for i in range(1, 4)],
        "tail": [],
    }
    assert plans[SINGLE].partition_blocks()["tail"] == [f"{SINGLE}.5"]
    out = dit_fx.dump(model, str(tmp_path))
    cap = os.path.join(out, "capture_0")
    for name in ["glue.py", "head.py", "body.py", "tail.glue.py", "tail.head.py", "tail.body.py", "tail.tail.py"]:
        assert os.path.getsize(os.path.join(cap, name)) > 0, name
    inner = open(os.path.join(cap, "tail.glue.py")).read()
    assert "dbcache_decide" in inner and "dbcache_read_timestep" not in inner  # it follows, no timestep
    assert "single_transformer_blocks" in open(os.path.join(cap, "tail.body.py")).read()
    data = json.load(open(os.path.join(out, "plan.json")))
    assert [p["scope"] for p in data["block_list_plans"]] == [DOUBLE, SINGLE]
    assert data["config"][SINGLE]["fn_blocks"] == 2


@pytest.mark.parametrize("compile", [False, True])
def test_exact_when_nothing_is_cached(compile):
    model = MODELS["hunyuanvideo"].build()
    steps = make_trajectory("hunyuanvideo", 4)
    expected = run_steps(model, steps)
    dit_fx.optimize(model, {DOUBLE: _cfg(1, 1, 0.0), SINGLE: _cfg(2, 1, 0.0)}, compile=compile)
    got = run_steps(model, steps)
    for a, b in zip(got, expected):
        if compile:
            assert rel_err(a, b) < 1e-5
        else:
            assert torch.equal(a, b)


def test_each_list_skips_its_own_middle():
    model = MODELS["hunyuanvideo"].build()
    double_mid = BlockCounter(list(model.transformer_blocks)[1:4])
    single_mid = BlockCounter(list(model.single_transformer_blocks)[1:5])
    # The double list caches every step after warmup; the single list never does.
    dit_fx.optimize(model, {DOUBLE: _cfg(1, 0, 100.0, warmup=1), SINGLE: _cfg(1, 1, 0.0, warmup=1)})
    run_steps(model, make_trajectory("hunyuanvideo", 5))
    stats = dit_fx.summary(model)
    assert stats[DOUBLE].cached_steps == [1, 2, 3, 4] and stats[SINGLE].cached_steps == []
    assert double_mid.value() == 3 * 1 and single_mid.value() == 4 * 5
    assert stats[SINGLE].executed_steps == stats[DOUBLE].executed_steps == 5


def test_unnamed_list_runs_every_step():
    model = MODELS["hunyuanvideo"].build()
    doubles = BlockCounter(model.transformer_blocks)
    single_mid = BlockCounter(list(model.single_transformer_blocks)[1:6])
    dit_fx.optimize(model, {SINGLE: _cfg(1, 0, 100.0, warmup=1)})
    run_steps(model, make_trajectory("hunyuanvideo", 4))
    assert dit_fx.summary(model)[SINGLE].cached_steps == [1, 2, 3]
    assert doubles.value() == 4 * 4 and single_mid.value() == 5 * 1
    assert list(dit_fx.plan(model)) == [SINGLE] and dit_fx.plan(model)[SINGLE].leads


def test_parity_with_cache_dit_per_list_contexts():
    model = MODELS["hunyuanvideo"].build()
    steps = make_trajectory("hunyuanvideo", STEPS)
    lists = {
        DOUBLE: dict(Fn=1, Bn=0, residual_diff_threshold=0.22, max_warmup_steps=3),
        SINGLE: dict(Fn=2, Bn=1, residual_diff_threshold=0.32, max_warmup_steps=4),
    }
    ref = run_cache_dit_lists(model, steps, lists)
    dit_fx.optimize(
        model, {name: _cfg(kw["Fn"], kw["Bn"], kw["residual_diff_threshold"], kw["max_warmup_steps"]) for name, kw in lists.items()}
    )
    got = run_steps(model, steps)
    stats = dit_fx.summary(model)
    for name in lists:
        want = ref["lists"][name]
        assert want["cached_steps"], f"{name}: the case must cache something to be meaningful"
        assert stats[name].cached_steps == want["cached_steps"], name
        assert stats[name].residual_diffs.keys() == want["residual_diffs"].keys(), name
        for step, diff in want["residual_diffs"].items():
            assert stats[name].residual_diffs[step] == pytest.approx(diff, rel=1e-4, abs=1e-6)
    assert ref["lists"][DOUBLE]["cached_steps"] != ref["lists"][SINGLE]["cached_steps"]  # decided apart
    for step, (a, b) in enumerate(zip(got, ref["outputs"])):
        assert rel_err(a, b) <= 1e-5, f"step {step}"


def test_lists_follow_one_step_and_branch_counter():
    """Separate CFG and generations come from the first list; every list agrees with it."""
    model = MODELS["hunyuanvideo"].build()
    dit_fx.optimize(model, {DOUBLE: _cfg(1, 0, 100.0, warmup=1), SINGLE: _cfg(1, 0, 100.0, warmup=2)})
    cond, uncond = make_trajectory("hunyuanvideo", 4), make_trajectory("hunyuanvideo", 4, seed=5)
    with torch.no_grad():
        for generation in (1, 2):
            for c, u in zip(cond, uncond):  # two calls per timestep: two CFG branches
                model(**c)
                model(**u)
            stats = dit_fx.summary(model)
            for name, warm in ((DOUBLE, 1), (SINGLE, 2)):
                assert stats[name].generation == generation and stats[name].executed_steps == 4
                assert stats[name].cached_steps == list(range(warm, 4))
                assert stats[name].cfg_cached_steps == list(range(warm, 4))


def test_per_list_summary_details_and_plot(tmp_path):
    model = MODELS["hunyuanvideo"].build()
    dit_fx.optimize(model, {DOUBLE: _cfg(1, 0, 0.22), SINGLE: _cfg(1, 0, 0.5)})
    run_steps(model, make_trajectory("hunyuanvideo", 8))
    stats = dit_fx.summary(model, details=True)
    assert "threshold 0.22" in stats[DOUBLE].details and "threshold 0.5" in stats[SINGLE].details
    pytest.importorskip("matplotlib")
    path = dit_fx.plot_timeline(model, str(tmp_path / "t.png"))
    assert os.path.getsize(path) > 1000


def test_bad_block_list_configs():
    model = MODELS["hunyuanvideo"].build()
    with pytest.raises(ValueError, match="'blocks'"):
        dit_fx.optimize(model, {"blocks": _cfg(1, 0, 0.1)})
    with pytest.raises(ValueError, match="fn_blocks \\+ bn_blocks"):
        dit_fx.optimize(model, {DOUBLE: _cfg(3, 1, 0.1)})
    with pytest.raises(ValueError, match="num_inference_steps"):
        dit_fx.optimize(model, {DOUBLE: _cfg(1, 0, 0.1), SINGLE: _cfg(1, 0, 0.1, num_inference_steps=4)})
    with pytest.raises(ValueError, match="not a mix"):
        dit_fx.optimize(model, {DOUBLE: _cfg(1, 0, 0.1), "fn_blocks": 2})
    with pytest.raises(ValueError, match="unknown DBCacheConfig field"):
        dit_fx.optimize(model, {DOUBLE: {"fn": 1}})


def test_backend_options_take_per_list_configs():
    model = MODELS["hunyuanvideo"].build()
    steps = make_trajectory("hunyuanvideo", 5)
    expected = run_steps(model, steps)
    config = {DOUBLE: _cfg(1, 0, 100.0, warmup=1), SINGLE: _cfg(1, 1, 0.0)}
    compiled = torch.compile(model, backend="dit_fx", options={"config": config, "compile": False})
    got = run_steps(compiled, steps)
    stats = dit_fx.summary(model)
    assert stats[DOUBLE].cached_steps == [1, 2, 3, 4] and stats[SINGLE].cached_steps == []
    assert torch.equal(got[0], expected[0])
    torch._dynamo.reset()
    other = MODELS["hunyuanvideo"].build()
    compiled = torch.compile(other, backend="dit_fx", options={"config": {"blocks": _cfg(1, 0, 0.1)}})
    with pytest.warns(RuntimeWarning, match="no block list named 'blocks'"):
        got = run_steps(compiled, steps[:1])
    assert torch.equal(got[0], expected[0])
