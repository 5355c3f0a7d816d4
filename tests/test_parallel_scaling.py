"""benchmarks/parallel_scaling.py end to end on CPU ranks (gloo): the script issue 20 runs on
several GPUs, here with the tiny Wan and batched CFG, eager, 1 and 2 ranks. dit_fx's Ulysses and
CFG parallelism over 2 ranks must equal their 1-rank runs and cache the mask's steps on both
ranks; cache-dit's Ulysses (the parity peer) must cache the same steps and land on the same
latents."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))

import parallel_scaling  # noqa: E402


def test_parallel_scaling_script_on_two_cpu_ranks(tmp_path):
    pytest.importorskip("einops")  # cache-dit's CP planners need it
    out = tmp_path / "p.json"
    systems = ["dit_fx_ulysses", "dit_fx_cfg", "cache_dit_ulysses"]
    result = parallel_scaling.main(["--model", "wan", "--preset", "tiny", "--device", "cpu", "--no-compile",
                                    "--gpus", "1", "2", "--steps", "6", "--rounds", "1", "--guidance", "5",
                                    "--systems", *systems, "--out", str(out), "--plot", str(tmp_path / "p.png")])
    assert out.exists() and (tmp_path / "p.png").exists()
    mask = result["mask"]
    cached = [i for i, m in enumerate(mask) if not m]
    one, two = result["runs"]["1"], result["runs"]["2"]
    for key in systems:
        assert one[key]["status"] == "ok" and two[key]["status"] == "ok", (one[key], two[key])
        assert two[key]["cached_steps"] == cached and two[key]["cached_steps_equal_on_ranks"]
        assert two[key]["cached_steps_equal_1gpu"] and two[key]["status_on_ranks"] == ["ok", "ok"]
    assert two["dit_fx_ulysses"]["degrees"] == {"ulysses": 2} and two["dit_fx_cfg"]["degrees"] == {"cfg": 2}
    for key in ("dit_fx_ulysses", "dit_fx_cfg"):
        assert two[key]["rel_l1_vs_1gpu"] < 1e-5  # fp32: splitting reorders sums only
    assert two["cache_dit_ulysses"]["rel_l1_vs_dit_fx"] < 1e-4  # same algorithm, same mask
    assert two["dit_fx_ulysses"]["scaling_efficiency"] > 0
    assert "| dit_fx Ulysses" in result["markdown"]
