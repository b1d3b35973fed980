"""`geo-rs keypoint` end to end on tiny sizes, and bad input → one-line errors (exit 2)."""
import json

import pytest
import torch
import yaml

from geo_rs.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """make-data + train (tiny) once for the module; returns (workdir, checkpoint, data dir)."""
    work = tmp_path_factory.mktemp("kpcli")
    cfg = {"name": "tiny", "out_dir": str(work / "run"),
           "data": {"synth": {"image_size": 48, "max_objects": 2}, "train_images": 6, "val_images": 3,
                    "input_size": 32},
           "model": {"type": "adaanchor", "width": 8, "context_levels": 1, "blocks": 0},
           "train": {"epochs": 1, "batch_size": 8}}
    (work / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["keypoint", "make-data", str(work / "set"), "--num-images", "3",
                     "--image-size", "48"]) == 0
        assert main(["keypoint", "train", str(work / "tiny.yaml"), "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
        mp.undo()
    return work, work / "run" / "last.pt", work / "set"


def test_make_data_train_eval_predict(trained, capsys, tmp_path):
    work, ckpt, data_dir = trained
    assert (data_dir / "annotations.json").is_file() and (data_dir / "preview.png").is_file()
    assert (work / "run" / "metrics.json").is_file() and (work / "run" / "loss.png").is_file()
    capsys.readouterr()
    out_json = tmp_path / "m.json"
    assert main(["keypoint", "eval", str(ckpt), "--data", str(data_dir / "annotations.json"),
                 "--out", str(out_json)]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["instances"] > 0 and 0.0 <= metrics["pck@0.1"] <= 1.0
    image = next((data_dir / "images").glob("*.png"))
    png = tmp_path / "pred.png"
    capsys.readouterr()
    assert main(["keypoint", "predict", str(image), "--checkpoint", str(ckpt), "--out", str(png),
                 "--annotations", str(data_dir / "annotations.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert png.is_file() and png.stat().st_size > 1000
    ann = json.loads((data_dir / "annotations.json").read_text())
    n_inst = sum(1 for a in ann["annotations"] if a["image_id"] == int(image.stem))
    assert len(report["instances"]) == n_inst
    # Whole image as the box and the category chosen by score.
    assert main(["keypoint", "predict", str(image), "--checkpoint", str(ckpt), "--out", str(png)]) == 0


@pytest.mark.parametrize("argv, message", [
    (["keypoint", "train", "missing.yaml"], "config file not found"),
    (["keypoint", "eval", "missing.pt"], "checkpoint not found"),
    (["keypoint", "make-data", "x", "--num-images", "0"], "--num-images"),
    (["keypoint", "make-data", "x", "--occlusion-rate", "2"], "occlusion_rate"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_config_and_predict_inputs(trained, capsys, tmp_path):
    _, ckpt, data_dir = trained
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {type: adaanchor\n")
    assert main(["keypoint", "train", str(bad)]) == 2
    assert "malformed YAML" in capsys.readouterr().err
    bad.write_text("trian: {epochs: 1}\n")
    assert main(["keypoint", "train", str(bad)]) == 2
    assert "key 'trian': unknown key" in capsys.readouterr().err
    not_image = tmp_path / "x.png"
    not_image.write_text("hello")
    assert main(["keypoint", "predict", str(not_image), "--checkpoint", str(ckpt)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    image = next((data_dir / "images").glob("*.png"))
    assert main(["keypoint", "predict", str(image), "--checkpoint", str(ckpt), "--box", "1,2,3"]) == 2
    assert "--box" in capsys.readouterr().err
    assert main(["keypoint", "predict", str(image), "--checkpoint", str(ckpt), "--category", "9"]) == 2
    assert "category_id 9" in capsys.readouterr().err
    assert main(["keypoint", "eval", str(not_image)]) == 2
    assert "not a readable torch checkpoint" in capsys.readouterr().err
