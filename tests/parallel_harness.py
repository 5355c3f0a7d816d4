"""Spawning CPU ranks (gloo) that each run the same models single-process and parallel, for the
parallelism tests (``test_parallel_sequence.py``, ``test_parallel_tensor.py``). One spawn per
world size runs every model, to keep the suite short."""

import contextlib
import os
import sys
import uuid
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 3
# Models every rank runs (source, name, threshold): threshold 0 computes every step; a threshold
# between the tiny models' step-to-step diffs caches some (random weights).
CACHED = {"flux": 1.28, "wan": 1.0}


@contextlib.contextmanager
def gloo_group(rank: int, world: int, rendezvous: str):
    """This process as rank ``rank`` of a gloo group of ``world`` met through the file ``rendezvous``
    (no TCP port to pick: groups of tests running side by side never meet).

    On a clean exit the group is destroyed and the process ends right there (``os._exit(0)``), so a
    rank function must do all its work inside the block. Interpreter teardown is skipped on purpose:
    gloo's worker threads can abort the process there (SIGABRT, "terminate called without an active
    exception", seen once in CI after every result was written). An exception still propagates, so
    ``mp.spawn`` reports the rank's traceback."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        yield
    except BaseException:
        dist.destroy_process_group()
        raise
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def rendezvous(tmp_path) -> str:
    """A fresh rendezvous file for one spawn under ``tmp_path`` (the file must not exist yet)."""
    return os.path.join(str(tmp_path), f"rendezvous-{uuid.uuid4().hex}")


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


def _groups_reused(pc) -> bool:
    """Asking a ParallelConfig for its groups again (another model, the same degrees) gives the same groups."""
    seq, feat = (pc.sequence_groups(), pc.sequence_groups()), (pc.feature_group(), pc.feature_group())
    same_seq = seq[0] is None or all(getattr(seq[0], k) is getattr(seq[1], k) for k in ("group", "ulysses_group", "ring_group"))
    return same_seq and (feat[0] is None or feat[0].group is feat[1].group)


def job(rank: int, world: int, where: str, out_dir: str, parallel: dict, jobs) -> None:
    sys.path.insert(0, HERE)
    with gloo_group(rank, world, where):
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
            features = dit_fx.inspect(model).tensor_parallel
            plan = dit_fx.inspect(model).captures[-1]
            if rank == 0 and name == "flux" and threshold == 0.0:
                dit_fx.dump(model, os.path.join(out_dir, "dump"))
            results[(name, threshold, *sorted(options))] = dict(
                got=got, expected=expected, cached=_cached(model),
                expected_cached=_cached(single),
                reason=record.reason if record else f"not sharded: {plan.reason}",
                attentions=len(record.attentions) if record else 0, sharded=record.sharded if record else [],
                pads=record.zeroed if record else 0,
                columns=[c for c, _ in features.columns] if features else [], rows=list(features.rows) if features else [],
                kept=list(features.kept) if features else [], features_reason=features.reason if features else None,
                supported=plan.supported, compiles=dit_fx.inspect(model).regions.compiles,
                fused=getattr(dit_fx.inspect(model).fused_linears, "fused_linears", 0),
                warnings=[str(w.message) for w in caught if "dit_fx" in str(w.message)],
                groups_reused=_groups_reused(dit_fx.ParallelConfig(**parallel)),
            )
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def spawn(tmp_path, world: int, parallel: dict, jobs):
    mp.spawn(job, args=(world, rendezvous(tmp_path), str(tmp_path), parallel, jobs), nprocs=world)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def assert_like_one_process(res: dict, key) -> None:
    """One rank's result of one job: no dit_fx warning, the single-process cache decisions, and
    outputs equal to the single-process run's within 1e-5 relative."""
    assert not res["warnings"], res["warnings"]
    assert res["groups_reused"], key  # no new process groups per model
    assert res["cached"] == res["expected_cached"], key  # the single-process decisions on every rank
    for a, b in zip(res["got"], res["expected"]):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max())), (key, float((a - b).abs().max()))
