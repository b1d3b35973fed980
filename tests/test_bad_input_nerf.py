"""Bad input to ``geo-rs nerf`` through the real CLI (subprocesses): exit 2, no traceback, one line
naming the file / key / flag / value at fault."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from cli_run import assert_user_error, run_cli

TINY = dict(
    scene_views=2,
    scene_res=12,
    scene_test_views=1,
    grid_res=12,
    coarse_res=8,
    rays_per_batch=64,
    eval_every=1000,
    ckpt_every=1000,
    eval_views=1,
    metric_points=200,
    steps=3,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny scene, a config for it, a finished run with its checkpoint, and broken copies."""
    from nerf import Trainer, load_config, make_scene

    root = tmp_path_factory.mktemp("bad_nerf")
    scene = make_scene("torus", root / "scene", views=2, res=12, val_views=0, test_views=1, gt_res=16)
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": str(scene), **TINY}))
    run = root / "run"
    trainer = Trainer(load_config(cfg), run, quiet=True)
    trainer.run()
    from nerf.scene import make_capture

    colmap = make_capture("torus", root / "colmap", "colmap", views=4, width=16, height=12, gt_res=16,
                          points=50)
    cams = colmap / "sparse" / "0" / "cameras.txt"
    fisheye = root / "fisheye"
    shutil.copytree(colmap, fisheye)
    (fisheye / "sparse" / "0" / "cameras.txt").write_text(cams.read_text().replace("OPENCV",
                                                                                   "OPENCV_FISHEYE"))
    (root / "corrupt").mkdir()
    (root / "corrupt" / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:200])
    return {"root": root, "scene": scene, "cfg": cfg, "run": run, "colmap": colmap, "fisheye": fisheye}


def _config(files, name: str, text: str):
    path = files["root"] / f"{name}.yaml"
    path.write_text(text)
    return path


def _scene_with(files, name: str, edit):
    """A copy of the scene whose transforms_train.json is changed by ``edit(meta)``."""
    dst = files["root"] / name
    if not dst.exists():
        shutil.copytree(files["scene"], dst)
        path = dst / "transforms_train.json"
        meta = json.loads(path.read_text())
        edit(meta, dst)
        path.write_text(json.dumps(meta))
    return dst


def _zero_pose(meta, root):
    meta["frames"][0]["transform_matrix"] = [[0.0] * 4 for _ in range(3)] + [[0, 0, 0, 1]]


def _scaled_pose(meta, root):
    m = meta["frames"][1]["transform_matrix"]
    meta["frames"][1]["transform_matrix"] = [[2 * v for v in row[:3]] + row[3:] for row in m[:3]] + [m[3]]


def _angle_text(meta, root):
    meta["camera_angle_x"] = "wide"


def _missing_image(meta, root):
    (root / "train" / "r_1.png").unlink()


def _bad_path(meta, root):
    meta["frames"][0]["file_path"] = 7


# (id, argv builder, needles in the error line)
CONFIG_CASES = [
    ("half_res_string", lambda f: [_config(f, "hr", "half_res: 'no'")], ["hr.yaml", "half_res", "'no'"]),
    ("steps_float", lambda f: [_config(f, "sf", "steps: 5.7")], ["sf.yaml", "steps", "5.7"]),
    ("steps_text", lambda f: [_config(f, "st", "steps: abc")], ["st.yaml", "steps", "'abc'"]),
    (
        "grid_res_huge",
        lambda f: [_config(f, "gr", "grid_res: 100000")],
        ["gr.yaml", "grid_res 100000", "memory"],
    ),
    (
        "unknown_key",
        lambda f: [_config(f, "uk", "no_such_key: 3")],
        ["uk.yaml", "no_such_key", "unknown key"],
    ),
    (
        "coarse_above_final",
        lambda f: [_config(f, "cr", "grid_res: 32\ncoarse_res: 64")],
        ["cr.yaml", "coarse_res"],
    ),
    (
        "upsample_at_out_of_range",
        lambda f: [_config(f, "ua", "upsample_at: [1.5]")],
        ["ua.yaml", "upsample_at"],
    ),
    ("bounds_shape", lambda f: [_config(f, "bo", "bounds: [[0, 0, 0], [1, 1]]")], ["bo.yaml", "bounds"]),
    ("model_unknown", lambda f: [_config(f, "mo", "model: fancy")], ["mo.yaml", "model", "'fancy'"]),
    ("sigma_negative", lambda f: [_config(f, "sg", "sigma_vox: -1")], ["sg.yaml", "sigma_vox", "-1"]),
    ("sigma_inf", lambda f: [_config(f, "si", "sigma_vox: .inf")], ["si.yaml", "sigma_vox"]),
    ("malformed_yaml", lambda f: [_config(f, "my", "steps: [1, 2")], ["my.yaml", "malformed YAML"]),
    ("yaml_not_mapping", lambda f: [_config(f, "ls", "- 1\n- 2")], ["ls.yaml", "mapping"]),
    ("config_missing", lambda f: [f["root"] / "nope.yaml"], ["nope.yaml", "not found"]),
    (
        "data_missing",
        lambda f: [_config(f, "dm", "data: /no/such/folder")],
        ["dm.yaml", "data", "/no/such/folder"],
    ),
    ("scene_missing", lambda f: ["no_such_scene"], ["CONFIG_OR_SCENE", "no_such_scene"]),
    ("flag_steps_zero", lambda f: [f["cfg"], "--steps", "0"], ["--steps", "0"]),
    ("flag_steps_text", lambda f: [f["cfg"], "--steps", "abc"], ["--steps", "'abc'"]),
    ("flag_time_limit_negative", lambda f: [f["cfg"], "--time-limit", "-5"], ["--time-limit", "-5"]),
    ("flag_threads_zero", lambda f: [f["cfg"], "--threads", "0"], ["--threads", "0"]),
    ("flag_ckpt_every_s_zero", lambda f: [f["cfg"], "--ckpt-every-s", "0"], ["--ckpt-every-s", "0"]),
    ("flag_ckpt_every_nan", lambda f: [f["cfg"], "--ckpt-every-s", "nan"], ["--ckpt-every-s", "nan"]),
]

