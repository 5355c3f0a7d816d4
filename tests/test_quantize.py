"""quantize=: torchao int8 weights (and activations) in the blocks, composed with capture, the cache
and compiled regions, on CPU (tiny FLUX-architecture model)."""

import functools
import warnings

import pytest
import torch

pytest.importorskip("torchao")

import dit_fx
from dit_fx.lowering.inductor import CompiledRegion
from dit_fx.options import CompileOptions
from dit_fx.backend import parse_backend_options
from dit_fx.quantize import block_linears, is_quantized_tensor, pending, quantized_layers
from helpers import rel_err, run_steps
from tiny_models import make_trajectory
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

TORCHAO = {"int8_weight_only": Int8WeightOnlyConfig, "int8": Int8DynamicActivationInt8WeightConfig}
STEPS = 8


def _reference(spec, kind, layers):
    """The same model quantized by torchao itself (the layers dit_fx chose), run without dit_fx."""
    model = spec.build()
    names = set(layers)
    quantize_(model, TORCHAO[kind](), filter_fn=lambda module, fqn: fqn in names)
    return model


def _optimized(spec, kind, threshold, **options):
    model = spec.build()
    cfg = dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=threshold, max_warmup_steps=2)
    dit_fx.optimize(model, cfg, quantize=kind, **options)
    return model


@pytest.mark.parametrize("kind", ["int8_weight_only", "int8"])
def test_threshold_zero_equals_the_torchao_model_without_dit_fx(tiny, kind):
    spec = tiny("flux")
    steps = make_trajectory("flux", STEPS)
    model = _optimized(spec, kind, 0.0)
    assert pending(model) and not quantized_layers(model), "quantized at the first call, before capture"
    got = run_steps(model, steps)
    layers = quantized_layers(model)
    assert layers and all(name in block_linears(model) for name in layers)
    expected = run_steps(_reference(spec, kind, layers), steps)
    unquantized = run_steps(spec.build(), steps)
    info = dit_fx.inspect(model)
    assert info.captures_total == 1 and info.captures[-1].supported
    assert dit_fx.summary(model).cached_steps == []
    for g, e, u in zip(got, expected, unquantized):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(g, u, rtol=0, atol=1e-6), "the quantized model must differ from the fp32 one"


def test_caching_engages_on_a_quantized_model(tiny):
    spec = tiny("flux")
    steps = make_trajectory("flux", STEPS)
    model = _optimized(spec, "int8", 0.3)
    got = run_steps(model, steps)
    expected = run_steps(_reference(spec, "int8", quantized_layers(model)), steps)
    cached = dit_fx.summary(model).cached_steps
    assert 0 < len(cached) < STEPS - 2, f"the recipe should mix cached and computed steps, got {cached}"
    for s in range(STEPS):
        if s in cached:
            assert rel_err(got[s], expected[s]) < 0.5
        else:
            torch.testing.assert_close(got[s], expected[s], rtol=1e-6, atol=1e-6)


def _compiled_regions(glue, part):
    return {name: mod for name, mod in getattr(glue, part).named_children() if isinstance(mod, CompiledRegion)}


def test_compiled_regions_with_int8_weights_are_shared_and_match_eager(tiny):
    spec = tiny("flux")
    steps = make_trajectory("flux", 3)
    model = _optimized(spec, "int8_weight_only", 0.0, compile=True)
    got = run_steps(model, steps)
    expected = run_steps(_reference(spec, "int8_weight_only", quantized_layers(model)), steps)
    for g, e in zip(got, expected):
        assert rel_err(g, e) < 1e-4
    info = dit_fx.inspect(model)
    assert info.captures[-1].options.compile is True
    regions = [m for p in ("head", "body", "tail") for m in _compiled_regions(info.captures[-1].glue, p).values()]
    singles = [m for n, m in _compiled_regions(info.captures[-1].glue, "body").items() if n.startswith("single_transformer_blocks")]
    # the last single block drops an unused output: its own structure, served by its siblings' artifact
    assert len(singles) == 3 and len({m.structure for m in singles[:-1]}) == 1, "one structure per block class"
    assert info.regions.compiles <= len({m.structure for m in regions}) < len(regions), "one compile per distinct region"


def _input_dims(model, inputs):
    """Input rank of every block Linear in one plain forward (recorded independently of dit_fx)."""
    dims = {}

    def record(name, module, args):
        dims.setdefault(name, args[0].dim())

    hooks = [m.register_forward_pre_hook(functools.partial(record, n)) for n, m in block_linears(model).items()]
    with torch.no_grad():
        model(**inputs)
    for h in hooks:
        h.remove()
    return dims


