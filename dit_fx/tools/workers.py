"""Serve a dit_fx-optimized model or pipeline from several worker processes.

    pool = dit_fx.tools.workers.WorkerPool("myapp.models:build_pipe", workers=2,
                                           config={"fn_blocks": 1, "residual_diff_threshold": 0.1})
    images = pool.map("myapp.jobs:generate", [dict(prompt="a cat", seed=1), ...])
    pool.close()

Each worker process calls ``build()`` once (a ``"module:function"`` path: workers are spawned, so
they import it), optimizes the result once with ``config`` and ``optimize_kwargs``, and then runs
every job it receives as ``job(model, **kwargs)`` inside a ``dit_fx.request`` of its own: captures
and compiled regions are made once per worker (per input signature), never per request, and no
state passes between requests. Results come back pickled (move tensors to the CPU in ``job``).
``stats()`` returns each worker's ``captures_total`` / ``signatures`` so a server can check that.

Workers are started with the "spawn" method (CUDA and OpenMP do not survive ``fork``); give each
GPU its own worker (``devices=["cuda:0", "cuda:1"]``: ``build(device)`` is then called with it).
For a cluster, the same pattern maps onto Ray Serve replicas or any process-per-GPU server: build
and optimize in the replica's constructor, wrap each request in ``dit_fx.request``.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

_WORKER: Dict[str, Any] = {}  # inside a worker process: the optimized model and its device


def _resolve(path: str):
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"expected 'module:function', got {path!r}")
    return getattr(importlib.import_module(module), name)


def _start(build: str, config: Any, optimize_kwargs: Mapping[str, Any], devices: Optional[Sequence[str]], counter) -> None:
    import dit_fx

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    device = devices[index % len(devices)] if devices else None
    target = _resolve(build)(device) if device is not None else _resolve(build)()
    _WORKER.update(model=dit_fx.optimize(target, config, **dict(optimize_kwargs)), index=index, device=device)


def _run(job: str, kwargs: Mapping[str, Any]) -> Any:
    import dit_fx

    model = _WORKER["model"]
    with dit_fx.request(model):
        result = _resolve(job)(model, **dict(kwargs))
    return result, _stats()


def _stats() -> Dict[str, Any]:
    import dit_fx

    info = dit_fx.inspect(_WORKER["model"])
    infos = info.values() if isinstance(info, dict) else [info]
    return dict(pid=os.getpid(), worker=_WORKER["index"], device=_WORKER["device"],
                captures_total=sum(i.captures_total for i in infos), signatures=sum(i.signatures for i in infos))


class WorkerPool:
    """``workers`` processes, each holding one optimized copy of what ``build`` returns."""

    def __init__(self, build: str, config: Any = None, *, workers: int = 2, optimize_kwargs: Optional[Mapping[str, Any]] = None,
                 devices: Optional[Sequence[str]] = None):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        _resolve(build)  # fail here, not in every worker
        ctx = multiprocessing.get_context("spawn")
        counter = ctx.Value("i", 0)
        self.workers = workers
        self._stats: Dict[int, Dict[str, Any]] = {}
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start,
                                         initargs=(build, config, dict(optimize_kwargs or {}), list(devices or []) or None, counter))

    def submit(self, job: str, **kwargs) -> Future:
        """Run ``job(model, **kwargs)`` in some worker, inside a request; a future of its result."""
        outer: Future = Future()

        def done(inner: Future) -> None:
            if inner.exception() is not None:
                outer.set_exception(inner.exception())
                return
            result, stats = inner.result()
            self._stats[stats["worker"]] = stats
            outer.set_result(result)

        self._pool.submit(_run, job, kwargs).add_done_callback(done)
        return outer

    def map(self, job: str, kwargs_list: Iterable[Mapping[str, Any]]) -> List[Any]:
        return [f.result() for f in [self.submit(job, **dict(kw)) for kw in kwargs_list]]

    def stats(self) -> List[Dict[str, Any]]:
        """Capture counts of each worker that has run a job, as of its latest job."""
        return [self._stats[k] for k in sorted(self._stats)]

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
