"""keypoint.data.posed: seeded posed images whose cameras reproduce the keypoints; COCO + cameras.json I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geo_rs import UserError, project_points, rotation_error_deg, solve_pnp
from keypoint.data.posed import PosedConfig, generate_posed, load_posed, object_points, save_posed

NAMES = {1: "runway", 2: "cuboid"}


def test_cameras_reproduce_keypoints_and_solve_pnp_recovers_them():
    cfg = PosedConfig(image_size=64)
    data = generate_posed(6, seed=3, config=cfg)
    assert {c.category_id for c in data.cameras} == {1, 2}
    for sample, cam in zip(data.samples, data.cameras, strict=True):
        ann = sample.annotations[0]
        points = object_points(NAMES[cam.category_id], cfg)
        assert np.abs(project_points(points, (cam.R, cam.t), cam.K) - ann.keypoints).max() < 1e-4
        assert (ann.keypoints >= cfg.margin - 1e-4).all() and (ann.keypoints <= 63 - cfg.margin + 1e-4).all()
        pose = solve_pnp(points, ann.keypoints.astype(float), cam.K)
        assert rotation_error_deg(pose.R, cam.R) < 0.01
        assert sample.image.shape == (64, 64, 3) and 0 <= sample.image.min() and sample.image.max() <= 1
        if cam.category_id == 2:  # a convex box shows between 4 and 7 of its corners
            assert 4 <= (ann.visibility == 2).sum() <= 7 and (ann.visibility >= 1).all()


def test_seeded_and_prefix_stable():
    a = generate_posed(3, seed=7, config=PosedConfig(image_size=48))
    b = generate_posed(5, seed=7, config=PosedConfig(image_size=48))
    c = generate_posed(3, seed=8, config=PosedConfig(image_size=48))
    for x, y in zip(a.samples, b.samples[:3], strict=True):
        assert np.array_equal(x.image, y.image)
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a.samples, c.samples, strict=True))


def test_save_and_load_round_trip(tmp_path):
    data = generate_posed(4, seed=1, config=PosedConfig(image_size=48, objects=("runway",)))
    save_posed(data, tmp_path)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert len(coco["images"]) == 4 and coco["categories"][0]["name"] == "runway"
    loaded, cameras, points = load_posed(tmp_path)
    assert np.allclose(points[1], object_points("runway", data.config))
    for s_in, s_out, cam_in, cam_out in zip(data.samples, loaded.samples, data.cameras, cameras, strict=True):
        assert np.allclose(s_in.annotations[0].keypoints, s_out.annotations[0].keypoints, atol=1e-4)
        assert np.allclose(cam_in.R, cam_out.R) and np.allclose(cam_in.K, cam_out.K)
        assert np.abs(s_in.image - s_out.image).max() <= 0.5 / 255 + 1e-6


def test_bad_config_and_files_raise_user_errors(tmp_path):
    for kwargs in (
        {"objects": ("plane",)},
        {"image_size": 8},
        {"glide_slope_deg": (10.0, 3.0)},
        {"fov_deg": 1.0},
    ):
        with pytest.raises(UserError):
            generate_posed(1, config=PosedConfig(**kwargs))
    with pytest.raises(UserError):
        PosedConfig.from_dict({"imagesize": 64})
    with pytest.raises(UserError):
        generate_posed(
            1, config=PosedConfig(objects=("runway",), threshold_distance=(1.0, 2.0), fov_deg=10.0)
        )
    save_posed(generate_posed(1, config=PosedConfig(image_size=48)), tmp_path)
    (tmp_path / "cameras.json").write_text(json.dumps({"cameras": [{"image_id": 0}]}))
    with pytest.raises(UserError):
        load_posed(tmp_path)
