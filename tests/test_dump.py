"""dit_fx.dump and DIT_FX_DUMP_DIR write a readable record of the plan and the rewritten graphs."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import dit_fx
from helpers import run_steps
from tiny_models import make_trajectory


def test_dump_contains_plan_and_partitions(tiny, tmp_path):
    spec = tiny("flux")
    model = spec.build()
    with pytest.raises(ValueError, match="call the model once"):
        dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1))
        dit_fx.dump(model, str(tmp_path / "early"))
    run_steps(model, make_trajectory("flux", 2))
    out = dit_fx.dump(model, str(tmp_path / "dump"))
    cap = os.path.join(out, "capture_0")
    for name in ["plan.json", "plan.txt", "captured_graph.py", "glue.py", "head.py", "body.py", "tail.py"]:
        assert os.path.getsize(os.path.join(cap, name)) > 0, name
    plan = json.load(open(os.path.join(out, "plan.json")))
    assert plan["supported"] and plan["fn_blocks"] == 1 and plan["bn_blocks"] == 1
    assert plan["partitions"]["head"] == ["transformer_blocks.0"]
    assert plan["partitions"]["tail"] == ["single_transformer_blocks.2"]
    assert [b["pattern"] for b in plan["blocks"]] == [1] * 5
    assert plan["config"]["fn_blocks"] == 1
    glue = open(os.path.join(cap, "glue.py")).read()
    for text in ["self.head(", "hidden_before_blocks", "dbcache_decide", "dbcache_middle", "self.tail("]:
        assert text in glue
    body = open(os.path.join(cap, "body.py")).read()
    assert "transformer_blocks" in body and "single_transformer_blocks" in body
    # parameters are attributes of the partitions, not inputs
    assert "weight" not in glue


def test_env_var_dumps_at_capture_time(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {here!r})
        import dit_fx
        from tiny_models import MODELS, make_trajectory
        from helpers import run_steps
        m = MODELS["wan"].build()
        dit_fx.optimize(m, dit_fx.DBCacheConfig(fn_blocks=1, bn_blocks=1))
        run_steps(m, make_trajectory("wan", 1))
        """
    )
    env = dict(os.environ, DIT_FX_DUMP_DIR=str(tmp_path / "auto"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.path.exists(tmp_path / "auto" / "plan.json")
    assert os.path.exists(tmp_path / "auto" / "capture_0" / "body.py")
