"""summary(details=True) and plot_timeline give a person what they need to pick a threshold."""

import os

import dit_fx
from helpers import run_steps
from test_cfg_parity import cfg_calls


def test_details_table_and_timeline_png(tiny, tmp_path):
    spec = tiny("wan_deep")
    model = spec.build()
    dit_fx.optimize(model, dit_fx.DBCacheConfig(fn_blocks=1, residual_diff_threshold=0.25, max_warmup_steps=3))
    run_steps(model, cfg_calls(steps=10))
    stats = dit_fx.summary(model, details=True)
    assert dit_fx.summary(model).details is None
    table = stats.details
    assert stats.cached_steps and stats.cfg_cached_steps
    assert "threshold 0.25" in table and "| cond |" in table and "| uncond |" in table
    for col in ("P0", "P25", "P50", "P75", "P95", "max"):
        assert col in table
    cond_row = next(line for line in table.splitlines() if line.startswith("| cond |"))
    cells = [c.strip() for c in cond_row.strip("|").split("|")]
    assert int(cells[1]) == len(stats.residual_diffs) and int(cells[2]) == len(stats.cached_steps)
    assert float(cells[3]) == round(min(stats.residual_diffs.values()), 4)
    assert float(cells[-1]) == round(max(stats.residual_diffs.values()), 4)
    png = dit_fx.plot_timeline(model, str(tmp_path / "timeline.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 10_000
