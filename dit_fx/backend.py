"""``torch.compile(model, backend="dit_fx", options=...)``: the Dynamo backend entry point.

Reached through the ``torch_dynamo_backends`` entry point. Options are parsed once into a
``CompileOptions`` (see ``options.py``); recompiles of the same model with the same options
(a new resolution) share one ``Session``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch.fx as fx

from .config import coerce_config
from .options import BACKEND_OPTIONS, CompileOptions
from .session import Session, session_of, session_of_parameters

__all__ = ["BACKEND_OPTIONS", "dit_fx_backend", "parse_backend_options", "session_of"]


def parse_backend_options(options: Optional[Mapping[str, Any]], mode: Optional[str] = None) -> CompileOptions:
    """The backend's ``options`` (and torch.compile's ``mode``) as ``CompileOptions``; the config
    is checked too. ``mode`` maps onto dit_fx's settings: reduce-overhead = ``cuda_graphs``;
    max-autotune(-no-cudagraphs) = Inductor's autotuning options for every region. Explicit
    ``cuda_graphs`` / ``inductor_options`` win."""
    parsed, config = CompileOptions.from_backend(options, mode)
    coerce_config(config)
    return parsed


def dit_fx_backend(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    options: Optional[Mapping[str, Any]] = None,
    mode: Optional[str] = None,
):
    """``torch.compile(model, backend="dit_fx", options={"config": cfg, "compile": True})``.

    Options: ``config`` (DBCacheConfig or dict), ``compile`` (Inductor for head/body/tail, one
    compile per distinct block, default True), ``cuda_graphs`` (replay head/body/tail as CUDA
    graphs, default False), ``mode`` (torch.compile's modes, see ``CompileOptions``),
    ``inductor_options`` (Inductor config values for every region compile), ``dump_dir``.
    ``torch.compile(model, backend="dit_fx", mode="reduce-overhead")`` works too (default config).
    """
    parsed, raw_config = CompileOptions.from_backend(options, mode)
    config = coerce_config(raw_config)
    existing = session_of_parameters(example_inputs)
    same = existing is not None and existing.config == config and existing.options.key() == parsed.key()
    session = existing if same else Session(config, parsed)
    return session(gm, example_inputs)
