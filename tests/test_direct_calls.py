"""After the first call of an input signature, optimize() calls the rewritten graph directly
(no Dynamo guards per step); anything new goes back through Dynamo."""

import warnings

import torch

import dit_fx
from helpers import run_steps
from tiny_models import make_trajectory, output_tensor


class count_dynamo_calls:
    """Calls of ``model`` that went through Dynamo from now on (``len``), per ``dit_fx.inspect``."""

    def __init__(self, model):
        self.model = model
        self.start = dit_fx.inspect(model).direct_calls.dynamo_calls

    def __len__(self):
        return dit_fx.inspect(self.model).direct_calls.dynamo_calls - self.start


def test_steps_after_the_first_skip_dynamo(tiny):
    spec = tiny("flux_deep")
    model = spec.build()
    steps = make_trajectory("flux_deep", 10)
    expected = run_steps(model, steps)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    calls = count_dynamo_calls(model)
    got = run_steps(model, steps)
    assert len(calls) == 1
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert dit_fx.summary(model).executed_steps == 10


def test_a_new_argument_value_goes_through_dynamo_and_keeps_output_structure(tiny):
    spec = tiny("flux")
    model = spec.build()
    inputs = spec.make_inputs(0, 900.0)
    with torch.no_grad():
        expected = model(**dict(inputs, return_dict=True)).sample
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    calls = count_dynamo_calls(model)
    with torch.no_grad():
        as_tuple = model(**inputs)
        as_tuple_again = model(**inputs)
        as_output = model(**dict(inputs, return_dict=True))
        as_output_again = model(**dict(inputs, return_dict=True))
    assert len(calls) == 2, "one Dynamo call per distinct signature"
    assert isinstance(as_tuple_again, tuple) and len(as_tuple_again) == 1
    assert type(as_output_again) is type(as_output) and hasattr(as_output_again, "sample")
    for out in (as_tuple[0], as_tuple_again[0], as_output.sample, as_output_again.sample):
        assert torch.equal(out, expected)


def test_grad_mode_is_part_of_the_key(tiny):
    spec = tiny("wan")
    model = spec.build()
    inputs = spec.make_inputs(0, 900.0)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    calls = count_dynamo_calls(model)
    with torch.no_grad():
        model(**inputs)
        model(**inputs)
    with torch.enable_grad():
        out = output_tensor(model(**inputs))
    assert len(calls) == 2 and out.requires_grad


def test_replaced_parameters_are_never_silently_ignored(tiny):
    spec = tiny("flux")
    model = spec.build()
    inputs = spec.make_inputs(0, 900.0)
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    run_steps(model, [inputs, inputs])  # captured, then direct
    new_weight = torch.nn.Parameter(torch.randn_like(model.proj_out.weight))
    model.proj_out.weight = new_weight  # a new Parameter object, not an in-place update
    reference = spec.build()
    reference.proj_out.weight = torch.nn.Parameter(new_weight.detach().clone())
    expected = run_steps(reference, [inputs])[0]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = run_steps(model, [inputs])[0]
    assert torch.equal(got, expected)
    # Registered through the module (its hooks saw it): the model is captured afresh, still cached.
    assert dit_fx.inspect(model).captures_total == 2 and not [w for w in record if "dit_fx" in str(w.message)]


def test_in_place_weight_updates_are_seen(tiny):
    """Parameters are bound by reference: in-place updates (load_state_dict, fused LoRA) apply."""
    spec = tiny("flux")
    inputs = spec.make_inputs(0, 900.0)
    reference = spec.build()
    with torch.no_grad():
        reference.proj_out.weight.mul_(0.5)
    expected = run_steps(reference, [inputs])[0]
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    before = run_steps(model, [inputs, inputs])[1]  # second call is a direct call
    with torch.no_grad():
        model.proj_out.weight.mul_(0.5)
    after = run_steps(model, [inputs])[0]
    assert not torch.equal(before, expected)
    assert torch.equal(after, expected)


def test_python_side_effects_keep_every_call_on_dynamo(tiny):
    """A hook that mutates Python state inside the graph: Dynamo replays it, so no direct calls."""
    spec = tiny("flux")
    model = spec.build()
    seen = []
    model.transformer_blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(1))
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.0))
    inputs = spec.make_inputs(0, 900.0)
    run_steps(model, [inputs, inputs, inputs])
    assert len(seen) == 3
    assert dit_fx.inspect(model).direct_calls.entries == 0
