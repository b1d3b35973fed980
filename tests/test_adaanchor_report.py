"""The AdaAnchor study's statistics and tables (scripts/adaanchor_ablation.py) on hand-made predictions."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "adaanchor_ablation", Path(__file__).resolve().parents[1] / "scripts" / "adaanchor_ablation.py")
study = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(study)


def _run(error: np.ndarray, seed: str, score: float = 0.5) -> dict:
    """A fake run: 40 crops × 3 keypoints over 20 images; keypoint 0 visible, 1 occluded, 2 truncated."""
    m, c = error.shape
    vis = np.tile([2, 1, 1], (m, 1))
    inside = np.tile([True, True, False], (m, 1))
    return {"error": error, "score": np.full((m, c), score), "vis": vis, "inside": inside,
            "image": np.arange(m) // 2, "category": np.zeros(m, int), "has_scores": True,
            "summary": {"epochs_run": 16.0, "val": {"oks_ap": {"AP": 0.5}}}, "diag": [], "plateau": -0.1,
            "seed": seed}


@pytest.fixture
def base_runs():
    rng = np.random.default_rng(0)
    return [_run(rng.uniform(1, 5, (40, 3)), f"seed{k}") for k in range(2)]


def test_identical_runs_differ_by_zero(base_runs):
    res = study.paired_bootstrap(base_runs, base_runs, n_boot=200)
    for key in ("vis_error", "inv_error", "occluded_error", "truncated_error", "vis_score", "inv_score"):
        assert res[key]["diff"] == pytest.approx(0.0, abs=1e-12)
        assert res[key]["ci95"] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_a_shift_of_the_truncated_error_shows_only_there(base_runs):
    shifted = []
    for p in base_runs:
        e = p["error"].copy()
        e[:, 2] += 1.5  # only the truncated keypoint gets worse
        shifted.append(_run(e, p["seed"]))
    res = study.paired_bootstrap(shifted, base_runs, n_boot=200)
    assert res["truncated_error"]["diff"] == pytest.approx(1.5)
    assert res["truncated_error"]["ci95"] == pytest.approx([1.5, 1.5])
    assert res["occluded_error"]["diff"] == pytest.approx(0.0, abs=1e-12)
    assert res["inv_error"]["diff"] == pytest.approx(0.75)  # half the invisible keypoints are truncated
    assert res["truncated_error"]["keypoints"] == 40


def test_noisy_difference_gets_an_interval_around_it(base_runs):
    rng = np.random.default_rng(1)
    noisy = [_run(p["error"] + 1.0 + rng.normal(0, 1, p["error"].shape), p["seed"]) for p in base_runs]
    c = study.paired_bootstrap(noisy, base_runs, n_boot=500)["vis_error"]
    assert c["ci95"][0] < c["diff"] < c["ci95"][1]
    assert 0.3 < c["diff"] < 1.7


def test_one_row_for_the_one_configuration_and_seed_by_seed_differences(base_runs):
    worse = [_run(p["error"] + 1.0, p["seed"], score=0.4) for p in base_runs]
    runs = {"heatmap": base_runs, "adaanchor": worse}
    table, numbers = study.split_table(runs, "occlusion")
    rows = [line for line in table.splitlines() if "Scoring (mul)" in line or "| Ours" in line]
    assert len(rows) == 1 and rows[0].startswith("| Scoring (mul) = Ours | 2 |")
    assert numbers["adaanchor"]["vs_heatmap"]["vis_error"]["diff"] == pytest.approx(1.0)
    seeds, snum = study.seed_table({"occlusion": runs})
    assert snum["occlusion"]["adaanchor"]["seed1"]["inv_score"] == pytest.approx(-0.1)
    assert seeds.count("| occlusion | adaanchor |") == 2
    inv = study.invisible_table({"occlusion": numbers})
    assert "| occlusion | adaanchor | 2 | " in inv and "+1.00 [+1.00, +1.00]" in inv


def _write_run(run: Path, p: dict, vis_error: float) -> None:
    run.mkdir(parents=True)
    np.savez_compressed(run / "preds.npz", **{k: p[k] for k in ("error", "score", "vis", "inside", "image",
                                                                 "category", "has_scores")})
    (run / "metrics.json").write_text(json.dumps(
        {"epochs_run": 12.0, "val": {"vis_error": vis_error, "inv_error": 1.0, "inv_score": 0.5}}))


def test_guard_table_compares_each_variant_with_the_chosen_one(tmp_path, base_runs):
    base = base_runs[0]
    root = tmp_path / "guard" / "occlusion"
    _write_run(root / f"variant{study.GUARD_CHOSEN}" / "seed0", base, 2.0)
    worse = _run(base["error"] + np.array([2.0, 0.5, 0.5]), "seed0")  # visible +2, invisible +0.5
    _write_run(root / "variant0" / "seed0", worse, 4.0)
    table, numbers = study.guard_table(tmp_path)
    rows = table.splitlines()[2:]
    assert len(rows) == 2  # variants without a finished run are left out
    first = next(r for r in rows if r.startswith(f"| {list(study.GUARD)[0]} |"))
    assert first.endswith("| +2.00 [+2.00, +2.00] | +0.50 [+0.50, +0.50] |")
    chosen = next(r for r in rows if "(chosen)" in r)
    assert chosen.endswith("| — | — |")
    assert all(r.count("|") == table.splitlines()[0].count("|") for r in rows)
    assert numbers[list(study.GUARD)[0]]["vs_chosen"]["vis_error"]["diff"] == pytest.approx(2.0)
