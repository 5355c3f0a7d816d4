"""A tiny DiT-like graph captured as Dynamo gives it, for the one-file-per-pass unit tests.

``capture()`` traces ``TinyDiT`` with ``torch.compile(fn, backend=<keep the graph>)``, so the graph
has Dynamo's lifted parameter placeholders and real ``nn_module_stack`` meta. From there the
helpers do what ``Session.compile`` does, one piece at a time: static inputs, the plan, a fresh
working copy, a ``RewriteContext`` built by the algorithm, passes picked by name, the lowering
context. Tests then run one pass (after its prerequisites) and assert on the graph it leaves.

``TinyDiT``: x / context / time embedders, a ``ModuleList`` of dual-stream blocks (each returns
``(encoder, hidden)`` like FLUX's double blocks), ``proj_out``. Hidden and text streams have
different token counts, so their roles are never ambiguous.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
from torch import nn

from dit_fx.algorithms import Algorithm, algorithm_of
from dit_fx.frontend.dynamo import StaticInputs, bound_copy, find_static_inputs
from dit_fx.fx_utils import lazy_graph_module
from dit_fx.lowering import GraphPool, RegionCompiler
from dit_fx.options import CompileOptions
from dit_fx.passes import LoweringContext, PassList, RewriteContext, rewrite_nested
from dit_fx.patterns import Plan, PlannerInput, build_plans
from dit_fx.runtime.state import StateSlot

DIM = 8
IMG_TOKENS = 6
TXT_TOKENS = 4
BATCH = 2


class DualBlock(nn.Module):
    def __init__(self, dim: int = DIM):
        super().__init__()
        self.img = nn.Linear(dim, dim)
        self.txt = nn.Linear(dim, dim)

    def forward(self, hidden_states, encoder_hidden_states, temb):
        h = self.img(hidden_states) + temb
        e = self.txt(encoder_hidden_states)
        hidden = hidden_states + torch.tanh(h + e.mean(1, keepdim=True))
        encoder = encoder_hidden_states + 0.5 * torch.tanh(e + h.mean(1, keepdim=True))
        return encoder, hidden


class TinyDiT(nn.Module):
    def __init__(self, num_blocks: int = 4, dim: int = DIM):
        super().__init__()
        self.x_embed = nn.Linear(dim, dim)
        self.context_embed = nn.Linear(dim, dim)
        self.time_embed = nn.Linear(1, dim)
        self.blocks = nn.ModuleList(DualBlock(dim) for _ in range(num_blocks))
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, hidden_states, encoder_hidden_states, timestep):
        temb = self.time_embed(timestep[:, None])[:, None]
        h = self.x_embed(hidden_states)
        e = self.context_embed(encoder_hidden_states)
        for block in self.blocks:
            e, h = block(h, e, temb)
        return (self.proj_out(h),)


class SingleBlock(nn.Module):
    def __init__(self, dim: int = DIM):
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, hidden_states, temb):
        return hidden_states + torch.tanh(self.lin(hidden_states) + temb)


class TwoListDiT(TinyDiT):
    """``blocks`` (dual-stream) then ``single_blocks`` (hidden stream only): two block lists, so
    per-list configs give two cache contexts, the second nested in the first one's tail."""

    def __init__(self, num_blocks: int = 3, num_single: int = 3, dim: int = DIM):
        super().__init__(num_blocks, dim)
        self.single_blocks = nn.ModuleList(SingleBlock(dim) for _ in range(num_single))

    def forward(self, hidden_states, encoder_hidden_states, timestep):
        temb = self.time_embed(timestep[:, None])[:, None]
        h = self.x_embed(hidden_states)
        e = self.context_embed(encoder_hidden_states)
        for block in self.blocks:
            e, h = block(h, e, temb)
        for block in self.single_blocks:
            h = block(h, temb)
        return (self.proj_out(h),)


