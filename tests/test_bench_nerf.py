"""bench/bench_nerf.py helpers: --set parsing (smoothed-only overrides) and the means over seeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from geo_rs import UserError

_SPEC = importlib.util.spec_from_file_location(
    "bench_nerf", Path(__file__).resolve().parent.parent / "bench" / "bench_nerf.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_set_parses_numbers_and_refuses_a_missing_value():
    got = bench.parse_sets(["alpha_end=48", "sigma_ramp=0.4", "lr_density=1e-3", "model=smoothed"])
    assert got == {"alpha_end": 48, "sigma_ramp": 0.4, "lr_density": 1e-3, "model": "smoothed"}
    assert isinstance(got["lr_density"], float)
    for bad in ("alpha_end", "=3"):
        with pytest.raises(UserError, match="KEY=VALUE"):
            bench.parse_sets([bad])


def test_set_values_go_through_the_config_schema():
    from nerf import load_config

    with pytest.raises(UserError, match="sigma_ramp"):
        load_config(None, **bench.parse_sets(["sigma_ramp=1.5"]))


def test_mean_report_averages_the_table_over_seeds():
    reps = [{"test_psnr": 30.0, "steps": 10, "mesh_metrics": {"fscore": 0.8}, "model": "plain"},
            {"test_psnr": 31.0, "steps": 10, "mesh_metrics": {"fscore": 0.9}, "model": "plain"}]
    mean = bench.mean_report(reps)
    assert mean["test_psnr"] == pytest.approx(30.5) and mean["mesh_metrics"]["fscore"] == pytest.approx(0.85)
    assert mean["model"] == "plain" and reps[0]["test_psnr"] == 30.0  # inputs untouched
