"""Low-bit weights (and activations) for the transformer blocks, through torchao's ``quantize_``.

``dit_fx.quantize(model, "int8")`` or ``dit_fx.optimize(model, cfg, quantize="int8")``; kinds
(``KINDS``): ``fp8`` (dynamic fp8 activations and weights, row-wise scales where the hardware and
dtype allow it: bf16 weights on CUDA capability >= 9.0; else per-tensor), ``fp8_tensor``
(per-tensor scales), ``int8`` (dynamic int8 activations, int8 weights), ``int8_weight_only``,
``int4_weight_only`` (group size 128), ``fp8_weight_only``. The fp8 dynamic kinds and int4 need a
GPU (torchao 0.18 has no CPU kernels for them): asking for them elsewhere raises ``ValueError``
naming ``quantize.kind`` with torchao's reason, before any layer is changed.

Which layers. Only ``nn.Linear`` layers inside the transformer block lists (the lists the
planner caches, ``patterns.regions.module_block_lists``), so embedders, the final norm and
projection (outside the blocks) and every norm (not a Linear) keep their precision. Inside the
blocks the modulation (AdaLN) layers stay high-precision too. They are found from data, not
names: one recorded forward with temporary forward-pre-hooks on the blocks' Linears (removed
afterwards) notes the shape of every input, and a Linear whose input has no sequence dimension
(``[B, C]`` or ``[B, 1, C]``: the per-sample conditioning, with at most as many rows as the
batch of the largest model input) is a modulation layer. A Linear that ever sees tokens is
quantized; ``QuantizeConfig(modulation=True)`` quantizes the modulation layers too (no recorded
forward then). ``QuantizeConfig.exclude`` / ``include`` (fnmatch patterns on module names) override
that choice: ``include`` adds layers (anywhere in the model), ``exclude`` removes them and wins
over ``include``.

When. The recorded forward needs the model's inputs: ``quantize(model, q, inputs=...)`` runs it
at once; without ``inputs`` (and in ``optimize``) a one-shot forward-pre-hook does it at the
model's first call, before dit_fx captures the forward, then removes itself. That first call
therefore costs one extra eager forward. ``dit_fx.disable`` does not undo quantization.

Already quantized. A model with any torchao weight (a ``torchao`` tensor subclass) is left
alone, with one warning per model: quantize it either way, not both.

Zero scales. An all-zero weight row gives a zero scale; torchao's int8 paths clamp scales to
fp32 eps (checked by the tests), but its fp8 weights come out as 0/0 = NaN there. After
``quantize_`` every fp8 weight whose scale is 0 gets scale 1 and quantized values 0 on those
blocks (the block was all zero, so the weight is still exactly zero). The fp8 dynamic kinds pass
``activation_value_lb=1e-12`` so an all-zero activation row gets a positive scale too (this also
picks torchao's plain-torch activation quantization, which Inductor fuses into the ops before it).

torch.compile's backend cannot quantize: Dynamo hands it the graph with the weights already
lifted; quantize first (``dit_fx.quantize(model, q, inputs=example)`` or torchao's ``quantize_``),
then ``torch.compile(model, backend="dit_fx")`` runs on the quantized weights. Unlike
``torchao.quantization.quantize_``'s default, dit_fx does not set torchao's recommended Inductor
options (process-wide ``torch._inductor.config`` values, coordinate-descent tuning among them):
on the H200 they pushed dit_fx fp8's first call past 250 s, while the computed step with
Inductor's defaults is already 0.75x bf16 (``benchmarks/results/quantize_h200_flux_1024.json``,
measured with them off). Set them yourself to try (``torchao.quantization.utils.recommended_inductor_config_setter()``).
"""

from __future__ import annotations

import dataclasses

import copy
import fnmatch
import functools
import importlib.util
import logging
import math
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import torch

from .patterns.regions import module_block_lists

log = logging.getLogger(__name__)

KINDS = ("fp8", "fp8_tensor", "int8", "int8_weight_only", "int4_weight_only", "fp8_weight_only")
INT4_GROUP_SIZE = 128
FP8_ACTIVATION_LB = 1e-12  # smallest amax used for an fp8 activation scale (all-zero rows)


