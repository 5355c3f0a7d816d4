"""Public entry points: optimize, disable, reset, generation, summary, plan, dump, inspect."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import types
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch

from .config import AnyConfig, BlockListConfigs, DBCacheConfig, coerce_config
from .integrations.diffusers import (
    Installation,
    hooked_forward,
    parallel_group,
    hook_pipeline,
    install_model,
    is_pipeline,
    per_component,
    split_configs,
    transformer_components,
    unhook_pipeline,
)
from .options import CompileOptions
from .parallel import ParallelConfig, cfg_parallel_forward
from .patterns.regions import module_block_lists
from .quantize import quantize as quantize_model
from .frontend.captures import Captures, WeakBackend, signature_key
from .frontend.pieces import Pieces, RetrySpecialized
from .passes.shard_features import SplitWeights
from .runtime.direct_calls import DirectCall, Epoch, OutputTemplate, call_key, make_binder, unwatch_model, watch_model
from .runtime.host import LOCAL, ReducedHostReads
from .session import Session, end_observation, forget_session, observe_call, session_of

log = logging.getLogger(__name__)
_RECOMPILE_LIMIT = getattr(torch._dynamo.exc, "FailOnRecompileLimitHit", ())


def _capture_errors() -> tuple:
    """What a failed capture raises: Dynamo's errors, and the symbolic-shape errors that can
    escape them (a guard on a size read from a tensor while a block region is traced)."""
    from torch._subclasses import fake_tensor
    from torch.fx.experimental import symbolic_shapes

    found = [torch._dynamo.exc.TorchDynamoException, symbolic_shapes.GuardOnDataDependentSymNode]
    found += [getattr(fake_tensor, n) for n in ("DataDependentOutputException", "DynamicOutputShapeException") if hasattr(fake_tensor, n)]
    return tuple(found)


_CAPTURE_ERRORS = _capture_errors()


@dataclass
class Optimized:
    """What ``optimize`` holds for one module (kept beside it, never on it)."""

    session: Session
    captures: Captures
    installation: Installation = field(default_factory=Installation)
    fallback_reason: Optional[str] = None
    direct: Dict[Any, DirectCall] = field(default_factory=dict)  # call key -> direct glue call
    epoch: Epoch = field(default_factory=Epoch)  # the model's structure version (direct_calls.py)
    epoch_seen: int = 0  # the epoch ``direct`` was learned at
    direct_hits: int = 0
    dynamo_calls: int = 0
    warned_bypass: bool = False
    direct_signature: Dict[Any, Any] = field(default_factory=dict)  # call key -> its signature_key
    signature_records: Dict[Any, list] = field(default_factory=dict)  # signature_key -> its captures

    def forget_captures(self) -> None:
        self.direct.clear()
        self.direct_signature.clear()
        self.captures.clear()
        for records in self.signature_records.values():
            self.session.release(records)
        self.signature_records.clear()

    def drop_signature(self, signature: Any) -> None:
        for key in [k for k, sig in self.direct_signature.items() if sig == signature]:
            self.direct.pop(key, None)
            del self.direct_signature[key]
        self.session.release(self.signature_records.pop(signature, ()))


_OPTIMIZED: "weakref.WeakKeyDictionary[torch.nn.Module, Optimized]" = weakref.WeakKeyDictionary()


def optimize(
    model: torch.nn.Module,
    config: Union[DBCacheConfig, BlockListConfigs, Mapping[str, Any], None] = None,
    *,
    compile: Optional[bool] = None,
    cuda_graphs: Optional[bool] = None,
    inductor_options: Optional[Mapping[str, Any]] = None,
    mode: str = "default",
    dump_dir: Optional[str] = None,
    parallel: Optional[ParallelConfig] = None,
    quantize: Any = None,
    fuse_linears: Optional[bool] = None,
) -> torch.nn.Module:
    """Make ``model`` (a DiT transformer, or a diffusers pipeline) skip its middle blocks on steps
    where DBCache allows. Returns the same object.

    The forward is captured by TorchDynamo on the first call (and again per new input shape),
    rewritten into head / body / tail around a cache decision, and run as Python
    (``compile=False``) or with the partitions compiled by Inductor (``compile=True``: one compile
    per distinct block, like regional compilation). ``cuda_graphs=True`` replays head, body and
    tail as CUDA graphs (CUDA inputs only). Defaults (None): compiled + CUDA graphs when the model
    runs on CUDA, eager elsewhere (why: ``dit_fx.CompileOptions``). ``inductor_options`` /
    ``mode`` / ``dump_dir``: see ``dit_fx.CompileOptions``. Anything the rewrite cannot handle runs the original forward with
    one warning saying why; ``disable`` restores everything exactly.

    ``config``: a ``DBCacheConfig`` (or a dict of its fields) treats all block lists as one stack;
    a dict of configs by block-list name (``{"transformer_blocks": cfg_a,
    "single_transformer_blocks": cfg_b}``) gives each named list its own cache context, Fn/Bn and
    statistics (lists not named then run every step).

    ``parallel``: a ``dit_fx.ParallelConfig`` inside a process group the caller started
    (``cfg=2``: CFG parallelism over batched-CFG calls; see ``dit_fx/parallel.py``).

    ``quantize``: torchao low-bit Linears in the blocks (``"int8"``, ``"fp8"``, ... or a
    ``dit_fx.QuantizeConfig``), applied at the first call before capture (``dit_fx/quantize.py``).

    ``fuse_linears``: one GEMM for a block's Linears that read the same value (q / k / v, ...);
    None: on when the model runs on CUDA (``dit_fx.CompileOptions``, ``passes/fuse_linears.py``).
    """
    if is_pipeline(model):
        return _optimize_pipeline(model, config, dict(compile=compile, cuda_graphs=cuda_graphs, inductor_options=inductor_options,
                                                      mode=mode, dump_dir=dump_dir, parallel=parallel,
                                                      quantize=quantize, fuse_linears=fuse_linears))
    if parallel is not None:
        if not isinstance(parallel, ParallelConfig):
            raise ValueError(f"parallel must be a dit_fx.ParallelConfig, got {type(parallel).__name__}")
        parallel.check()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"optimize expects a transformer nn.Module or a diffusers pipeline, got {type(model).__name__}")
    options = CompileOptions(compile=compile, cuda_graphs=cuda_graphs, mode=mode,
                             inductor_options=inductor_options or {}, dump_dir=dump_dir, quantize=quantize,
                             fuse_linears=fuse_linears)
    if parallel is not None and parallel.tp > 1 and options.quantize is not None:
        raise ValueError("quantize together with ParallelConfig.tp is not built: quantized weights are not split "
                         "(use one of them)")
    cfg = coerce_config(config)
    _check_block_counts(model, cfg)
    quantize_model(model, options.quantize)  # at the first call, before capture
    if model in _OPTIMIZED:
        disable(model)
    group = parallel_group(model)
    sequence = features = None
    if parallel is not None:
        parallel.check_model(model)
        sequence, features = parallel.sequence_groups(), parallel.feature_group()
        if sequence is not None or features is not None:
            # The diff's sums over every rank of the split: shards add up, replicas scale both sums alike.
            group = parallel.group if parallel.group is not None else torch.distributed.group.WORLD
    session = Session(cfg, options, host=ReducedHostReads(group) if group is not None else LOCAL)
    session.sequence, session.features = sequence, features
    if features is not None:
        session.feature_weights = SplitWeights(features)
        session.release_weights = parallel.release_weights
    session.weak_runners = True  # the Optimized record beside the model keeps the session alive
    session.retries_specialized = True  # a refused capture with symbolic sizes is captured again specialized
    hooked = hooked_forward(model)
    if hooked is None:
        original = type(model).forward.__get__(model)
        # The class's function, called with the model as its first argument: the record kept
        # beside the model must not hold it (a bound method would keep a dropped model alive).
        captured_fn = type(model).forward
    else:
        # Hooks on the instance (diffusers' context-parallel split/gather): captured with the
        # forward, collectives and all. (This keeps the model alive until dit_fx.disable.)
        original = hooked
        captured_fn = _calling(hooked)
    state = Optimized(session, Captures(captured_fn, WeakBackend(session)))
    state.captures.on_evict = state.drop_signature
    _OPTIMIZED[model] = state
    forward = _make_forward(weakref.ref(model), original, state, positional_names(original))
    if parallel is not None and parallel.cfg > 1:
        forward = _split_cfg(forward, parallel, session, positional_names(original))
    state.installation = install_model(model, forward, _branch_named(session))
    state.epoch = watch_model(model)
    return model


def _split_cfg(forward: Callable, parallel: ParallelConfig, session: Session, names) -> Callable:
    """The optimized forward with CFG parallelism (``parallel.py``): this rank's half of each
    batched-CFG call, or this rank's branch of separate cond/uncond calls."""
    run = cfg_parallel_forward(forward, parallel, branch=lambda: session.state.tracker.branch_hint, names=names,
                               restart=session.state.reset,
                               new_generation=lambda: session.state.tracker.generation_pending,
                               in_branch=lambda name: session.state.branch_named(name) if name else contextlib.nullcontext())

    @functools.wraps(forward.__func__)
    def split(self, *args, **kwargs):
        return run(*args, **kwargs)

    split.__dit_fx__ = True  # type: ignore[attr-defined]
    split.cfg_placement = run.separate  # type: ignore[attr-defined]  # its counters, for tests and reports
    return types.MethodType(split, forward.__self__)


