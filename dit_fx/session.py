"""The one compile path behind both entry points: Dynamo graph -> plan -> rewrite -> lowering.

``dit_fx.optimize`` wraps ``transformer.forward`` in ``torch.compile(..., backend=<a Session>)``;
``torch.compile(model, backend="dit_fx", options=...)`` reaches ``backend.dit_fx_backend``. Both
end in ``Session.__call__``. A session belongs to one model: its config, its ``CompileOptions``,
its ``StateSlot`` (the per-request state its cache contexts read), its ``Lowerer`` (compiled
regions and CUDA-graph pool every capture shares), and a bounded store of capture records.
"""

from __future__ import annotations

import collections
import contextvars
import copy
import logging
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx as fx
from torch.utils.weak import WeakIdKeyDictionary

from .algorithms import Algorithm, algorithm_of
from .config import AnyConfig, BlockListConfigs
from .frontend.block_tracing import RegionInlineError, inline_subgraph_calls
from .frontend.dynamo import (
    StaticInputs,
    bound_copy,
    find_static_inputs,
    graph_break_reason,
    graph_input_sources,
    has_python_side_effects,
)
from .frontend.pieces import PASSTHROUGH, Pieces, RetrySpecialized, has_symbolic_sizes
from .fx_utils import lazy_graph_module
from .lowering import Lowerer
from .options import CompileOptions
from .passes.fuse_linears import AUTO_LAYOUTS, FusionContext, JoinedWeights, fuse_linears, layout_of
from .passes.shard_features import FeatureContext, shard_features
from .passes.shard_sequence import ShardContext, ShardRefused, shard_sequence
from .passes import LoweringContext, PassList, PassTiming, RewriteContext, lowering_passes, rewrite_nested
from .patterns import Plan, PlannerInput, build_plans
from .patterns.plan import ScopeRequest
from .runtime import CacheStats
from .runtime.context import mask_length_message
from .runtime.host import LOCAL
from .runtime.state import GenerationState, StateSlot

log = logging.getLogger(__name__)

MAX_RECORDS = 32  # captures kept per session for dumps and inspection (oldest dropped first)
STAGES = ("rewrite", "lowering")


@dataclass
class CompileRecord:
    """What one Dynamo capture produced (kept for ``dit_fx.dump`` and ``dit_fx.inspect``)."""

    index: int  # capture number within the session (0, 1, ...), stable when older records drop
    plans: Tuple[Plan, ...]  # one per cache context (block list), outermost first
    captured: Optional[fx.GraphModule]
    glue: Optional[fx.GraphModule]
    activation_names: List[str] = field(default_factory=list)
    activation_sources: Optional[List[str]] = None  # Dynamo source of each glue input
    glues: Tuple[Tuple[str, fx.GraphModule], ...] = ()  # every glue graph by dotted path ("", "tail.")
    passes: Dict[str, List[str]] = field(default_factory=dict)  # stage -> pass names that ran
    rewrite_by_scope: Dict[str, List[str]] = field(default_factory=dict)  # str(scope) -> rewrite passes
    timings: Tuple[PassTiming, ...] = ()
    seconds: float = 0.0  # wall time of dit_fx's part of the capture
    options: Optional[CompileOptions] = None  # the options this capture was lowered with (decided)
    call: Optional[Callable] = None  # how to run the glue: itself, or serialized (CUDA graphs)

    @property
    def plan(self) -> Union[Plan, Dict[str, Plan]]:
        """The plan; with per-list contexts, a dict of plans by block-list name (graph order)."""
        if len(self.plans) == 1 and self.plans[0].scope is None:
            return self.plans[0]
        return {p.scope: p for p in self.plans}


class RecordStore:
    """The latest ``MAX_RECORDS`` capture records of a session (thread-safe appends)."""

    def __init__(self, maxlen: int = MAX_RECORDS):
        self._records: Deque[CompileRecord] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.total = 0  # captures ever made

    def add(self, make: Callable[[int], CompileRecord]) -> CompileRecord:
        with self._lock:
            record = make(self.total)
            self.total += 1
            self._records.append(record)
        return record

    def __iter__(self):
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    @property
    def last(self) -> Optional[CompileRecord]:
        return self._records[-1] if self._records else None


@dataclass
class CallObservation:
    """Filled by a runner for the caller that set it (per thread / task): which capture handled
    the call and its flat outputs, so ``optimize`` can learn a direct call."""

    record: Optional[CompileRecord] = None
    flat_output: Any = None


