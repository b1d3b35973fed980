"""The one keypoint training loop (keypoint.fit): mid-epoch resume reproduces the uninterrupted run,
SIGINT/SIGTERM save and exit 130/143 (a real SIGTERM on a `geo-rs keypoint train` subprocess), the
box detector trains on the same loop, and --quiet prints no progress bar."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from geo_rs.cli import main
from geo_rs.errors import UserError
from geo_rs.interrupt import Interrupted
from keypoint.fit import FitSettings, fit, step_permutation

pytestmark = pytest.mark.usefixtures("one_thread")


def _toy(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    y = x.sum(1, keepdim=True)
    return net, x, y


def _run(path, epochs=4, kill_at=None, signum=signal.SIGTERM, fresh=False):
    net, x, y = _toy()

    def loss_fn(batch):
        if kill_at is not None and batch.step == kill_at:
            os.kill(os.getpid(), signum)  # a real signal, handled by the loop's StopSignal
        noise = 0.01 * torch.randn(len(batch.items), 1, generator=batch.generator)  # per-step generator
        return ((net(x[batch.items]) - y[batch.items] - noise) ** 2).mean(), {"mse": 0.0}

    settings = FitSettings(epochs=epochs, batch_size=8, lr=0.01, seed=3, quiet=True)
    res = fit(net, loss_fn, num_items=len(x), settings=settings, checkpoint=path, identity={"toy": 1},
              fmt="toy/1", fresh=fresh)
    return net, res


def test_permutation_depends_on_seed_and_epoch_only():
    a = step_permutation(3, 2, 10)
    assert torch.equal(a, step_permutation(3, 2, 10)) and sorted(a.tolist()) == list(range(10))
    assert not torch.equal(a, step_permutation(3, 1, 10))


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_epoch_saves_and_resume_reproduces(tmp_path, signum, code):
    ref, res = _run(tmp_path / "ref.pt")
    assert res.reason == "done" and res.step == 20 and res.steps_per_epoch == 5
    with pytest.raises(Interrupted) as exc:
        _, stopped = _run(tmp_path / "cut.pt", kill_at=7, signum=signum)
        stopped.raise_if_interrupted()
    assert 128 + exc.value.signum == code
    ck = torch.load(tmp_path / "cut.pt", weights_only=False)
    assert ck["step"] == 8 and ck["steps_per_epoch"] == 5  # finished step 7, mid-epoch 2
    resumed, res2 = _run(tmp_path / "cut.pt")
    assert res2.resumed_from == 8 and res2.step == 20
    for (k, v), w in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "history.json").is_file()


def test_extending_epochs_continues_and_foreign_checkpoints_are_refused(tmp_path):
    _, first = _run(tmp_path / "a.pt", epochs=2)
    _, longer = _run(tmp_path / "a.pt", epochs=3)
    assert longer.resumed_from == 10 and longer.step == 15
    torch.save({"format": "other/1"}, tmp_path / "b.pt")
    with pytest.raises(UserError, match="'other/1' checkpoint, not 'toy/1'.*--fresh"):
        _run(tmp_path / "b.pt")
    _, fresh = _run(tmp_path / "b.pt", epochs=1, fresh=True)
    assert fresh.resumed_from is None and fresh.step == 5


def _tiny_cli_config(tmp_path, **train):
    cfg = {"name": "sig", "out_dir": str(tmp_path / "run"),
           "data": {"synth": {"image_size": 48, "max_objects": 2}, "train_images": 6, "val_images": 2,
                    "input_size": 32},
           "model": {"type": "heatmap", "width": 8, "context_levels": 1, "blocks": 0},
           "train": {"epochs": 6, "batch_size": 2, "num_threads": 1, **train}}
    path = tmp_path / "sig.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


@pytest.mark.slow
def test_sigterm_on_the_cli_saves_exits_143_and_resume_reproduces(tmp_path, monkeypatch):
    from keypoint.config import load_keypoint_config
    from keypoint.train import train

    monkeypatch.chdir(tmp_path)
    path, cfg = _tiny_cli_config(tmp_path, checkpoint_every_steps=1)
    ckpt = tmp_path / "run" / "last.pt"
    proc = subprocess.Popen([sys.executable, "-m", "geo_rs.cli", "keypoint", "train", str(path), "--quiet"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in err
    ck = torch.load(ckpt, weights_only=False)
    total = ck["steps_per_epoch"] * 6
    assert 0 < ck["step"] < total
    # resume to the end (in this process) == one uninterrupted run
    resumed = train(load_keypoint_config(path), quiet=True, evaluate_after=False)
    assert resumed["resumed_from_step"] == ck["step"] and resumed["steps"] == total
    whole = train(load_keypoint_config(path, {"out_dir": str(tmp_path / "whole")}), quiet=True,
                  evaluate_after=False)
    a = torch.load(ckpt, weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["state_dict"]
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-5, atol=1e-6), k
    assert whole["steps"] == total


def test_quiet_prints_no_progress_bar(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    path, _ = _tiny_cli_config(tmp_path, epochs=1)
    assert main(["keypoint", "train", str(path), "--quiet"]) == 0
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err and "img/s" not in err, err


@pytest.mark.slow
def test_box_detector_trains_on_the_one_loop(tmp_path):
    from keypoint.box.train import TrainConfig, train_box_detector

    cfg = TrainConfig(n_train=32, epochs=1, batch_size=16, n_eval=16)
    model, report = train_box_detector(cfg, progress=False, checkpoint=tmp_path / "box.pt")
    assert report["epochs_run"] == 1 and len(report["history"]) == 1
    assert 0.0 <= report["heldout"]["mean_iou"] <= 1.0
    cfg2 = TrainConfig(n_train=32, epochs=2, batch_size=16, n_eval=16)
    _, longer = train_box_detector(cfg2, progress=False, checkpoint=tmp_path / "box.pt")
    assert longer["epochs_run"] == 2 and len(longer["history"]) == 2
    with pytest.raises(UserError, match="n_train"):
        TrainConfig(n_train=0)
