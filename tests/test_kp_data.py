"""Synthetic keypoint data: determinism, visibility semantics, COCO round trip, layout, bad input."""
import json

import numpy as np
import pytest

from geo_rs.errors import UserError
from keypoint.data import (
    CATEGORIES,
    PRESETS,
    KeypointCropDataset,
    KeypointImageDataset,
    KeypointLayout,
    SynthConfig,
    apply_affine,
    crop_affine,
    generate_dataset,
    generate_sample,
    invert_affine,
    load_coco,
    save_coco,
)

SMALL = SynthConfig(image_size=64, max_objects=3, occlusion_rate=0.9, truncation_rate=0.4)


def test_generator_is_deterministic_and_prefix_stable():
    a = generate_dataset(4, seed=3, config=SMALL)
    b = generate_dataset(6, seed=3, config=SMALL)
    c = generate_dataset(4, seed=4, config=SMALL)
    for sa, sb in zip(a.samples, b.samples):
        np.testing.assert_array_equal(sa.image, sb.image)
        assert len(sa.annotations) == len(sb.annotations)
        for x, y in zip(sa.annotations, sb.annotations):
            np.testing.assert_array_equal(x.keypoints, y.keypoints)
            np.testing.assert_array_equal(x.visibility, y.visibility)
    assert not np.array_equal(a.samples[0].image, c.samples[0].image)


def test_categories_have_distinct_keypoint_counts_and_valid_skeletons():
    counts = [c.num_keypoints for c in CATEGORIES]
    assert len(set(counts)) == len(counts) == 4
    for c in CATEGORIES:
        assert len(c.sigmas) == c.num_keypoints
        assert all(0 <= a < c.num_keypoints and 0 <= b < c.num_keypoints for a, b in c.skeleton)


def test_visibility_semantics_occluded_and_truncated_keypoints_keep_locations():
    data = generate_dataset(20, seed=0, config=SMALL)
    size = SMALL.image_size
    kinds = {"visible": 0, "occluded": 0, "truncated": 0}
    for s in data.samples:
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        for a in s.annotations:
            assert np.isfinite(a.keypoints).all()  # hidden keypoints stay labelled
            assert set(np.unique(a.visibility)) <= {1, 2}
            inside = ((a.keypoints >= -0.5) & (a.keypoints < size - 0.5)).all(1)
            assert (a.visibility[~inside] == 1).all()  # outside the image is never "visible"
            kinds["visible"] += int((a.visibility == 2).sum())
            kinds["occluded"] += int(((a.visibility == 1) & inside).sum())
            kinds["truncated"] += int((~inside).sum())
            x, y, w, h = a.box
            assert w > 0 and h > 0 and x >= -0.5 - 1e-6 and x + w <= size - 0.5 + 1e-6
    assert min(kinds.values()) > 0, kinds


def test_same_class_overlap_occurs():
    data = generate_dataset(12, seed=1, config=SynthConfig(image_size=48, min_objects=2, max_objects=3,
                                                           same_class_overlap_rate=1.0))
    assert any(len({a.category_id for a in s.annotations}) < len(s.annotations) for s in data.samples)


def test_coco_round_trip(tmp_path):
    data = generate_dataset(3, seed=5, config=SMALL)
    path = save_coco(data, tmp_path / "set")
    raw = json.loads(path.read_text())
    assert {"images", "annotations", "categories"} <= set(raw)
    cat = raw["categories"][0]
    assert min(min(p) for p in cat["skeleton"]) == 1  # COCO skeletons are 1-based
    ann = raw["annotations"][0]
    assert ann["num_keypoints"] == sum(1 for v in ann["keypoints"][2::3] if v > 0)
    back = load_coco(path)
    assert [c.skeleton for c in back.categories] == [c.skeleton for c in data.categories]
    for s0, s1 in zip(data.samples, back.samples):
        assert np.abs(s0.image - s1.image).max() <= 0.5 / 255 + 1e-6  # PNG quantisation only
        for a0, a1 in zip(s0.annotations, s1.annotations):
            np.testing.assert_allclose(a0.keypoints, a1.keypoints, atol=1e-5)
            np.testing.assert_array_equal(a0.visibility, a1.visibility)
            np.testing.assert_allclose(a0.box, a1.box, atol=1e-5)


