"""Context parallelism derived from the graph (``ParallelConfig(ulysses=U, ring=R)``), on CPU ranks
(gloo): each rank holds a share of the tokens inside the blocks, attention spans the ranks, and
the output equals the single-process run; with the cache on, every rank takes the single-process
decisions (the diff's sums are all-reduced). One spawn per world size runs every model, to keep
the suite short.
"""

import os
import socket
import sys
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 3
# Models every rank runs (source, name, threshold): threshold 0 computes every step; a threshold
# between the tiny models' step-to-step diffs caches some (random weights).
EXACT = [("models", "flux"), ("models", "wan"), ("models", "qwenimage"), ("models", "hunyuanvideo"),
         ("models", "sd3"), ("zoo", "cogvideox"), ("zoo", "ltx"), ("zoo", "flux2")]
CACHED = {"flux": 1.28, "wan": 1.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(source: str, name: str):
    if source == "models":
        from tiny_models import MODELS

        return MODELS[name]
    from tiny_zoo import ZOO

    return ZOO[name]


def _config(spec, threshold: float):
    import dit_fx

    cfg = dit_fx.DBCacheConfig(fn_blocks=getattr(spec, "fn", 1), bn_blocks=getattr(spec, "bn", 0),
                               residual_diff_threshold=threshold, max_warmup_steps=1)
    return {spec.scope: cfg} if getattr(spec, "scope", None) else cfg


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out.sample


def _cached(model):
    stats = __import__("dit_fx").summary(model)  # a dict by block list when one list is cached
    return {k: v.cached_steps for k, v in stats.items()} if isinstance(stats, dict) else stats.cached_steps


def _run(model, steps):
    with torch.no_grad():
        return [_first(model(**kw)) for kw in steps]


def _job(rank: int, world: int, port: int, out_dir: str, parallel: dict, jobs) -> None:
    sys.path.insert(0, HERE)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import dit_fx
        from dit_fx.api import session_for

        results = {}
        for source, name, threshold, *options in jobs:
            options = options[0] if options else {}
            spec = _spec(source, name)
            steps = [spec.make_inputs(i, 900.0 - 80 * i) for i in range(STEPS)]
            single = dit_fx.optimize(spec.build(), _config(spec, threshold))
            expected = _run(single, steps)
            model = spec.build()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                dit_fx.optimize(model, _config(spec, threshold), parallel=dit_fx.ParallelConfig(**parallel), **options)
                got = _run(model, steps)
            records = session_for(model).shard_records
            record = records[-1] if records else None
            plan = dit_fx.inspect(model).captures[-1]
            if rank == 0 and name == "flux" and threshold == 0.0:
                dit_fx.dump(model, os.path.join(out_dir, "dump"))
            results[(name, threshold, *sorted(options))] = dict(
                got=got, expected=expected, cached=_cached(model),
                expected_cached=_cached(single),
                reason=record.reason if record else f"not sharded: {plan.reason}",
                attentions=len(record.attentions) if record else 0, sharded=record.sharded if record else [],
                pads=record.zeroed if record else 0,
                supported=plan.supported, compiles=dit_fx.inspect(model).regions.compiles,
                warnings=[str(w.message) for w in caught if "dit_fx" in str(w.message)],
            )
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, world: int, parallel: dict, jobs):
    mp.spawn(_job, args=(world, _free_port(), str(tmp_path), parallel, jobs), nprocs=world)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def _check(ranks, key, exact: bool = True):
    for r in ranks:
        res = r[key]
        assert res["reason"] is None, f"{key}: refused: {res['reason']}"
        assert res["attentions"] > 0 and res["sharded"] and res["supported"]
        assert not res["warnings"], res["warnings"]
        assert res["cached"] == res["expected_cached"]  # the single-process decisions on every rank
        for a, b in zip(res["got"], res["expected"]):
            assert a.shape == b.shape
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max())), (key, float((a - b).abs().max()))


@pytest.mark.timeout(600)
def test_ulysses_over_two_ranks_equals_one_process_for_every_family(tmp_path):
    jobs = [(s, n, 0.0) for s, n in EXACT] + [("models", n, t) for n, t in CACHED.items()]
    ranks = _spawn(tmp_path, 2, dict(ulysses=2), jobs)
    for _, name in EXACT:
        _check(ranks, (name, 0.0))
    for name, threshold in CACHED.items():
        assert ranks[0][(name, threshold)]["expected_cached"], f"{name}: the threshold must cache some steps"
        _check(ranks, (name, threshold))
    # The dump shows the shard, the collectives and the gather.
    text = open(tmp_path / "dump" / "capture_0" / "captured_graph.py").read()
    for op in ("shard_tokens", "sequence_attention", "gather_tokens"):
        assert op in text


@pytest.mark.timeout(600)
def test_ulysses_by_ring_over_four_ranks(tmp_path):
    """Also compiled (Inductor regions holding the collectives)."""
    jobs = [("models", "flux", 0.0), ("models", "flux", CACHED["flux"], dict(compile=True)), ("models", "wan", CACHED["wan"])]
    ranks = _spawn(tmp_path, 4, dict(ulysses=2, ring=2), jobs)
    for key in ranks[0]:
        _check(ranks, key)
    assert ranks[0][("flux", CACHED["flux"], "compile")]["compiles"] > 0


@pytest.mark.timeout(600)
def test_token_counts_that_do_not_divide_are_padded(tmp_path):
    """Ring over 3 ranks: FLUX's 8 text and 16 image tokens, Wan's 128 video tokens do not divide
    by 3. Each rank pads its chunk; padded keys are dropped from attention, padded rows zeroed
    after each block (they add nothing to the diff), and the gather returns the exact tokens."""
    jobs = [("models", "flux", 0.0), ("models", "flux", CACHED["flux"]), ("models", "wan", CACHED["wan"])]
    ranks = _spawn(tmp_path, 3, dict(ring=3), jobs)
    for key in ranks[0]:
        _check(ranks, key)
    # 8 and 16 tokens over 3 ranks: chunks of 3 and 6, so the last rank holds padding.
    flux = ranks[2][("flux", 0.0)]
    assert ("hidden_states", 1, ("hidden_states",)) in flux["sharded"]
    assert flux["pads"] > 0, "the padded path (pad rows zeroed after each block) must have run"