DATA_CASES = [
    (
        "all_zero_pose",
        lambda f: [_scene_with(f, "zero_pose", _zero_pose)],
        ["transforms_train.json", "frame 0", "not a rigid camera pose"],
    ),
    (
        "scaled_pose",
        lambda f: [_scene_with(f, "scaled_pose", _scaled_pose)],
        ["transforms_train.json", "frame 1", "not a rigid camera pose"],
    ),
    (
        "angle_not_a_number",
        lambda f: [_scene_with(f, "angle_text", _angle_text)],
        ["transforms_train.json", "camera_angle_x", "'wide'"],
    ),
    (
        "image_missing",
        lambda f: [_scene_with(f, "no_image", _missing_image)],
        ["frame 1", "image not found", "r_1.png"],
    ),
    ("file_path_not_text", lambda f: [_scene_with(f, "bad_path", _bad_path)], ["frame 0", "file_path", "7"]),
    (
        "colmap_fisheye",
        lambda f: [f["fisheye"]],
        ["cameras.txt: line 2", "'OPENCV_FISHEYE'", "not supported"],
    ),
    (
        "random_background_without_alpha",
        lambda f: [_config(f, "rb", yaml.safe_dump({"data": str(f["colmap"]), **TINY,
                                                    "background": "random"}))],
        ["background: random", "alpha", "colmap"],
    ),
    ("normalize_unknown", lambda f: [_config(f, "nu", "normalize: "
                                                      "magic")], ["nu.yaml", "normalize", "'magic'"]),
    (
        "normalize_points_on_blender",
        lambda f: [_config(f, "np", yaml.safe_dump({"data": str(f["scene"]), **TINY,
                                                    "normalize": "points"}))],
        ["normalize", "'points'", "Blender-layout"],
    ),
    ("sigma_start_below_final", lambda f: [_config(f, "ss", "sigma_vox: 2\nsigma_start_vox: 1")],
     ["ss.yaml", "sigma_start_vox"]),
]

RESUME_CASES = [
    (
        "resume_without_checkpoint",
        lambda f: [f["cfg"], "--out", f["root"] / "empty", "--resume"],
        ["--resume", "no checkpoint", "empty"],
    ),
    (
        "resume_changes_model",
        lambda f: [f["cfg"], "--out", f["run"], "--resume", "--model", "plain"],
        ["--model", "'plain'", "'smoothed'", "checkpoint.pt"],
    ),
    (
        "resume_changes_grid_in_yaml",
        lambda f: [
            _config(f, "g16", yaml.safe_dump({"data": str(f["scene"]), **TINY, "grid_res": 16})),
            "--out",
            f["run"],
            "--resume",
        ],
        ["g16.yaml", "grid_res 16", "12"],
    ),
    (
        "resume_fewer_steps",
        lambda f: [f["cfg"], "--out", f["run"], "--resume", "--steps", "1"],
        ["--steps", "below", "(3)"],
    ),
    ("resume_other_data", lambda f: ["sphere", "--out", f["run"], "--resume"], ["'sphere'", "not the data"]),
    ("fresh_run_over_checkpoint", lambda f: [f["cfg"], "--out", f["run"]], ["already exists", "--resume"]),
    (
        "resume_corrupt_checkpoint",
        lambda f: [f["cfg"], "--out", f["root"] / "corrupt", "--resume"],
        ["corrupt", "not a readable checkpoint"],
    ),
]


