"""Offline dump of what dit_fx did: plan and graphs as files a person can read."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from .lowering import PARTITION_NAMES, is_glue, iter_glues, partition_module

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Session


def write_dump(session: "Session", directory: str) -> str:
    """One folder per capture (``capture_0``, ...) plus ``plan.json`` of the latest at the top."""
    if not session.records:
        raise ValueError("nothing to dump yet: call the model once so dit_fx can capture it")
    os.makedirs(directory, exist_ok=True)
    for i, record in enumerate(session.records):
        sub = os.path.join(directory, f"capture_{i}")
        os.makedirs(sub, exist_ok=True)
        from .passes import passes_for

        data = {"config": _config_dict(session), "lowering": session.lowering, "inputs": record.activation_names}
        data["passes"] = {str(scope): [p.__name__ for p in passes_for(c.config)] for scope, c in session.caches.items()}
        data.update(record.plans[0].to_json())
        if len(record.plans) > 1:  # one context per block list: the nested plans, outermost first
            data["block_list_plans"] = [p.to_json() for p in record.plans]
        _write(sub, "plan.json", json.dumps(data, indent=2, default=str))
        _write(sub, "plan.txt", "\n\n".join(str(p) for p in record.plans))
        if record.captured is not None:
            _write(sub, "captured_graph.py", record.captured.print_readable(print_output=False))
        if record.glue is not None:
            # A nested block list's glue lives in the tail: tail.glue.py, tail.head.py, ...
            for prefix, glue in iter_glues(record.glue):
                _write(sub, f"{prefix}glue.py", glue.code)
                for name in PARTITION_NAMES:
                    mod = partition_module(glue, name)
                    if mod is not None and not is_glue(mod):
                        _write(sub, f"{prefix}{name}.py", mod.print_readable(print_output=False))
    latest = os.path.join(directory, f"capture_{len(session.records) - 1}", "plan.json")
    with open(latest) as src:
        _write(directory, "plan.json", src.read())
    return directory


def _config_dict(session: "Session") -> dict:
    from dataclasses import asdict

    if hasattr(session.config, "lists"):
        return {name: asdict(cfg) for name, cfg in session.config.lists}
    return asdict(session.config)


def _write(directory: str, name: str, text: str) -> None:
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)
