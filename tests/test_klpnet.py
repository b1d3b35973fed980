"""KLPNet: coarse-to-fine targets, CKLM, detector targets, end-to-end tiny training, checkpoints."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_rs.errors import UserError
from keypoint.data.synth import CATEGORIES, SynthConfig, generate_dataset
from keypoint.models.klpnet import KLPNet, parse_klpnet_options
from keypoint.models.klpnet_heads import (
    CKLM,
    coarse_to_fine_targets,
    detector_targets,
    find_peaks,
    gaussian_window_heatmap,
    gaussian_window_heatmap_naive,
    kernel_sigma,
    stage_kernels,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- coarse-to-fine targets
def test_stage_kernels_and_sigmas():
    assert stage_kernels(1) == (3,) and stage_kernels(2) == (5, 3) and stage_kernels(3) == (7, 5, 3)
    assert [kernel_sigma(k) for k in (7, 5, 3)] == pytest.approx([1.4, 1.1, 0.8])
    with pytest.raises(UserError, match="num_stages"):
        stage_kernels(4)
    with pytest.raises(UserError, match="odd"):
        kernel_sigma(4)


def test_coarse_to_fine_target_shapes_supports_and_values():
    # keypoint exactly on cell (5, 6) of a 16x16 map at stride 4: image x = (5 + .5)·4 − .5
    x, y = 5.5 * 4 - 0.5, 6.5 * 4 - 0.5
    t = coarse_to_fine_targets(torch.tensor([[[x, y]]]), torch.ones(1, 1), (16, 16), 4, (7, 5, 3))
    assert [h.shape for h in t["heatmaps"]] == [torch.Size([16, 16])] * 3
    assert t["offsets"].shape == (2, 16, 16) and t["offset_mask"].shape == (16, 16)
    for hm, k in zip(t["heatmaps"], (7, 5, 3)):
        assert int((hm > 0).sum()) == k * k  # a K×K window
        assert hm[6, 5].item() == pytest.approx(1.0)
        sigma = kernel_sigma(k)
        assert hm[6, 6].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-5)
    # coarse-to-fine: each stage's target is strictly narrower
    mass = [h.sum().item() for h in t["heatmaps"]]
    assert mass[0] > mass[1] > mass[2]
    # offsets point from each nearby cell to the keypoint
    assert t["offsets"][:, 6, 5].abs().max().item() < 1e-6
    assert t["offsets"][:, 6, 6].tolist() == pytest.approx([-1.0, 0.0])
    assert t["offset_mask"][6, 8].item() == 0.0 and t["offset_mask"][6, 6].item() == 1.0


def test_unlabelled_and_multiple_instances_share_one_channel():
    kp = torch.tensor([[[10.0, 10.0], [40.0, 40.0]], [[20.0, 50.0], [0.0, 0.0]]])
    w = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    t = coarse_to_fine_targets(kp, w, (16, 16), 4, (3,))
    peaks, _ = find_peaks(t["heatmaps"][0], threshold=0.5)
    assert len(peaks) == 3  # the unlabelled keypoint is not drawn; all categories on one map


def test_windowed_gaussian_matches_naive():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(6, 2, generator=g) * 12
    wts = torch.tensor([1.0, 1, 0, 1, 1, 1])
    for k in (3, 5, 7):
        fast = gaussian_window_heatmap(pts, wts, (12, 10), k, sigma_scale=1.5)
        slow = gaussian_window_heatmap_naive(pts, wts, (12, 10), k, sigma_scale=1.5)
        assert torch.allclose(fast, slow, atol=1e-6)


def test_find_peaks_on_constructed_map():
    heat = torch.zeros(8, 8)
    heat[2, 3], heat[2, 4], heat[6, 1] = 0.9, 0.5, 0.4
    cells, scores = find_peaks(heat, threshold=0.3)
    assert cells.tolist() == [[3, 2], [1, 6]] and scores.tolist() == pytest.approx([0.9, 0.4])


def test_detector_targets():
    d = detector_targets(torch.tensor([[8.0, 8.0, 16.0, 24.0]]), torch.tensor([1]), 3, (16, 16), 4)
    assert d["centre"].shape == (3, 16, 16) and d["centre"][1].max().item() == 1.0
    assert d["centre"][0].max().item() == 0.0 and d["size_mask"].sum().item() == 1
    iy, ix = torch.nonzero(d["size_mask"])[0].tolist()
    assert d["log_size"][:, iy, ix].exp().tolist() == pytest.approx([4.0, 6.0])


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_cklm_shapes(stages):
    m = CKLM(16, channels=8, num_stages=stages)
    out = m(torch.randn(2, 16, 12, 12))
    assert len(out["heatmaps"]) == stages and out["heatmaps"][0].shape == (2, 1, 12, 12)
    assert out["offsets"][-1].shape == (2, 2, 12, 12) and out["node_features"].shape == (2, 8, 12, 12)


def test_options_are_validated():
    with pytest.raises(UserError, match="'num_stage': unknown key"):
        parse_klpnet_options({"num_stage": 3})
    with pytest.raises(UserError, match="num_stages"):
        parse_klpnet_options({"num_stages": 0})
    with pytest.raises(UserError, match="odd"):
        parse_klpnet_options({"kernels": [7, 4, 3]})


# ------------------------------------------------------------------------------- end-to-end tiny run
def _tiny(tmp_path, **train):
    cfg = SynthConfig(image_size=32, max_objects=2, min_scale=0.25, max_scale=0.35,
                      category_ids=(1, 2), num_distractors=(0, 1))
    data = (generate_dataset(8, seed=0, config=cfg), generate_dataset(3, seed=50, config=cfg))
    config = {"name": "t", "out_dir": str(tmp_path / "run"),
              "model": {"type": "klpnet", "num_stages": 2, "width": 8, "cklm_channels": 8, "gae_hidden": 16,
                        "gae_latent": 8, "context_levels": 1},
              "train": {"epochs": 12, "batch_size": 4, "lr": 5e-3, "log_every": 1, **train}}
    return config, data


def test_tiny_training_lowers_loss_and_roundtrips(tmp_path):
    from keypoint.config import validate_keypoint_config
    from keypoint.klpnet_eval import draw_klpnet_prediction, evaluate_klpnet
    from keypoint.klpnet_train import load_klpnet_checkpoint, train_klpnet

    config, (train, val) = _tiny(tmp_path)
    summary = train_klpnet(config, quiet=True, data=(train, val))
    assert summary["final_loss"] < 0.7 * summary["first_loss"], summary
    assert summary["epochs_run"] == 12 and summary["complete"]
    for key in ("lis_on", "lis_off", "lis_feedback"):
        v = summary["val"][key]
        assert 0.0 <= v["pck"] <= 1.0 and v["objects"] > 0
        # every labelled keypoint is correct, missing or wrong
        assert v["pck"] + v["missing_rate"] + v["wrong_rate"] == pytest.approx(1.0, abs=1e-3)
    assert summary["val"]["lis_off"]["relocalised"] == 0
    assert summary["val"]["lis_feedback"]["missing_rate"] <= summary["val"]["lis_on"]["missing_rate"]
    assert (tmp_path / "run" / "loss.png").is_file() and (tmp_path / "run" / "metrics.json").is_file()

    model, ck = load_klpnet_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["config"] == validate_keypoint_config(config).to_dict()
    assert bool(model.has_template[0])
    # the loaded model reproduces the evaluation
    again = evaluate_klpnet(model, val, alpha=0.1, lis=True)
    assert again["pck"] == pytest.approx(summary["val"]["lis_on"]["pck"])
    # predictions have per-object arrays of the category's size, and draw to a PNG
    img = torch.from_numpy(val.samples[0].image).permute(2, 0, 1)[None]
    anns = val.samples[0].annotations
    pred = model.infer(img, [np.array([a.box for a in anns])], [[a.category_id for a in anns]])[0]
    for ob, a in zip(pred.objects, anns):
        assert ob.keypoints.shape == (len(a.keypoints), 2) and ob.link_prob.shape == (len(a.keypoints),) * 2
    png = draw_klpnet_prediction(val.samples[0].image, pred, tmp_path / "p.png", CATEGORIES)
    assert png.stat().st_size > 1000
    # resuming a finished run does not train again
    s2 = train_klpnet(config, quiet=True, data=(train, val), evaluate_after=False)
    assert s2["final_loss"] == summary["final_loss"] and s2["resumed_from_step"] == summary["steps"]
    _check_cli(tmp_path, val)


def _check_cli(tmp_path, val):
    """`geo-rs keypoint eval|predict` on a KLPNet checkpoint."""
    import json

    from geo_rs.cli import main
    from keypoint.data.coco import save_coco

    ckpt = str(tmp_path / "run" / "last.pt")
    coco = save_coco(val, tmp_path / "coco")
    assert main(["keypoint", "eval", ckpt, "--data", str(coco), "--out", str(tmp_path / "m.json")]) == 0
    assert set(json.loads((tmp_path / "m.json").read_text())) == {"lis_off", "lis_on", "lis_feedback"}
    img = str(tmp_path / "coco" / "images" / val.samples[0].file_name)
    assert main(["keypoint", "predict", img, "--checkpoint", ckpt, "--box", "2,2,20,20", "--category", "1",
                 "--out", str(tmp_path / "pred.png")]) == 0
    assert (tmp_path / "pred.png").is_file()
    assert main(["keypoint", "predict", img, "--checkpoint", ckpt, "--box", "2,2,20,20"]) == 2  # no category
    # the model's own detector
    det = str(tmp_path / "pred_det.png")
    assert main(["keypoint", "predict", img, "--checkpoint", ckpt, "--out", det]) == 0
    assert (tmp_path / "pred_det.png").is_file()


def test_predict_with_no_detection_says_so(tmp_path, capsys):
    from geo_rs.cli import main
    from keypoint.klpnet_train import categories_to_list

    net = KLPNet(CATEGORIES, {"width": 8, "context_levels": 1, "detector_threshold": 0.99})
    torch.save({"format": "geo-rs-klpnet/2", "categories": categories_to_list(CATEGORIES),
                "model_config": net.config, "state_dict": net.state_dict()}, tmp_path / "k.pt")
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "blank.png")
    capsys.readouterr()
    assert main(["keypoint", "predict", str(tmp_path / "blank.png"), "--checkpoint", str(tmp_path / "k.pt"),
                 "--out", str(tmp_path / "o.png")]) == 0
    captured = capsys.readouterr()
    assert "no objects" in captured.err and '"objects": []' in captured.out
    assert (tmp_path / "o.png").stat().st_size > 1000


def test_checkpoint_errors(tmp_path):
    from keypoint.config import load_keypoint_config, validate_keypoint_config
    from keypoint.klpnet_train import categories_to_list, load_klpnet_checkpoint

    with pytest.raises(UserError, match="not found"):
        load_klpnet_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": "geo-rs-keypoint/2"}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a KLPNet checkpoint"):
        load_klpnet_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        load_klpnet_checkpoint(tmp_path / "junk.pt")
    # a checkpoint whose weights were saved for another width fails clearly
    small = KLPNet(CATEGORIES, {"width": 8})
    torch.save({"format": "geo-rs-klpnet/2", "categories": categories_to_list(CATEGORIES),
                "model_config": {**small.config, "width": 16}, "state_dict": small.state_dict()},
               tmp_path / "bad.pt")
    with pytest.raises(UserError, match="do not fit"):
        load_klpnet_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="'trian': unknown key"):
        validate_keypoint_config({"model": {"type": "klpnet"}, "trian": {}})
    with pytest.raises(UserError, match="eval.boxes"):
        validate_keypoint_config({"model": {"type": "klpnet"}, "eval": {"boxes": "oracle"}})
    for name in ("klpnet", "klpnet_s1", "klpnet_s2"):  # the shipped configs validate
        path = Path(__file__).resolve().parents[1] / "configs" / "keypoint" / f"{name}.yaml"
        cfg = load_keypoint_config(path)
        assert cfg.model.num_stages == {"klpnet": 3, "klpnet_s1": 1, "klpnet_s2": 2}[name]