def _train_argv(files, build):
    argv = [str(a) for a in build(files)]
    if "--out" not in argv:
        argv += ["--out", str(files["root"] / "out")]
    return ["nerf", "train", *argv, "--quiet"]


@pytest.mark.parametrize(
    "build,needles",
    [c[1:] for c in CONFIG_CASES + DATA_CASES + RESUME_CASES],
    ids=[c[0] for c in CONFIG_CASES + DATA_CASES + RESUME_CASES],
)
def test_train_bad_input(files, build, needles):
    assert_user_error(run_cli(*_train_argv(files, build)), *needles)


OTHER_CASES = [
    (
        "make_scene_negative_test_views",
        lambda f: ["make-scene", "torus", "--test-views", "-1", "--out", f["root"] / "m"],
        ["--test-views", "-1"],
    ),
    (
        "make_scene_no_views",
        lambda f: ["make-scene", "torus", "--views", "0", "--out", f["root"] / "m"],
        ["--views", "0"],
    ),
    (
        "make_scene_tiny_res",
        lambda f: ["make-scene", "torus", "--res", "4", "--out", f["root"] / "m"],
        ["--res", "4"],
    ),
    (
        "make_scene_huge_res",
        lambda f: ["make-scene", "torus", "--res", "100000", "--out", f["root"] / "m"],
        ["--res", "100000"],
    ),
    (
        "make_scene_negative_seed",
        lambda f: ["make-scene", "torus", "--seed", "-1", "--out", f["root"] / "m"],
        ["--seed", "-1"],
    ),
    (
        "make_scene_unknown_source",
        lambda f: ["make-scene", "no_such_thing", "--out", f["root"] / "m"],
        ["no_such_thing", "neither a mesh file nor a built-in scene"],
    ),
    (
        "make_scene_garbage_mesh",
        lambda f: ["make-scene", _garbage(f), "--out", f["root"] / "m"],
        ["garbage.ply", "cannot read mesh"],
    ),
    (
        "extract_missing_checkpoint",
        lambda f: ["extract-mesh", f["root"] / "missing.pt"],
        ["missing.pt", "not found"],
    ),
    (
        "extract_not_a_checkpoint",
        lambda f: ["extract-mesh", f["cfg"]],
        ["cfg.yaml", "not a readable checkpoint"],
    ),
    (
        "make_scene_width_on_blender",
        lambda f: ["make-scene", "torus", "--width", "30", "--out", f["root"] / "m"],
        ["--width", "--format"],
    ),
    (
        "make_capture_principal_point_outside",
        lambda f: ["make-scene", "torus", "--format", "colmap", "--cx", "500", "--out", f["root"] / "m"],
        ["principal point", "500"],
    ),
    (
        "make_capture_zero_scale",
        lambda f: ["make-scene", "torus", "--format", "transforms", "--capture-transform", "0", "0", "0",
                   "0", "0",
                   "0", "0", "--out", f["root"] / "m"],
        ["scale", "0"],
    ),
    ("render_zero_orbit", lambda f: ["render", f["run"] / "checkpoint.pt", "--orbit", "0"], ["--orbit", "0"]),
    (
        "render_elevation_out_of_range",
        lambda f: ["render", f["run"] / "checkpoint.pt", "--elevation", "100"],
        ["--elevation", "100"],
    ),
    ("render_missing_checkpoint", lambda f: ["render", f["root"] / "none.pt"], ["none.pt", "not found"]),
    ("demo_zero_budget", lambda f: ["demo", "--budget", "0", "--out", f["root"] / "d"], ["--budget", "0"]),
    (
        "demo_missing_config",
        lambda f: ["demo", "--config", f["root"] / "nope.yaml", "--out", f["root"] / "d"],
        ["nope.yaml", "not found"],
    ),
]


def _garbage(files):
    path = files["root"] / "garbage.ply"
    path.write_bytes(b"ply\nthis is not a mesh\x00\x01")
    return path


@pytest.mark.parametrize("build,needles", [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES])
def test_other_commands_bad_input(files, build, needles):
    assert_user_error(run_cli("nerf", *build(files)), *needles)
