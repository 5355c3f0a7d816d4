"""Attention in fp8: the blocks' ``scaled_dot_product_attention`` calls become
``dit_fx.kernels.fp8_attention.fp8_attention`` (``CompileOptions.attention``).

``(gm, ctx) -> gm``. A call is replaced only where the fp8 op computes the same function: no
``attn_mask``, no dropout, not causal, no GQA flag, a head dimension the kernel takes (64, 128,
256, on CUDA), inside a block (``ctx.block_of``: embedders and heads keep their precision). Every other
call stays, with its reason in ``AttentionRecord.kept`` (``dit_fx.inspect(m).attention``). The
node keeps its name and its ``meta`` (so the plan built before still applies); its target and
arguments change. The quantization ops run inside ``fp8_attention`` as plain torch ops, so an
Inductor region fuses them into the ops before the attention.

Modes (``options.ATTENTION_MODES``): ``"fp8"``: both products in fp8 (Q, K, V and P quantized);
``"fp8_qk"``: ``q k^T`` in fp8, ``P v`` in bf16 (less error, less speed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch.fx as fx

from ..kernels.fp8_attention import fp8_attention
from .graph_ops import SDPA

HEAD_DIMS = (64, 128, 256)
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


@dataclass
class AttentionRecord:
    """What the pass did: the replaced calls (node names) and the calls it kept, with why."""

    mode: str
    replaced: List[str] = field(default_factory=list)
    kept: List[Tuple[str, str]] = field(default_factory=list)


@dataclass
class AttentionContext:
    """mode: one of ``ATTENTION_MODES`` (checked by ``CompileOptions``); block_of: node name ->
    block, over the whole block stack."""

    mode: str
    block_of: Dict[str, str]
    record: AttentionRecord = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.record is None:
            self.record = AttentionRecord(self.mode)


def _arguments(node: fx.Node) -> Dict[str, object]:
    bound = dict(zip(_SDPA_ARGS, node.args))
    bound.update(node.kwargs)
    return bound


def _refusal(node: fx.Node, a: Dict[str, object], block_of: Dict[str, str]) -> str:
    if node.name not in block_of:
        return "outside the blocks"
    if a.get("attn_mask") is not None:
        return "has an attention mask"
    if a.get("dropout_p", 0.0) not in (0, 0.0):
        return "has dropout"
    if a.get("is_causal", False) is not False:
        return "is causal"
    if a.get("enable_gqa", False) is not False:
        return "uses enable_gqa"
    q, v = a.get("query"), a.get("value")
    vals = [getattr(t, "meta", {}).get("example_value", getattr(t, "meta", {}).get("val")) for t in (q, v)]
    if any(x is None or getattr(x, "dim", lambda: 0)() != 4 for x in vals):
        return "inputs are not [B, H, S, D] tensors"
    if vals[1].shape[-1] != vals[0].shape[-1]:
        return "values and queries have different head dimensions"
    if vals[0].device.type == "cuda" and vals[0].shape[-1] not in HEAD_DIMS:  # elsewhere the op's torch math takes any
        return f"head dimension {vals[0].shape[-1]} is not one of the kernel's {HEAD_DIMS}"
    return ""


def quantize_attention(gm: fx.GraphModule, ctx: AttentionContext) -> fx.GraphModule:
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in SDPA:
            continue
        a = _arguments(node)
        why = _refusal(node, a, ctx.block_of)
        if why:
            ctx.record.kept.append((node.name, why))
            continue
        node.target = fp8_attention
        node.args = (a["query"], a["key"], a["value"])
        node.kwargs = {"scale": a.get("scale"), "pv_fp8": ctx.mode == "fp8"}
        ctx.record.replaced.append(node.name)
    gm.recompile()
    return gm
