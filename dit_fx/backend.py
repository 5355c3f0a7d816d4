"""The one compile path behind both entry points: Dynamo graph -> plan -> passes -> lowering.

``dit_fx.optimize`` wraps ``transformer.forward`` in ``torch.compile(..., backend=<a Session>)``;
``torch.compile(model, backend="dit_fx", options=...)`` reaches ``dit_fx_backend`` through the
``torch_dynamo_backends`` entry point. Both end in ``Session.__call__``.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.fx as fx
from torch.utils.weak import WeakIdKeyDictionary

from .capture import (
    StaticInputs,
    bound_copy,
    find_static_inputs,
    graph_break_reason,
    graph_input_sources,
    has_python_side_effects,
    lazy_graph_module,
)
from .block_tracing import RegionInlineError, inline_subgraph_calls
from .config import AnyConfig, BlockListConfigs, DBPruneConfig, coerce_config
from .lowering import Lowering, check_inductor_options, mode_options
from .passes import rewrite_nested
from .patterns import Plan, build_plans
from .runtime import CacheContext, CacheStats, PruneContext, StepTracker

log = logging.getLogger(__name__)

BACKEND_OPTIONS = ("config", "compile", "cuda_graphs", "mode", "inductor_options", "dump_dir")

# Parameter -> Session, so ``dit_fx.summary(model)`` finds the state of a torch.compile'd model
# without storing anything on the user's module.
_SESSIONS: "WeakIdKeyDictionary" = WeakIdKeyDictionary()


@dataclass
class CompileRecord:
    """What one Dynamo capture produced (kept for ``dit_fx.dump``)."""

    plans: Tuple[Plan, ...]  # one per cache context (block list), outermost first
    captured: Optional[fx.GraphModule]
    glue: Optional[fx.GraphModule]
    activation_names: List[str] = field(default_factory=list)
    activation_sources: Optional[List[str]] = None  # Dynamo source of each glue input
    last_flat_output: Any = None  # set by the runner; lets optimize() learn the output structure

    @property
    def plan(self) -> Union[Plan, Dict[str, Plan]]:
        """The plan; with per-list contexts, a dict of plans by block-list name (graph order)."""
        if len(self.plans) == 1 and self.plans[0].scope is None:
            return self.plans[0]
        return {p.scope: p for p in self.plans}


class Session:
    """Config, cache state and compile records of one optimized transformer."""

    def __init__(
        self,
        config: AnyConfig,
        lowering: str = "eager",
        dump_dir: Optional[str] = None,
        cuda_graphs: bool = False,
        inductor_options: Optional[Mapping[str, Any]] = None,
    ):
        self.config = config
        self.lowering = lowering
        self.cuda_graphs = cuda_graphs
        # One per session: every capture shares its compiled regions, CUDA-graph pool and counters.
        self.lowerer = Lowering(lowering, cuda_graphs, dict(inductor_options or {}))
        self.inductor_options = self.lowerer.compiler.options
        self.dump_dir = dump_dir or os.environ.get("DIT_FX_DUMP_DIR") or None
        # Scope None: all block lists joined into one context; else one context per named list.
        scopes = config.lists if isinstance(config, BlockListConfigs) else ((None, config),)
        self.tracker = StepTracker(scopes[0][1])
        self.caches: Dict[Optional[str], CacheContext] = {
            s: (PruneContext if isinstance(c, DBPruneConfig) else CacheContext)(c, self.tracker) for s, c in scopes
        }
        for cache in self.caches.values():
            cache.outputs_are_reused = cuda_graphs
        self.records: List[CompileRecord] = []
        self.last_used: Optional[CompileRecord] = None  # record whose runner handled the last Dynamo call
        self.__name__ = "dit_fx"  # Dynamo names backends by __name__

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        try:
            record, runner = self.compile(gm, example_inputs)
        except RegionInlineError:
            raise  # reaches optimize's forward as a Dynamo error: it traces the blocks flat
        except Exception as exc:  # a bug of ours must not break the user's model
            log.debug("dit_fx compile failed", exc_info=True)
            reason = f"dit_fx could not process the captured graph: {exc!r}"
            _warn_unmodified(reason)
            record = CompileRecord((Plan(reason=reason),), None, None)
            runner = self._unmodified(record, gm)
        self.records.append(record)
        if self.dump_dir:
            from .dump_writer import write_dump

            write_dump(self, self.dump_dir)
        return runner

    def compile(self, captured: fx.GraphModule, example_inputs: Sequence[Any]):
        reason = graph_break_reason()
        gm = inline_subgraph_calls(captured)  # blocks traced once (block_tracing.py) -> one flat graph
        # Direct calls (see fast_path.py) need every input's source and no Python side effects.
        sources = None if has_python_side_effects() else graph_input_sources(len(example_inputs))
        static = find_static_inputs(gm, example_inputs)
        for tensor in example_inputs:
            if isinstance(tensor, torch.nn.Parameter):
                _SESSIONS[tensor] = self
        bound = bound_copy(gm, static)
        # DBPrune guards whole middle blocks, so it keeps every op of the Fn blocks in the head.
        scopes = [(s, c.config.fn_blocks, c.config.bn_blocks, not isinstance(c.config, DBPruneConfig)) for s, c in self.caches.items()]
        plans = (Plan(reason=reason),) if reason else build_plans(bound.graph, scopes)
        names = [n.name for n in bound.graph.nodes if n.op == "placeholder"]
        if not plans[0].supported:
            _warn_unmodified(plans[0].reason)
            record = CompileRecord(plans, bound, None, names)
            return record, self._unmodified(record, gm)  # flat: no region copies on every refused step
        try:
            # Rewrite a copy of the graph (parameters stay shared): a failure leaves the capture intact.
            # An inlined graph is already a copy of its own.
            working = gm if gm is not captured else lazy_graph_module(gm, copy.deepcopy(gm.graph), "DBCacheGlue")
            working.meta["dit_fx_static_inputs"] = static.by_placeholder
            glue = rewrite_nested(working, plans, [self.caches[p.scope].config for p in plans], self._cache_for)
            glue = self.lowerer.lower(glue, frozenset(n for p in plans for n in p.deferred_to_body))
        except Exception as exc:  # never silently wrong: fall back to the captured graph, loudly
            log.debug("dit_fx rewrite failed", exc_info=True)
            failed = Plan(blocks=plans[0].blocks, block_lists=plans[0].block_lists, reason=f"rewrite failed: {exc!r}")
            _warn_unmodified(failed.reason)
            record = CompileRecord((failed,), bound, None, names)
            return record, self._unmodified(record, captured)
        record = CompileRecord(plans, bound, glue, names)
        if sources is not None:
            record.activation_sources = [sources[i] for i in static.activation_indices]
        return record, self._runner(record, captured, static)

    def _cache_for(self, plan: Plan) -> CacheContext:
        cache = self.caches[plan.scope]
        cache.leads = plan.leads  # the first list in graph order places each call for all of them
        if isinstance(cache, PruneContext):
            cache.num_blocks = plan.num_blocks
        return cache

    @property
    def last_record(self) -> Optional[CompileRecord]:
        return self.records[-1] if self.records else None

    def stats(self) -> Union[CacheStats, Dict[str, CacheStats]]:
        """A snapshot of the current generation: one ``CacheStats``, or a dict by block list."""
        if None in self.caches:
            return self.caches[None].stats
        return {name: cache.stats for name, cache in self.caches.items()}

    def _unmodified(self, record: CompileRecord, gm: fx.GraphModule) -> Callable:
        def run(*args):
            self.last_used = record
            return gm.forward(*args)

        return run

    def _runner(self, record: CompileRecord, gm: fx.GraphModule, static: StaticInputs) -> Callable:
        """What Dynamo calls: checks the bound parameters are still the model's, runs the glue."""
        glue, idx = record.glue, static.activation_indices
        static_at = [i for i in range(len(idx) + len(static.by_placeholder)) if i not in set(idx)]
        bound = [t for _, t in static.by_placeholder.values()]

        def run(*args):
            if any(args[i] is not t for i, t in zip(static_at, bound)):
                # Parameters were replaced (not updated in place) after capture: the rewrite holds
                # the old ones. Run the captured graph with the new ones instead: correct, uncached.
                _warn_unmodified("the model's parameters were replaced after capture; call dit_fx.optimize again")
                return gm.forward(*args)
            self.last_used = record
            out = glue(*[args[i] for i in idx])
            record.last_flat_output = out
            return out

        return run


