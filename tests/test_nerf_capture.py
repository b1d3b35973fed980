"""Users' captures: transforms.json and COLMAP text models, per-view cameras, distortion, split,
normalisation — and training on a capture we made ourselves recovers the geometry."""

import json
import shutil

import numpy as np
import pytest
import torch
import trimesh

from geo_rs import UserError
from nerf import pixel_rays
from nerf.cameras import distort_points, undistort_points, undistort_points_naive
from nerf.capture import load_capture, read_colmap, split_indices
from nerf.normalize import Similarity, focus_point
from nerf.scene import make_capture, similarity_from_args

pytestmark = pytest.mark.usefixtures("one_thread")

TRUTH = similarity_from_args([3.0, 30, -20, 75, 5, -2, 1])  # applied to the world before writing
SIZE = dict(width=48, height=36, cx=27.0, cy=15.5)  # non-square, principal point off-centre


@pytest.fixture(scope="module")
def capsule(tmp_path_factory):
    """A held-out mesh (no built-in scene was tuned on it): a tilted capsule."""
    m = trimesh.creation.capsule(height=0.7, radius=0.28, count=[24, 24])
    m.apply_transform(trimesh.transformations.rotation_matrix(0.6, [1, 0.3, 0]))
    path = tmp_path_factory.mktemp("capsule") / "capsule.ply"
    m.export(path)
    return path


@pytest.fixture(scope="module")
def captures(capsule, tmp_path_factory):
    root = tmp_path_factory.mktemp("captures")
    return {fmt: make_capture(capsule, root / fmt, fmt, views=24, transform=TRUTH, gt_res=64, points=500,
                              **SIZE)
            for fmt in ("transforms", "colmap")}


def test_undistortion_matches_opencv_and_inverts_the_forward_model():
    rng = np.random.default_rng(0)
    xd, yd = rng.uniform(-0.6, 0.6, (2, 500))
    dist = np.array([-0.12, 0.03, 0.002, -0.001, 0.004])
    x, y = undistort_points(torch.tensor(xd)[None], torch.tensor(yd)[None], torch.tensor(dist)[None])
    rx, ry = undistort_points_naive(xd, yd, dist)
    np.testing.assert_allclose(x[0].numpy(), rx, atol=1e-9)
    np.testing.assert_allclose(y[0].numpy(), ry, atol=1e-9)
    fx, fy = distort_points(x, y, torch.tensor(dist)[None])
    np.testing.assert_allclose(fx[0].numpy(), xd, atol=1e-12)
    np.testing.assert_allclose(fy[0].numpy(), yd, atol=1e-12)


