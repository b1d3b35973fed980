"""Bad input to ``geo-rs sdf`` through the real CLI (subprocesses): exit 2, no traceback, one line
naming the file / flag / value at fault — and options that do not apply to the INPUT are refused
rather than silently ignored."""

from __future__ import annotations

import numpy as np
import pytest
from cli_run import assert_user_error, run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_sdf")
    (root / "garbage.ply").write_bytes(b"not a mesh at all")
    (root / "empty.obj").write_text("# nothing\n")
    (root / "notes.txt").write_text("x")
    (root / "nan_vertex.obj").write_text(
        "v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"
    )
    (root / "sheet.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
    occ = np.zeros((16, 16, 16), np.float32)
    occ[4:12, 4:12, 4:12] = 1
    np.save(root / "occ.npy", occ)
    nan = occ.copy()
    nan[3, 5, 7] = np.nan
    np.save(root / "nan.npy", nan)
    np.save(root / "flat.npy", occ[0])
    np.save(root / "range.npy", occ * 2)
    np.save(root / "tiny.npy", occ[:4, :4, :4])
    np.save(root / "zeros.npy", np.zeros((16, 16, 16), np.float32))
    np.save(root / "text.npy", np.array([["a"] * 3] * 3))
    np.savez(root / "grid.npz", values=occ, origin=np.zeros(3), voxel_size=np.float64(0.1))
    (root / "renamed.npz").write_bytes((root / "occ.npy").read_bytes())
    (root / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    (root / "a_file").write_text("x")
    return root


CASES = [
    ("missing_mesh", lambda r: [r / "missing.ply"], ["missing.ply", "not found"]),
    ("garbage_mesh", lambda r: [r / "garbage.ply"], ["garbage.ply"]),
    ("empty_mesh", lambda r: [r / "empty.obj"], ["empty.obj", "empty"]),
    ("unsupported_format", lambda r: [r / "notes.txt"], ["notes.txt", "unsupported mesh format"]),
    ("nan_vertex", lambda r: [r / "nan_vertex.obj"], ["nan_vertex.obj", "non-finite"]),
    ("open_sheet_unrepairable", lambda r: [r / "sheet.obj"], ["sheet.obj", "not watertight"]),
    ("sigma_zero", lambda r: ["sphere", "--sigma", "0"], ["--sigma", "0"]),
    ("sigma_negative", lambda r: ["sphere", "--sigma", "-1"], ["--sigma", "-1"]),
    ("sigma_nan", lambda r: ["sphere", "--sigma", "nan"], ["--sigma", "nan"]),
    ("res_tiny", lambda r: ["sphere", "--res", "4"], ["--res", "4"]),
    ("res_huge", lambda r: ["sphere", "--res", "100000"], ["--res 100000", "memory"]),
    ("res_text", lambda r: ["sphere", "--res", "many"], ["--res", "'many'"]),
    ("padding_negative", lambda r: ["sphere", "--padding", "-1"], ["--padding", "-1"]),
    ("padding_too_wide", lambda r: ["sphere", "--res", "16", "--padding", "7"], ["--res 16", "--padding 7"]),
    ("band_zero", lambda r: ["sphere", "--band", "0"], ["--band", "0"]),
    ("points_few", lambda r: ["sphere", "--points", "5"], ["--points", "5"]),
    ("seed_negative", lambda r: ["sphere", "--seed", "-3"], ["--seed", "-3"]),
    ("kernel_unknown", lambda r: ["sphere", "--kernel", "box"], ["--kernel", "'box'"]),
    ("out_is_a_file", lambda r: ["sphere", "--out", r / "a_file"], ["--out", "a_file"]),
    ("voxel_size_for_mesh", lambda r: ["sphere", "--voxel-size", "0.1"], ["--voxel-size", "mesh"]),
    ("grid_nan", lambda r: [r / "nan.npy"], ["nan.npy", "1 NaN/inf", "(3, 5, 7)"]),
    ("grid_with_res", lambda r: [r / "occ.npy", "--res", "64"], ["--res 64", "grid INPUT", "occ.npy"]),
    ("grid_with_padding", lambda r: [r / "occ.npy", "--padding", "2"], ["--padding 2", "grid INPUT"]),
    ("grid_with_band", lambda r: [r / "occ.npy", "--band", "1"], ["--band 1", "mesh INPUT only"]),
    ("grid_with_points", lambda r: [r / "occ.npy", "--points", "500"], ["--points 500", "mesh INPUT only"]),
    ("npz_with_voxel_size", lambda r: [r / "grid.npz", "--voxel-size", "0.2"], ["--voxel-size", "grid.npz"]),
    ("npy_voxel_size_negative", lambda r: [r / "occ.npy", "--voxel-size", "-0.1"], ["--voxel-size", "-0.1"]),
    ("grid_not_3d", lambda r: [r / "flat.npy"], ["flat.npy", "3-D", "(16, 16)"]),
    ("grid_out_of_range", lambda r: [r / "range.npy"], ["range.npy", "[0, 1]", "2"]),
    ("grid_too_small", lambda r: [r / "tiny.npy"], ["tiny.npy", "too small"]),
    ("grid_empty", lambda r: [r / "zeros.npy"], ["zeros.npy", "empty"]),
    ("grid_text", lambda r: [r / "text.npy"], ["text.npy", "numeric"]),
    ("npz_is_npy", lambda r: [r / "renamed.npz"], ["renamed.npz", "not a VoxelGrid"]),
    ("npz_broken", lambda r: [r / "broken.npz"], ["broken.npz", "cannot read voxel grid"]),
    ("grid_missing", lambda r: [r / "missing.npy"], ["missing.npy", "not found"]),
]


@pytest.mark.parametrize("build,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sdf_bad_input(files, build, needles):
    argv = [str(a) for a in build(files)]
    if "--out" not in argv:
        argv += ["--out", str(files / "out")]
    assert_user_error(run_cli("sdf", *argv), *needles)
