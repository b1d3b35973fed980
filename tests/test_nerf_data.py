"""nerf data side: scene maker, Blender-layout loader (incl. bad files), camera/ray conventions."""

import json
import shutil

import numpy as np
import pytest
import torch

from geo_rs import UserError
from geo_rs.cli import main
from nerf import load_blender, load_scene_info, make_scene, pixel_rays
from nerf.cameras import c2w_to_open3d_extrinsic, focal_from_angle, look_at, orbit_cameras, sphere_directions
from nerf.scene import builtin_parts, cast, load_scene_mesh, parts_sdf


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("nerf_scene") / "sphere"
    make_scene("sphere", root, views=4, res=24, val_views=1, test_views=2, gt_res=40)
    return root


def _copy(scene, tmp_path):
    dst = tmp_path / "s"
    shutil.copytree(scene, dst)
    return dst


def test_layout_and_loader(scene):
    for split in ("train", "val", "test"):
        assert (scene / f"transforms_{split}.json").exists()
    meta = json.loads((scene / "transforms_train.json").read_text())
    assert meta["frames"][0]["file_path"] == "./train/r_0" and len(meta["frames"]) == 4
    views = load_blender(scene, "train")
    assert views.images.shape == (4, 24, 24, 3) and views.c2w.shape == (4, 4, 4)
    assert views.focal == pytest.approx(focal_from_angle(24, meta["camera_angle_x"]))
    # corners are background: composited on white; the object (blue sphere) is in the middle
    assert torch.allclose(views.images[:, 0, 0], torch.ones(4, 3))
    assert views.images[:, 12, 12, 2].min() > views.images[:, 12, 12, 0].max()
    half = load_blender(scene, "train", half_res=True)
    assert half.images.shape == (4, 12, 12, 3) and half.focal == pytest.approx(views.focal / 2)
    info = load_scene_info(scene)
    assert info.gt_mesh is not None and info.gt_mesh.exists()
    assert np.all(np.asarray(info.bounds[0]) < -0.6) and np.all(np.asarray(info.bounds[1]) > 0.6)


def test_loader_bad_files(scene, tmp_path):
    root = _copy(scene, tmp_path)
    path = root / "transforms_train.json"
    good = json.loads(path.read_text())

    path.write_text("{not json")
    with pytest.raises(UserError, match=r"transforms_train.json: not valid JSON"):
        load_blender(root, "train")

    bad = json.loads(json.dumps(good))
    bad["frames"][2]["transform_matrix"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    path.write_text(json.dumps(bad))
    with pytest.raises(
        UserError, match=r"frame 2 \('./train/r_2'\): transform_matrix must be 4x4, got shape \[3, 3\]"
    ):
        load_blender(root, "train")

    bad = json.loads(json.dumps(good))
    del bad["camera_angle_x"]
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="missing field 'camera_angle_x'"):
        load_blender(root, "train")

    path.write_text(json.dumps(good))
    (root / "train" / "r_1.png").unlink()
    with pytest.raises(UserError, match=r"frame 1 .*image not found: .*r_1.png"):
        load_blender(root, "train")

    with pytest.raises(UserError, match="transforms_nope.json: file not found"):
        load_blender(root, "nope")


