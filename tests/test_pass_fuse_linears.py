"""passes/fuse_linears.py: a block's Linears that read one value become one GEMM.

On CPU (fp32 and torchao's fp8 weight-only, row-wise scales); the fp8 dynamic kind it is made for
needs a GPU (``benchmarks/quantize.py`` measures it there)."""

import collections
import warnings

import pytest
import torch

import dit_fx
from dit_fx.options import CompileOptions
from dit_fx.passes.fuse_linears import AUTO_LAYOUTS, Float8Rows, FusionContext, JoinedWeights, fuse_linears
from helpers import run_steps
from tiny_models import make_trajectory, output_tensor

STEPS = 6


def _session(model):
    return dit_fx.api.optimized_state(model).session


def _joined_and_separate(spec, steps, config=None, dtype=None, **options):
    """The same model run with ``fuse_linears`` False and True: {fuse: (model, outputs)}."""
    runs = {}
    for fuse in (False, True):
        model = spec.build() if dtype is None else spec.build().to(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchao's and diffusers' cast notes
            dit_fx.optimize(model, config or dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0),
                            fuse_linears=fuse, **options)
            runs[fuse] = (model, run_steps(model, steps))
    return runs


def _bf16_steps(name, n):
    return [{k: (v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in s.items()}
            for s in make_trajectory(name, n)]


def _storage_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        inner = [p.qdata, p.scale] if hasattr(p, "qdata") else [p]
        for t in inner:
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


PER_BLOCK = {
    # FLUX: q/k/v of each stream in the double blocks, q/k/v + MLP in the single blocks
    "flux": {"transformer_blocks.0": 2, "transformer_blocks.1": 2, "single_transformer_blocks.0": 1,
             "single_transformer_blocks.1": 1, "single_transformer_blocks.2": 1},
    # Wan: self-attention q/k/v and cross-attention k/v
    "wan": {"blocks.0": 2, "blocks.1": 2, "blocks.2": 2},
}


@pytest.mark.parametrize("name, fused", [("flux", 24), ("wan", 15)])
def test_fp32_outputs_equal_the_unmodified_model_bit_exact(tiny, name, fused):
    spec = tiny(name)
    model = spec.build()
    steps = make_trajectory(name, STEPS)
    expected = run_steps(spec.build(), steps)
    bytes_before = _storage_bytes(model)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), fuse_linears=True)
    got = run_steps(model, steps)
    record = dit_fx.inspect(model).fused_linears
    assert record.fused_linears == fused and not record.kept
    assert collections.Counter(g.block for g in record.groups) == PER_BLOCK[name]  # never across blocks
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    # the parameters view the joined weights: nothing is held twice
    assert _storage_bytes(model) == bytes_before


def test_caching_takes_the_same_decisions_joined_or_not(tiny):
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.3, max_warmup_steps=2)
    runs = _joined_and_separate(tiny("flux"), make_trajectory("flux", 12), cfg)
    cached = {fuse: dit_fx.summary(model).cached_steps for fuse, (model, _) in runs.items()}
    assert cached[True] == cached[False] and cached[True], "caching engages, identically"
    for a, b in zip(runs[True][1], runs[False][1]):
        assert torch.equal(a, b)


def test_fp8_row_wise_weights_are_joined_with_their_scales(tiny):
    pytest.importorskip("torchao")
    runs = _joined_and_separate(tiny("flux"), _bf16_steps("flux", 4), dtype=torch.bfloat16, quantize="fp8_weight_only")
    model = runs[True][0]
    record = dit_fx.inspect(model).fused_linears
    assert record.fused_linears == 24 and {g.layout for g in record.groups} == {"float8_rowwise"}
    q, k = model.transformer_blocks[0].attn.to_q.weight, model.transformer_blocks[0].attn.to_k.weight
    assert type(q).__name__ == "Float8Tensor"
    # k's rows follow q's in one joined qdata / scale
    assert k.qdata.data_ptr() == q.qdata.data_ptr() + q.qdata.numel() * q.qdata.element_size()
    assert k.scale.data_ptr() == q.scale.data_ptr() + q.scale.numel() * q.scale.element_size()
    for a, b in zip(runs[True][1], runs[False][1]):
        assert torch.equal(a, b)


def test_int8_weights_stay_separate_with_the_reason(tiny):
    pytest.importorskip("torchao")
    model = tiny("wan").build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0),
                        quantize="int8_weight_only", fuse_linears=True)
        run_steps(model, make_trajectory("wan", 2))
    record = dit_fx.inspect(model).fused_linears
    assert not record.groups and record.kept
    assert all("Int8Tensor" in why and "cannot be joined" in why for _, why in record.kept)


def test_weights_changed_after_capture_are_followed(tiny):
    """In place (load_state_dict) the joined weight is the same memory; new storage
    (``param.data = ...``) is copied in before the next call."""
    spec = tiny("wan")
    steps = make_trajectory("wan", 3)
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), fuse_linears=True)
    run_steps(model, steps)
    reference = spec.build()
    with torch.no_grad():
        for m in (model, reference):
            m.blocks[1].attn1.to_k.weight.mul_(1.5)  # in place
        new = torch.randn_like(reference.blocks[2].attn1.to_v.weight)
        reference.blocks[2].attn1.to_v.weight.data = new.clone()
        model.blocks[2].attn1.to_v.weight.data = new.clone()  # new storage
        model.blocks[0].attn2.to_v.bias.data = reference.blocks[0].attn2.to_v.bias.data = torch.ones(24)
    got = run_steps(model, steps)
    expected = run_steps(reference, steps)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    with torch.no_grad():
        model.blocks[2].attn1.to_v.weight.data = torch.randn(5, 24)  # cannot be copied: loud
    with pytest.raises(RuntimeError, match="optimize"):
        run_steps(model, steps[:1])


