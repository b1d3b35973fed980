"""``geo-rs keypoint verify`` in-process on a tiny verification detector: outputs and their format (the
per-keypoint candidate sets issue 11 consumes), resume, refusal of a different job, one-line errors; and
the real CLI in a subprocess with two workers stopped by SIGTERM / SIGINT, then resumed."""
import json
import os
import signal
import sys

import numpy as np
import pytest
import torch
from cli_run import descendants, start_and_wait_for_parts, wait_gone

from geo_rs.cli import main
from keypoint.verify.detector import CHECKPOINT_FORMAT, DetectorConfig, build_detector

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = DetectorConfig().model_copy(deep=True)
    cfg.data.image_size, cfg.data.input_size = 48, 16
    cfg.model.width, cfg.model.blocks, cfg.model.kernel = 4, 1, 3
    net = build_detector(8, 8, 4, 1, 16, kernel=3).eval()
    path = tmp_path_factory.mktemp("kpv_cli") / "detector_8.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg.model_dump(), "num_keypoints": 8,
                "heatmap_size": 8, "input_size": 16, "state_dict": net.state_dict()}, path)
    return path


def _args(ckpt, out, *extra):
    return ["keypoint", "verify", str(ckpt), "--images", "2", "--perturbation", "brightness",
            "--eps", "0.001", "--reachable", "interval", "--bounds-method", "IBP", "--time-limit", "20",
            "--attack-random", "8",
            "--quiet", "--out", str(out), *extra]


