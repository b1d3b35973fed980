"""`geo-rs sdf` end to end (in-process, small grids) and its one-line errors."""
import json

import numpy as np
import pytest
import torch

from geo_rs import VoxelGrid, export_mesh, load_mesh
from geo_rs.cli import main


def test_sdf_on_builtin_torus_writes_every_output(tmp_path, capsys):
    out = tmp_path / "torus"
    rc = main(["sdf", "torus", "--res", "40", "--sigma", "1.0", "--out", str(out), "--points", "5000"])
    assert rc == 0, capsys.readouterr().err
    for name in ("sdf.npy", "grid.json", "sdf.npz", "mesh.ply", "slices.png", "report.json"):
        assert (out / name).is_file(), name
    sdf = np.load(out / "sdf.npy")
    info = json.loads((out / "grid.json").read_text())
    assert list(sdf.shape) == info["shape"] and sdf.dtype == np.float32
    grid = VoxelGrid.load(out / "sdf.npz")
    np.testing.assert_array_equal(grid.values.numpy(), sdf)
    assert grid.voxel_size == pytest.approx(info["voxel_size"])
    # The weak SDF at the torus' tube centre is positive, at the hole's centre negative.
    inside, hole = grid.sample(torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert float(inside) > 0 > float(hole)
    report = json.loads((out / "report.json").read_text())
    band = report["band_error_voxels"]
    assert band["band_half_width_voxels"] == 2.0 and band["n_voxels"] > 100
    assert 0 <= band["mean_abs"] <= band["max_abs"] < 3.0
    mm = report["mesh_metrics"]
    assert mm["fscore"] > 0.5 and mm["normal_consistency"] > 0.9 and mm["chamfer_l1"] < 0.02
    assert set(report["timings_s"]) >= {"occupancy", "weak_sdf", "marching_cubes", "total"}
    assert load_mesh(out / "mesh.ply").volume > 0


def test_sdf_on_a_mesh_file_and_on_a_grid_file(tmp_path, capsys):
    mesh_path = export_mesh(load_mesh("box"), tmp_path / "box.obj")
    assert main(["sdf", str(mesh_path), "--res", "24", "--sigma", "0.8", "--out", str(tmp_path / "a"),
                 "--points", "2000"]) == 0
    occ = np.zeros((16, 16, 16), np.float32)
    occ[4:12, 4:12, 4:12] = 1
    np.save(tmp_path / "occ.npy", occ)
    assert main(["sdf", str(tmp_path / "occ.npy"), "--sigma", "1", "--out", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["mesh_metrics"] is None and report["shape"] == [16, 16, 16]
    # the report says what was used: the grid's own resolution, not a --res it never had
    assert report["res"] is None and report["input_kind"] == "grid" and report["repair"] is None


def test_sdf_on_an_open_mesh_says_it_filled_the_hole(tmp_path, capsys):
    import trimesh

    box = load_mesh("box")
    holed = trimesh.Trimesh(box.vertices, box.faces[2:], process=False)  # two triangles missing
    path = tmp_path / "holed.ply"
    holed.export(path)
    out = tmp_path / "o"
    argv = ["sdf", str(path), "--res", "24", "--sigma", "0.8", "--out", str(out), "--points", "2000"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "holed.ply is not watertight" in captured.err and "holed.ply is not watertight" in captured.out
    repair = json.loads((out / "report.json").read_text())["repair"]
    assert repair["input_watertight"] is False and repair["faces_added"] >= 1
    assert "closed" in repair["note"]


def _bad_inputs(tmp_path):
    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"not a mesh at all")
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing\n")
    nan_grid = tmp_path / "nan.npy"
    arr = np.zeros((10, 10, 10), np.float32)
    arr[3, 3, 3] = np.nan
    np.save(nan_grid, arr)
    return [
        (["sdf", str(tmp_path / "missing.ply")], "not found"),
        (["sdf", str(garbage)], "garbage.ply"),
        (["sdf", str(empty)], "empty"),
        (["sdf", "sphere", "--sigma", "0"], "--sigma"),
        (["sdf", "sphere", "--sigma", "-1"], "--sigma"),
        (["sdf", "sphere", "--res", "4"], "--res"),
        (["sdf", str(nan_grid)], "NaN"),
    ]


def test_bad_input_exits_nonzero_with_one_clear_line(tmp_path, capsys):
    for argv, needle in _bad_inputs(tmp_path):
        rc = main(argv + ["--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, argv
        assert err and "Traceback" not in "\n".join(err), argv
        assert needle in err[-1] and err[-1].startswith("geo-rs sdf: error:"), (argv, err)