def tiny_inputs(step: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(BATCH, IMG_TOKENS, DIM, generator=g)
    text = torch.randn(BATCH, TXT_TOKENS, DIM, generator=g)
    return dict(
        hidden_states=hidden * (1 + 0.001 * step),
        encoder_hidden_states=text,
        timestep=torch.full((BATCH,), 1.0 - 0.01 * step),
    )


def build_model(num_blocks: int = 4, seed: int = 0) -> TinyDiT:
    torch.manual_seed(seed)
    return TinyDiT(num_blocks).eval()


@dataclass
class Captured:
    """One Dynamo capture of a module and what the session computes from it before rewriting."""

    model: nn.Module
    inputs: Dict[str, torch.Tensor]
    gm: fx.GraphModule  # as Dynamo handed it to the backend (never modified by the helpers)
    example_inputs: List[Any]
    static: StaticInputs
    bound: fx.GraphModule  # parameters bound, for the planner
    expected: torch.Tensor  # the unmodified module's output on ``inputs``

    @property
    def activations(self) -> List[Any]:
        return [self.example_inputs[i] for i in self.static.activation_indices]

    def glue_inputs(self, inputs: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """The rewritten graph's inputs (the activations, in placeholder order) for ``inputs``
        (Dynamo names the placeholder of argument ``x`` ``l_x_``)."""
        names = [n.name for n in self.gm.graph.nodes if n.op == "placeholder"]
        return [inputs[names[i][len("l_"):-1]] for i in self.static.activation_indices]

    def working(self) -> fx.GraphModule:
        """A fresh copy of the captured graph sharing the parameters (what the session rewrites)."""
        return lazy_graph_module(self.gm, copy.deepcopy(self.gm.graph), "DBCacheGlue")

    def plans(self, config) -> Tuple[Plan, ...]:
        request = PlannerInput(tuple(algorithm_of(c).scope_request(s, c) for s, c in _scopes(config)))
        return build_plans(self.bound.graph, request)

    def plan(self, config) -> Plan:
        plans = self.plans(config)
        assert len(plans) == 1 and plans[0].supported, plans[0]
        return plans[0]

    def rewrite_context(self, config, plan: Optional[Plan] = None, states: Optional[StateSlot] = None) -> RewriteContext:
        plan = plan if plan is not None else self.plan(config)
        algorithm: Algorithm = algorithm_of(config)
        states = states if states is not None else StateSlot(config)
        cache = algorithm.make_context(config, plan, states, outputs_are_reused=False)
        return RewriteContext(plan, config, cache, dict(self.static.by_placeholder))


def _scopes(config):
    from dit_fx.config import BlockListConfigs

    return config.lists if isinstance(config, BlockListConfigs) else ((None, config),)


def capture(model: Optional[nn.Module] = None, inputs: Optional[Dict[str, torch.Tensor]] = None) -> Captured:
    """Trace ``model`` (default: a 4-block ``TinyDiT``) with Dynamo and keep its graph."""
    model = model if model is not None else build_model()
    inputs = inputs if inputs is not None else tiny_inputs()
    kept: Dict[str, Any] = {}

    def keep(gm, example_inputs):
        assert "gm" not in kept, "expected one graph (no graph break)"
        kept["gm"], kept["example_inputs"] = gm, list(example_inputs)
        return gm.forward

    with torch.no_grad():
        expected = model(**inputs)[0]
        torch.compile(model.forward, backend=keep, fullgraph=True, dynamic=False)(**inputs)
    gm, example_inputs = kept["gm"], kept["example_inputs"]
    static = find_static_inputs(gm, example_inputs)
    return Captured(model, inputs, gm, example_inputs, static, bound_copy(gm, static), expected)


def rewrite_passes(config, names: Optional[Iterable[str]] = None) -> PassList:
    """The algorithm's rewrite stage (the checked passes of ``DBCACHE_REWRITE`` / ``DBPRUNE_REWRITE``),
    only the passes named (in stage order) when ``names`` is given."""
    stage = algorithm_of(config).rewrite_passes()
    if names is None:
        return stage
    names = list(names)
    unknown = set(names) - set(stage.names)
    assert not unknown, f"{unknown} not in {stage.names}"
    return PassList("rewrite", [p for p in stage if p.__name__ in names])


def rewrite(cap: Captured, config, upto: Optional[str] = None, ctx: Optional[RewriteContext] = None):
    """Run the rewrite stage on a fresh working copy, up to and including pass ``upto``."""
    stage = algorithm_of(config).rewrite_passes()
    names = stage.names if upto is None else stage.names[: stage.names.index(upto) + 1]
    ctx = ctx if ctx is not None else cap.rewrite_context(config)
    gm = rewrite_passes(config, names)(cap.working(), ctx)
    return gm, ctx


def full_rewrite(cap: Captured, config):
    """The whole rewrite stage through ``rewrite_nested`` (as the session runs it): glue, the glue
    graphs by path, the contexts."""
    plans = cap.plans(config)
    assert plans[0].supported, plans[0]
    states = StateSlot(_scopes(config)[0][1])  # the placement fields agree across lists

    def build(plan, static_inputs):
        cfg = dict(_scopes(config))[plan.scope]
        ctx = cap.rewrite_context(cfg, plan, states)
        ctx.static_inputs = dict(static_inputs)
        return algorithm_of(cfg).rewrite_passes(), ctx

    return rewrite_nested(cap.working(), plans, dict(cap.static.by_placeholder), build)


def lowering_context(
    glues: Sequence[Tuple[str, fx.GraphModule]],
    plans: Sequence[Plan],
    options: Optional[CompileOptions] = None,
    compiler: Optional[RegionCompiler] = None,
    graphs: Optional[GraphPool] = None,
) -> LoweringContext:
    return LoweringContext(
        options=options if options is not None else CompileOptions(compile=True),
        compiler=compiler if compiler is not None else RegionCompiler(),
        graphs=graphs if graphs is not None else GraphPool(),
        glues=tuple(g for _, g in glues),
        block_of=plans[0].block_map(),
        eager_nodes=frozenset(n for p in plans for n in p.deferred_to_body),
    )


# -- graph queries ---------------------------------------------------------------------------------
def nodes(gm: fx.GraphModule, op: str) -> List[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == op]


def placeholder_names(gm: fx.GraphModule) -> List[str]:
    return [n.name for n in nodes(gm, "placeholder")]


def call_targets(gm: fx.GraphModule, op: str = "call_module") -> List[Any]:
    return [n.target for n in nodes(gm, op)]


def calls_of(gm: fx.GraphModule, fn) -> List[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is fn]


def graph_modules(gm: fx.GraphModule) -> List[Tuple[str, fx.GraphModule]]:
    """``gm`` and every GraphModule below it, by dotted path."""
    return [(name, m) for name, m in gm.named_modules() if isinstance(m, fx.GraphModule)]


def get_attr_targets(gm: fx.GraphModule) -> List[str]:
    return [n.target for n in nodes(gm, "get_attr")]


def compute_nodes(gm: fx.GraphModule) -> List[fx.Node]:
    return [n for n in gm.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]


def blocks_in(gm: fx.GraphModule) -> Dict[int, set]:
    """Block index -> names of ``gm``'s compute nodes that run inside that block (``nn_module_stack``)."""
    from dit_fx.patterns.regions import block_candidates

    found: Dict[int, set] = {}
    for node in compute_nodes(gm):
        cand = block_candidates(node)
        if cand is not None:
            found.setdefault(cand[1].list_index, set()).add(node.name)
    return found


def output_tensor(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


class Counting(nn.Module):
    """Wraps a submodule and counts its calls (``gm.body = Counting(gm.body)``: the glue fetches
    its body with ``get_attr`` on every call, so the wrapper is what runs)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, *args):
        self.calls += 1
        return self.inner(*args)


__all__ = [
    "BATCH",
    "Captured",
    "Counting",
    "DualBlock",
    "SingleBlock",
    "TinyDiT",
    "TwoListDiT",
    "build_model",
    "call_targets",
    "blocks_in",
    "calls_of",
    "capture",
    "compute_nodes",
    "full_rewrite",
    "get_attr_targets",
    "graph_modules",
    "lowering_context",
    "nodes",
    "output_tensor",
    "placeholder_names",
    "rewrite",
    "rewrite_passes",
    "tiny_inputs",
]
