"""VoxelGrid, mesh loading, occupancy, exact SDF, marching cubes, mesh metrics and slice plots."""
import math

import numpy as np
import pytest
import torch
import trimesh

from geo_rs import (
    UserError,
    VoxelGrid,
    builtin_shapes,
    export_mesh,
    extract_mesh,
    load_mesh,
    mesh_metrics,
    mesh_sdf,
    occupancy_grid,
    plot_sdf_slices,
)

# ---------------------------------------------------------------------------------------- VoxelGrid


def _linear_grid():
    # values = 1 + 2x − y + 0.5z at voxel centres: trilinear interpolation reproduces it exactly.
    g = VoxelGrid.around((-1, -1, -1), (1, 1, 1), res=9, padding_voxels=0, dtype=torch.float64)
    c = g.centers()
    return g.with_values(1 + 2 * c[..., 0] - c[..., 1] + 0.5 * c[..., 2])


def test_voxelgrid_index_convention_and_trilinear_sampling():
    g = _linear_grid()
    assert g.shape == (9, 9, 9) and g.voxel_size == pytest.approx(0.25)
    lo, hi = g.bounds
    torch.testing.assert_close(lo, torch.full((3,), -1.0, dtype=torch.float64))
    torch.testing.assert_close(hi, torch.full((3,), 1.0, dtype=torch.float64))
    # values[i, j, k] sits at origin + h * (i, j, k)
    p = g.origin + g.voxel_size * torch.tensor([2.0, 5.0, 7.0], dtype=torch.float64)
    assert float(g.sample(p[None])) == pytest.approx(float(g.values[2, 5, 7]), abs=1e-12)
    pts = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (500, 3)))
    ref = 1 + 2 * pts[:, 0] - pts[:, 1] + 0.5 * pts[:, 2]
    torch.testing.assert_close(g.sample(pts), ref, rtol=0, atol=1e-10)


def test_voxelgrid_outside_is_nan_or_an_error_never_a_distance():
    g = _linear_grid()
    nan = float("nan")
    pts = torch.tensor([[1.01, 0, 0], [0, -1.2, 0], [0.0, 0.0, 0.0], [nan, 0, 0]], dtype=torch.float64)
    out = g.sample(pts)  # default: NaN outside (0 would read as "on the surface" of an SDF)
    assert torch.isnan(out[[0, 1, 3]]).all() and out[2].item() == pytest.approx(1.0)
    out = g.sample(pts, fill=-7.0)  # a sentinel the caller chose
    assert out.tolist()[:2] == [-7.0, -7.0] and out[2].item() == pytest.approx(1.0)
    with pytest.raises(UserError, match=r"3 of 4 points lie outside the grid \(first \[1.01, 0.0, 0.0\]"):
        g.sample(pts, outside="raise")
    assert g.sample(pts[2:3], outside="raise").item() == pytest.approx(1.0)
    with pytest.raises(UserError, match="outside must be one of"):
        g.sample(pts, outside="clamp")


def test_voxelgrid_gradients():
    g = _linear_grid()
    vals = g.values.clone().requires_grad_()
    pts = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64, requires_grad=True)
    VoxelGrid(vals, g.origin, g.voxel_size).sample(pts).sum().backward()
    assert vals.grad.sum().item() == pytest.approx(1.0)  # trilinear weights sum to 1
    torch.testing.assert_close(pts.grad[0], torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))


def test_voxelgrid_save_load_roundtrip_and_to(tmp_path):
    g = _linear_grid().to(dtype=torch.float32)
    path = g.save(tmp_path / "g.npz")
    h = VoxelGrid.load(path)
    assert h.shape == g.shape and h.voxel_size == g.voxel_size
    torch.testing.assert_close(h.values, g.values)
    torch.testing.assert_close(h.origin, g.origin)
    assert h.to("cpu").values.device.type == "cpu"
    with pytest.raises(UserError, match="not found"):
        VoxelGrid.load(tmp_path / "missing.npz")


def test_voxelgrid_around_covers_the_box_with_padding():
    g = VoxelGrid.around((-0.3, -0.2, 0.0), (0.3, 0.2, 0.1), res=32, padding_voxels=3)
    lo, hi = g.bounds
    assert g.shape[0] == 32 and max(g.shape) == 32
    h = g.voxel_size
    assert (lo <= torch.tensor([-0.3, -0.2, 0.0]) - 3 * h + 1e-6).all()
    assert (hi >= torch.tensor([0.3, 0.2, 0.1]) + 3 * h - 1e-6).all()