def test_verify_writes_records_with_candidate_sets_and_resumes(checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(checkpoint, out, "--spec", "l1:0", "l1:4")) == 0
    for name in ("results.json", "results.tsv", "summary.md", "summary.csv", "summary.json",
                 "fig_verified_rate.png"):
        assert (out / name).is_file(), name
    recs = json.loads((out / "results.json").read_text())["records"]
    assert len(recs) == 2 * 2 * 2  # images x specs x methods
    for r in recs:
        assert r["verdict"] in ("certified", "counterexample", "unknown")
        assert (r["verdict"] == "unknown") == bool(r["reason"])
        assert r["solver"] == "CBC" and r["reachable"] == "interval" and r["seconds"] > 0
        cands = [np.asarray(c) for c in r["candidates"]]
        assert len(cands) == 8 and all(c.ndim == 2 and c.shape[1] == 2 for c in cands)
        assert [len(c) for c in cands] == r["n_candidates"]
        assert np.array_equal(np.stack([c[0] for c in cands]), np.asarray(r["keypoints"]))  # clean first
        assert r["stride"] == 2
        inp = [np.asarray(c) for c in r["candidates_input"]]
        assert all(np.allclose(i, (c + 0.5) * 2 - 0.5) for i, c in zip(inp, cands))
        assert np.asarray(r["crop_to_image"]).shape == (2, 3)
        if r["verdict"] == "counterexample":
            assert (out / r["counterexample"]).is_file()
    by = {(r["image"], r["spec"], r["method"]): r["verdict"] for r in recs}
    for (i, s, m), v in by.items():  # coupled ⊇ decoupled
        if m == "decoupled" and v == "certified":
            assert by[(i, s, "coupled")] == "certified"
    tsv = (out / "results.tsv").read_text().splitlines()
    assert len(tsv) == 1 + len(recs) and tsv[0].split("\t")[:3] == ["image", "perturbation", "eps"]
    capsys.readouterr()
    assert main(_args(checkpoint, out, "--spec", "l1:0", "l1:4")) == 0  # resumed, same records
    assert "0 units computed, 2 resumed" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["records"] == recs
    assert main(_args(checkpoint, out, "--spec", "l1:1")) == 2  # a different job: refused
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(_args(checkpoint, out, "--spec", "l1:1", "--overwrite")) == 0
    assert len(json.loads((out / "results.json").read_text())["records"]) == 2 * 2


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--eps", "-0.1"], "eps must be finite and >= 0"),
        (["--eps", "abc"], "cannot read 'abc'"),
        (["--eps", "blur=0.1"], "'blur' is not one of the perturbations"),
        (["--perturbation", "blur"], "unknown 'blur'"),
        (["--reachable", "tight"], "--reachable: unknown 'tight'"),
        (["--method", "joint"], "--method: unknown 'joint'"),
        (["--solver", "gurobi"], "--solver: unknown 'gurobi'"),
        (["--bounds-method", "DeepPoly"], "--bounds-method: unknown 'DeepPoly'"),
        (["--time-limit", "0"], "time-limit"),
        (["--images", "0"], "--images"),
        (["--spec", "l1:x"], "is not a number"),
        (["--spec", "l1:-1"], "delta"),
        (["--data", "missing.json"], "no such file"),
    ],
)
def test_bad_input_is_one_clear_line(checkpoint, extra, needle, tmp_path, capsys):
    rc = main(_args(checkpoint, tmp_path / "o", *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err


def test_bad_checkpoint_and_spec_for_the_wrong_k_are_one_line(checkpoint, tmp_path, capsys):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(_args(bad, tmp_path / "o")) == 2
    assert "not a readable torch checkpoint" in capsys.readouterr().err
    assert main(_args(tmp_path / "missing.pt", tmp_path / "o")) == 2
    assert "missing.pt" in capsys.readouterr().err
    spec = tmp_path / "poly.yaml"
    spec.write_text("A: [[1, 0, 0, 0]]\nb: [1]\n")  # 2 keypoints; the detector has 8
    assert main(_args(checkpoint, tmp_path / "o", "--spec-file", str(spec))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "8" in err[0], err


def test_verify_help_has_defaults_and_units(capsys):
    with pytest.raises(SystemExit):
        main(["keypoint", "verify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("default 60", "seconds", "pixel intensity", "default CROWN-IBP", "default 20",
                   "default synth", "default 1)"):
        assert needle in text, needle


# ------------------------------------------------------------------------------------ signals
SIGNAL_IMAGES = 8  # units: one per image (one perturbation, ε, level, solver), ~0.5 CPU-s each


def _signal_args(ckpt, out, *extra) -> list[str]:
    return _args(ckpt, out, "--spec", "l1:0", "l1:4", "--images", str(SIGNAL_IMAGES), *extra)


def _without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "solve_seconds")} for r in records]


@pytest.fixture(scope="module")
def straight_records(checkpoint, tmp_path_factory):
    """The same job run once, uninterrupted, in this process with one worker."""
    out = tmp_path_factory.mktemp("kpv_straight") / "run"
    assert main(_signal_args(checkpoint, out)) == 0
    return json.loads((out / "results.json").read_text())["records"]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, group", [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)])
def test_a_signal_stops_the_pool_leaves_no_process_and_the_rerun_resumes_identically(
        checkpoint, straight_records, tmp_path, capsys, signum, code, group):
    """The real CLI in a subprocess with two workers gets SIGTERM (``kill PID``) or SIGINT to its whole
    process group (Ctrl-C on a terminal): exit 143 / 130 without a traceback, no child left, the finished
    units kept; the rerun computes only the rest and its records equal an uninterrupted run's."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "geo_rs.cli", *_signal_args(checkpoint, out, "--workers", "2")]
    proc = start_and_wait_for_parts(cmd, tmp_path, out / "parts", new_session=group)
    children = descendants(proc.pid)
    assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
    os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"interrupted by {signal.Signals(signum).name}" in err, err
    assert not wait_gone(children)
    saved = len(list((out / "parts").glob("*.json")))
    assert 2 <= saved < SIGNAL_IMAGES
    capsys.readouterr()
    assert main(_signal_args(checkpoint, out)) == 0  # the rerun (in this process: one worker is enough)
    assert f"({SIGNAL_IMAGES - saved} units computed, {saved} resumed)" in capsys.readouterr().out
    records = json.loads((out / "results.json").read_text())["records"]
    assert _without_times(records) == _without_times(straight_records)
