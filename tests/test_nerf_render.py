"""`geo-rs nerf render`: a turntable of colour and depth frames, GIFs and (when a writer exists) MP4s."""

import json

import numpy as np
import pytest
from PIL import Image

from geo_rs.cli import main
from nerf import Trainer, load_config, make_scene
from nerf.turntable import orbit_poses


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("nerf_render")
    scene = make_scene("sphere", root / "scene", views=4, res=16, val_views=0, test_views=1, gt_res=24)
    # 60 steps: at 20 the field is still empty at its final σ and α (a checkpoint renders with those)
    cfg = load_config(None, data=str(scene), steps=60, grid_res=16, coarse_res=16, rays_per_batch=256,
                      eval_every=1000, ckpt_every=1000, metric_points=500)
    trainer = Trainer(cfg, root / "run", quiet=True)
    trainer.run()
    return trainer.checkpoint_path


def test_orbit_circles_the_up_axis_at_the_elevation():
    poses = orbit_poses(8, [0.1, 0.2, 0.3], 2.0, 30.0)
    rel = poses[:, :3, 3] - [0.1, 0.2, 0.3]
    np.testing.assert_allclose(np.linalg.norm(rel, axis=1), 2.0)
    np.testing.assert_allclose(rel[:, 2], 2.0 * np.sin(np.radians(30)))
    np.testing.assert_allclose(-poses[:, :3, 2], -rel / 2.0, atol=1e-12)  # every camera looks at the centre


def test_render_writes_a_turntable(checkpoint, tmp_path, capsys):
    out = tmp_path / "tt"
    assert main(["nerf", "render", str(checkpoint), "--orbit", "5", "--width", "24", "--height", "18",
                 "--out", str(out)]) == 0
    report = json.loads((out / "render_report.json").read_text())
    assert report["frames"] == 5 and report["size"] == [24, 18]
    for i in range(5):
        assert Image.open(out / f"color_{i:03d}.png").size == (24, 18)
        assert (out / f"depth_{i:03d}.png").exists()
    assert Image.open(out / "turntable_color.gif").n_frames == 5
    mp4 = [o for o in report["outputs"] if o.endswith(".mp4")]
    assert mp4 == ["turntable_color.mp4",
                   "turntable_depth.mp4"] or "turntable_color.mp4" in report["not_produced"]
    printed = capsys.readouterr().out
    assert "turntable in" in printed and ("MP4 via" in printed or "not produced" in printed)
    # the defaults follow the training cameras (stored in the checkpoint)
    assert main(["nerf", "render", str(checkpoint), "--orbit", "1", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "render_report.json").read_text())["size"] == [16, 16]
