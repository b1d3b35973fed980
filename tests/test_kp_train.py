"""Every head's loss goes down on a tiny fixed batch; checkpoints record config + codec and a
mismatched checkpoint fails clearly."""
import json

import pytest
import torch

from geo_rs.errors import UserError
from keypoint.checkpoints import load_checkpoint
from keypoint.codecs import encode_batch
from keypoint.data import KeypointCropDataset, SynthConfig, generate_dataset
from keypoint.models import build_model
from keypoint.train import train

TINY = {"width": 8, "context_levels": 1, "blocks": 0}
VARIANTS = [
    {"type": "heatmap"},
    {"type": "regression", "hidden": 32},
    {"type": "adaanchor"},
    {"type": "adaanchor", "fusion": "add"},
    {"type": "adaanchor", "selection": "fixed"},
    {"type": "adaanchor", "top_k": 1},
    {"type": "adaanchor", "local_refinement": False},
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch():
    data = generate_dataset(3, seed=0, config=SynthConfig(image_size=48, max_objects=2))
    ds = KeypointCropDataset(data, input_size=32)
    items = [ds[i] for i in range(min(4, len(ds)))]
    return (torch.stack([it["image"] for it in items]), torch.stack([it["keypoints"] for it in items]),
            torch.stack([it["visibility"] for it in items]), ds.layout.num_channels)


@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_tiny_training_lowers_the_loss(batch, cfg):
    images, kp, vis, channels = batch
    torch.manual_seed(0)
    model = build_model({**cfg, **TINY}, num_keypoints=channels, input_size=32)
    targets = encode_batch(model.codec, kp, vis)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss, parts = model.loss(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (cfg, losses[:3], losses[-3:])
    kps, scores = model.predict(images)
    assert kps.shape == (len(images), channels, 2) and scores.shape == (len(images), channels)


def _tiny_config(tmp_path, **train):
    return {"name": "t", "out_dir": str(tmp_path / "run"),
            "data": {"synth": {"image_size": 48, "max_objects": 2}, "train_images": 6, "val_images": 3,
                     "input_size": 32},
            "model": {"type": "adaanchor", **TINY}, "train": {"epochs": 1, "batch_size": 8, **train}}


def test_checkpoint_round_trip_resume_and_mismatch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the synthetic-data cache goes under ./runs
    summary = train(_tiny_config(tmp_path), quiet=True)
    assert {"pck@0.1", "vis_error", "inv_error", "oks_ap"} <= set(summary["val"])
    assert summary["complete"] and summary["epochs_run"] == 1
    run = tmp_path / "run"
    assert {"last.pt", "metrics.json", "loss.png", "history.json"} <= {p.name for p in run.iterdir()}
    ck_path = run / "last.pt"
    model, ck = load_checkpoint(ck_path)
    assert ck["codec"] == model.codec.to_dict() and ck["config"]["model"]["type"] == "adaanchor"
    # Resuming a finished run trains nothing more and gives the same weights.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = train(_tiny_config(tmp_path), quiet=True, evaluate_after=False)
    assert again["resumed_from_step"] == ck["step"] and again["steps"] == ck["step"]
    after, _ = load_checkpoint(ck_path)
    assert all(torch.equal(before[k], v) for k, v in after.state_dict().items())
    # A codec that the model config would not build → clear error.
    ck["codec"]["heatmap_size"] = [4, 4]
    torch.save(ck, tmp_path / "bad_codec.pt")
    with pytest.raises(UserError, match="codec mismatch"):
        load_checkpoint(tmp_path / "bad_codec.pt")
    # Weights of another architecture → clear error.
    ck = torch.load(ck_path, weights_only=False)
    ck["model_config"] = {**ck["model_config"], "width": 16}
    torch.save(ck, tmp_path / "bad_weights.pt")
    with pytest.raises(UserError, match="weights do not fit"):
        load_checkpoint(tmp_path / "bad_weights.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a geo-rs keypoint checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_more_epochs_extend_and_another_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train(_tiny_config(tmp_path), quiet=True, evaluate_after=False)
    longer = train(_tiny_config(tmp_path, epochs=3), quiet=True, evaluate_after=False)
    assert longer["resumed_from_step"] == first["steps"] and longer["epochs_run"] == 3
    assert longer["steps"] == 3 * first["steps"]
    other = _tiny_config(tmp_path, epochs=3)
    other["model"] = {"type": "heatmap", **TINY}
    with pytest.raises(UserError, match=r"different model.*model\.type: 'adaanchor' → 'heatmap'.*--fresh"):
        train(other, quiet=True, evaluate_after=False)
    lr = _tiny_config(tmp_path, epochs=3, lr=0.5)
    with pytest.raises(UserError, match=r"train\.lr: 0\.002 → 0\.5"):
        train(lr, quiet=True, evaluate_after=False)
    fresh = train(other, fresh=True, quiet=True, evaluate_after=False)
    assert fresh["resumed_from_step"] is None and load_checkpoint(tmp_path / "run" / "last.pt")[1][
        "model_config"]["type"] == "heatmap"
    (tmp_path / "run" / "last.pt").write_bytes(b"truncated")
    with pytest.raises(UserError, match="not a readable checkpoint.*--fresh"):
        train(other, quiet=True, evaluate_after=False)


def test_adaanchor_history_logs_anchor_diagnostics_every_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(_tiny_config(tmp_path, epochs=2), quiet=True, evaluate_after=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    epochs = [h for h in history if h.get("kind") == "epoch"]
    assert [h["epoch"] for h in epochs] == [1, 2]
    for h in epochs:
        assert {"infer_corr_x", "infer_corr_y", "infer_dist_vis", "train_corr_x"} <= set(h)