def _patterns(name: str, value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = tuple(value)
        if all(isinstance(p, str) and p for p in items):
            return items
    raise ValueError(f"quantize.{name} must be an fnmatch pattern or a list of them (module names), got {value!r}")


@dataclass(frozen=True)
class QuantizeConfig:
    """kind: one of ``KINDS``. exclude: fnmatch patterns of module names never quantized.
    include: patterns of Linear layers quantized although the default choice (block Linears
    that are not modulation layers) leaves them out; ``exclude`` wins over it. Both take one
    pattern or a list; they are stored as tuples. modulation: also quantize the blocks'
    modulation (AdaLN) Linears, the ones found from data (any model, no name list). Off by
    default: they are per-sample GEMVs, so low bits save memory more than time. On FLUX.1-dev
    at 1024² with ``fp8`` (H200, ``benchmarks/results/quantize_h200_flux_1024_variants*.json``)
    they hold 3.0 of the 14.2 GiB left in bf16; quantizing them gave 11.2 GiB, end to end
    0.4% and 1.5% faster in two runs, PSNR against bf16 uncached 0.05-0.08 dB lower."""

    kind: str
    exclude: Tuple[str, ...] = ()
    include: Optional[Tuple[str, ...]] = None
    modulation: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"quantize.kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.modulation, bool):
            raise ValueError(f"quantize.modulation must be a bool, got {self.modulation!r}")
        object.__setattr__(self, "exclude", _patterns("exclude", self.exclude))
        include = _patterns("include", self.include)
        object.__setattr__(self, "include", include or None)

    def chooses(self, name: str, default: bool) -> bool:
        """Whether the Linear ``name`` is quantized, given the default choice for it."""
        if _matches(name, self.exclude):
            return False
        return default or _matches(name, self.include or ())


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def coerce_quantize(value: Any) -> Optional[QuantizeConfig]:
    """``quantize=``: None, a kind (``"int8"``), a dict of ``QuantizeConfig`` fields, or a
    ``QuantizeConfig``. Anything else raises ``ValueError`` naming ``quantize``."""
    if value is None or isinstance(value, QuantizeConfig):
        return value
    if isinstance(value, str):
        return QuantizeConfig(value)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"kind", "exclude", "include", "modulation"})
        if unknown or "kind" not in value:
            raise ValueError(f"quantize as a dict needs 'kind' and takes only kind/exclude/include/modulation, "
                             f"got keys {sorted(value)}")
        return QuantizeConfig(**value)
    raise ValueError(f"quantize must be None, a kind {KINDS}, a dict or a dit_fx.QuantizeConfig, got {type(value).__name__}")


# ----------------------------------------------------------------------------- detection


def is_quantized_tensor(tensor: Any) -> bool:
    """A torchao tensor subclass (checked by class module: torchao need not be imported)."""
    return any(cls.__module__.split(".")[0] == "torchao" for cls in type(tensor).__mro__)


def is_quantized(model: torch.nn.Module) -> bool:
    return any(is_quantized_tensor(p) for p in model.parameters())


def quantized_layers(model: torch.nn.Module) -> List[str]:
    """Names of the Linear layers whose weight is a torchao tensor."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and is_quantized_tensor(m.weight)]


_WARNED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def _leave_alone(model: torch.nn.Module) -> bool:
    """True (with one warning per model) when ``model`` already holds torchao weights."""
    if not is_quantized(model):
        return False
    if model not in _WARNED:
        _WARNED.add(model)
        warnings.warn(f"dit_fx: {type(model).__name__} already has torchao-quantized weights; quantize= leaves it as it is",
                      UserWarning, stacklevel=3)
    return True


# ----------------------------------------------------------------------------- which layers


def block_linears(model: torch.nn.Module) -> Dict[str, torch.nn.Linear]:
    """The Linear layers inside the model's block lists, by module name."""
    prefixes = tuple(f"{name}." for name in module_block_lists(model))
    if not prefixes:
        return {}
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefixes)}


def _batch_size(args: tuple, kwargs: Mapping[str, Any]) -> Optional[int]:
    """Leading dimension of the largest tensor input (the latents / hidden states)."""
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.dim() >= 1]
    return max(tensors, key=torch.Tensor.numel).shape[0] if tensors else None


def _per_sample(shape: torch.Size, batch: Optional[int]) -> bool:
    """No sequence dimension: ``[B, C]`` or ``[B, 1, ..., C]`` with B at most the batch."""
    rows = math.prod(shape[:-1])
    return math.prod(shape[1:-1]) == 1 and (batch is None or rows <= batch)