_OBSERVATION: contextvars.ContextVar = contextvars.ContextVar("dit_fx_observation", default=None)


def observe_call() -> Tuple[CallObservation, Any]:
    """Start observing the next runner call in this thread; pass the token to ``end_observation``."""
    obs = CallObservation()
    return obs, _OBSERVATION.set(obs)


def end_observation(token: Any) -> None:
    _OBSERVATION.reset(token)


def _observed(record: CompileRecord, flat_output: Any) -> None:
    obs = _OBSERVATION.get()
    if obs is not None:
        obs.record, obs.flat_output = record, flat_output


class Session:
    """Config, options, request state and compile records of one optimized transformer."""

    def __init__(self, config: AnyConfig, options: Optional[CompileOptions] = None, host: Any = None):
        self.config = config
        self.host = host if host is not None else LOCAL  # where decisions read the device (runtime/host.py)
        self.options = options if options is not None else CompileOptions()
        self.lowerer = Lowerer.for_options(self.options)
        # Scope None: all block lists joined into one context; else one context per named list.
        self.scopes: Tuple[Tuple[Optional[str], Any], ...] = (
            config.lists if isinstance(config, BlockListConfigs) else ((None, config),)
        )
        self.states = StateSlot(self.scopes[0][1])  # the placement fields agree across lists
        self.records = RecordStore()
        # Every capture a runner may still call, kept here (runners refer to them weakly when
        # ``weak_runners``: dit_fx.optimize, whose session lives as long as its model).
        self._live: List[CompileRecord] = []
        self.weak_runners = False
        self.run_lock = threading.RLock()
        self._stage_edits: List[Tuple[str, Callable[[PassList], Optional[PassList]]]] = []
        # Context parallelism: the ranks' groups (``runtime/sequence_ops.SequenceGroups``), set by
        # ``dit_fx.optimize(parallel=...)``; what each capture's shard did, in ``shard_records``.
        self.sequence = None
        self.shard_records: List[Any] = []
        # Tensor parallelism: this rank's group (``runtime/tensor_ops.FeatureGroup``), set by
        # ``dit_fx.optimize(parallel=ParallelConfig(tp=T))``; what each capture's split did.
        self.features = None
        self.feature_records: List[Any] = []
        self.feature_weights = None  # passes/shard_features.SplitWeights: every capture's parts
        # Sibling Linears joined into one GEMM (passes/fuse_linears.py): the joined weights of
        # this model (every capture shares them), what each capture's pass did.
        self.joined_weights = JoinedWeights()
        self.fusion_records: List[Any] = []
        self.release_weights = False  # free the model's whole weights once split (ParallelConfig.release_weights)
        self.pending_release: List[Any] = []
        # Set by ``optimize`` when the forward cannot be captured as one graph: later captures
        # allow graph breaks outside the block stack (``frontend/pieces.py``).
        self.pieces: Optional[Pieces] = None
        # ``optimize`` catches ``RetrySpecialized`` (a refused stack with sizes read from tensors).
        self.retries_specialized = False
        self.__name__ = "dit_fx"  # Dynamo names backends by __name__

    @property
    def live_captures(self) -> int:
        return len(self._live)

    def release(self, records) -> None:
        """Captures no runner will be asked for again (their signature was dropped): let them go."""
        ids = {id(r) for r in records}
        self._live = [r for r in self._live if id(r) not in ids]

    def edit_stage(self, stage: str, edit: Callable[[PassList], Optional[PassList]]) -> None:
        """Change the pass list of ``stage`` ("rewrite" or "lowering") for later captures, e.g.
        ``session.edit_stage("lowering", lambda p: p.insert_before("compile_regions", quantize))``.
        ``edit`` gets a fresh copy per capture (and per cache context for "rewrite")."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self._stage_edits.append((stage, edit))

    def _stage(self, stage: str, passes: PassList) -> PassList:
        for name, edit in self._stage_edits:
            if name == stage:
                passes = edit(passes) or passes
        return passes

    # -- what the API reads ----------------------------------------------------------------------
    @property
    def state(self) -> GenerationState:
        """The generation state the current call reads (the bound request's, or the default)."""
        return self.states.current()

    @property
    def last_record(self) -> Optional[CompileRecord]:
        return self.records.last

    def expect_pipeline_steps(self, num_inference_steps: Any) -> None:
        """A pipeline call is about to run ``num_inference_steps`` steps: one warning per steps mask
        longer than that (its tail would go unused without a word). A longer call is told by the
        cache context when it runs past the mask's end, like a bare loop."""
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
            return  # a scheduler that records no step count: nothing to compare
        for _, cfg in self.scopes:
            mask = getattr(cfg, "steps_computation_mask", None)
            if mask is not None and len(mask) > num_inference_steps:
                warnings.warn(mask_length_message(len(mask), num_inference_steps), UserWarning, stacklevel=4)

    def config_of(self, scope: Optional[str]):
        return dict(self.scopes)[scope]

    def stats(self, state: Optional[GenerationState] = None) -> Union[CacheStats, Dict[str, CacheStats]]:
        """A snapshot of ``state`` (default: the current one): one ``CacheStats``, or a dict by block list."""
        state = state if state is not None else self.state
        snaps = {scope: algorithm_of(cfg).stats(state, scope) for scope, cfg in self.scopes}
        return snaps[None] if None in snaps else snaps

    # -- Dynamo's backend call -------------------------------------------------------------------
    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        start = time.perf_counter()
        try:
            record, runner = self.compile(gm, example_inputs)
            if record is None:  # a piece without the block stack (graph breaks allowed): as captured
                return runner
        except (RegionInlineError, RetrySpecialized):
            raise  # reaches optimize's forward as a Dynamo error: it traces flat / specialized
        except Exception as exc:  # a bug of ours must not break the user's model
            log.debug("dit_fx compile failed", exc_info=True)
            reason = f"dit_fx could not process the captured graph: {exc!r}"
            _warn_unmodified(reason)
            record = self.records.add(lambda i: CompileRecord(i, (Plan(reason=reason),), None, None))
            runner = self._unmodified(record, gm)
        record.seconds = time.perf_counter() - start
        log.info("dit_fx capture %d: %s in %.2f s", record.index, _plan_line(record), record.seconds)
        if self.options.dump_dir:
            from .tools.dump import write_record

            write_record(self, record, self.options.dump_dir)
        return runner

    def compile(self, captured: fx.GraphModule, example_inputs: Sequence[Any]):
        reason = graph_break_reason()
        gm = inline_subgraph_calls(captured)  # blocks traced once (block_tracing.py) -> one flat graph
        in_pieces = self.pieces is not None  # graph breaks allowed (frontend/pieces.py)
        if in_pieces:
            if self.pieces.classify(gm.graph, reason) == PASSTHROUGH:
                return None, captured.forward
            reason = None  # this piece holds the whole block stack
        # Direct calls (see runtime/direct_calls.py) need every input's source and no Python side
        # effects, and the whole forward in one graph.
        sources = None if in_pieces or has_python_side_effects() else graph_input_sources(len(example_inputs))
        static = find_static_inputs(gm, example_inputs)
        options = self.options.resolved(_device_type(example_inputs, static.activation_indices))
        register_parameters(self, [t for t in example_inputs if isinstance(t, torch.nn.Parameter)])
        bound = bound_copy(gm, static)
        request = PlannerInput(tuple(algorithm_of(c).scope_request(s, c) for s, c in self.scopes))
        plans = (Plan(reason=reason),) if reason else build_plans(bound.graph, request)
        names = [n.name for n in bound.graph.nodes if n.op == "placeholder"]
        if plans[0].supported and (self.sequence is not None or self.features is not None):
            gm, static, bound, plans = self._shard(gm, captured, example_inputs, plans, request)
        joined: Dict[str, Tuple[str, torch.Tensor]] = {}  # tensors get_attr'd by the graph, bound like parameters
        if plans[0].supported and options.fuse_linears is not False and self.features is None:
            gm, static, bound, plans, joined = self._fuse(gm, example_inputs, static, bound, plans, request,
                                                          layouts=None if options.fuse_linears else AUTO_LAYOUTS)
        if not plans[0].supported:
            if self.retries_specialized and (self.pieces.dynamic if in_pieces else has_symbolic_sizes(bound.graph)):
                raise RetrySpecialized(plans[0].reason)  # optimize captures it again, sizes specialized
            _warn_unmodified(plans[0].reason)
            record = self.records.add(lambda i: CompileRecord(i, plans, bound, None, names))
            return record, self._unmodified(record, gm)  # flat: no region copies on every refused step
        try:
            # Rewrite a copy of the graph (parameters stay shared): a failure leaves the capture intact.
            # An inlined graph is already a copy of its own.
            working = gm if gm is not captured else lazy_graph_module(gm, copy.deepcopy(gm.graph), "DBCacheGlue")
            build = lambda plan, inputs: self._rewrite_context(plan, inputs, options, in_pieces)  # noqa: E731
            glue, glues, contexts = rewrite_nested(working, plans, {**static.by_placeholder, **joined}, build)
            lowering = self._stage("lowering", lowering_passes(options))
            lctx = LoweringContext(
                options=options,
                compiler=self.lowerer.compiler,
                graphs=self.lowerer.graphs,
                glues=tuple(g for _, g in glues),
                block_of=plans[0].block_map(),
                eager_nodes=frozenset(n for p in plans for n in p.deferred_to_body),
            )
            glue = lowering(glue, lctx)
        except Exception as exc:  # never silently wrong: fall back to the captured graph, loudly
            log.debug("dit_fx rewrite failed", exc_info=True)
            failed = Plan(blocks=plans[0].blocks, block_lists=plans[0].block_lists, reason=f"rewrite failed: {exc!r}")
            _warn_unmodified(failed.reason)
            record = self.records.add(lambda i: CompileRecord(i, (failed,), bound, None, names))
            return record, self._unmodified(record, captured)
        stages = {"rewrite": [t.name for t in contexts[0].timings], "lowering": lowering.names}
        by_scope = {str(c.plan.scope): [t.name for t in c.timings] for c in contexts}
        timings = tuple(t for c in contexts for t in c.timings) + tuple(lctx.timings)
        record = self.records.add(
            lambda i: CompileRecord(i, plans, bound, glue, names, glues=tuple(glues), passes=stages,
                                    rewrite_by_scope=by_scope, timings=timings, options=options)
        )
        if sources is not None:
            record.activation_sources = [sources[i] for i in static.activation_indices]
        # CUDA graphs replay into static buffers shared by every call: one run at a time.
        record.call = _Serialized(glue, self.run_lock) if options.cuda_graphs else glue
        if joined:  # the joined weights follow parameters given new storage (fuse_linears.py)
            record.call = _Refreshed(record.call, weakref.ref(self.joined_weights))
        return record, self._runner(record, captured, static)

    def _shard(self, gm, captured, example_inputs, plans, request):
        """Context parallelism (``passes/shard_sequence.py``) then tensor parallelism
        (``passes/shard_features.py``), each on a copy of the graph; planned again after. A refusal
        warns once and leaves that split undone (every rank computes it whole: exact, not faster)."""
        # The whole block stack (a plan may cache one list only).
        full = build_plans(bound_copy(gm, find_static_inputs(gm, example_inputs)).graph,
                           PlannerInput((ScopeRequest(None, 1, 0),)))[0]
        blocks = full.blocks or plans[0].blocks
        block_of = dict(full.block_map() if full.supported else plans[0].block_map())
        working = gm
        if self.sequence is not None:
            working = self._shard_sequence(working, example_inputs, blocks, block_of)
        if self.features is not None:
            working = self._shard_features(working, example_inputs, block_of)
        static = find_static_inputs(working, example_inputs)
        bound = bound_copy(working, static)
        return working, static, bound, (plans if working is gm else build_plans(bound.graph, request))

    def _fuse(self, gm, example_inputs, static, bound, plans, request, layouts):
        """Sibling Linears of each block joined (``passes/fuse_linears.py``), on a copy of the graph;
        planned again after. Returns the graph, its static inputs, bound copy and plans, and the
        joined weights (``get_attr`` tensors, bound inside the partitions like the parameters:
        never glue inputs, torchao weights have no plain storage). Not with tensor parallelism
        (its split reads the model's own parameters). A failure warns once and keeps the Linears
        separate."""
        if layouts is not None and not any(getattr(layout_of(t), "name", None) in layouts
                                           for _, t in static.by_placeholder.values()):
            return gm, static, bound, plans, {}  # no weight of a layout the default joins: skip the planning
        working = lazy_graph_module(gm, copy.deepcopy(gm.graph), "FusedTransformer")
        self.joined_weights.check()
        ctx = FusionContext(block_of=self._block_map(gm, example_inputs, plans),
                            params={name: t for name, (_, t) in static.by_placeholder.items()},
                            weights=self.joined_weights, layouts=layouts)
        try:
            working = fuse_linears(working, ctx)
            if not ctx.record.groups:
                self.fusion_records.append(ctx.record)
                return gm, static, bound, plans, {}
            fused_static = find_static_inputs(working, example_inputs)
            fused_bound = bound_copy(working, fused_static)
            fused_plans = build_plans(fused_bound.graph, request)
            if not fused_plans[0].supported:
                raise ValueError(f"the joined graph does not plan: {fused_plans[0].reason}")
        except Exception as exc:  # noqa: BLE001 - the Linears stay separate, loudly
            log.debug("dit_fx fuse_linears failed", exc_info=True)
            ctx.record.kept.append(((), f"the pass failed: {exc!r}"))
            self.fusion_records.append(ctx.record)
            _warn_once(f"dit_fx: fuse_linears failed ({exc!r}); the Linears stay separate")
            return gm, static, bound, plans, {}
        self.fusion_records.append(ctx.record)
        joined = {a: (a, getattr(working, a)) for g in ctx.record.groups for a in g.attributes}
        return working, fused_static, fused_bound, fused_plans, joined

    def _block_map(self, gm, example_inputs, plans) -> Dict[str, str]:
        """Node name -> block over the whole block stack (a plan may cache one list only: then
        the whole stack is planned once more)."""
        if len(plans) == 1 and plans[0].scope is None and plans[0].supported:
            return dict(plans[0].block_map())
        full = build_plans(bound_copy(gm, find_static_inputs(gm, example_inputs)).graph,
                           PlannerInput((ScopeRequest(None, 1, 0),)))[0]
        return dict(full.block_map() if full.supported else plans[0].block_map())

    def _shard_sequence(self, gm, example_inputs, blocks, block_of):
        working = lazy_graph_module(gm, copy.deepcopy(gm.graph), "ShardedTransformer")
        ctx = ShardContext(
            groups=self.sequence,
            block_of=block_of,
            first_block=f"{blocks[0].list_name}.{blocks[0].list_index}",
            carried=blocks[0].carried_inputs,
            block_outputs=tuple(o for b in blocks for o in b.outputs),
            example_inputs=tuple(example_inputs),
        )
        try:
            working = shard_sequence(working, ctx)
        except ShardRefused as exc:
            ctx.record.reason = str(exc)
            self.shard_records.append(ctx.record)
            _warn_once(f"dit_fx: context parallelism refused ({exc}); every rank runs the whole sequence")
            return gm
        self.shard_records.append(ctx.record)
        return working

    def _shard_features(self, gm, example_inputs, block_of):
        working = lazy_graph_module(gm, copy.deepcopy(gm.graph), "ShardedTransformer")
        ctx = FeatureContext(group=self.features, block_of=dict(block_of), example_inputs=tuple(example_inputs),
                             weights=self.feature_weights)
        try:
            working = shard_features(working, ctx)
        except ShardRefused as exc:
            ctx.record.reason = str(exc)
            self.feature_records.append(ctx.record)
            _warn_once(f"dit_fx: tensor parallelism refused ({exc}); every rank computes every feature")
            return gm
        if self.release_weights:  # after the call that captures: Dynamo checks its guards on these first
            self.pending_release.append((ctx.record, ctx.record.unread))
        ctx.record.unread = []
        self.feature_records.append(ctx.record)
        return working

    def release_pending(self) -> None:
        """Free the whole weights a split of this call left unread (``SplitWeights.release``)."""
        while self.pending_release:
            record, params = self.pending_release.pop()
            record.released_bytes += self.feature_weights.release(params)

    def _rewrite_context(self, plan: Plan, static_inputs: dict, options: CompileOptions, in_pieces: bool = False):
        config = self.config_of(plan.scope)
        algorithm: Algorithm = algorithm_of(config)
        cache = algorithm.make_context(config, plan, self.states, outputs_are_reused=options.cuda_graphs, host=self.host)
        ctx = RewriteContext(plan, config, cache, static_inputs, timestep_from_call=in_pieces)
        return self._stage("rewrite", algorithm.rewrite_passes()), ctx

    def _unmodified(self, record: CompileRecord, gm: fx.GraphModule) -> Callable:
        self._live.append(record)
        return Runner(self, record, gm, None)

    def _runner(self, record: CompileRecord, gm: fx.GraphModule, static: StaticInputs) -> Callable:
        self._live.append(record)
        return Runner(self, record, gm, static)


class Runner:
    """What Dynamo calls for one capture: checks the bound parameters are still the model's, runs
    the glue (or, for a refused capture, the captured graph).

    Dynamo keeps what a backend returns in the compiled frame's module globals for the life of
    the process. With ``weak`` (``dit_fx.optimize``: the session lives as long as the model) the
    runner refers to its capture and to the parameters weakly, so a dropped model's graphs and
    weights can go; a runner whose capture is gone runs the captured graph, which holds no weights
    (Dynamo passes them in). The backend path (``torch.compile(backend="dit_fx")``) has nothing
    else keeping its session alive, so its runners hold their capture strongly.
    """

    def __init__(self, session: Session, record: CompileRecord, gm: fx.GraphModule, static: Optional[StaticInputs]):
        weak = session.weak_runners
        self.gm = gm
        self.weak = weak
        self.session = None if weak else session  # the backend path: the runners keep their session
        self._record = weakref.ref(record) if weak else (lambda r=record: r)
        if static is None:
            self.idx, self.static_at, self._bound = None, (), ()
            return
        idx = static.activation_indices
        self.idx = idx
        self.static_at = tuple(i for i in range(len(idx) + len(static.by_placeholder)) if i not in set(idx))
        tensors = [t for _, t in static.by_placeholder.values()]
        self._bound = tuple(weakref.ref(t) for t in tensors) if weak else tuple((lambda t=t: t) for t in tensors)

    def __call__(self, *args):
        record = self._record()
        if record is None or self.idx is None:
            out = self.gm.forward(*args)
            if record is not None:
                _observed(record, None)
            return out
        if any(args[i] is not t() for i, t in zip(self.static_at, self._bound)):
            # Parameters were replaced (not updated in place) after capture: the rewrite holds
            # the old ones. Run the captured graph with the new ones instead: correct, uncached.
            _warn_unmodified("the model's parameters were replaced after capture; call dit_fx.optimize again")
            out = self.gm.forward(*args)
            _observed(record, None)
            return out
        out = record.call(*[args[i] for i in self.idx])
        _observed(record, out)
        return out


class _Refreshed:
    """A glue reading joined weights: ``JoinedWeights.refresh`` before each call (a pointer check)."""

    def __init__(self, glue: Callable, joined: "weakref.ref"):
        self.glue, self.joined = glue, joined

    def __call__(self, *args):
        joined = self.joined()
        if joined is not None:
            joined.refresh()
        return self.glue(*args)


class _Serialized:
    """A glue whose runs must not overlap (its CUDA graphs share static buffers): threads take turns."""

    def __init__(self, glue: Callable, lock: Any):
        self.glue, self.lock = glue, lock

    def __call__(self, *args):
        with self.lock:
            return self.glue(*args)


def _device_type(example_inputs: Sequence[Any], activations: Sequence[int]) -> str:
    """Where the model runs: the device of its first tensor activation (parameters may be offloaded)."""
    for i in activations:
        if isinstance(example_inputs[i], torch.Tensor):
            return example_inputs[i].device.type
    return next((t.device.type for t in example_inputs if isinstance(t, torch.Tensor)), "cpu")


def _plan_line(record: CompileRecord) -> str:
    plan = record.plans[0]
    if not plan.supported:
        return f"unmodified ({plan.reason})"
    return f"{plan.num_blocks} blocks, passes {record.passes}"


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


_WARNED: set = set()


def _warn_unmodified(reason: Optional[str]) -> None:
    warnings.warn(f"dit_fx: running the model unmodified (no caching): {reason}", RuntimeWarning, stacklevel=3)


# Parameter -> weak reference to its Session, so ``dit_fx.summary(model)`` finds the state of a
# torch.compile'd model without storing anything on the user's module. Weak: the session holds the
# parameters (its records' graphs), so a strong value would keep its own key alive for good.
_SESSIONS: "WeakIdKeyDictionary" = WeakIdKeyDictionary()


def register_parameters(session: Session, params: Sequence[torch.nn.Parameter]) -> None:
    ref = weakref.ref(session)
    for p in params:
        _SESSIONS[p] = ref


def session_of(model: torch.nn.Module) -> Optional[Session]:
    """The session that compiled ``model`` through the backend (found by its parameters)."""
    for p in model.parameters():
        ref = _SESSIONS.get(p)
        if ref is not None and ref() is not None:
            return ref()
    return None


def session_of_parameters(params: Sequence[Any]) -> Optional[Session]:
    """The session of the first parameter among ``params`` (a graph's example inputs)."""
    for p in params:
        if isinstance(p, torch.nn.Parameter):
            ref = _SESSIONS.get(p)
            return ref() if ref is not None else None
    return None


def forget_session(session: Session) -> None:
    for key in [k for k, v in _SESSIONS.items() if v() is session]:
        del _SESSIONS[key]
