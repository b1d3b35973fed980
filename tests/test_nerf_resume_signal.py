"""No lost work: `geo-rs nerf train` killed by SIGTERM/SIGINT saves a checkpoint and exits 143/130, the
checkpoint resumes bit for bit, --resume extends a run, and checkpoints are written by wall time too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from geo_rs.cli import main
from nerf import Trainer, load_config, make_scene
from nerf.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    scene_views=4,
    scene_res=12,
    scene_test_views=1,
    grid_res=12,
    coarse_res=8,
    upsample_at=[0.5],
    rays_per_batch=64,
    eval_every=100_000,
    eval_views=1,
    metric_points=500,
    threads=1,
)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(
        "torus",
        tmp_path_factory.mktemp("resume") / "torus",
        views=4,
        res=12,
        val_views=0,
        test_views=1,
        gt_res=16,
    )


def _config(tmp_path, scene, **kw):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": str(scene), **TINY, **kw}))
    return path


def _params(state: dict) -> dict:
    return {k: v.clone() for k, v in state.items()}


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_that_resumes_identically(scene, tmp_path, sig, code):
    # A long run (no checkpoint by steps or time before the signal) in a real subprocess.
    cfg = _config(tmp_path, scene, steps=1_000_000, ckpt_every=10, ckpt_every_s=3600.0)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "geo_rs.cli", "nerf", "train", str(cfg), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.pt").exists():  # the loop is running: the step-10 checkpoint exists
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.poll() else ""
            )
            time.sleep(0.05)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert f"stopped by {sig.name} at step {step} of 1000000; checkpoint saved" in stderr, stderr
    assert 10 <= step < 1_000_000
    if sig != signal.SIGTERM:
        return
    # The signal-time checkpoint is exactly the state after `step` steps, and resumes bit for bit.
    straight = Trainer(load_config(cfg), tmp_path / "straight", quiet=True)
    for _ in range(step):
        straight.train_step()
    saved = load_checkpoint(out / "checkpoint.pt")["field"]
    for name, value in straight.field.state_dict().items():
        assert torch.equal(value, saved[name]), name
    resumed = Trainer.resume(out / "checkpoint.pt", quiet=True)
    ref = [straight.train_step()["loss"] for _ in range(3)]
    assert [resumed.train_step()["loss"] for _ in range(3)] == ref
    for (name, p), (_, q) in zip(straight.field.named_parameters(), resumed.field.named_parameters()):
        assert torch.equal(p, q), name


def test_resume_extends_steps_and_reports_them(scene, tmp_path, capsys):
    cfg = _config(tmp_path, scene, steps=4, ckpt_every=100)
    out = tmp_path / "run"
    assert main(["nerf", "train", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4
    capsys.readouterr()
    # the scene name alone is enough to resume: unset settings come from the checkpoint
    assert main(["nerf", "train", str(scene), "--out", str(out), "--resume", "--steps", "7", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "at step 4" in printed and "step 4 → 7" in printed
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["step"] == 7 and payload["config"]["steps"] == 7
    report = yaml.safe_load((out / "report.json").read_text())
    assert report["steps"] == 7 and report["steps_planned"] == 7 and report["stopped_by"] == "done"


def test_checkpoints_are_written_by_wall_time_too(scene, tmp_path):
    cfg = load_config(_config(tmp_path, scene, steps=5, ckpt_every=1000, ckpt_every_s=1e-9))
    trainer = Trainer(cfg, tmp_path / "t", quiet=True)
    saves = []
    trainer.save = lambda path=None: saves.append(trainer.step)  # type: ignore[method-assign]
    result = trainer.run()
    assert result.reason == "done" and saves == [1, 2, 3, 4, 5]  # every step by time, then the final one
    trainer2 = Trainer(
        cfg.model_copy(update={"ckpt_every_s": None, "ckpt_every": 2}), tmp_path / "u", quiet=True
    )
    saves.clear()
    trainer2.save = lambda path=None: saves.append(trainer2.step)  # type: ignore[method-assign]
    trainer2.run()
    assert saves == [2, 4, 5]


def test_console_says_what_was_not_produced(scene, tmp_path, capsys):
    # Three steps leave the fog everywhere: no zero crossing, so no mesh and no mesh metrics.
    cfg = _config(tmp_path, scene, steps=1, ckpt_every=100)
    out = tmp_path / "run"
    (out).mkdir()
    (out / "mesh.ply").write_text("stale mesh of an earlier run")
    assert main(["nerf", "train", str(cfg), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    results = next(line for line in printed.splitlines() if line.startswith("results in"))
    assert "mesh.ply" not in results
    assert "not produced: mesh.ply: no surface at level 0.0" in printed
    assert not (out / "mesh.ply").exists()  # the stale one is gone, not passed off as this run's
    report = yaml.safe_load((out / "report.json").read_text())
    assert "no surface" in report["not_produced"]["mesh.ply"] and "mesh.ply" not in report["outputs"]
