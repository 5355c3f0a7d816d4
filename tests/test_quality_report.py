"""The report side of ``benchmarks/quality.py`` (the docs' front, peer matching and the adaptive-vs-static
comparison) on hand-made rows: each function's answer follows from the rows by hand."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))

quality = pytest.importorskip("quality")


def _row(system, config, computed, psnr, family="dit_fx", **kw):
    return dict(system=system, config=config, computed_fraction=computed, psnr=psnr, family=family, **kw)


def test_interpolate_on_the_polyline_and_none_outside():
    pts = [(0.2, 28.0), (0.4, 34.0), (0.6, 40.0)]
    assert quality.interpolate(pts, 0.3) == pytest.approx(31.0)
    assert quality.interpolate(pts, 0.6) == pytest.approx(40.0)
    assert quality.interpolate(pts, 0.1) is None and quality.interpolate(pts, 0.7) is None


def test_adaptive_rows_are_compared_with_the_static_masks_at_their_computed_fraction():
    rows = [
        _row("dit_fx calibrated mask", "6/28", 0.2, 28.0),
        _row("dit_fx calibrated mask", "11/28", 0.4, 34.0),
        _row("dit_fx DBCache F1B0", "F1B0 t=0.2", 0.3, 30.0),  # static at 0.3: 31.0 -> -1.00 dB
        _row(quality.CAL_DYNAMIC, "6/28 t=0.1", 0.25, 30.5),  # static at 0.25: 29.5 -> +1.00 dB
        _row(quality.CAL_DYNAMIC, "11/28 t=0.1", 0.5, 40.0),  # outside the static range: left out
    ]
    text = quality.adaptive_vs_static(rows)
    assert "dit_fx DBCache F1B0 F1B0 t=0.2 (computed 0.30): -1.00 dB" in text
    assert f"{quality.CAL_DYNAMIC} 6/28 t=0.1 (computed 0.25): +1.00 dB" in text
    assert "11/28 t=0.1" not in text
    assert quality.adaptive_vs_static(rows[2:]) == ""  # fewer than two static masks: nothing to compare with


def test_pareto_keeps_only_rows_no_other_row_beats():
    rows = [_row("a", "1", 0.3, 30.0, full_batch_s=1.0), _row("b", "1", 0.4, 35.0, full_batch_s=1.2),
            _row("c", "1", 0.5, 33.0, full_batch_s=1.3),  # slower and worse than b
            _row("d", "1", 0.5, 36.0, full_batch_s=0.5, compiled=True)]  # compiled rows are not on the eager front
    assert [r["system"] for r in quality.pareto(rows, "full_batch_s")] == ["a", "b"]
    assert [r["system"] for r in quality.pareto(rows, "computed_fraction")] == ["a", "b"]


def test_a_peer_is_matched_only_by_a_dit_fx_row_within_two_percent_and_as_good():
    peer = _row("cache-dit DBCache F1B0", "t=0.2", 0.4, 35.0, family="cache-dit", full_batch_s=1.0, fid_vs_uncached=0.2)
    slow = _row("dit_fx DBCache F1B0", "t=0.2", 0.4, 35.0, full_batch_s=1.03, fid_vs_uncached=0.2)
    worse = _row("dit_fx DBCache F1B0", "t=0.3", 0.3, 34.9, full_batch_s=0.9, fid_vs_uncached=0.1)
    unmatched, peers = quality.match_peers([peer, slow, worse], eager_only=True)
    assert peers == [peer] and unmatched == [peer]
    ok = _row("dit_fx calibrated mask", "11/28", 0.4, 35.1, full_batch_s=1.019, fid_vs_uncached=0.19)
    unmatched, _ = quality.match_peers([peer, slow, worse, ok], eager_only=True)
    assert unmatched == []