@torch.no_grad()
def conditioning_layers(model: torch.nn.Module, args: tuple = (), kwargs: Optional[Mapping[str, Any]] = None) -> Set[str]:
    """Block Linears fed only per-sample conditioning in one recorded forward of ``model``."""
    kwargs = dict(kwargs or {})
    shapes: Dict[str, List[torch.Size]] = {}

    def record(name, module, inputs):
        shapes.setdefault(name, []).append(inputs[0].shape)

    handles = [m.register_forward_pre_hook(functools.partial(record, n)) for n, m in block_linears(model).items()]
    try:
        type(model).forward(model, *args, **kwargs)  # the class's forward: no dit_fx, no instance hooks
    finally:
        for handle in handles:
            handle.remove()
    batch = _batch_size(args, kwargs)
    return {name for name, seen in shapes.items() if all(_per_sample(s, batch) for s in seen)}


def select_layers(model: torch.nn.Module, config: QuantizeConfig, conditioning: Set[str]) -> List[str]:
    """Linear layers to quantize: block Linears except the conditioning ones (kept too with
    ``config.modulation``), then ``include`` / ``exclude``; layers already holding torchao
    weights are skipped."""
    in_blocks = block_linears(model)
    kept = set() if config.modulation else conditioning
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not is_quantized_tensor(module.weight)
        and config.chooses(name, name in in_blocks and name not in kept)
    ]


# ----------------------------------------------------------------------------- torchao


def _require_torchao() -> None:
    if importlib.util.find_spec("torchao") is None:
        raise ImportError("quantize= needs torchao (pip install torchao; tested with torchao 0.18)")


def _fp8_granularity(weight: torch.Tensor):
    from torchao.quantization import PerRow, PerTensor

    rowwise = (weight.dtype == torch.bfloat16 and weight.is_cuda
               and torch.cuda.get_device_capability(weight.device) >= (9, 0))
    return PerRow() if rowwise else PerTensor()


def torchao_config(kind: str, weight: torch.Tensor):
    """The torchao ``quantize_`` config of ``kind`` for weights like ``weight``, told not to
    change Inductor's process-wide settings (``set_inductor_config=False``)."""
    config = _torchao_config(kind, weight)
    if "set_inductor_config" in {f.name for f in dataclasses.fields(config)}:
        config = dataclasses.replace(config, set_inductor_config=False)
    return config


def _torchao_config(kind: str, weight: torch.Tensor):
    import torchao.quantization as tq

    if kind in ("fp8", "fp8_tensor"):
        granularity = _fp8_granularity(weight) if kind == "fp8" else tq.PerTensor()
        return tq.Float8DynamicActivationFloat8WeightConfig(granularity=granularity, activation_value_lb=FP8_ACTIVATION_LB)
    if kind == "fp8_weight_only":
        return tq.Float8WeightOnlyConfig()
    if kind == "int8":
        return tq.Int8DynamicActivationInt8WeightConfig()
    if kind == "int8_weight_only":
        return tq.Int8WeightOnlyConfig()
    from torchao.quantization.quantize_.workflows.int4.int4_packing_format import Int4PackingFormat

    packing = Int4PackingFormat.PLAIN if importlib.util.find_spec("mslk") else Int4PackingFormat.TILE_PACKED_TO_4D
    return tq.Int4WeightOnlyConfig(group_size=INT4_GROUP_SIZE, int4_packing_format=packing)


def _preflight(kind: str, name: str, layer: torch.nn.Linear, ao_config) -> None:
    """Quantize a copy of one layer first, so an unsupported kind fails before the model changes."""
    from torchao.quantization import quantize_

    probe = torch.nn.Sequential(copy.deepcopy(layer))
    try:
        quantize_(probe, ao_config)
    except Exception as exc:  # torchao raises AssertionError / ImportError / NotImplementedError
        raise ValueError(f"quantize.kind {kind!r}: torchao cannot quantize {name} ({layer.weight.dtype} on "
                         f"{layer.weight.device.type}) here: {type(exc).__name__}: {exc}") from exc