def test_make_scene_cli_and_bad_source(tmp_path, capsys):
    assert (
        main(
            [
                "nerf",
                "make-scene",
                "torus",
                "--views",
                "2",
                "--res",
                "12",
                "--val-views",
                "1",
                "--test-views",
                "1",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert (tmp_path / "t" / "train" / "r_1.png").exists() and (tmp_path / "t" / "mesh_gt.ply").exists()
    # any mesh file works as SOURCE; its ground truth is the mesh itself
    import trimesh

    trimesh.creation.box(extents=(0.5, 0.3, 0.2)).export(tmp_path / "box.ply")
    assert (
        main(
            [
                "nerf",
                "make-scene",
                str(tmp_path / "box.ply"),
                "--views",
                "1",
                "--res",
                "8",
                "--val-views",
                "0",
                "--test-views",
                "1",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    gt = trimesh.load(tmp_path / "b" / "mesh_gt.ply")
    assert (
        np.allclose(gt.extents, (0.5, 0.3, 0.2)) and load_blender(tmp_path / "b", "test").images.shape[0] == 1
    )
    assert main(["nerf", "make-scene", "no_such_thing", "--out", str(tmp_path / "x")]) == 2
    assert "neither a mesh file nor a built-in scene" in capsys.readouterr().err


def test_builtin_lego_parts_and_gt_surface():
    parts = builtin_parts("lego")
    assert len(parts) >= 10 and len({p.kind for p in parts}) >= 2
    render, gt = load_scene_mesh("lego", gt_res=48)
    assert gt.is_watertight
    # GT surface points lie on the zero level of the analytic union SDF (within the MC voxel)
    pts = gt.sample(2000, seed=0)
    step = float((render.bounds[1] - render.bounds[0]).max()) * 1.1 / 47
    assert np.abs(parts_sdf(parts, pts.astype(np.float32))).max() < step


def test_rays_match_open3d_pinhole():
    import open3d as o3d

    c2w = orbit_cameras(sphere_directions(3, "random", seed=3), 3.0)[1]
    h, w, f = 10, 14, 12.0
    o, d = pixel_rays(torch.tensor(c2w), h, w, f)
    K = o3d.core.Tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=o3d.core.Dtype.Float64)
    E = o3d.core.Tensor(c2w_to_open3d_extrinsic(c2w), dtype=o3d.core.Dtype.Float64)
    ref = o3d.t.geometry.RaycastingScene.create_rays_pinhole(K, E, w, h).numpy()
    ref_d = ref[..., 3:] / np.linalg.norm(ref[..., 3:], axis=-1, keepdims=True)
    # Both shoot through pixel centres; open3d uses OpenCV axes, so this checks the axis flip too.
    assert ref.shape == (h, w, 6)
    assert np.allclose(o.numpy(), ref[..., :3], atol=1e-5)
    assert np.allclose(d.numpy(), ref_d, atol=1e-5)


def test_look_at_convention():
    c2w = look_at(np.array([0.0, -4.0, 1.0]), np.zeros(3))
    centre_ray = -c2w[:3, 2]  # camera looks down −z
    assert np.allclose(centre_ray, -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]))
    assert c2w[2, 1] > 0  # image up has a positive world-z component
    assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)


def test_rendered_depth_of_gt_occupancy_matches_ray_casting():
    """A field whose θ is the GT occupancy, volume-rendered through our cameras/rays/renderer, puts
    its depth where open3d's ray casting of the GT mesh hits (within a voxel)."""
    from nerf import GridSpec, RadianceField, SHColor, SmoothedDensity, render_image

    parts = builtin_parts("torus")
    mesh, _ = load_scene_mesh("torus", gt_res=32)
    bounds = ([-0.9] * 3, [0.9] * 3)
    spec = GridSpec.from_bounds(*bounds, 72)
    occ = torch.from_numpy(parts_sdf(parts, spec.centres().reshape(-1, 3).numpy()) > 0).reshape(spec.shape)
    geo = SmoothedDensity(spec, sigma_world=0.5 * spec.voxel, alpha=24.0)
    geo.theta.data = torch.where(occ, 12.0, -12.0)
    field = RadianceField(geo, SHColor(spec, 0))
    c2w = orbit_cameras(sphere_directions(2, "random", seed=5), 3.0)[0]
    h = w = 20
    f = focal_from_angle(w, 0.69)
    out = render_image(field, torch.tensor(c2w, dtype=torch.float32), h, w, f, bounds, 0.25 * spec.voxel)
    o, d = pixel_rays(torch.tensor(c2w), h, w, f)
    t_hit = cast(mesh, o.reshape(-1, 3).numpy(), d.reshape(-1, 3).numpy())["t_hit"].reshape(h, w)
    hit, seen = np.isfinite(t_hit), out["opacity"].numpy() > 0.5
    assert hit.sum() > 40 and (hit == seen).mean() > 0.95
    both = hit & seen
    assert np.abs(out["depth"].numpy()[both] - t_hit[both]).max() < 1.5 * spec.voxel


def test_scene_renderer_uses_the_loader_camera_convention():
    """make-scene's depth (its own numpy ray set-up) equals ray casting along ``pixel_rays``."""
    from nerf.scene import render_views

    mesh, _ = load_scene_mesh("torus", gt_res=24)
    c2w = orbit_cameras(sphere_directions(2, "random", seed=1), 2.5)[:1]
    rgba, depth = render_views(mesh, c2w, 12, 0.7)
    o, d = pixel_rays(torch.tensor(c2w[0]), 12, 12, focal_from_angle(12, 0.7))
    ref = cast(mesh, o.reshape(-1, 3).numpy(), d.reshape(-1, 3).numpy())["t_hit"].reshape(12, 12)
    assert np.isfinite(ref).sum() > 10
    assert np.array_equal(np.isfinite(depth[0]), np.isfinite(ref))
    assert np.allclose(depth[0][np.isfinite(ref)], ref[np.isfinite(ref)], atol=1e-4)
    assert np.array_equal(rgba[0, ..., 3] > 0, np.isfinite(ref) | (rgba[0, ..., 3] > 0))