def _calling(forward: Callable) -> Callable:
    def call_hooked_forward(model, *args, **kwargs):
        return forward(*args, **kwargs)

    return call_hooked_forward


def _branch_named(session: Session) -> Callable[[str], Any]:
    return lambda name: session.state.branch_named(name)


def _check_block_counts(model: torch.nn.Module, cfg: AnyConfig) -> None:
    lists = module_block_lists(model)
    if not lists:
        return  # found at capture time, or refused there with a warning
    if isinstance(cfg, DBCacheConfig):
        cfg.check_block_count(sum(lists.values()))
        return
    for name, list_cfg in cfg.lists:
        if name not in lists:
            raise ValueError(f"config names block list {name!r}, which {type(model).__name__} lacks (it has {sorted(lists)})")
        list_cfg.check_block_count(lists[name])


def _optimize_pipeline(pipe: Any, config: Any, options: Dict[str, Any]) -> Any:
    """Optimize every transformer component; each ``pipe(...)`` call starts a new generation."""
    configs = split_configs(pipe, config)
    for name, module in transformer_components(pipe).items():
        optimize(module, configs[name], **options)
    pipe_ref = weakref.ref(pipe)

    def reset_all() -> None:
        """A pipeline call starts: a new generation in the caller's request, or, with none
        bound, a fresh state of its own for this call (bound in this thread / task)."""
        live = pipe_ref()
        if live is not None:
            for module in transformer_components(live).values():
                if module in _OPTIMIZED:
                    slot = _OPTIMIZED[module].session.states
                    bound = slot.bound()
                    if bound is not None and not bound.per_call:
                        bound.reset()
                    else:
                        fresh = slot.new_state()
                        fresh.per_call = True
                        # generations keep counting per thread, across pipeline calls
                        fresh.tracker.generation = slot.current().tracker.generation
                        slot.bind(fresh)

    def check_steps(num_inference_steps: Optional[int]) -> None:
        live = pipe_ref()
        if live is not None:
            for module in transformer_components(live).values():
                if module in _OPTIMIZED:
                    _OPTIMIZED[module].session.expect_pipeline_steps(num_inference_steps)

    hook_pipeline(pipe, reset_all, check_steps)
    return pipe


