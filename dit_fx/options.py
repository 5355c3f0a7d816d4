"""How the rewritten graph is lowered: one ``CompileOptions``, validated once, shared by
``dit_fx.optimize`` and the ``torch.compile(backend="dit_fx")`` backend.

Every check lives in ``CompileOptions.__post_init__``; a bad value raises ``ValueError`` naming
the field. The cache algorithm's own settings live in ``config.py`` (``DBCacheConfig``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from .quantize import QuantizeConfig, coerce_quantize

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BACKEND_OPTIONS = ("config", "compile", "cuda_graphs", "mode", "inductor_options", "dump_dir", "quantize", "fuse_linears")


@dataclass(frozen=True)
class CompileOptions:
    """compile: run head/body/tail compiled by Inductor, one compile per distinct block (False:
        eager Python partitions). None (``optimize``'s default): decided per capture, True when
        the model runs on CUDA.
    cuda_graphs: replay head, body and tail as CUDA graphs (CUDA inputs only; the cache decision
        stays between graphs). None: what ``mode`` implies (reduce-overhead / max-autotune: on),
        else decided per capture, True when the model runs on CUDA and is compiled.
    mode: torch.compile's modes mapped onto dit_fx (reduce-overhead = dit_fx's CUDA graphs,
        max-autotune(-no-cudagraphs) = Inductor's autotuning options for every distinct region).
    inductor_options: Inductor config values for every region compile (torch.compile's
        ``options``), checked against ``torch._inductor.config``; explicit values win over the mode's.
        Like an autotuning mode, they need ``compile=True`` said explicitly.
    dump_dir: write plan and graphs there after each capture (env ``DIT_FX_DUMP_DIR`` too).
    quantize: torchao low-bit Linears in the blocks (``dit_fx.QuantizeConfig``, or its kind as a
        string, or a dict of its fields), applied to the model before capture (``quantize.py``).
        ``optimize`` only: the backend refuses it (Dynamo has lifted the weights already).
    fuse_linears: one GEMM for the Linears of a block that read the same value (q / k / v, ...),
        ``passes/fuse_linears.py``. None (auto): on CUDA, the torchao fp8 row-wise weights only
        (``quantize="fp8"`` on Hopper), where joining pays: H200, FLUX.1-dev-sized double block
        0.87x, Wan 2.1 14B-sized block 0.97x; plain bf16 blocks were 1-3% slower joined
        (``benchmarks/results/fused_linears_h200.json``); off CUDA, off (eager partitions stay
        bit-exact with the unmodified model). True: every joinable group (plain weights too).
        False: never. The model's parameters become views of the joined weights (no memory
        held twice).

    Why "on CUDA: compiled + CUDA graphs" is the default (docs/benchmarks.md): in every GPU run of
    the benchmarks (FLUX.1-dev-sized at 512² and 1024², PixArt-Sigma-sized at 512²) compiled + CUDA
    graphs was dit_fx's fastest configuration end to end; eager partitions lose Inductor's fusions
    (FLUX 1024² without a cache, H100: eager 5.17 s vs compiled 3.75 s,
    ``compiled_h100_flux_1024_baselines.json``) and, on launch-bound models, the graphs (PixArt
    512² F1B0 dynamic, H200: 0.120 s compiled vs 0.052 s with graphs, ``compiled_h200_pixart_512.json``).
    Its cost is the first call (a cold compile of each distinct region; Inductor's disk cache
    serves later processes): pass ``compile=False`` to start at once. Off CUDA the default stays
    eager: Inductor's compile time dominates short CPU runs, and eager partitions are bit-exact
    with the unmodified model in fp32.

    After construction ``inductor_options`` holds the mode's values merged with the explicit ones
    (``explicit_inductor_options`` keeps what was passed); ``resolved(device_type)`` gives the
    options one capture uses, with ``compile`` and ``cuda_graphs`` decided.
    Fields still to come (parallelism) are added here, checked here.
    """

    compile: Optional[bool] = None
    cuda_graphs: Optional[bool] = None
    mode: str = "default"
    inductor_options: Mapping[str, Any] = field(default_factory=dict)
    dump_dir: Optional[str] = None
    quantize: Optional[QuantizeConfig] = None
    fuse_linears: Optional[bool] = None
    explicit_inductor_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("compile", "cuda_graphs", "fuse_linears"):
            if getattr(self, name) is not None:
                _check_bool(name, getattr(self, name))
        mode_graphs, mode_inductor = mode_options(self.mode or "default")
        explicit = check_inductor_options(self.inductor_options)
        if self.compile is not True and (explicit or mode_inductor):
            raise ValueError("inductor_options / mode (max-autotune) need compiled lowering (compile=True)")
        dump_dir = self.dump_dir if self.dump_dir is not None else (os.environ.get("DIT_FX_DUMP_DIR") or None)
        if dump_dir is not None and not isinstance(dump_dir, (str, os.PathLike)):
            raise ValueError(f"dump_dir must be a path, got {dump_dir!r}")
        set_ = object.__setattr__
        set_(self, "quantize", coerce_quantize(self.quantize))
        set_(self, "mode", self.mode or "default")
        if self.cuda_graphs is None and self.mode not in (None, "default"):
            set_(self, "cuda_graphs", mode_graphs)  # a mode says: reduce-overhead yes, ...-no-cudagraphs no
        set_(self, "explicit_inductor_options", dict(explicit))
        set_(self, "inductor_options", {**mode_inductor, **explicit})
        set_(self, "dump_dir", os.fspath(dump_dir) if dump_dir is not None else None)

    @property
    def lowering(self) -> str:
        return "auto" if self.compile is None else ("inductor" if self.compile else "eager")

    def resolved(self, device_type: str) -> "CompileOptions":
        """The options of a capture whose inputs live on ``device_type``: ``compile`` and
        ``cuda_graphs`` decided (None -> on for CUDA, see the class docstring)."""
        if self.compile is not None and self.cuda_graphs is not None and self.fuse_linears is not None:
            return self
        on_cuda = device_type == "cuda"
        compile_ = on_cuda if self.compile is None else self.compile
        graphs = (on_cuda and compile_) if self.cuda_graphs is None else self.cuda_graphs
        fuse = (None if on_cuda else False) if self.fuse_linears is None else self.fuse_linears  # None: auto
        return dataclasses.replace(self, compile=compile_, cuda_graphs=graphs, fuse_linears=fuse,
                                   inductor_options=dict(self.explicit_inductor_options))

    def key(self) -> Tuple[Any, ...]:
        """Hashable identity: two captures with equal keys may share one session."""
        return (self.compile, self.cuda_graphs, tuple(sorted(self.inductor_options.items(), key=lambda kv: kv[0])), self.dump_dir,
                self.fuse_linears)

    @classmethod
    def from_backend(cls, options: Optional[Mapping[str, Any]], mode: Optional[str] = None) -> Tuple["CompileOptions", Any]:
        """``torch.compile(model, backend="dit_fx", options=..., mode=...)``: (options, raw config).
        torch refuses ``mode=`` together with ``options``, so the mode may also come as an option.
        The backend compiles by default (``compile`` True)."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(BACKEND_OPTIONS))
        if unknown:
            raise ValueError(f"unknown dit_fx backend option(s) {unknown}; known: {list(BACKEND_OPTIONS)}")
        if options.get("quantize") is not None:
            raise ValueError(
                "dit_fx backend option 'quantize': the backend gets the graph after Dynamo lifted the weights and cannot "
                "change them; quantize first, with dit_fx.quantize(model, kind, inputs=example_kwargs) or "
                "torchao.quantization.quantize_, then torch.compile(model, backend='dit_fx') runs the quantized weights")
        if mode is not None and options.get("mode", mode) != mode:
            raise ValueError(f"dit_fx backend option 'mode' ({options['mode']!r}) contradicts torch.compile's mode={mode!r}")
        # torch.compile's convention: CUDA graphs only where the mode (or the option) asks.
        mode_graphs, _ = mode_options(options.get("mode", mode) or "default")
        built = cls(
            compile=options.get("compile", True),
            cuda_graphs=options.get("cuda_graphs", mode_graphs),
            mode=options.get("mode", mode) or "default",
            inductor_options=options.get("inductor_options") or {},
            dump_dir=options.get("dump_dir"),
            fuse_linears=options.get("fuse_linears"),
        )
        return built, options.get("config")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def mode_options(mode: Any) -> Tuple[bool, Dict[str, Any]]:
    """torch.compile's ``mode`` as dit_fx settings: (cuda_graphs, inductor_options). Inductor's
    CUDA graphs (reduce-overhead, max-autotune) become dit_fx's own graphs of head, body and tail."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"mode must be one of {COMPILE_MODES}, got {mode!r}")
    options = dict(torch._inductor.list_mode_options(mode))
    return bool(options.pop("triton.cudagraphs", False)), options


def check_inductor_options(options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Inductor config values for every region compile, checked: unknown keys and values of the
    wrong type raise ``ValueError`` naming the key. ``triton.cudagraphs`` is refused: dit_fx
    replays head, body and tail as CUDA graphs itself (``cuda_graphs=True``)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"inductor_options must be a dict of Inductor config values, got {type(options).__name__}")
    known = torch._inductor.config.get_config_copy()
    for key, value in options.items():
        if key == "triton.cudagraphs":
            raise ValueError("inductor_options 'triton.cudagraphs': use cuda_graphs=True (dit_fx graphs head, body and tail itself)")
        if key not in known:
            raise ValueError(f"inductor_options {key!r} is not an Inductor config option (torch._inductor.config)")
        if not _same_kind(known[key], value):
            raise ValueError(f"inductor_options {key!r} must be a {type(known[key]).__name__} like its default, got {value!r}")
    return dict(options)


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True  # None defaults and structured values: Inductor checks them