def test_rays_of_an_off_centre_non_square_camera():
    k = torch.tensor([40.0, 30.0, 7.5, 3.5], dtype=torch.float64)  # fx ≠ fy, principal point at pixel (7, 3)
    o, d = pixel_rays(torch.eye(4, dtype=torch.float64), 6, 10, k, normalize=False)
    assert d.shape == (6, 10, 3)
    torch.testing.assert_close(d[3, 7], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(d[3, 9], torch.tensor([2 / 40, 0.0, -1.0], dtype=torch.float64))  # right
    torch.testing.assert_close(d[1, 7], torch.tensor([0.0, 2 / 30, -1.0], dtype=torch.float64))  # up
    # a focal length alone is the old centred, square-pixel camera
    a = pixel_rays(torch.eye(4), 6, 10, 20.0)[1]
    b = pixel_rays(torch.eye(4), 6, 10, torch.tensor([20.0, 20.0, 5.0, 3.0]))[1]
    torch.testing.assert_close(a, b)


def test_both_formats_read_back_the_cameras_we_wrote(captures):
    truth = json.loads((captures["colmap"] / "capture_truth.json").read_text())
    meta = json.loads(captures["transforms"].read_text())
    _, cams, images, points = read_colmap(captures["colmap"])
    c2w_json = np.array([f["transform_matrix"] for f in meta["frames"]])
    c2w_colmap = np.array([c for _, _, c in sorted(images, key=lambda e: e[0])])
    np.testing.assert_allclose(c2w_colmap, c2w_json, atol=1e-9)  # OpenCV w2c quaternions → OpenGL c2w
    assert cams[1][:2] == (48, 36) and np.allclose(cams[1][2][:4], truth["intrinsics"])
    assert points.shape == (500, 3)
    for fmt, path in captures.items():
        cap = load_capture(path)
        assert (cap.train.width, cap.train.height) == (48, 36) and cap.train.images.shape[1:3] == (36, 48)
        torch.testing.assert_close(cap.train.intrinsics[0], torch.tensor(truth["intrinsics"],
                                                                         dtype=torch.float32))
        assert len(cap.test) == 3 and len(cap.train) == 21  # every 8th frame by name is a test view
        assert cap.normalization.method == ("points" if fmt == "colmap" else "cameras")
        # the recorded normalisation undoes the known similarity up to a turn about the up axis
        total = cap.normalization.transform.compose(TRUTH)
        assert total.rotation[:, 2] @ [0, 0, 1] > np.cos(np.radians(3))
        assert np.linalg.norm(total.translation) < 0.1  # the object ends near the origin
        assert 0.8 < total.scale * 0.75 < 1.6  # its ~0.75 bounding radius ends near 1
        assert cap.report()["normalization"]["capture_to_train"]["scale"] == cap.normalization.transform.scale


def test_per_frame_intrinsics_masks_and_split_lists(captures, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(captures["transforms"].parent, root)
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][5].update({"fl_x": 60.0, "cx": 20.0, "k1": 0.01})  # one frame's own camera
    from PIL import Image

    mask = np.full((36, 48), 255, np.uint8)
    mask[:, :10] = 0
    for f in meta["frames"]:
        Image.fromarray(mask).save(root / (f["file_path"] + ".mask.png"))
        f["mask_path"] = f["file_path"] + ".mask.png"
    names = [f["file_path"] for f in meta["frames"]]
    meta["train_filenames"], meta["test_filenames"] = names[:20], names[20:]
    (root / "transforms.json").write_text(json.dumps(meta))
    cap = load_capture(root / "transforms.json", normalize="none")
    k = torch.cat([cap.train.intrinsics, cap.test.intrinsics])
    assert k[5].tolist() == pytest.approx([60.0, meta["fl_y"], 20.0, meta["cy"]]) and torch.equal(k[4], k[6])
    assert cap.train.distortion[5, 0] == pytest.approx(0.01) and cap.train.distortion[4].abs().max() == 0
    assert len(cap.train) == 20 and len(cap.test) == 4 and "train_filenames" in cap.split
    assert not cap.train.valid[:, :, :10].any() and cap.train.valid[:, :, 10:].all()
    assert cap.normalization.transform.scale == 1.0


def test_split_is_deterministic():
    names = [f"img_{i:02d}.jpg" for i in range(17)][::-1]
    train, test, _ = split_indices(names, 8)
    assert sorted(names[i] for i in test) == ["img_00.jpg", "img_08.jpg", "img_16.jpg"]
    assert sorted(train + test) == list(range(17))
    with pytest.raises(UserError, match="at least 2 frames"):
        split_indices(["a.png"])


def test_focus_point_of_cameras_looking_at_a_point():
    from nerf.cameras import orbit_cameras, sphere_directions

    c2w = orbit_cameras(sphere_directions(10, "random", seed=2), 3.0, np.array([0.3, -0.2, 0.5]))
    point, cond = focus_point(c2w)
    np.testing.assert_allclose(point, [0.3, -0.2, 0.5], atol=1e-9)
    sim = Similarity(2.0, np.eye(3), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(sim.inverse().apply(sim.apply(c2w[:, :3, 3])), c2w[:, :3, 3], atol=1e-12)


def test_bad_capture_files_name_file_and_line(captures, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(captures["colmap"], root)
    cams = root / "sparse" / "0" / "cameras.txt"
    good = cams.read_text()
    cams.write_text(good.replace("OPENCV", "OPENCV_FISHEYE"))
    with pytest.raises(UserError, match=r"cameras.txt: line 2: camera model 'OPENCV_FISHEYE' is not "
                                        r"supported"):
        load_capture(root)
    cams.write_text(good.replace(" 48 36 ", " 64 36 "))
    with pytest.raises(UserError, match=r"camera 1 is 64x36 in cameras.txt but the image is 48x36"):
        load_capture(root)
    cams.write_text(good)
    (root / "images" / "r_003.png").unlink()
    with pytest.raises(UserError, match=r"image 'r_003.png'.*image not found"):
        load_capture(root)
    t = tmp_path / "t"
    shutil.copytree(captures["transforms"].parent, t)
    meta = json.loads((t / "transforms.json").read_text())
    meta["camera_model"] = "OPENCV_FISHEYE"
    (t / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"transforms.json: frame 0 .*camera_model 'OPENCV_FISHEYE'"):
        load_capture(t)
    meta["camera_model"], meta["fl_x"] = "OPENCV", "wide"
    (t / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"frame 0 .*fl_x must be a finite number, got 'wide'"):
        load_capture(t / "transforms.json")
    with pytest.raises(UserError, match="random needs images with an alpha channel"):
        from nerf import Trainer, load_config

        Trainer(load_config(None, data=str(captures["colmap"]), background="random", grid_res=16,
                            coarse_res=8), tmp_path / "run", quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["transforms", "colmap"])
def test_training_on_our_own_capture_recovers_the_geometry(captures, capsule, fmt, tmp_path):
    """Non-square 48×36 images, principal point off-centre, a similarity on the world: after undoing
    the recorded normalisation (mesh_capture.ply) and the known similarity, the mesh is the capsule."""
    from geo_rs import mesh_metrics
    from nerf import Trainer, load_config

    cfg = load_config(None, data=str(captures[fmt]), steps=200, grid_res=32, coarse_res=32,
                      rays_per_batch=1024,
                      eval_every=10_000, ckpt_every=10_000, ckpt_every_s=None, metric_points=5000,
                      sigma_start_vox=3.0, lr_final_ratio=0.3)
    trainer = Trainer(cfg, tmp_path, quiet=True)
    trainer.run()
    report = trainer.finalize()
    assert report["capture"]["format"] == ("colmap" if fmt == "colmap" else "transforms.json")
    assert report["test_psnr"] > 24
    # metrics in capture coordinates, against mesh_gt.ply of the capture (written by make_capture)
    assert report["mesh_metrics"]["fscore"] > 0.5 and report["chamfer_l1_over_diag"] < 0.015
    mesh = trimesh.load(tmp_path / "mesh_capture.ply", force="mesh")
    mesh.vertices = TRUTH.inverse().apply(mesh.vertices)  # back to the original frame
    m = mesh_metrics(mesh, trimesh.load(capsule, force="mesh"), n_points=5000)
    diag = float(np.linalg.norm(np.ptp(trimesh.load(capsule).vertices, axis=0)))
    assert m["fscore"] > 0.5 and m["chamfer_l1"] / diag < 0.015, m


@pytest.mark.parametrize("background", ["black", "random"])
def test_backgrounds_composite_rgba_captures(captures, background, tmp_path):
    from nerf import Trainer, load_config

    cfg = load_config(None, data=str(captures["transforms"]), steps=3, grid_res=16, coarse_res=16,
                      rays_per_batch=128, eval_every=1000, ckpt_every=1000, background=background)
    trainer = Trainer(cfg, tmp_path, quiet=True)
    views = trainer.train_views
    empty = views.alpha == 0
    assert empty.any() and views.alpha is not None
    expected = 0.0 if background == "black" else 1.0  # random: stored on white, recomposited per ray
    assert torch.all(views.images[empty] == expected)
    assert trainer.rays_alpha is None if background == "black" else trainer.rays_alpha.shape[0] == \
        trainer.rays_rgb.shape[0]
    losses = [trainer.train_step()["loss"] for _ in range(3)]
    assert all(np.isfinite(losses))
    assert trainer.test_views.background == ((0.0,) * 3 if background == "black" else (1.0,) * 3)
