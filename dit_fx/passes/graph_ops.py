"""Op tables and small node helpers shared by the graph passes that follow a dimension through
the ops of a captured graph (``shard_sequence``: tokens; ``shard_features``: features)."""

from __future__ import annotations

import math
import operator
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F

SDPA = {torch._C._nn.scaled_dot_product_attention, F.scaled_dot_product_attention}
ELEMENTWISE_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow, operator.iadd,
    operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.exp, torch.sin, torch.cos,
    torch.tanh, torch.sigmoid, torch.sqrt, torch.rsqrt, torch.where, torch.clamp, torch.abs, torch.erf, torch.pow,
    torch.lerp, torch.addcmul, torch.square, torch.maximum, torch.minimum, torch.rsub, torch.float_power,
    F.silu, F.gelu, F.relu, F.dropout, F.sigmoid, F.tanh, F.mish, F.leaky_relu, F.hardswish, torch._C._nn.gelu,
    torch._C._nn.silu, torch.nn.functional.elu, torch.log, torch.reciprocal,
}
ELEMENTWISE_METHODS = {
    "float", "half", "bfloat16", "double", "to", "type_as", "contiguous", "clone", "detach", "type", "add", "sub",
    "mul", "div", "neg", "exp", "sigmoid", "tanh", "pow", "sqrt", "rsqrt", "sin", "cos", "abs", "square", "clamp",
    "masked_fill", "add_", "mul_", "sub_", "div_", "addcmul", "lerp", "__add__", "__mul__", "__sub__",
    "__truediv__", "__radd__", "__rmul__", "__rsub__", "silu", "relu", "gelu", "reciprocal", "log", "float_power",
}
LAST_DIMS_FUNCS = {torch._C._nn.linear, F.linear, torch.matmul, F.layer_norm, torch.rms_norm, torch.layer_norm}
VIEW_METHODS = {"view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze", "expand", "view_as_real",
                 "view_as_complex", "expand_as"}
VIEW_FUNCS = {torch.reshape, torch.flatten, torch.unflatten, torch.unsqueeze, torch.squeeze, torch.view_as_real,
               torch.view_as_complex}
LIKE = {torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like, torch.rand_like, torch.randn_like}
PERMUTES = {"permute", "transpose", "movedim", "swapaxes"}
REDUCTIONS = {"mean", "sum", "var", "std", "amax", "amin", "norm"}
SPLITS = {"chunk", "split", "split_with_sizes", "unbind", "tensor_split"}
SOFTMAX = {"softmax", "log_softmax"}


def value(node: Any):
    return node.meta.get("example_value", node.meta.get("val")) if isinstance(node, fx.Node) else None


def shape(node: Any) -> Optional[Tuple[int, ...]]:
    v = value(node)
    return tuple(int(s) for s in v.shape) if isinstance(v, torch.Tensor) else None


def name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def map_dim(src: Sequence[int], d: int, dst: Sequence[int]) -> Optional[int]:
    """The dimension of ``dst`` that is dimension ``d`` of ``src`` under a view (same elements
    before and after it, same size); None if a view merges or splits it."""
    before, after = math.prod(src[:d]), math.prod(src[d + 1:])
    for e, size in enumerate(dst):
        if size == src[d] and math.prod(dst[:e]) == before and math.prod(dst[e + 1:]) == after:
            return e
    return None


def index_items(ndim: int, index: Any) -> Optional[List[Any]]:
    """A tensor index expanded to one item per input dim (slices / ints) plus None (new dims)."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(not (it is None or it is Ellipsis or isinstance(it, (int, slice))) or isinstance(it, bool) for it in items):
        return None
    real = sum(1 for it in items if it is not None and it is not Ellipsis)
    out: List[Any] = []
    for it in items:
        out += [slice(None)] * (ndim - real) if it is Ellipsis else [it]
    consumed = sum(1 for it in out if it is not None)
    return out + [slice(None)] * (ndim - consumed)


def norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def permutation(node: fx.Node, ndim: int) -> List[int]:
    """For a permute / transpose / movedim / swapaxes node: output dim -> input dim."""
    op = name(node)
    args = list(node.args[1:])
    if op == "permute" or node.target is torch.permute:
        dims = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        if not dims:
            dims = node.kwargs.get("dims")
        return [norm_dim(x, ndim) for x in dims]
    a = norm_dim(arg(node, 1, "dim0"), ndim)
    b = norm_dim(arg(node, 2, "dim1"), ndim)
    order = list(range(ndim))
    if op == "movedim" or node.target is torch.movedim:
        order.pop(a)
        order.insert(b, a)
    else:
        order[a], order[b] = order[b], order[a]
    return order
