"""Tensor parallelism derived from the graph (``ParallelConfig(tp=T)``), on CPU ranks (gloo): each
rank computes its share of the heads and MLP features of every block from its own rows/columns of
the weights, one all-reduce after each row-parallel linear, and the output equals the
single-process run; with the cache on, every rank takes the single-process decisions. Also the
2-D layout (tensor parallel inside, ring context parallel across), and compiled regions.
"""

import pytest
import torch

import dit_fx
from parallel_harness import gloo_group, CACHED, assert_like_one_process, spawn

EXACT = [("models", "flux"), ("models", "wan"), ("models", "qwenimage"), ("models", "hunyuanvideo"),
         ("models", "sd3"), ("zoo", "cogvideox"), ("zoo", "ltx")]
# Every attention and MLP linear of the blocks split: (column-parallel, row-parallel) linears.
# FLUX: 2 double blocks x (Q/K/V and their text twins, 2 MLP inputs | 2 outputs, 2 MLP outputs)
# + 3 single blocks x (Q/K/V, MLP input | the fused output). Wan: 3 blocks x (self Q/K/V, cross
# Q/K/V, MLP input | 2 attention outputs, MLP output).
SPLIT = {"flux": (2 * 8 + 3 * 4, 2 * 4 + 3 * 1), "wan": (3 * 7, 3 * 3)}


def _check(ranks, key):
    for r in ranks:
        res = r[key]
        assert res["features_reason"] is None, f"{key}: refused: {res['features_reason']}"
        assert res["columns"] and res["rows"] and res["supported"], key
        assert_like_one_process(res, key)


@pytest.mark.timeout(600)
def test_tensor_parallel_over_two_ranks_equals_one_process(tmp_path):
    jobs = [(s, n, 0.0) for s, n in EXACT] + [("models", n, t) for n, t in CACHED.items()]
    jobs.append(("models", "flux", CACHED["flux"], dict(compile=True)))
    ranks = spawn(tmp_path, 2, dict(tp=2), jobs)
    for key in ranks[0]:
        _check(ranks, key)
    for name, threshold in CACHED.items():
        assert ranks[0][(name, threshold)]["expected_cached"], f"{name}: the threshold must cache some steps"
    for name, (columns, rows) in SPLIT.items():
        res = ranks[1][(name, 0.0)]
        assert (len(res["columns"]), len(res["rows"])) == (columns, rows), (name, res["kept"])
        # What stays whole is the AdaLN modulation (its chunks scale the whole hidden stream).
        assert all("whole feature dimension" in why for _, why in res["kept"]), res["kept"]
    assert ranks[0][("flux", CACHED["flux"], "compile")]["compiles"] > 0
    # The dump shows the all-reduces after the row-parallel linears, and Wan's QK norm over all heads.
    text = open(tmp_path / "dump" / "capture_0" / "captured_graph.py").read()
    assert "all_reduce_sum" in text


@pytest.mark.timeout(600)
def test_tensor_parallel_inside_ring_context_parallel_over_four_ranks(tmp_path):
    """tp=2 x ring=2: ranks (0, 1) and (2, 3) split features, (0, 2) and (1, 3) split tokens."""
    jobs = [("models", "flux", 0.0), ("models", "wan", CACHED["wan"])]
    ranks = spawn(tmp_path, 4, dict(tp=2, ring=2), jobs)
    for key in ranks[0]:
        _check(ranks, key)
        for r in ranks:
            assert r[key]["reason"] is None and r[key]["sharded"] and r[key]["attentions"], key  # tokens split too
    for name, (columns, rows) in SPLIT.items():
        key = (name, 0.0 if name == "flux" else CACHED[name])
        assert (len(ranks[3][key]["columns"]), len(ranks[3][key]["rows"])) == (columns, rows), name


def test_tensor_parallel_degree_must_divide_the_heads():
    from tiny_models import MODELS

    model = MODELS["flux"].build()  # 2 heads
    with pytest.raises(ValueError, match="tp=4"):
        dit_fx.ParallelConfig(tp=4).check_model(model)
    with pytest.raises(ValueError, match="ulysses=2"):
        dit_fx.ParallelConfig(tp=2, ulysses=2).check_model(model)  # 1 head per tensor-parallel rank
    dit_fx.ParallelConfig(tp=2).check_model(model)
    with pytest.raises(ValueError, match="cfg"):
        dit_fx.ParallelConfig(cfg=2, tp=2)


def _release_job(rank: int, world: int, where: str, out_dir: str) -> None:
    import os
    import warnings

    with gloo_group(rank, world, where):
        from dit_fx.api import session_for
        from tiny_models import MODELS

        spec = MODELS["wan"]
        cfg = dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=0, residual_diff_threshold=CACHED["wan"], max_warmup_steps=1)
        pristine, single, model = spec.build(), dit_fx.optimize(spec.build(), cfg), spec.build()
        result = dict(rounds=[])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh("cpu", (world,))  # a user's mesh instead of a group
            dit_fx.optimize(model, cfg, parallel=dit_fx.ParallelConfig(tp=2, mesh=mesh))
            with torch.no_grad():
                for batch in (1, 2, 1):  # batch 2 is captured after the weights were released
                    steps = [spec.make_inputs(i, 900.0 - 80 * i, batch=batch) for i in range(3)]
                    dit_fx.reset(single)
                    expected = [single(**kw)[0] for kw in steps]
                    got = [model(**kw)[0] for kw in steps]
                    released = sum(p.numel() for p in model.parameters() if p.dim() and not any(p.stride()))
                    result["rounds"].append(dict(got=got, expected=expected, released=released,
                                                 cached=dit_fx.summary(model).cached_steps,
                                                 expected_cached=dit_fx.summary(single).cached_steps))
        result["warnings"] = [str(w.message) for w in caught if "dit_fx" in str(w.message)]
        result["released_bytes"] = [r.released_bytes for r in session_for(model).feature_records]
        result["nan_before_disable"] = bool(torch.isnan(model.blocks[0].ffn.net[0].proj.weight).all())
        dit_fx.disable(model)  # every rank: the parts are gathered back
        result["restored"] = all(torch.equal(a, b) for a, b in zip(model.parameters(), pristine.parameters()))
        torch.save(result, os.path.join(out_dir, f"release{rank}.pt"))


@pytest.mark.timeout(600)
def test_split_weights_are_released_and_gathered_back_by_disable(tmp_path):
    """Once split, the model's whole values of the split weights are freed (each rank keeps its
    parts); a new input shape captures again from the parts; ``disable`` gathers them back."""
    import torch.multiprocessing as mp

    from parallel_harness import rendezvous

    mp.spawn(_release_job, args=(2, rendezvous(tmp_path), str(tmp_path)), nprocs=2)
    total = sum(p.numel() for p in __import__("tiny_models").MODELS["wan"].build().parameters())
    for rank in range(2):
        res = torch.load(tmp_path / f"release{rank}.pt")
        assert not res["warnings"], res["warnings"]
        for r in res["rounds"]:
            assert r["cached"] == r["expected_cached"]
            for a, b in zip(r["got"], r["expected"]):
                assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
            assert r["released"] > total / 2, "the split linears hold most of the blocks' weights"
        assert res["released_bytes"][0] > 0 and res["nan_before_disable"]
        assert res["restored"], "disable must give back the model's weights bit for bit"