def test_modulation_and_layers_outside_the_blocks_stay_high_precision(tiny):
    spec = tiny("flux")
    steps = make_trajectory("flux", 1)
    dims = _input_dims(spec.build(), steps[0])
    modulation = {n for n, d in dims.items() if d == 2}
    assert any(n.endswith("norm1.linear") for n in modulation)
    model = spec.build()
    dit_fx.quantize(model, "int8_weight_only", inputs=steps[0])
    layers = set(quantized_layers(model))
    assert layers == set(dims) - modulation
    assert not any(n.startswith(("x_embedder", "context_embedder", "time_text_embed", "proj_out")) for n in layers)
    custom = spec.build()
    dit_fx.quantize(custom, dit_fx.QuantizeConfig("int8_weight_only", exclude="*.attn.*", include=["proj_out", "*norm1.linear"]))
    run_steps(custom, steps)
    chosen = set(quantized_layers(custom))
    assert "proj_out" in chosen and not any(".attn." in n for n in chosen)
    assert {n for n in modulation if n.endswith("norm1.linear")} <= chosen
    assert "transformer_blocks.0.ff.net.2" in chosen and not pending(custom)


def test_modulation_true_quantizes_the_modulation_layers_too_and_matches_torchao(tiny):
    spec = tiny("flux")
    steps = make_trajectory("flux", 3)
    dims = _input_dims(spec.build(), steps[0])
    model = spec.build()
    reference = spec.build()
    dit_fx.quantize(model, dit_fx.QuantizeConfig("int8_weight_only", modulation=True), inputs=steps[0])
    assert set(quantized_layers(model)) == set(dims)  # every block Linear, the 2-D-input ones included
    names = set(dims)
    quantize_(reference, Int8WeightOnlyConfig(), filter_fn=lambda module, fqn: fqn in names)
    with torch.no_grad():
        for kwargs in steps:
            torch.testing.assert_close(model(**kwargs)[0], reference(**kwargs)[0], rtol=0, atol=0)
    assert dit_fx.QuantizeConfig("int8", modulation=True) == CompileOptions(
        quantize={"kind": "int8", "modulation": True}).quantize
    with pytest.raises(ValueError, match="quantize.modulation"):
        dit_fx.QuantizeConfig("int8", modulation="yes")


def test_already_quantized_model_is_left_alone(tiny):
    spec = tiny("flux")
    steps = make_trajectory("flux", 4)
    model = spec.build()
    quantize_(model, Int8WeightOnlyConfig())  # every Linear, modulation and embedders included
    weights = {n: p for n, p in model.named_parameters()}
    expected = run_steps(model, steps)
    with pytest.warns(UserWarning, match="already has torchao-quantized weights"):
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0), quantize="int8")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # warned once per model
        dit_fx.quantize(model, "int8")
    got = run_steps(model, steps)
    assert not pending(model)
    assert all(p is weights[n] for n, p in model.named_parameters()), "no weight replaced"
    assert dit_fx.inspect(model).captures[-1].supported
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(32, 16)

    def forward(self, x):
        return self.proj(x)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Block()])

    def forward(self, x):
        return self.blocks[0](x)


@pytest.mark.parametrize("kind", ["int8", "int8_weight_only", "fp8_weight_only"])
def test_zero_weight_rows_and_zero_activation_rows_give_no_nan(kind):
    torch.manual_seed(0)
    model = _Toy()
    with torch.no_grad():
        model.blocks[0].proj.weight[3] = 0  # an all-zero weight row: zero scale
    bias = model.blocks[0].proj.bias.detach().clone()
    x = torch.randn(2, 5, 32)
    x[0, 1] = 0  # an all-zero activation row
    dit_fx.quantize(model, kind, inputs=(x,))
    assert is_quantized_tensor(model.blocks[0].proj.weight)
    with torch.no_grad():
        y = model(x)
    assert not y.isnan().any()
    torch.testing.assert_close(y[..., 3], bias[3].expand(2, 5), rtol=0, atol=0)
    torch.testing.assert_close(y[0, 1], bias, rtol=0, atol=0)


def test_bad_quantize_values_raise_value_error_naming_the_field(tiny):
    model = tiny("flux").build()
    with pytest.raises(ValueError, match="quantize.kind"):
        dit_fx.optimize(model, quantize="int3")
    with pytest.raises(ValueError, match="quantize.exclude"):
        dit_fx.QuantizeConfig("int8", exclude=[1])
    with pytest.raises(ValueError, match="quantize.include"):
        dit_fx.QuantizeConfig("int8", include=5)
    with pytest.raises(ValueError, match="^quantize must be"):
        CompileOptions(quantize=8)
    with pytest.raises(ValueError, match="^quantize as a dict"):
        CompileOptions(quantize={"kind": "int8", "layers": "all"})
    assert CompileOptions(quantize={"kind": "int8", "exclude": "x*"}).quantize == dit_fx.QuantizeConfig("int8", ("x*",))
    with pytest.raises(ValueError, match="option 'quantize'.*dit_fx.quantize"):
        parse_backend_options({"quantize": "int8"})
    assert not quantized_layers(model) and not pending(model)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp8 dynamic quantization runs on recent GPUs")
def test_fp8_dynamic_on_cpu_is_refused_before_any_layer_changes(tiny):
    spec = tiny("flux")
    model = spec.build()
    with pytest.raises(ValueError, match="quantize.kind 'fp8'"):
        dit_fx.quantize(model, "fp8", inputs=make_trajectory("flux", 1)[0])
    assert not quantized_layers(model)