@torch.no_grad()
def repair_zero_scales(model: torch.nn.Module) -> int:
    """fp8 weights with a zero scale (an all-zero row or tensor) hold 0/0 = NaN: give those
    blocks scale 1 and value 0 (exactly the zero weight). Returns how many weights changed."""
    repaired = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        qdata, scale = getattr(weight, "qdata", None), getattr(weight, "scale", None)
        if not (is_quantized_tensor(weight) and isinstance(qdata, torch.Tensor) and isinstance(scale, torch.Tensor)):
            continue
        zero = scale == 0
        if not qdata.dtype.is_floating_point or not bool(zero.any()):
            continue
        blocks = [q // s for q, s in zip(qdata.shape, scale.shape)]
        mask = zero.reshape(scale.shape)
        for dim, size in enumerate(blocks):
            mask = mask.repeat_interleave(size, dim=dim)
        qdata.copy_(torch.where(mask, torch.zeros((), dtype=torch.float32), qdata.float()).to(qdata.dtype))
        scale.masked_fill_(zero, 1.0)
        repaired += 1
    return repaired


def apply(model: torch.nn.Module, config: QuantizeConfig, args: tuple = (), kwargs: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Quantize ``model`` now: one recorded forward on ``args`` / ``kwargs`` finds the
    modulation layers, then torchao's ``quantize_`` converts the selected Linears. Returns
    their names (empty when the model already holds torchao weights)."""
    _require_torchao()
    if _leave_alone(model):
        return []
    from torchao.quantization import quantize_

    conditioning = set() if config.modulation else conditioning_layers(model, args, kwargs)  # no forward needed
    chosen = select_layers(model, config, conditioning)
    if not chosen:
        return []
    first = model.get_submodule(chosen[0])
    ao_config = torchao_config(config.kind, first.weight)
    _preflight(config.kind, chosen[0], first, ao_config)
    names = set(chosen)
    quantize_(model, ao_config, filter_fn=lambda module, fqn: fqn in names)
    repair_zero_scales(model)
    log.info("dit_fx: quantized %d Linear layers of %s to %s", len(chosen), type(model).__name__, config.kind)
    return chosen


# ----------------------------------------------------------------------------- public entry point

_PENDING: "weakref.WeakKeyDictionary[torch.nn.Module, Any]" = weakref.WeakKeyDictionary()


_FIRST_CALL = threading.Lock()  # two threads' first calls quantize once


def _at_first_call(config: QuantizeConfig, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    if torch.compiler.is_compiling():
        # Traced by torch.compile: raising makes Dynamo run this frame eagerly (or, with
        # fullgraph=True, shows the user this message).
        raise ValueError("quantize: dit_fx.quantize(model) without inputs quantizes at the model's first eager call, "
                         "but this call is traced by torch.compile; pass inputs=(example forward kwargs) to "
                         "dit_fx.quantize, or call the model once, before torch.compile")
    with _FIRST_CALL:
        if module not in _PENDING:
            return  # another thread's first call did it
        apply(module, config, args, kwargs)
        _PENDING.pop(module).remove()


def quantize(model: torch.nn.Module, config: Any, *, inputs: Any = None) -> torch.nn.Module:
    """Quantize ``model``'s block Linears with torchao (see the module docstring for which).

    ``config``: a kind (``"int8"``, ...), a dict of ``QuantizeConfig`` fields or a
    ``QuantizeConfig``. ``inputs``: the forward's keyword arguments (a dict) or positional
    arguments (a tuple) for the recorded forward, quantizing at once; None: at the model's first
    call. A diffusers pipeline: each transformer component, at its first call. Returns ``model``.
    """
    from .integrations.diffusers import is_pipeline, transformer_components

    parsed = coerce_quantize(config)
    if parsed is None:
        return model
    if is_pipeline(model):
        for module in transformer_components(model).values():
            quantize(module, parsed)
        return model
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"quantize expects an nn.Module or a diffusers pipeline, got {type(model).__name__}")
    _require_torchao()
    if _leave_alone(model):
        return model
    old = _PENDING.pop(model, None)
    if old is not None:
        old.remove()  # the latest request wins
    if inputs is not None:
        args, kwargs = _split_inputs(inputs)
        apply(model, parsed, args, kwargs)
        return model
    _PENDING[model] = model.register_forward_pre_hook(functools.partial(_at_first_call, parsed), with_kwargs=True)
    return model


def _split_inputs(inputs: Any) -> Tuple[tuple, dict]:
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    raise ValueError(f"quantize inputs must be a dict of forward keyword arguments or a tuple of positional ones, "
                     f"got {type(inputs).__name__}")


def pending(model: torch.nn.Module) -> bool:
    """Whether ``model`` will be quantized at its next call."""
    return model in _PENDING