@pytest.mark.parametrize("bad", [dict(values=torch.zeros(4, 4)), dict(voxel_size=0.0), dict(origin=(0, 0))])
def test_voxelgrid_rejects_bad_fields(bad):
    kw = dict(values=torch.zeros(4, 4, 4), origin=(0, 0, 0), voxel_size=1.0) | bad
    with pytest.raises(UserError):
        VoxelGrid(**kw)


# ------------------------------------------------------------------------------------------- meshes


def test_builtin_shapes_are_watertight_and_listed():
    assert {"sphere", "torus", "parts"} <= set(builtin_shapes())
    for name in builtin_shapes():
        m = load_mesh(name)
        assert m.is_watertight and m.volume > 0, name


def test_load_mesh_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_mesh(tmp_path / "nope.ply")
    garbage = tmp_path / "bad.ply"
    garbage.write_bytes(b"this is not a ply file\x00\x01")
    with pytest.raises(UserError, match="bad.ply"):
        load_mesh(garbage)
    empty = tmp_path / "empty.obj"
    empty.write_text("# no geometry\n")
    with pytest.raises(UserError, match="empty"):
        load_mesh(empty)
    with pytest.raises(UserError, match="format"):
        load_mesh(tmp_path / "x.txt") if (tmp_path / "x.txt").write_text("x") else None


def test_load_mesh_roundtrip_through_files(tmp_path):
    m = load_mesh("torus")
    for suffix in (".ply", ".obj", ".stl", ".off"):
        p = export_mesh(m, tmp_path / f"torus{suffix}")
        back = load_mesh(p)
        assert back.is_watertight and back.volume == pytest.approx(m.volume, rel=1e-5), suffix


def test_occupancy_of_sphere_matches_its_volume():
    m = load_mesh("sphere")
    occ = occupancy_grid(m, 48, padding_voxels=2)
    assert occ.values.dtype == torch.float32 and set(occ.values.unique().tolist()) <= {0.0, 1.0}
    vol = float(occ.values.sum()) * occ.voxel_size**3
    assert vol == pytest.approx(m.volume, rel=0.03)
    c = occ.centers()
    inside = (c.norm(dim=-1) < 0.39).float()
    outside = (c.norm(dim=-1) > 0.41).float()
    assert float((occ.values * outside).sum()) == 0 and float(((1 - occ.values) * inside).sum()) == 0


def test_non_watertight_mesh_is_repaired_or_refused():
    m = load_mesh("box")
    holed = trimesh.Trimesh(m.vertices, m.faces[1:], process=False)  # one missing triangle
    holed.metadata["name"] = "holed-box"
    occ = occupancy_grid(holed, 16)  # fill_holes closes a single missing triangle
    assert float(occ.values.sum()) > 0
    sheet = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 2], [1, 3, 2]])
    sheet.metadata["name"] = "open-sheet.ply"
    with pytest.raises(UserError, match="open-sheet.ply.*not watertight"):
        occupancy_grid(sheet, 16)
    with pytest.raises(UserError, match="not watertight"):
        mesh_sdf(sheet, torch.zeros(1, 3))


def test_mesh_sdf_is_exact_and_positive_inside():
    m = load_mesh("box")  # 0.6 × 0.4 × 0.3, centred
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.1], [0.4, 0.3, 0.0]])
    d = mesh_sdf(m, pts)
    expected = [0.15, -0.2, 0.05, -math.hypot(0.1, 0.1)]
    np.testing.assert_allclose(d.numpy(), expected, atol=1e-6)


# ---------------------------------------------------------------------------------- marching cubes


def _ball_sdf_grid(radius=0.6, n=25, origin=(0.3, -0.2, 0.1)):
    o = torch.tensor(origin, dtype=torch.float64)
    g = VoxelGrid.around(o - 1, o + 1, res=n, padding_voxels=0, dtype=torch.float64)
    return g.with_values(radius - (g.centers() - o).norm(dim=-1)), o


