"""``geo-rs nerf make-scene | train | extract-mesh | demo``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from geo_rs import UserError

__all__ = ["register"]


def register(subparsers) -> None:
    """Add ``nerf`` and its sub-commands to the ``geo-rs`` parser."""
    p = subparsers.add_parser(
        "nerf",
        help="smoothed voxel radiance fields with certified-SDF geometry",
        description="Smoothed voxel radiance fields whose geometry is a certified weak SDF.",
    )
    sub = p.add_subparsers(dest="nerf_command", metavar="NERF_COMMAND")
    sub.required = True

    m = sub.add_parser("make-scene", help="render a mesh or built-in scene into the NeRF-synthetic layout")
    m.add_argument("source", help="mesh file (ply/obj/stl/off/glb) or built-in scene: lego, sphere, torus")
    m.add_argument("--views", type=int, default=100, help="training views (default 100)")
    m.add_argument("--res", type=int, default=100, help="image width = height in pixels (default 100)")
    m.add_argument("--val-views", type=int, default=10)
    m.add_argument("--test-views", type=int, default=20)
    m.add_argument("--hemisphere", action="store_true", help="cameras above the ground plane only")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True, help="output folder")
    m.set_defaults(func=_make_scene)

    t = sub.add_parser("train", help="train a field; writes renders, depth, SDF cuts, mesh.ply, report.json")
    t.add_argument("config_or_scene", help="YAML config, a Blender-layout folder or a built-in scene name")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--model", choices=["smoothed", "plain"], help="override the config's model")
    t.add_argument("--steps", type=int, help="override the number of training steps")
    t.add_argument("--seed", type=int)
    t.add_argument(
        "--time-limit", type=float, dest="time_limit_s", help="stop training after this many seconds"
    )
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "extract-mesh", help="marching cubes of a checkpoint's weak SDF (+ metrics if GT known)"
    )
    e.add_argument("checkpoint")
    e.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    e.set_defaults(func=_extract)

    d = sub.add_parser("demo", help="end to end: Lego-like scene → smoothed field → certified-SDF mesh")
    d.add_argument("--out", default="runs/nerf_demo")
    d.add_argument("--config", default=None, help="YAML config (default: configs/nerf_demo.yaml settings)")
    d.add_argument("--threads", type=int, default=None)
    d.add_argument(
        "--budget",
        type=float,
        default=290.0,
        help="wall-clock seconds for the whole demo (training is capped to fit; default 290)",
    )
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_demo)


def _make_scene(args: argparse.Namespace) -> int:
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


def _config_from_arg(arg: str, **overrides):
    from .config import load_config

    p = Path(arg)
    if p.suffix in (".yaml", ".yml"):
        return load_config(p, **overrides)
    return load_config(None, data=arg, **overrides)


def _summarise(report: dict, out: Path) -> None:
    line = (
        f"test PSNR {report['test_psnr']:.2f} dB, SSIM {report['test_ssim']:.3f}, "
        f"training {report['train_time_s']:.0f} s"
    )
    mm = report.get("mesh_metrics")
    if mm:
        line += (
            f"; mesh Chamfer-L1 {mm['chamfer_l1']:.4f} ({100 * report['chamfer_l1_over_diag']:.2f} % of the "
            f"bbox diagonal), normal consistency {mm['normal_consistency']:.3f}, "
            f"F-score@1% {mm['fscore']:.3f}"
        )
    print(line)
    print(
        f"results in {out}: report.json, mesh.ply, sdf_slices.png, "
        "renders/r_*_compare.png (GT | render | depth)"
    )


def _train(args: argparse.Namespace) -> int:
    from .train import Trainer

    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    if args.resume and ckpt.exists():
        trainer = Trainer.resume(ckpt, out, quiet=args.quiet)
        print(f"resumed from {ckpt} at step {trainer.step}")
    else:
        cfg = _config_from_arg(
            args.config_or_scene,
            model=args.model,
            steps=args.steps,
            seed=args.seed,
            time_limit_s=args.time_limit_s,
            threads=args.threads,
        )
        trainer = Trainer(cfg, out, quiet=args.quiet)
    trainer.run()
    _summarise(trainer.finalize(), out)
    return 0


def _extract(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .config import NerfConfig
    from .evaluate import extract_and_score
    from .train import build_field, resolution_schedule

    payload = load_checkpoint(args.checkpoint)
    cfg = NerfConfig(**payload["config"])
    from .field import GridSpec

    bounds = payload["bounds"]
    res = resolution_schedule(cfg)[payload["stage"]][1]
    field = build_field(cfg, bounds, res, GridSpec.from_bounds(*bounds, cfg.grid_res).voxel)
    field.load_state_dict(payload["field"])
    if cfg.model == "smoothed":
        field.geometry.alpha = cfg.alpha_end
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    gt = Path(payload["gt_mesh"]) if payload.get("gt_mesh") else None
    report = extract_and_score(
        field,
        out,
        gt if gt is not None and gt.exists() else None,
        n_points=cfg.metric_points,
        fill=cfg.fill_cavities,
    )
    if "mesh" not in report:
        raise UserError(f"{args.checkpoint}: no surface to extract ({report.get('mesh_error')})")
    (out / "mesh_report.json").write_text(json.dumps(report, indent=1))
    msg = f"mesh written to {report['mesh']} ({report['mesh_faces']} faces); SDF cuts in {out}/sdf_slices.png"
    if "mesh_metrics" in report:
        mm = report["mesh_metrics"]
        msg += f"; Chamfer-L1 {mm['chamfer_l1']:.4f}, F-score@1% {mm['fscore']:.3f}"
    print(msg)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import torch

    from .config import load_config
    from .train import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg_path = (
        Path(args.config)
        if args.config
        else Path(__file__).resolve().parent.parent / "configs" / "nerf_demo.yaml"
    )
    cfg = load_config(cfg_path) if cfg_path.exists() else load_config(None, **DEMO_DEFAULTS)
    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"[1/3] rendering the built-in '{cfg.data}' scene ({cfg.scene_views} views, {cfg.scene_res}px) ...")
    trainer = Trainer(cfg, out, quiet=args.quiet)
    # Cap training so the whole demo fits the budget even on a slow/loaded machine: what is left after
    # the scene rendering, minus a reserve for the final renders and mesh metrics (~10 % + 30 s).
    left = args.budget - (time.perf_counter() - t0)
    cap = max(10.0, 0.9 * left - 30.0)
    if cfg.time_limit_s is None or cap < cfg.time_limit_s:
        trainer.cfg.time_limit_s = cap
    print(
        f"[2/3] training the smoothed field ({cfg.steps} steps or {trainer.cfg.time_limit_s:.0f} s, "
        f"grid {cfg.grid_res}, σ = {cfg.sigma_vox} voxel) ..."
    )
    trainer.run()
    print(
        "[3/3] rendering test views, extracting the certified-SDF mesh, scoring against the ground truth ..."
    )
    report = trainer.finalize()
    _summarise(report, out)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


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
