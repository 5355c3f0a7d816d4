"""``CompileOptions``: one validator for optimize and the backend, and the per-capture defaults."""

import pytest
import torch

import dit_fx
from dit_fx.backend import parse_backend_options
from toy_models import ToyDiT, toy_inputs


def test_defaults_are_compiled_with_cuda_graphs_on_cuda_and_eager_elsewhere():
    auto = dit_fx.CompileOptions()
    assert auto.compile is None and auto.cuda_graphs is None and auto.lowering == "auto"
    on_gpu, on_cpu = auto.resolved("cuda"), auto.resolved("cpu")
    assert (on_gpu.compile, on_gpu.cuda_graphs) == (True, True)
    assert (on_cpu.compile, on_cpu.cuda_graphs) == (False, False)
    explicit = dit_fx.CompileOptions(compile=True, cuda_graphs=False).resolved("cuda")
    assert (explicit.compile, explicit.cuda_graphs) == (True, False)  # what the user says wins
    assert dit_fx.CompileOptions(compile=False).resolved("cuda").cuda_graphs is False  # graphs need compile by default
    assert dit_fx.CompileOptions(mode="reduce-overhead").cuda_graphs is True
    no_graphs = dit_fx.CompileOptions(compile=True, mode="max-autotune-no-cudagraphs")
    assert no_graphs.cuda_graphs is False and no_graphs.resolved("cuda").cuda_graphs is False  # the mode says no


def test_a_cpu_capture_with_default_options_runs_eager_and_says_so():
    torch.manual_seed(0)
    model = ToyDiT(num_blocks=10)
    expected = [model(**toy_inputs(s)) for s in range(3)]
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    got = [model(**toy_inputs(s)) for s in range(3)]
    capture = dit_fx.inspect(model).captures[-1]
    assert (capture.options.compile, capture.options.cuda_graphs) == (False, False)
    assert capture.passes["lowering"] == []
    for a, b in zip(got, expected):
        assert torch.equal(a[0], b[0])  # eager: bit-exact in fp32


def test_backend_keeps_torch_compiles_convention_for_cuda_graphs():
    assert parse_backend_options(None).compile is True
    assert parse_backend_options(None).cuda_graphs is False  # default mode: no graphs
    assert parse_backend_options(None, mode="reduce-overhead").cuda_graphs is True


@pytest.mark.parametrize("kwargs, field", [
    (dict(compile="yes"), "compile"),
    (dict(cuda_graphs=1), "cuda_graphs"),
    (dict(mode="fast"), "mode"),
    (dict(inductor_options={"max_autotune": True}), "compile=True"),  # Inductor settings need compile=True said
    (dict(mode="max-autotune"), "compile=True"),
    (dict(compile=True, inductor_options={"no_such_option": 1}), "no_such_option"),
    (dict(dump_dir=5), "dump_dir"),
])
def test_one_validator_for_optimize_and_options(kwargs, field):
    with pytest.raises(ValueError, match=field):
        dit_fx.CompileOptions(**kwargs)
    with pytest.raises(ValueError, match=field):
        dit_fx.optimize(ToyDiT(num_blocks=10), dit_fx.DBCacheConfig(), **kwargs)


def test_a_pass_inserted_by_name_runs_in_a_later_capture():
    """The seam later passes (quantize, shard) use: edit a stage's pass list by name."""
    from dit_fx.api import session_for

    seen = []

    def count_partitions(gm, ctx):
        seen.append(sorted(name for name, _ in gm.named_children()))
        return gm

    torch.manual_seed(0)
    model = ToyDiT(num_blocks=10)
    expected = [model(**toy_inputs(s)) for s in range(2)]
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    session = session_for(model)
    session.edit_stage("rewrite", lambda p: p.insert_after("split_partitions", count_partitions))
    with pytest.raises(ValueError, match="stage"):
        session.edit_stage("quantize", lambda p: p)
    got = [model(**toy_inputs(s)) for s in range(2)]
    assert seen and {"head", "body", "tail"} <= set(seen[0])
    assert dit_fx.inspect(model).passes["rewrite"] == [
        "split_partitions", "count_partitions", "bind_partition_parameters", "insert_dbcache_glue"]
    for a, b in zip(got, expected):
        assert torch.equal(a[0], b[0])