def test_a_second_resolution_reuses_the_joined_weights(tiny):
    spec = tiny("flux")
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), fuse_linears=True)
    run_steps(model, make_trajectory("flux", 2))
    joined = {k: e.tensor for k, e in _session(model).joined_weights.joined.items()}
    bytes_after_first = _storage_bytes(model)
    other = spec.make_inputs(7, 500.0, batch=2)  # a new batch size: a new capture
    out = output_tensor(model(**other))
    assert torch.equal(out, output_tensor(spec.build()(**other)))
    assert dit_fx.inspect(model).captures_total == 2
    again = _session(model).joined_weights.joined
    assert again.keys() == joined.keys() and all(again[k].tensor is joined[k] for k in joined)
    assert _storage_bytes(model) == bytes_after_first


def test_compiled_regions_are_still_shared(tiny):
    spec = tiny("flux")
    steps = make_trajectory("flux", 3)
    runs = _joined_and_separate(spec, steps, compile=True)
    expected = run_steps(spec.build(), steps)
    for _, outs in runs.values():
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(outs, expected))
    compiles = [dit_fx.inspect(model).regions.compiles for model, _ in runs.values()]
    assert compiles == [5, 5]  # head, double, single, the op between, tail


def test_defaults_and_bad_values():
    assert CompileOptions().resolved("cpu").fuse_linears is False  # eager CPU stays bit-exact
    assert CompileOptions().resolved("cuda").fuse_linears is None  # auto: fp8 row-wise weights only
    assert CompileOptions(fuse_linears=True).resolved("cpu").fuse_linears is True
    assert AUTO_LAYOUTS == {Float8Rows.name}
    with pytest.raises(ValueError, match="fuse_linears"):
        CompileOptions(fuse_linears="yes")
    with pytest.raises(ValueError, match="fuse_linears"):
        dit_fx.optimize(torch.nn.Linear(2, 2), fuse_linears=1)


def test_auto_joins_plain_weights_never(tiny):
    """The pass on a captured graph with the auto layouts: plain weights are kept, with why."""
    import torch.fx as fx

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.q(x) + self.k(x)

    block = Block()
    # functional linears over placeholders, as Dynamo captures them
    graph = fx.Graph()
    x = graph.placeholder("x")
    params = {n: graph.placeholder(n) for n in ("qw", "qb", "kw", "kb")}
    q = graph.call_function(torch._C._nn.linear, (x, params["qw"], params["qb"]))
    k = graph.call_function(torch._C._nn.linear, (x, params["kw"], params["kb"]))
    graph.output(graph.call_function(torch.add, (q, k)))
    for node, val in ((q, torch.zeros(1, 4)), (k, torch.zeros(1, 4))):
        node.meta["example_value"] = val
    gm = fx.GraphModule(torch.nn.Module(), graph)
    values = {"qw": block.q.weight, "qb": block.q.bias, "kw": block.k.weight, "kb": block.k.bias}
    block_of = {q.name: "blocks.0", k.name: "blocks.0"}
    ctx = FusionContext(block_of=dict(block_of), params=values, weights=JoinedWeights(), layouts=AUTO_LAYOUTS)
    fuse_linears(gm, ctx)
    assert not ctx.record.groups and "fuse_linears=True" in ctx.record.kept[0][1]
    ctx = FusionContext(block_of=dict(block_of), params=values, weights=JoinedWeights())
    fused = fuse_linears(gm, ctx)
    inp = torch.randn(3, 4)
    assert len(ctx.record.groups) == 1
    expected = block(inp)
    assert torch.allclose(fused(inp, *values.values()), expected)


def test_a_dropped_model_frees_its_joined_weights(tiny):
    import gc
    import weakref

    spec = tiny("flux")

    def cycle():
        model = spec.build()
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), fuse_linears=True)
        run_steps(model, make_trajectory("flux", 2))
        joined = next(iter(_session(model).joined_weights.joined.values())).tensor
        return weakref.ref(model), weakref.ref(model.transformer_blocks[0].attn.to_q.weight), weakref.ref(joined)

    refs = cycle()
    gc.collect()
    gc.collect()
    assert all(r() is None for r in refs), [r() is None for r in refs]


def test_auto_joins_fp8_row_wise_weights_and_skips_plain_models(tiny, monkeypatch):
    """``fuse_linears=None`` as a CUDA capture resolves it (None = auto), emulated on the CPU: a
    plain model is not even analysed (no record), fp8 row-wise weights are joined."""
    import dataclasses

    pytest.importorskip("torchao")
    resolved = CompileOptions.resolved
    monkeypatch.setattr(CompileOptions, "resolved", lambda self, d: dataclasses.replace(resolved(self, d), fuse_linears=None))
    spec = tiny("flux")
    plain = spec.build()
    dit_fx.optimize(plain, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    run_steps(plain, make_trajectory("flux", 2))
    assert dit_fx.inspect(plain).captures[-1].options.fuse_linears is None
    assert dit_fx.inspect(plain).fused_linears is None
    fp8 = spec.build().to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dit_fx.optimize(fp8, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), quantize="fp8_weight_only")
        run_steps(fp8, _bf16_steps("flux", 2))
    assert dit_fx.inspect(fp8).fused_linears.fused_linears == 24
