"""Data-dependent modules inside blocks traced as one opaque op (``dit_fx/frontend/leaf_modules.py``)."""

import copy
import functools

import pytest
import torch
from torch import nn

from dit_fx.frontend.leaf_modules import leaf_patches


def _moe():
    from diffusers.models.transformers.transformer_hidream_image import MOEFeedForwardSwiGLU

    torch.manual_seed(0)
    return MOEFeedForwardSwiGLU(8, 16, num_routed_experts=2, num_activated_experts=2).eval()


def _install(holder):
    for module, forward in leaf_patches(holder):
        module.forward = forward


@torch.no_grad()
def test_the_moe_is_one_op_in_the_graph_and_computes_what_it_computes_eagerly():
    holder = nn.Sequential(_moe())
    x = torch.randn(1, 6, 8)
    expected = holder(x)
    _install(holder)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    got = torch.compile(holder, backend=backend, fullgraph=True)(x)  # no graph break left
    assert torch.equal(got, expected)
    ops = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert torch.ops.dit_fx.leaf_module in ops


def test_with_grad_enabled_the_module_is_traced_as_it_is():
    holder = nn.Sequential(_moe())
    _install(holder)
    with pytest.raises(torch._dynamo.exc.TorchDynamoException):  # its data-dependent routing stops the trace
        torch.compile(holder, backend="eager", fullgraph=True)(torch.randn(1, 6, 8))


@torch.no_grad()
def test_a_copied_model_never_calls_the_original_module():
    holder = nn.Sequential(_moe())
    _install(holder)
    twin = copy.deepcopy(holder)
    forward = twin[0].forward
    assert isinstance(forward, functools.partial) and forward.args[0] is twin[0]
    assert forward.args[1].value is None  # the copied handle is empty: the original's is not reused
    with torch.no_grad():
        twin[0].gate.weight.add_(1.0)
    x = torch.randn(1, 6, 8)
    assert torch.equal(twin(x), type(twin[0]).forward(twin[0], x))
    _install(twin)  # optimizing the copy gives it a handle of its own
    assert twin[0].forward.args[1].value not in (None, holder[0].forward.args[1].value)
