"""Bad input to ``geo-rs box ...`` through the real CLI (subprocesses): exit 2, no traceback, one line
naming the file / key / flag / value at fault."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_run import assert_user_error, run_cli

DETECTOR = '''
from torch import nn

def detector():
    """90x90 canvas -> 4 numbers (an untrained box regressor)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(90 * 90, 4))
'''


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("bad_box")
    (r / "dets.py").write_text(DETECTOR)
    meta = {"arch": "MnistBoxCNN-v1"}
    (r / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip archive")
    (r / "corrupt.json").write_text(json.dumps(meta))
    from keypoint.box.model import MnistBoxCNN

    torch.save(MnistBoxCNN().state_dict(), r / "good.pt")
    data = (r / "good.pt").read_bytes()
    (r / "truncated.pt").write_bytes(data[: len(data) // 2])
    (r / "truncated.json").write_text(json.dumps(meta))
    torch.save({"net.0.weight": torch.zeros(3, 3)}, r / "other.pt")
    (r / "other.json").write_text(json.dumps(meta))
    torch.save({"1.weight": torch.zeros(4, 10), "1.bias": torch.zeros(4)}, r / "small.pt")
    # a COCO folder whose first image is a text file with a .png name
    coco = r / "coco"
    coco.mkdir()
    (coco / "000000.png").write_text("this is not an image")
    np.save(coco / "000001.npy", np.zeros((1, 90, 90), np.float32))
    spec = {"images": [{"id": 0, "file_name": "000000.png"}, {"id": 1, "file_name": "000001.npy"}],
            "annotations": [{"image_id": 0, "bbox": [10, 10, 28, 28]},
                            {"image_id": 1, "bbox": [5, 5, 28, 28]}]}
    (coco / "annotations.json").write_text(json.dumps(spec))
    badbox = r / "badbox"
    badbox.mkdir()
    np.save(badbox / "a.npy", np.zeros((1, 90, 90), np.float32))
    (badbox / "annotations.json").write_text(json.dumps(
        {"images": [{"id": 0, "file_name": "a.npy"}],
         "annotations": [{"image_id": 0, "bbox": ["x", 1, 2, 3]}]}))
    (r / "images.yaml").write_text("verify:\n  images: many\n")
    (r / "brokenrun").mkdir()
    (r / "brokenrun" / "results.json").write_text('{"config": ')
    (r / "emptyrun").mkdir()
    return r


FAST = ["--images", "1", "--perturbation", "brightness", "--eps", "0.001", "--method", "IBP",
        "--workers", "1", "--quiet"]

CASES = [
    ("corrupt_checkpoint", lambda r: ["box", "verify", "--model", r / "corrupt.pt", *FAST],
     ["corrupt.pt", "corrupt or truncated"]),
    ("truncated_checkpoint", lambda r: ["box", "verify", "--model", r / "truncated.pt", *FAST],
     ["truncated.pt", "corrupt or truncated"]),
    ("checkpoint_of_other_net", lambda r: ["box", "verify", "--model", r / "other.pt", *FAST],
     ["other.pt", "do not match"]),
    ("weights_that_do_not_fit_factory", lambda r: ["box", "verify", "--model-factory", "dets:detector",
                                                   "--weights", r / "small.pt", *FAST],
     ["small.pt", "does not fit", "1.weight"]),
    ("weights_without_factory", lambda r: ["box", "verify", "--weights", r / "small.pt", *FAST],
     ["--weights"]),
    ("unknown_factory_module", lambda r: ["box", "verify", "--model-factory", "nosuchmodule:f", *FAST],
     ["nosuchmodule"]),
    ("non_image_in_coco_folder", lambda r: ["box", "verify", "--model-factory", "dets:detector", "--data",
                                            r / "coco", *FAST], ["000000.png", "not a readable image"]),
    ("bbox_not_numbers", lambda r: ["box", "verify", "--model-factory", "dets:detector", "--data",
                                    r / "badbox", *FAST], ["annotations.json", "bbox", "'x'"]),
    ("data_folder_missing", lambda r: ["box", "verify", "--model-factory", "dets:detector", "--data",
                                       r / "nowhere", *FAST], ["--data", "nowhere"]),
    ("config_value_of_wrong_type", lambda r: ["box", "verify", "--config", r / "images.yaml"],
     ["images.yaml", "verify.images", "many"]),
    ("threshold_above_one", lambda r: ["box", "verify", "--threshold", "1.5", *FAST], ["--threshold", "1.5"]),
    ("zero_epochs", lambda r: ["box", "train", "--epochs", "0", "--quiet"], ["--epochs", "0"]),
    ("export_negative_seed", lambda r: ["box", "export-mnist", "--seed", "-1", "--out", r / "x"],
     ["--seed", "-1"]),
    ("report_without_results", lambda r: ["box", "report", r / "emptyrun"], ["emptyrun", "results.json"]),
    ("report_of_broken_results", lambda r: ["box", "report", r / "brokenrun"], ["brokenrun", "results.json"]),
    ("unreachable_cluster", lambda r: ["box", "verify", "--model-factory", "dets:detector", *FAST,
                                       "--cluster", "tcp://127.0.0.1:9", "--out", r / "clusterrun"],
     ["127.0.0.1:9", "cannot reach"]),
]


@pytest.mark.parametrize("name, args, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_box_input_is_one_line(root, name, args, needles, monkeypatch):
    monkeypatch.setenv("GEO_RS_CLUSTER_TIMEOUT", "2")
    proc = run_cli(*args(root), cwd=root)
    assert_user_error(proc, *needles)
