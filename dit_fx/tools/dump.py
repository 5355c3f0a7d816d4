"""Offline dump of what dit_fx did: plan and graphs as files a person can read, from capture records."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from ..lowering import partition_module

if TYPE_CHECKING:  # pragma: no cover
    from ..session import CompileRecord, Session

PARTITION_NAMES = ("head", "body", "tail")


def write_dump(session: "Session", directory: str) -> str:
    """One folder per kept capture (``capture_<n>``) plus ``plan.json`` of the latest at the top."""
    if not len(session.records):
        raise ValueError("nothing to dump yet: call the model once so dit_fx can capture it")
    for record in session.records:
        write_record(session, record, directory)
    return directory


def write_record(session: "Session", record: "CompileRecord", directory: str) -> str:
    """Write one capture's folder, and make its plan the top-level ``plan.json``."""
    sub = os.path.join(directory, f"capture_{record.index}")
    os.makedirs(sub, exist_ok=True)
    data = {"config": _config_dict(session), "options": _options_dict(session, record), "inputs": record.activation_names}
    data["lowering"] = (record.options or session.options).lowering
    data["passes"] = dict(record.rewrite_by_scope)  # rewrite passes per cache context (str(scope))
    data["lowering_passes"] = list(record.passes.get("lowering", []))
    data["pass_seconds"] = [{"stage": t.stage, "pass": t.name, "seconds": round(t.seconds, 4)} for t in record.timings]
    data.update(record.plans[0].to_json())
    if len(record.plans) > 1:  # one context per block list: the nested plans, outermost first
        data["block_list_plans"] = [p.to_json() for p in record.plans]
    text = json.dumps(data, indent=2, default=str)
    _write(sub, "plan.json", text)
    _write(sub, "plan.txt", "\n\n".join(str(p) for p in record.plans))
    if record.captured is not None:
        _write(sub, "captured_graph.py", record.captured.print_readable(print_output=False))
    glue_ids = {id(g) for _, g in record.glues}
    # A nested block list's glue lives in the tail: tail.glue.py, tail.head.py, ...
    for prefix, glue in record.glues:
        _write(sub, f"{prefix}glue.py", glue.code)
        for name in PARTITION_NAMES:
            mod = partition_module(glue, name)
            if mod is not None and id(mod) not in glue_ids:
                _write(sub, f"{prefix}{name}.py", mod.print_readable(print_output=False))
    if record is session.last_record:
        _write(directory, "plan.json", text)
    return sub


def _config_dict(session: "Session") -> dict:
    if hasattr(session.config, "lists"):
        return {name: asdict(cfg) for name, cfg in session.config.lists}
    return asdict(session.config)


def _options_dict(session: "Session", record: "CompileRecord" = None) -> dict:
    o = (record.options if record is not None else None) or session.options
    quantize = asdict(o.quantize) if o.quantize is not None else None
    return {"compile": o.compile, "cuda_graphs": o.cuda_graphs, "mode": o.mode, "inductor_options": dict(o.inductor_options),
            "quantize": quantize}


def _write(directory: str, name: str, text: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)
