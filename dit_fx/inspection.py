"""``dit_fx.inspect(model)``: what dit_fx did to a model, as plain data.

The supported way for benchmarks, tests and users to look inside: captures and their plans and
passes, compiled regions and compile times, CUDA-graph counters, direct-call hits, cache buffers.
Counters and lists are snapshots (copies); ``CaptureInfo.glue`` is the live rewritten graph
(it holds the model's parameters: drop the inspection to let a dropped model go).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from .api import optimized_state, session_for
from .integrations.diffusers import is_pipeline, per_component
from .options import CompileOptions
from .patterns import Plan


@dataclass(frozen=True)
class CaptureInfo:
    index: int  # capture number in this session
    supported: bool
    reason: Optional[str]  # why it runs unmodified (None when rewritten)
    plans: Tuple[Plan, ...]
    passes: Dict[str, List[str]]  # stage -> pass names that ran
    pass_seconds: Tuple[Tuple[str, str, float], ...]  # (stage, pass, seconds)
    seconds: float  # dit_fx's part of the capture (plan + rewrite + lowering; Inductor compiles are lazy)
    glue: Any = field(default=None, repr=False, compare=False)  # the rewritten glue graph (None: unmodified)
    options: Optional[CompileOptions] = None  # as decided for this capture (compile, cuda_graphs)
    captured: Any = field(default=None, repr=False, compare=False)  # the captured graph, parameters bound


@dataclass(frozen=True)
class RegionInfo:
    compiles: int  # Inductor compiles (one per distinct region structure and input metadata)
    compile_seconds: Tuple[float, ...]
    artifacts: int  # distinct regions with an artifact (larger regions reused for pruned ones count)


@dataclass(frozen=True)
class GraphInfo:
    captures: int
    recaptures: int
    replays: int
    input_copies: int


@dataclass(frozen=True)
class DirectCallInfo:
    entries: int  # input signatures callable without Dynamo
    hits: int  # calls that skipped Dynamo
    dynamo_calls: int  # calls that went through Dynamo (first call of a signature, or refused)


@dataclass(frozen=True)
class Inspection:
    options: CompileOptions
    config: Any
    captures_total: int  # ever made; ``captures`` keeps the latest ones
    captures: Tuple[CaptureInfo, ...]
    regions: RegionInfo
    cuda_graphs: GraphInfo
    direct_calls: Optional[DirectCallInfo]  # None for a model compiled through the backend
    cache_bytes: int  # bytes the current generation state keeps across calls (residuals, ...)
    fallback_reason: Optional[str] = None  # set when the whole model runs unmodified
    signatures: int = 0  # input signatures with a live capture (dit_fx.optimize; limit MAX_SIGNATURES)
    signature_evictions: int = 0  # captures dropped past that limit (least recently used first)
    sharding: Optional[Any] = None  # context parallelism: the last capture's ShardRecord (passes/shard_sequence.py)
    tensor_parallel: Optional[Any] = None  # the last capture's FeatureShardRecord (passes/shard_features.py)
    fused_linears: Optional[Any] = None  # the last capture's FusionRecord (passes/fuse_linears.py); None: not run
    live_captures: int = 0  # captures still held (dropped signatures' captures are let go)
    passes: Dict[str, List[str]] = field(default_factory=dict)  # of the latest capture

    @property
    def plan(self):
        if not self.captures:
            return None
        plans = self.captures[-1].plans
        return plans[0] if len(plans) == 1 and plans[0].scope is None else {p.scope: p for p in plans}


def inspect(model: Any):
    """An ``Inspection`` of ``model`` (a dict by component name for a pipeline)."""
    if is_pipeline(model):
        return per_component(model, inspect)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"inspect expects a module or pipeline optimized by dit_fx, got {type(model).__name__}")
    session = session_for(model)
    optimized = optimized_state(model)
    captures = tuple(
        CaptureInfo(
            index=r.index,
            supported=r.plans[0].supported and r.glue is not None,
            reason=r.plans[0].reason,
            plans=r.plans,
            passes={k: list(v) for k, v in r.passes.items()},
            pass_seconds=tuple((t.stage, t.name, t.seconds) for t in r.timings),
            seconds=r.seconds,
            glue=r.glue,
            captured=r.captured,
            options=r.options,
        )
        for r in session.records
    )
    compiler, graphs = session.lowerer.compiler, session.lowerer.graphs
    direct = None
    if optimized is not None:
        direct = DirectCallInfo(len(optimized.direct), optimized.direct_hits, optimized.dynamo_calls)
    return Inspection(
        options=session.options,
        config=session.config,
        captures_total=session.records.total,
        captures=captures,
        regions=RegionInfo(compiler.compiles, tuple(compiler.compile_seconds), len(compiler.sources)),
        cuda_graphs=GraphInfo(graphs.captures, graphs.recaptures, graphs.replays, graphs.input_copies),
        direct_calls=direct,
        cache_bytes=session.state.buffer_bytes(),
        fallback_reason=optimized.fallback_reason if optimized is not None else None,
        signatures=len(optimized.captures.by_key) if optimized is not None else 0,
        signature_evictions=optimized.captures.evictions if optimized is not None else 0,
        live_captures=session.live_captures,
        sharding=session.shard_records[-1] if session.shard_records else None,
        tensor_parallel=session.feature_records[-1] if session.feature_records else None,
        fused_linears=session.fusion_records[-1] if session.fusion_records else None,
        passes=captures[-1].passes if captures else {},
    )