def _warn_unmodified(reason: Optional[str]) -> None:
    warnings.warn(f"dit_fx: running the model unmodified (no caching): {reason}", RuntimeWarning, stacklevel=3)


def session_of(model: torch.nn.Module) -> Optional[Session]:
    """The session that compiled ``model`` through the backend (found by its parameters)."""
    for p in model.parameters():
        session = _SESSIONS.get(p)
        if session is not None:
            return session
    return None


def forget_session(session: Session) -> None:
    for key in [k for k, v in _SESSIONS.items() if v is session]:
        del _SESSIONS[key]


def parse_backend_options(options: Optional[Mapping[str, Any]], mode: Optional[str] = None) -> Session:
    """``mode``: torch.compile's own argument (torch refuses it together with ``options``, so it
    may also come as the option ``"mode"``). It maps onto dit_fx's settings: reduce-overhead =
    ``cuda_graphs``; max-autotune(-no-cudagraphs) = Inductor's autotuning options for every
    region (with / without ``cuda_graphs``). Explicit ``cuda_graphs`` / ``inductor_options`` win."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(BACKEND_OPTIONS))
    if unknown:
        raise ValueError(f"unknown dit_fx backend option(s) {unknown}; known: {list(BACKEND_OPTIONS)}")
    if mode is not None and options.get("mode", mode) != mode:
        raise ValueError(f"dit_fx backend option 'mode' ({options['mode']!r}) contradicts torch.compile's mode={mode!r}")
    mode_graphs, mode_inductor = mode_options(options.get("mode", mode) or "default")
    compile_flag = options.get("compile", True)
    cuda_graphs = options.get("cuda_graphs", mode_graphs)
    for name, flag in (("compile", compile_flag), ("cuda_graphs", cuda_graphs)):
        if not isinstance(flag, bool):
            raise ValueError(f"dit_fx backend option {name!r} must be a bool, got {flag!r}")
    inductor_options = check_inductor_options(options.get("inductor_options"))
    if not compile_flag and (inductor_options or mode_inductor):
        raise ValueError("dit_fx backend options 'inductor_options' / 'mode' (max-autotune) need 'compile': True")
    dump_dir = options.get("dump_dir")
    if dump_dir is not None and not isinstance(dump_dir, (str, os.PathLike)):
        raise ValueError(f"dit_fx backend option 'dump_dir' must be a path, got {dump_dir!r}")
    return Session(
        coerce_config(options.get("config")),
        lowering="inductor" if compile_flag else "eager",
        dump_dir=os.fspath(dump_dir) if dump_dir is not None else None,
        cuda_graphs=cuda_graphs,
        inductor_options={**mode_inductor, **inductor_options},
    )


def dit_fx_backend(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    options: Optional[Mapping[str, Any]] = None,
    mode: Optional[str] = None,
):
    """``torch.compile(model, backend="dit_fx", options={"config": cfg, "compile": True})``.

    Options: ``config`` (DBCacheConfig or dict), ``compile`` (Inductor for head/body/tail, one
    compile per distinct block, default True), ``cuda_graphs`` (replay head/body/tail as CUDA
    graphs, default False), ``mode`` (torch.compile's modes, see ``parse_backend_options``),
    ``inductor_options`` (Inductor config values for every region compile), ``dump_dir``.
    ``torch.compile(model, backend="dit_fx", mode="reduce-overhead")`` works too (default config).
    Recompiles of the same model (new resolution) share one cache session.
    """
    fresh = parse_backend_options(options, mode)
    params = [t for t in example_inputs if isinstance(t, torch.nn.Parameter)]
    existing = next((_SESSIONS[p] for p in params[:1] if p in _SESSIONS), None)
    settings = ("config", "lowering", "cuda_graphs", "inductor_options", "dump_dir")
    same = existing is not None and all(getattr(existing, k) == getattr(fresh, k) for k in settings)
    session = existing if same else fresh
    return session(gm, example_inputs)