def test_coco_import_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_coco(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_coco(bad)
    cats = [{"id": 1, "name": "q", "keypoints": ["a", "b"], "skeleton": [[1, 2]]}]
    doc = {"images": [{"id": 1, "file_name": "x.png", "height": 8, "width": 8}], "categories": cats,
           "annotations": [{"image_id": 1, "category_id": 1, "keypoints": [1, 1, 2]}]}
    bad.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"annotations\[0\].*3\*2"):
        load_coco(bad, load_images=False)
    doc["categories"][0]["skeleton"] = [[0, 2]]
    bad.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="skeleton"):
        load_coco(bad, load_images=False)


def test_crop_affine_round_trip_and_crop_dataset_items():
    aff = crop_affine(np.array([10.0, 20.0, 30.0, 16.0]), 64, 1.25)
    pts = np.array([[12.3, 25.0], [40.0, 30.0]])
    np.testing.assert_allclose(apply_affine(apply_affine(pts, invert_affine(aff)), aff), pts, atol=1e-9)
    # The crop's edges sit at box centre ± side/2 (pixel u = -0.5 ↔ left edge).
    left = apply_affine(np.array([[-0.5, -0.5]]), aff)[0]
    np.testing.assert_allclose(left, [25.0 - 18.75, 28.0 - 18.75])
    data = generate_dataset(3, seed=2, config=SMALL)
    layout = KeypointLayout.from_categories(data.categories)
    assert layout.num_channels == sum(c.num_keypoints for c in CATEGORIES)
    ds = KeypointCropDataset(data, input_size=32, layout=layout)
    item = ds[0]
    assert item["image"].shape == (3, 32, 32)
    assert item["keypoints"].shape == (1, layout.num_channels, 2)
    ch = layout.channels(item["category_id"])
    assert (item["visibility"][0, ch] > 0).all()
    others = np.setdiff1d(np.arange(layout.num_channels), ch)
    assert (item["visibility"][0, others] == 0).all()
    full = KeypointImageDataset(data, max_instances=4)[0]
    assert full["keypoints"].shape == (4, layout.num_channels, 2)


def test_synth_config_rejects_bad_values():
    with pytest.raises(UserError, match="occlusion_rate"):
        SynthConfig.from_dict({"occlusion_rate": 1.5})
    with pytest.raises(UserError, match="'colour': unknown key"):
        SynthConfig.from_dict({"colour": 1})
    with pytest.raises(UserError, match="'image_size'.*valid integer"):
        SynthConfig.from_dict({"image_size": 64.5})
    with pytest.raises(UserError, match="occluder_size"):
        SynthConfig.from_dict({"occluder_size": [0.5, 0.2]})
    with pytest.raises(ValueError, match="min_objects"):  # direct construction: pydantic's ValueError
        generate_sample(0, SynthConfig(min_objects=3, max_objects=2))


def test_coco_like_preset_labels_nothing_outside_and_hides_more():
    base = SynthConfig(image_size=64, occlusion_rate=1.0, truncation_rate=0.6, max_objects=2)
    coco = SynthConfig.from_dict({**base.to_dict(), **PRESETS["coco-like"]})
    n_out_labelled, n_out_coco, hidden_base, hidden_coco = 0, 0, 0, 0
    for b, c in zip(generate_dataset(24, 3, base).samples, generate_dataset(24, 3, coco).samples):
        for ab, ac in zip(b.annotations, c.annotations):
            kp = ab.keypoints
            outside = (kp < -0.5).any(1) | (kp >= 63.5).any(1)
            n_out_labelled += int((ab.visibility[outside] > 0).sum())
            n_out_coco += int((ac.visibility[outside] > 0).sum())
            hidden_base += int(((ab.visibility == 1) & ~outside).sum())
            hidden_coco += int(((ac.visibility == 1) & ~outside).sum())
    assert n_out_labelled > 0 and n_out_coco == 0  # same geometry; COCO leaves outside keypoints unlabelled
    assert hidden_coco > 1.3 * hidden_base  # larger occluders hide more keypoints inside the image
