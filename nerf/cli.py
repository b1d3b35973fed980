"""``geo-rs nerf make-scene | train | extract-mesh | demo``.

``register`` only builds parsers: torch, open3d, nerfacc and trimesh are imported inside the command
functions, after the arguments and the config were checked, so ``--help`` and bad input answer at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from geo_rs import UserError
from geo_rs.config import field_help

from .config import BUILTIN_SCENE_NAMES, NerfConfig

__all__ = ["register"]

# config keys that `train` can override from the command line, and the flag of each
TRAIN_FLAGS = {
    "model": "--model",
    "steps": "--steps",
    "seed": "--seed",
    "time_limit_s": "--time-limit",
    "threads": "--threads",
    "ckpt_every": "--ckpt-every",
    "ckpt_every_s": "--ckpt-every-s",
}


def _h(key: str, prefix: str = "overrides the config") -> str:
    return f"{prefix}: {field_help(NerfConfig, key)}".replace("default None", "default: unset")


def register(subparsers) -> None:
    """Add ``nerf`` and its sub-commands to the ``geo-rs`` parser."""
    p = subparsers.add_parser(
        "nerf",
        help="smoothed voxel radiance fields with certified-SDF geometry",
        description="Smoothed voxel radiance fields whose geometry is a certified weak SDF.",
    )
    sub = p.add_subparsers(dest="nerf_command", metavar="NERF_COMMAND")
    sub.required = True
    _register_make_scene(sub)
    _register_train(sub)
    _register_extract(sub)
    _register_render(sub)
    _register_demo(sub)


def _register_make_scene(sub) -> None:
    m = sub.add_parser("make-scene", help="render a mesh or built-in scene into the NeRF-synthetic layout",
                       description="Render a mesh file or a built-in scene into the NeRF-synthetic (Blender) "
                                   "layout: transforms_{train,val,test}.json, RGBA PNGs, mesh_gt.ply, "
                                   "scene.json.")
    m.add_argument("source", help="mesh file (ply/obj/stl/off/glb) or built-in scene: "
                                  + ", ".join(BUILTIN_SCENE_NAMES))
    m.add_argument("--views", type=int, default=100, help="training views on a Fibonacci sphere (views; "
                                                          "default 100)")
    m.add_argument("--res", type=int, default=100, help="image width = height (pixels, 8–4096; default 100)")
    m.add_argument("--val-views", type=int, default=10, help="validation views, random directions "
                                                             "(views, ≥ 0; default 10)")
    m.add_argument("--test-views", type=int, default=20, help="test views, random directions (views, ≥ 1; "
                                                              "default 20)")
    m.add_argument("--hemisphere", action="store_true", help="cameras above the ground plane only "
                                                             "(default: off, the whole sphere)")
    m.add_argument("--seed", type=int, default=0, help="seed of the random val/test directions (≥ 0; "
                                                       "default 0)")
    m.add_argument("--format", choices=["blender", "transforms", "colmap"], default="blender",
                   help="blender: transforms_{train,val,test}.json (square, centred camera); transforms: one "
                        "instant-ngp/nerfstudio transforms.json; colmap: a COLMAP text model with sparse "
                        "points — the last two without a split, like a user's capture (default blender)")
    m.add_argument("--width", type=int, default=None, help="capture formats: image width (pixels; default "
                                                           "--res)")
    m.add_argument("--height", type=int, default=None, help="capture formats: image height (pixels; default "
                                                            "the width)")
    m.add_argument("--cx", type=float, default=None, help="capture formats: principal point x (pixels from "
                                                          "the left edge; default the image centre)")
    m.add_argument("--cy", type=float, default=None, help="capture formats: principal point y (pixels from "
                                                          "the top edge; default the image centre)")
    m.add_argument("--distortion", type=float, nargs=4, metavar=("K1", "K2", "P1", "P2"), default=None,
                   help="capture formats: OpenCV lens distortion of the rendered images (default: none)")
    m.add_argument("--capture-transform", type=float, nargs=7, default=None,
                   metavar=("SCALE", "RX", "RY", "RZ", "TX", "TY", "TZ"),
                   help="capture formats: similarity applied to the world (poses, mesh_gt.ply, sparse "
                        "points): scale, rotations about x, y, z (degrees), translation (world units); "
                        "recorded in capture_truth.json (default: none)")
    m.add_argument("--out", required=True, help="output folder (created; required)")
    m.set_defaults(func=_make_scene)


def _register_train(sub) -> None:
    t = sub.add_parser("train", help="train a field; writes renders, depth, SDF cuts, mesh.ply, report.json",
                       description="Train a smoothed (or plain) voxel radiance field. Checkpoints go to "
                                   "OUT/checkpoint.pt every --ckpt-every steps and --ckpt-every-s seconds; "
                                   "SIGINT/SIGTERM saves one and exits 130/143; --resume continues it.")
    t.add_argument("config_or_scene", metavar="CONFIG_OR_SCENE",
                   help="YAML config (keys: nerf/config.py), or the data trained with the default config: a "
                        "Blender-layout folder, a transforms.json (or its folder), a COLMAP project or a "
                        f"built-in scene ({', '.join(BUILTIN_SCENE_NAMES)})")
    t.add_argument("--out", required=True, help="output folder (created; required)")
    t.add_argument("--model", choices=["smoothed", "plain"], help=_h("model"))
    t.add_argument("--steps", type=int, help=_h("steps") + "; with --resume: the new total")
    t.add_argument("--seed", type=int, help=_h("seed"))
    t.add_argument("--time-limit", type=float, dest="time_limit_s", metavar="SECONDS",
                   help=_h("time_limit_s"))
    t.add_argument("--threads", type=int, help=_h("threads"))
    t.add_argument("--ckpt-every", type=int, metavar="STEPS", help=_h("ckpt_every"))
    t.add_argument("--ckpt-every-s", type=float, metavar="SECONDS", help=_h("ckpt_every_s"))
    t.add_argument("--resume", action="store_true",
                   help="continue OUT/checkpoint.pt with its saved settings; --steps, --time-limit, "
                        "--threads and --ckpt-every* may change, settings of the model may not "
                        "(default: off — a new run, refused if OUT already holds a checkpoint)")
    t.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    t.set_defaults(func=_train)


def _register_extract(sub) -> None:
    e = sub.add_parser("extract-mesh",
                       help="marching cubes of a checkpoint's weak SDF (+ metrics if GT known)",
                       description="Marching cubes of a checkpoint's level field (the weak SDF for the "
                                   "smoothed model) at 0: mesh.ply, sdf_slices.png, mesh_report.json.")
    e.add_argument("checkpoint", help="a checkpoint.pt written by `geo-rs nerf train`")
    e.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    e.set_defaults(func=_extract)


def _register_render(sub) -> None:
    r = sub.add_parser("render", help="turntable of a checkpoint: colour and depth PNG frames, GIF and MP4",
                       description="Render a turntable of a trained field: frames orbiting the scene's up "
                                   "axis (+z of the training frame) around the box centre; color_*.png, "
                                   "depth_*.png, "
                                   "turntable_{color,depth}.gif and .mp4 (when an MP4 writer is available), "
                                   "render_report.json.")
    r.add_argument("checkpoint", help="a checkpoint.pt written by `geo-rs nerf train`")
    r.add_argument("--orbit", type=int, default=36, metavar="N", help="frames in one full turn (frames, "
                                                                       "1-3600; default 36)")
    r.add_argument("--out", default=None, help="output folder (default: CHECKPOINT's folder/turntable)")
    r.add_argument("--elevation", type=float, default=None,
                   help="camera elevation above the horizontal plane through the box centre (degrees, "
                        "-90..90; default: the training cameras' median, else 20)")
    r.add_argument("--radius", type=float, default=None,
                   help="camera distance to the box centre (training-frame world units; default: the "
                        "training cameras' median, else 2.5 box half-diagonals)")
    r.add_argument("--width", type=int, default=None, help="frame width (pixels; default: the training "
                                                           "images')")
    r.add_argument("--height", type=int, default=None, help="frame height (pixels; default: the training "
                                                            "images')")
    r.add_argument("--fps", type=float, default=12.0, help="GIF/MP4 frame rate (frames per second; default "
                                                           "12)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    r.set_defaults(func=_render)


def _register_demo(sub) -> None:
    d = sub.add_parser("demo", help="end to end: Lego-like scene → smoothed field → certified-SDF mesh",
                       description="Render the built-in Lego-like scene, train the smoothed field within "
                                   "a time budget, extract the certified-SDF mesh and score it.")
    d.add_argument("--out", default="runs/nerf_demo", help="output folder (default runs/nerf_demo)")
    d.add_argument("--config", default=None, help="YAML config (default: configs/nerf_demo.yaml)")
    d.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    d.add_argument("--budget", type=float, default=290.0,
                   help="wall-clock budget of the whole demo; training is capped to fit "
                        "(seconds; default 290)")
    d.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    d.set_defaults(func=_demo)


# -- make-scene ------------------------------------------------------------------------------------
def _make_scene(args: argparse.Namespace) -> int:
    from geo_rs.checks import count

    count("--views", args.views)
    count("--res", args.res, minimum=8, maximum=4096)
    count("--val-views", args.val_views, minimum=0)
    count("--test-views", args.test_views)
    count("--seed", args.seed, minimum=0)
    _check_source(args.source)
    if args.format != "blender":
        return _make_capture(args)
    for flag in ("width", "height", "cx", "cy", "distortion", "capture_transform"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} needs --format transforms or colmap (the Blender "
                            f"layout "
                            "has a square, centred pinhole camera)")
    from .scene import make_scene

    t0 = time.perf_counter()
    out = make_scene(
        args.source,
        args.out,
        views=args.views,
        res=args.res,
        val_views=args.val_views,
        test_views=args.test_views,
        hemisphere=args.hemisphere,
        seed=args.seed,
    )
    print(
        f"scene written to {out} ({args.views} train / {args.val_views} val / {args.test_views} test views "
        f"at {args.res}x{args.res}, ground truth mesh_gt.ply) in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _make_capture(args: argparse.Namespace) -> int:
    from geo_rs.checks import count

    from .scene import make_capture, similarity_from_args

    width = count("--width", args.width if args.width is not None else args.res, minimum=8, maximum=4096)
    height = count("--height", args.height, minimum=8, maximum=4096) if args.height is not None else width
    transform = similarity_from_args(args.capture_transform) if args.capture_transform else None
    t0 = time.perf_counter()
    path = make_capture(args.source, args.out, args.format, views=args.views, width=width, height=height,
                        cx=args.cx, cy=args.cy, distortion=args.distortion, transform=transform,
                        hemisphere=args.hemisphere)
    print(f"capture written to {path} ({args.views} views at {width}x{height}, no split; ground truth "
          f"mesh_gt.ply and capture_truth.json in capture coordinates) in {time.perf_counter() - t0:.1f} s")
    return 0


def _check_source(source: str) -> None:
    p = Path(source)
    if source in BUILTIN_SCENE_NAMES and not p.exists():
        return
    if p.is_dir():
        raise UserError(f"scene source {source}: expected a mesh file or a built-in scene, got a folder")
    if not p.exists():
        raise UserError(f"scene source {source!r} is neither a mesh file nor a built-in scene "
                        f"({', '.join(BUILTIN_SCENE_NAMES)})")


# -- train -----------------------------------------------------------------------------------------
def _is_yaml(arg: str) -> bool:
    return Path(arg).suffix.lower() in (".yaml", ".yml")


def _check_data(data: str, origin: str) -> None:
    """Fail before any heavy import when the training data cannot exist."""
    p = Path(data)
    if p.is_dir() or (p.is_file() and p.suffix.lower() == ".json") or (data in BUILTIN_SCENE_NAMES
                                                                        and not p.exists()):
        return
    what = "a file that is not a transforms.json" if p.exists() else "not found"
    raise UserError(f"{origin}: data {data!r} is {what}: expected a Blender-layout folder, a transforms.json "
                    f"(or its folder), a COLMAP project or a built-in scene "
                    f"({', '.join(BUILTIN_SCENE_NAMES)})")


def _overrides(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in TRAIN_FLAGS if getattr(args, key) is not None}


def _new_config(args: argparse.Namespace) -> NerfConfig:
    from .config import load_config

    arg = args.config_or_scene
    overrides = _overrides(args)
    if _is_yaml(arg):
        cfg = load_config(arg, flags=TRAIN_FLAGS, **overrides)
        _check_data(cfg.data, f"{arg}: key 'data'")
    else:
        _check_data(arg, "CONFIG_OR_SCENE")
        cfg = load_config(None, flags=TRAIN_FLAGS, data=arg, **overrides)
    return cfg


def _given_again(args: argparse.Namespace) -> tuple[dict, dict]:
    """Settings the user gave for a resumed run (YAML keys, the scene, flags) and where each came from."""
    from geo_rs.config import read_yaml

    arg = args.config_or_scene
    if _is_yaml(arg):
        given = read_yaml(arg)
        origins = {k: str(arg) for k in given}
    else:
        given, origins = {"data": arg}, {"data": "CONFIG_OR_SCENE"}
    for key, value in _overrides(args).items():
        given[key], origins[key] = value, TRAIN_FLAGS[key]
    return given, origins


def _train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    ckpt = out / "checkpoint.pt"
    if args.resume:
        if not ckpt.is_file():
            raise UserError(f"--resume: no checkpoint in {out} (expected {ckpt}); run without --resume "
                            "to start a new training")
        given, origins = _given_again(args)
        return _resume(args, ckpt, given, origins)
    cfg = _new_config(args)
    if ckpt.exists():
        raise UserError(f"{ckpt} already exists (an earlier run): pass --resume to continue it, or choose "
                        "another --out (or delete it) to start again")
    from .train import Trainer

    trainer = Trainer(cfg, out, quiet=args.quiet)
    return _train_and_finalize(trainer, args)


def _resume(args: argparse.Namespace, ckpt: Path, given: dict, origins: dict) -> int:
    from .checkpoint import load_checkpoint
    from .config import merge_for_resume
    from .train import Trainer

    payload = load_checkpoint(ckpt)
    cfg = merge_for_resume(payload["config"], given, origins, ckpt)
    if cfg.steps < payload["step"]:
        raise UserError(f"{origins.get('steps', 'steps')}: steps {cfg.steps} is below the step the "
                        f"checkpoint {ckpt} reached ({payload['step']})")
    trainer = Trainer.resume(ckpt, args.out, quiet=args.quiet, config=cfg, payload=payload)
    print(f"resumed from {ckpt} at step {trainer.step}", flush=True)
    return _train_and_finalize(trainer, args)


def _train_and_finalize(trainer, args: argparse.Namespace) -> int:
    cfg = trainer.cfg
    every = f"every {cfg.ckpt_every} steps" + (f" and {cfg.ckpt_every_s:g} s" if cfg.ckpt_every_s else "")
    print(f"training {cfg.model} field: step {trainer.step} → {cfg.steps}, checkpoint {every} to "
          f"{trainer.checkpoint_path}", flush=True)
    result = trainer.run()
    if result.reason == "signal":
        import signal

        name = signal.Signals(result.signum).name
        print(f"stopped by {name} at step {result.step} of {cfg.steps}; checkpoint saved to "
              f"{trainer.checkpoint_path}; continue with: geo-rs nerf train {args.config_or_scene} "
              f"--out {args.out} --resume", file=sys.stderr, flush=True)
        result.raise_if_interrupted()
    if result.reason == "time_limit":
        print(f"time limit {cfg.time_limit_s:g} s reached at step {result.step} of {cfg.steps} "
              f"(--resume with a larger --time-limit continues)")
    _summarise(trainer.finalize(), trainer.out)
    return 0


def _summarise(report: dict, out: Path) -> None:
    line = (
        f"test PSNR {report['test_psnr']:.2f} dB, SSIM {report['test_ssim']:.3f}, "
        f"training {report['train_time_s']:.0f} s ({report['steps']} steps)"
    )
    mm = report.get("mesh_metrics")
    if mm:
        line += (
            f"; mesh Chamfer-L1 {mm['chamfer_l1']:.4f} ({100 * report['chamfer_l1_over_diag']:.2f} % of the "
            f"bbox diagonal), normal consistency {mm['normal_consistency']:.3f}, "
            f"F-score@1% {mm['fscore']:.3f}"
        )
    print(line)
    print(f"results in {out}: {', '.join(report['outputs'])} (compare: GT | render | depth)")
    for name, why in report.get("not_produced", {}).items():
        print(f"not produced: {name}: {why}")


# -- extract-mesh ----------------------------------------------------------------------------------
def _extract(args: argparse.Namespace) -> int:
    from geo_rs.atomic import write_json

    from .evaluate import extract_and_score
    from .train import load_field

    field, payload, cfg = load_field(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    gt = Path(payload["gt_mesh"]) if payload.get("gt_mesh") else None
    report = extract_and_score(
        field,
        out,
        gt if gt is not None and gt.exists() else None,
        n_points=cfg.metric_points,
        fill=cfg.fill_cavities,
        to_capture=field.capture_to_field.inverse() if field.capture_to_field is not None else None,
    )
    if "mesh" not in report:
        raise UserError(f"{args.checkpoint}: no surface to extract ({report.get('mesh_error')})")
    write_json(out / "mesh_report.json", report, indent=1)
    msg = f"mesh written to {report['mesh']} ({report['mesh_faces']} faces); SDF cuts in {out}/sdf_slices.png"
    if "mesh_metrics" in report:
        mm = report["mesh_metrics"]
        msg += f"; Chamfer-L1 {mm['chamfer_l1']:.4f}, F-score@1% {mm['fscore']:.3f}"
    print(msg)
    for name, why in report["not_produced"].items():
        print(f"not produced: {name}: {why}")
    return 0


# -- render ----------------------------------------------------------------------------------------
def _render(args: argparse.Namespace) -> int:
    from geo_rs.checks import count, finite_number, positive_finite

    count("--orbit", args.orbit, minimum=1, maximum=3600)
    fps = positive_finite("--fps", args.fps, "frames per second")
    if args.elevation is not None and not -90 <= finite_number("--elevation", args.elevation,
                                                               "degrees") <= 90:
        raise UserError(f"--elevation must lie in [-90, 90] degrees, got {args.elevation}")
    if args.radius is not None:
        positive_finite("--radius", args.radius, "world units")
    for flag in ("width", "height"):
        if getattr(args, flag) is not None:
            count(f"--{flag}", getattr(args, flag), minimum=8, maximum=4096)
    if args.threads is not None:
        count("--threads", args.threads)
    import numpy as np
    import torch

    from geo_rs.atomic import write_json

    from .dataset import background_rgb
    from .train import load_field
    from .turntable import orbit_poses, render_turntable, write_turntable

    if args.threads:
        torch.set_num_threads(args.threads)
    field, payload, cfg = load_field(args.checkpoint)
    bounds = payload["bounds"]
    cams = payload.get("cameras") or {}
    centre = 0.5 * (np.asarray(bounds[0]) + np.asarray(bounds[1]))
    half_diag = 0.5 * float(np.linalg.norm(np.asarray(bounds[1]) - np.asarray(bounds[0])))
    radius = args.radius or cams.get("radius", 2.5 * half_diag)
    elevation = args.elevation if args.elevation is not None else cams.get("elevation_deg", 20.0)
    width = args.width or cams.get("width", 200)
    height = args.height or (cams.get("height", width) if args.width is None else
                             round(width * cams.get("height", width) / cams.get("width", width)))
    focal = cams.get("focal", width) * width / cams.get("width", width)  # the training field of view
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "turntable"
    step = cfg.step_voxels * field.spec.voxel
    print(f"rendering {args.orbit} frames of {width}x{height} at distance {radius:.3g}, elevation "
          f"{elevation:.1f}° ...", flush=True)
    colours, depths = render_turntable(field, orbit_poses(args.orbit, centre, radius, elevation), height,
                                       width,
                                       focal, bounds, step, background_rgb(cfg.background))
    report = write_turntable(out, colours, depths, fps)
    report.update({"checkpoint": str(args.checkpoint), "radius": radius, "elevation_deg": elevation,
                   "size": [width, height], "focal": focal, "fps": fps, "up_axis": "+z (training frame)"})
    write_json(out / "render_report.json", report, indent=1)
    print(f"turntable in {out}: {', '.join(report['outputs'])}" +
          (f" (MP4 via {report['mp4_writer']})" if "mp4_writer" in report else ""))
    for name, why in report["not_produced"].items():
        print(f"not produced: {name}: {why}")
    return 0


# -- demo ------------------------------------------------------------------------------------------
# Used when configs/nerf_demo.yaml is not shipped alongside the package (e.g. a wheel install).
DEMO_DEFAULTS = {
    "data": "lego",
    "scene_views": 100,
    "scene_res": 100,
    "scene_test_views": 10,
    "steps": 1200,
    "grid_res": 64,
    "coarse_res": 32,
    "time_limit_s": 210,
    "metric_points": 50000,
    "rays_per_batch": 2048,
    "eval_every": 500,
    "ckpt_every": 500,
}


def _demo(args: argparse.Namespace) -> int:
    from geo_rs.checks import count, positive_finite

    from .config import load_config

    budget = positive_finite("--budget", args.budget, "seconds")
    if args.threads is not None:
        count("--threads", args.threads)
    cfg_path = Path(args.config) if args.config else Path(__file__).resolve().parent.parent / "configs" / \
        "nerf_demo.yaml"
    if args.config or cfg_path.exists():
        cfg = load_config(cfg_path)
    else:
        cfg = load_config(None, **DEMO_DEFAULTS)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")

    import torch

    from .train import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    print(f"[1/3] rendering the built-in '{cfg.data}' scene ({cfg.scene_views} views, {cfg.scene_res}px) ...")
    trainer = Trainer(cfg, out, quiet=args.quiet)
    # Cap training so the whole demo fits the budget even on a slow/loaded machine: what is left after
    # the scene rendering, minus a reserve for the final renders and mesh metrics (~10 % + 30 s).
    left = budget - (time.perf_counter() - t0)
    cap = max(10.0, 0.9 * left - 30.0)
    if cfg.time_limit_s is None or cap < cfg.time_limit_s:
        trainer.cfg.time_limit_s = cap
    print(
        f"[2/3] training the smoothed field ({cfg.steps} steps or {trainer.cfg.time_limit_s:.0f} s, "
        f"grid {cfg.grid_res}, σ = {cfg.sigma_vox} voxel) ..."
    )
    result = trainer.run()
    result.raise_if_interrupted()  # checkpoint saved; exit 130/143
    print(
        "[3/3] rendering test views, extracting the certified-SDF mesh, scoring against the ground truth ..."
    )
    report = trainer.finalize()
    _summarise(report, out)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0