def positional_names(forward: Callable) -> Optional[Tuple[str, ...]]:
    """The names positional arguments of ``forward`` bind to (through diffusers' wrappers), or
    None when it takes ``*args`` (then calls are passed on as they are)."""
    try:
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY))


def _as_keywords(names: Optional[Tuple[str, ...]], args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """``transformer(x, t, cond)`` as ``transformer(hidden_states=x, timestep=t, ...)``: the graph
    then names every input (the timestep is found however it is passed) and positional and
    keyword calls share one capture. Anything odd (too many, or a name given twice) is passed on
    as it is, for the original forward to judge."""
    if not args or names is None or len(args) > len(names) or any(n in kwargs for n in names[: len(args)]):
        return args, kwargs
    return (), {**dict(zip(names, args)), **kwargs}


def _make_forward(model_ref, original: Callable, state: Optimized, names: Optional[Tuple[str, ...]] = None) -> Callable:
    """The forward installed on the model, as a method bound to it: ``copy.deepcopy`` of the model
    rebinds it to the copy, which this notices (the copy has other weights and no capture) and
    runs unmodified, with one warning."""

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        if self is not model_ref():
            return _run_copy(self, args, kwargs)
        if state.fallback_reason is not None:
            return original(*args, **kwargs)
        args, kwargs = _as_keywords(names, args, kwargs)
        model = self
        if state.epoch_seen != state.epoch.value:
            # A module, parameter or buffer was registered on the model (an adapter,
            # load_state_dict(assign=True)): its captures hold the old ones. Capture afresh.
            state.forget_captures()
            state.epoch_seen = state.epoch.value
        key = call_key(model, args, kwargs)
        if key is not None:
            direct = state.direct.get(key)
            if direct is not None:
                state.direct_hits += 1
                return direct(model, args, kwargs)
        state.dynamo_calls += 1
        seen, token = observe_call()
        try:
            out = state.captures.for_call(args, kwargs)(model, *args, **kwargs)
        except _RECOMPILE_LIMIT:
            _warn_bypassed(state)  # this signature is not captured; others keep working
            return original(*args, **kwargs)
        except Exception as exc:
            in_pieces = state.captures.graph_breaks is not None
            if not in_pieces and not isinstance(exc, _CAPTURE_ERRORS):
                raise
            if state.installation.block_marks:
                # Some block cannot be traced as a region (side effects, input mutation): trace
                # the forward flat instead, which costs only trace time.
                log.debug("dit_fx: tracing blocks once failed, tracing flat", exc_info=True)
                state.installation.unmark_blocks()
                return forward(self, *args, **kwargs)
            if state.captures.graph_breaks != "static":
                # Not one graph: capture again in pieces, with graph breaks allowed outside the
                # block stack; sizes read from tensors symbolic first, then specialized.
                log.debug("dit_fx: capture failed, capturing with graph breaks", exc_info=True)
                refused = _caused_by(exc, RetrySpecialized)
                if in_pieces:
                    whole, symbolic = state.session.pieces.whole_graph_reason, state.session.pieces.refused_symbolic
                else:
                    whole, symbolic = (str(refused) if refused else _first_line(exc)), refused is not None
                _allow_graph_breaks(state, model, whole, "static" if in_pieces or refused else "dynamic")
                state.session.pieces.refused_symbolic = symbolic
                return forward(self, *args, **kwargs)
            # Capture failed: run the original. If that fails too, the input was the problem.
            out = original(*args, **kwargs)
            state.fallback_reason = f"could not capture the forward as one graph: {state.session.pieces.whole_graph_reason}"
            warnings.warn(
                f"dit_fx: running the model unmodified (no caching): {state.fallback_reason}",
                RuntimeWarning,
                stacklevel=2,
            )
            return out
        finally:
            end_observation(token)
        state.session.release_pending()  # tensor parallelism: whole weights the new split left unread
        if seen.record is None:
            if state.session.pieces is not None:  # no graph of this call held the whole block stack
                state.fallback_reason = state.session.pieces.reason()
                warnings.warn(f"dit_fx: running the model unmodified (no caching): {state.fallback_reason}",
                              RuntimeWarning, stacklevel=2)
                return out
            _warn_bypassed(state)
            return out
        signature = signature_key(args, kwargs)
        records = state.signature_records.setdefault(signature, [])
        if not any(r is seen.record for r in records):
            records.append(seen.record)  # kept alive while its signature's capture is
        if key is not None:
            _learn_direct_call(state, key, original, out, seen.record, seen.flat_output, signature)
        return out

    forward.__dit_fx__ = True  # type: ignore[attr-defined]
    return types.MethodType(forward, model_ref())


def _caused_by(exc: BaseException, cls: type) -> Optional[BaseException]:
    """``exc`` or the exception in its chain that is a ``cls``, or None."""
    while exc is not None:
        if isinstance(exc, cls):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _allow_graph_breaks(state: Optimized, model: torch.nn.Module, reason: str, mode: str) -> None:
    """The forward is not one graph (``reason``): capture it from now on in pieces, caching the one
    that holds the whole block stack (``frontend/pieces.py``). Blocks trace flat."""
    state.installation.unmark_blocks()
    state.session.pieces = Pieces(reason, module_block_lists(model), tuple(s for s, _ in state.session.scopes),
                                  dynamic=mode == "dynamic")
    state.captures.allow_graph_breaks(mode)


_COPIES_WARNED: "weakref.WeakSet" = weakref.WeakSet()


def _run_copy(copy_: torch.nn.Module, args, kwargs):
    if copy_ not in _COPIES_WARNED:
        _COPIES_WARNED.add(copy_)
        warnings.warn(
            "dit_fx: this is a copy (copy.deepcopy) of an optimized model: it runs unmodified, with its own "
            "weights; call dit_fx.optimize on the copy to accelerate it",
            RuntimeWarning,
            stacklevel=3,
        )
    return type(copy_).forward(copy_, *args, **kwargs)


def _warn_bypassed(state: Optimized) -> None:
    """Dynamo ran the original frame without calling our backend (e.g. its recompile limit)."""
    if not state.warned_bypass:
        state.warned_bypass = True
        warnings.warn(
            "dit_fx: this call ran the model unmodified (no caching): TorchDynamo did not use the "
            "rewritten graph, most likely because torch._dynamo.config.recompile_limit was reached "
            "(all diffusers transformers share one forward code object). Raise the limit or call "
            "torch._dynamo.reset().",
            RuntimeWarning,
            stacklevel=3,
        )


def _learn_direct_call(state: Optimized, key: Any, original: Callable, out: Any, record, flat, signature) -> None:
    """After a Dynamo call handled by a rewritten graph, remember how to call that graph directly."""
    if record.activation_sources is None or record.call is None:
        return
    binder = make_binder(original, record.activation_sources)
    template = OutputTemplate.capture(out, flat) if flat is not None else None
    if binder is None or template is None:
        return
    state.direct[key] = DirectCall(record.call, binder, template)
    state.direct_signature[key] = signature


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def session_for(model: torch.nn.Module) -> Session:
    """The session of a model optimized by ``optimize`` or compiled with the dit_fx backend."""
    state = _OPTIMIZED.get(model)
    if state is not None:
        return state.session
    session = session_of(model)
    if session is None:
        raise ValueError("model is not optimized by dit_fx (call dit_fx.optimize or torch.compile(backend='dit_fx'))")
    return session


def optimized_state(model: torch.nn.Module) -> Optional[Optimized]:
    return _OPTIMIZED.get(model)


def disable(model: torch.nn.Module) -> torch.nn.Module:
    """Restore the original forward exactly; the cache state is dropped. Pipelines: every transformer.
    With ``ParallelConfig(tp=T)`` (weights released) every rank of the group must call it: the
    weights are gathered back whole."""
    if is_pipeline(model):
        unhook_pipeline(model)
        for module in transformer_components(model).values():
            if module in _OPTIMIZED:
                disable(module)
        return model
    state = _OPTIMIZED.pop(model, None)
    if state is None:
        raise ValueError("model is not optimized by dit_fx.optimize")
    if state.session.feature_weights is not None:
        state.session.feature_weights.restore()  # tensor parallelism released weights: gathered back (collective)
    forget_session(state.session)
    unwatch_model(state.epoch)
    state.installation.undo()
    state.direct.clear()
    state.captures.clear()  # Dynamo's cache entries go with the code copies
    return model


def reset(model: torch.nn.Module) -> None:
    """Start a new generation at the next call: cached residuals and statistics are cleared."""
    if is_pipeline(model):
        per_component(model, reset)
        return
    session_for(model).state.reset()


@contextlib.contextmanager
def generation(model: torch.nn.Module, num_inference_steps: Optional[int] = None):
    """``with dit_fx.generation(model, num_inference_steps=None): ...`` runs one generation.

    Entering starts a new generation; inside, ``num_inference_steps`` (if given) overrides the
    config's; leaving makes the next call start a new one. Explicit control always wins over the
    timestep-based detection.
    """
    if num_inference_steps is not None and (
        isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1
    ):
        raise ValueError(f"num_inference_steps must be a positive int or None, got {num_inference_steps!r}")
    state = session_for(model).state
    state.reset()
    state.expect_steps(num_inference_steps)
    try:
        yield
    finally:
        state.expect_steps(None)
        state.reset()


def summary(model: torch.nn.Module, details: bool = False):
    """Statistics of the current generation (a dict by component name for a pipeline).

    ``cached_steps`` / ``cfg_cached_steps`` per branch, ``executed_steps``, ``residual_diffs``;
    with ``details=True`` also ``details``: a markdown table of residual-diff percentiles per
    branch against the threshold, to help pick one. With one cache context per block list, a
    dict of those by block-list name.
    """
    if is_pipeline(model):
        return per_component(model, summary, details=details)
    session = session_for(model)
    stats = session.stats()  # a fresh snapshot (copies of the lists and dicts)
    if details:
        from .tools.report import residual_diff_table

        for name, one in stats.items() if isinstance(stats, dict) else [(None, stats)]:
            one.details = residual_diff_table(one, session.config_of(name).residual_diff_threshold)
    return stats


def plan(model: torch.nn.Module):
    """The plan of the most recent capture (None before the first call); a dict for a pipeline,
    and a dict by block-list name with one cache context per list."""
    if is_pipeline(model):
        return per_component(model, plan)
    record = session_for(model).last_record
    return record.plan if record else None


def dump(model: torch.nn.Module, directory: str) -> str:
    """Write plan.json, the captured graph and the glue/head/body/tail code to ``directory``
    (one sub-folder per transformer for a pipeline)."""
    from .tools.dump import write_dump

    if is_pipeline(model):
        for name, module in transformer_components(model).items():
            write_dump(session_for(module), os.path.join(directory, name))
        return directory
    return write_dump(session_for(model), directory)


def plot_timeline(model: torch.nn.Module, path: str) -> str:
    """PNG of the residual diff per step against the threshold, cached steps marked, per branch
    (one panel per transformer for a pipeline). Needs matplotlib (``pip install dit_fx[plot]``)."""
    from .tools.report import plot_sessions

    if is_pipeline(model):
        sessions = {name: session_for(module) for name, module in transformer_components(model).items()}
    else:
        sessions = {"transformer": session_for(model)}
    return plot_sessions(sessions, path)