def test_extract_mesh_world_coordinates_and_outward_normals():
    grid, centre = _ball_sdf_grid()
    m = extract_mesh(grid, 0.0)
    r = np.linalg.norm(m.vertices - centre.numpy(), axis=1)
    assert abs(r.mean() - 0.6) < 0.01 and r.std() < 0.01
    assert m.is_watertight and m.volume > 0  # positive volume ⇔ outward winding
    outward = np.sum((m.triangles_center - centre.numpy()) * m.face_normals, axis=1) > 0
    assert outward.mean() > 0.95
    # A smoothed occupancy at level 0.5 gives the same orientation.
    occ = grid.with_values((grid.values > 0).double())
    m2 = extract_mesh(occ, 0.5)
    assert m2.volume > 0


def test_extract_mesh_keeps_float32_and_matches_scikit_image():
    from skimage.measure import marching_cubes

    grid, _ = _ball_sdf_grid(n=21)
    g32 = grid.to(dtype=torch.float32)
    m = extract_mesh(g32, 0.0)
    h = g32.voxel_size
    verts, faces, _, _ = marching_cubes(g32.values.numpy(), 0.0, spacing=(h, h, h),
                                        gradient_direction="ascent", allow_degenerate=False)
    np.testing.assert_allclose(m.vertices, verts + g32.origin.double().numpy(), atol=1e-6)
    np.testing.assert_array_equal(m.faces, faces)
    assert m.is_watertight and m.volume > 0


def test_extract_mesh_errors():
    grid, _ = _ball_sdf_grid(n=9)
    with pytest.raises(UserError, match="no surface"):
        extract_mesh(grid.with_values(torch.ones(grid.shape, dtype=torch.float64)), 0.0)
    vals = grid.values.clone()
    vals[0, 1, 2] = float("nan")
    with pytest.raises(UserError, match=r"grid values contains 1 NaN/inf value\(s\) \(first at index \(0, 1"):
        extract_mesh(grid.with_values(vals), 0.0)
    with pytest.raises(UserError, match="level"):
        extract_mesh(grid, float("nan"))


# ------------------------------------------------------------------------------------ mesh metrics


def test_mesh_metrics_identity_and_known_offset():
    a = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    same = mesh_metrics(a, a, n_points=40_000, seed=0)  # samples ~2× denser than τ = 0.035
    assert same["fscore"] > 0.97 and same["normal_consistency"] > 0.99
    assert same["chamfer_l1"] < 0.03
    b = trimesh.creation.icosphere(subdivisions=4, radius=1.1)  # every point 0.1 from the other sphere
    m = mesh_metrics(b, a, n_points=5000, seed=0)
    assert m["accuracy"] == pytest.approx(0.1, abs=0.015)
    assert m["completeness"] == pytest.approx(0.1, abs=0.015)
    assert m["chamfer_l1"] == pytest.approx(0.5 * (m["accuracy"] + m["completeness"]))
    assert m["chamfer_l2"] == pytest.approx(0.01, rel=0.2)
    assert m["fscore_threshold"] == pytest.approx(0.01 * math.sqrt(12), rel=1e-3)  # 1% of bbox diagonal
    assert m["fscore"] < 0.05 and m["normal_consistency"] > 0.99
    assert mesh_metrics(b, a, n_points=5000, seed=0) == m  # seeded
    assert mesh_metrics(b, a, n_points=5000, seed=0, workers=1) == m  # and independent of the threads


def test_mesh_metrics_honours_the_callers_thread_setting(monkeypatch):
    import scipy.spatial

    seen = []

    class Spy(scipy.spatial.cKDTree):
        def query(self, x, *args, **kw):
            seen.append(kw.get("workers"))
            return super().query(x, *args, **kw)

    monkeypatch.setattr(scipy.spatial, "cKDTree", Spy)
    a = trimesh.creation.icosphere(subdivisions=2)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        mesh_metrics(a, a, n_points=500)
        mesh_metrics(a, a, n_points=500, workers=2)
    finally:
        torch.set_num_threads(n)
    assert seen == [1, 1, 2, 2]


# ------------------------------------------------------------------------------------------- plots


def test_plot_sdf_slices_writes_a_png(tmp_path):
    grid, _ = _ball_sdf_grid(n=17)
    p = plot_sdf_slices(grid, tmp_path / "s.png", title="ball")
    assert p.stat().st_size > 5000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
