"""Bad configuration is rejected with a ValueError naming the field."""

import pytest
import torch

import dit_fx
from dit_fx.backend import parse_backend_options


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(fn_blocks=0), "fn_blocks"),
        (dict(fn_blocks=-1), "fn_blocks"),
        (dict(bn_blocks=-2), "bn_blocks"),
        (dict(max_warmup_steps=-1), "max_warmup_steps"),
        (dict(warmup_interval=0), "warmup_interval"),
        (dict(max_cached_steps=-5), "max_cached_steps"),
        (dict(max_continuous_cached_steps=-3), "max_continuous_cached_steps"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(max_accumulated_residual_diff_threshold=0.0), "max_accumulated_residual_diff_threshold"),
        (dict(fn_blocks=2.5), "fn_blocks"),
        (dict(fn_blocks=True), "fn_blocks"),
        (dict(residual_diff_threshold="0.1"), "residual_diff_threshold"),
        (dict(num_inference_steps=3.0), "num_inference_steps"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        dit_fx.DBCacheConfig(**kwargs)


def test_unknown_dict_key_is_named():
    with pytest.raises(ValueError, match="fn_compute_blocks"):
        dit_fx.DBCacheConfig.from_dict({"fn_compute_blocks": 2})


def test_defaults_match_the_documented_api():
    cfg = dit_fx.DBCacheConfig()
    assert (cfg.fn_blocks, cfg.bn_blocks, cfg.residual_diff_threshold) == (8, 0, 0.08)
    assert (cfg.max_warmup_steps, cfg.warmup_interval, cfg.max_cached_steps) == (8, 1, -1)
    assert cfg.max_continuous_cached_steps == -1
    assert cfg.max_accumulated_residual_diff_threshold is None and cfg.num_inference_steps is None


def test_fn_plus_bn_must_leave_a_middle_block(tiny):
    model = tiny("flux").build()  # 5 blocks
    with pytest.raises(ValueError, match="fn_blocks"):
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=3, bn_blocks=2))
    assert "forward" not in model.__dict__, "a rejected config must leave the model untouched"


def test_optimize_rejects_non_modules_and_bad_flags(tiny):
    with pytest.raises(ValueError, match="nn.Module"):
        dit_fx.optimize(object())
    with pytest.raises(ValueError, match="compile"):
        dit_fx.optimize(tiny("flux").build(), compile="yes")
    with pytest.raises(ValueError, match="config"):
        dit_fx.optimize(tiny("flux").build(), config=42)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"cofnig": {}}, "cofnig"),
        ({"compile": "no"}, "compile"),
        ({"dump_dir": 3}, "dump_dir"),
        ({"config": {"fn_blocks": 0}}, "fn_blocks"),
        ({"config": {"bogus": 1}}, "bogus"),
        ({"mode": "fastest"}, "mode"),
        ({"inductor_options": {"max_autotun": True}}, "max_autotun"),
        ({"inductor_options": {"max_autotune": "yes"}}, "max_autotune"),
        ({"inductor_options": {"triton.cudagraphs": True}}, "cuda_graphs"),
        ({"inductor_options": ["max_autotune"]}, "inductor_options"),
        ({"compile": False, "inductor_options": {"max_autotune": True}}, "compile"),
        ({"compile": False, "mode": "max-autotune"}, "compile"),
    ],
)
def test_backend_options_are_validated(options, field):
    with pytest.raises(ValueError, match=field):
        parse_backend_options(options)


def test_backend_bad_option_surfaces_through_torch_compile(tiny):
    spec = tiny("flux")
    model = spec.build()
    compiled = torch.compile(model, backend="dit_fx", options={"not_an_option": 1})
    with pytest.raises(Exception) as info:
        compiled(**spec.make_inputs(0, 1.0))
    chain, exc = [], info.value
    while exc is not None and len(chain) < 10:  # Dynamo wraps it; the ValueError is cause or context
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, ValueError) and "not_an_option" in str(e) for e in chain)
