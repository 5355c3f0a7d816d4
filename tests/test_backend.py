"""``torch.compile(model, backend="dit_fx")`` works through the entry point, without importing dit_fx."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import dit_fx
from helpers import run_steps
from tiny_models import make_trajectory

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    sys.path.insert(0, {here!r})
    from tiny_models import MODELS, make_trajectory
    from helpers import BlockCounter, all_blocks, run_steps

    assert "dit_fx" not in sys.modules
    spec = MODELS["flux_deep"]
    model = spec.build()
    steps = make_trajectory("flux_deep", 12)
    plain = run_steps(model, steps)
    counter = BlockCounter(all_blocks(model, spec.block_lists)[2:])  # middle blocks for Fn=2, Bn=0
    options = {{"config": {{"fn_blocks": 2, "bn_blocks": 0, "residual_diff_threshold": 0.25,
                          "max_warmup_steps": 3}}, "compile": {compile}}}
    compiled = torch.compile(model, backend="dit_fx", options=options)
    got = run_steps(compiled, steps)
    computed = [i for i, (a, b) in enumerate(zip(got, plain)) if torch.equal(a, b)]
    print(json.dumps(dict(
        loaded_by_entry_point="dit_fx" in sys.modules,
        middle_runs=counter.value(),
        computed=computed,
        max_dev=max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, plain)),
    )))
    """
)


@pytest.mark.parametrize("compile_flag", [False, True])
def test_backend_by_name_in_fresh_process(compile_flag):
    script = SCRIPT.format(here=HERE, compile=compile_flag)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded_by_entry_point"]
    middle = 8  # flux_deep has 10 blocks; Fn=2 leaves 8 in the middle
    # Some steps were cached: the middle ran fewer than 12 times, in whole-middle units.
    assert result["middle_runs"] % middle == 0 and result["middle_runs"] < 12 * middle
    assert result["max_dev"] > 0
    if not compile_flag:
        # Eager partitions: computed steps are bit-exact, and they are exactly the steps that ran the middle.
        assert len(result["computed"]) * middle == result["middle_runs"]
        assert result["computed"][:3] == [0, 1, 2]


def test_backend_and_optimize_share_the_pipeline(tiny):
    """Same config through both entry points -> same decisions and identical outputs (eager)."""
    spec = tiny("wan_deep")
    steps = make_trajectory("wan_deep", 12)
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.22, max_warmup_steps=3)
    a = spec.build()
    dit_fx.optimize(a, cfg)
    out_a = run_steps(a, steps)
    b = spec.build()
    compiled = torch.compile(b, backend="dit_fx", options={"config": cfg, "compile": False})
    out_b = run_steps(compiled, steps)
    assert dit_fx.summary(a).cached_steps == dit_fx.summary(b).cached_steps != []
    for x, y in zip(out_a, out_b):
        assert torch.equal(x, y)


def test_recompile_shallow_regenerates_only_the_parent():
    """Passes recompile the glue after each edit; its partitions were compiled by their own edits
    and must not be regenerated again (torch's recompile recurses into every child)."""
    import torch.fx as fx
    from dit_fx.fx_utils import recompile_shallow

    class Child(torch.nn.Module):
        def forward(self, x):
            return x * 2

    graph = fx.Graph()
    x = graph.placeholder("x")
    add = graph.call_function(torch.add, (graph.call_module("child", (x,)), 1))
    graph.output(add)
    parent = fx.GraphModule(torch.nn.ModuleDict({"child": fx.symbolic_trace(Child())}), graph)
    regenerated = []
    parent.child.recompile = lambda: regenerated.append("child")
    add.args = (add.args[0], 5)  # edit the parent only
    recompile_shallow(parent)
    assert regenerated == []
    assert "_recompile_submodules" not in parent.__dict__
    assert torch.equal(parent(torch.ones(2)), torch.full((2,), 7.0))
    parent.recompile()  # torch's own recursion is untouched afterwards
    assert regenerated == ["child"]


def test_torch_compile_mode_reaches_the_backend():
    """``torch.compile(model, backend="dit_fx", mode=...)``: torch hands ``mode`` to the backend
    (and refuses it together with ``options``); reduce-overhead means dit_fx's own CUDA graphs,
    which on CPU warn once and run without graphs."""
    from toy_models import ToyDiT, toy_inputs

    torch.manual_seed(0)
    model = ToyDiT(num_blocks=10)  # default config: Fn=8, Bn=0
    expected = [model(**toy_inputs(step)) for step in range(3)]
    compiled = torch.compile(model, backend="dit_fx", mode="reduce-overhead")
    with pytest.warns(RuntimeWarning, match="CUDA graphs"):
        got = [compiled(**toy_inputs(step)) for step in range(3)]
    options = dit_fx.inspect(model).options
    assert options.cuda_graphs and options.lowering == "inductor" and options.inductor_options == {}
    assert dit_fx.summary(compiled).executed_steps == 3
    for a, b in zip(got, expected):
        assert torch.allclose(a[0], b[0], rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match="ValueError: mode"):  # Dynamo wraps it
        torch.compile(ToyDiT(num_blocks=10), backend="dit_fx", mode="fastest")(**toy_inputs(0))
