"""Benchmark / soundness study: the certified pose bound on posed synthetic images (runway and cuboid).

For every image of ``keypoint.data.posed`` (ground-truth pose, intrinsics, keypoints): keypoint boxes of
half-width ``--half-width`` px around the true keypoints shifted by N(0, ``--offset``²) (so the truth is not
the box centre, as with certified boxes around a detection), then

* the sound bound ``geo_rs.pose_error_bound`` against the ground-truth pose (``--rtol``, ``--time-limit``);
* ``--samples`` configurations in the boxes (20 % box vertices, 80 % uniform) solved by the real solver
  ``geo_rs.solve_pnp`` (OpenCV start + Newton), and an adversarial search ``geo_rs.attack_pose_error``;
* violations (sampled or attacked error above the bound), solver answers not covered by the bound
  (``PoseErrorBound.covers`` on the first 200 samples), tightness = bound / worst error found.

Per-image results go to ``--out/results.jsonl`` (one line each, appended and flushed; a rerun skips the
images already there, so the study resumes after an interruption). A summary table is printed at the end.

Usage:
    python bench/bench_pose.py --quick                  # 6 images, 500 samples: a smoke test
    python bench/bench_pose.py --images 200 --samples 10000 --out /tmp/pose_bench
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from geo_rs import attack_pose_error, pose_error_bound, rotation_error_deg, solve_pnp
from keypoint.data.posed import PosedConfig, generate_posed, object_points

NAMES = {1: "runway", 2: "cuboid"}
QUANTITIES = ("rotation_deg", "translation", "camera_position")


def errors_of(poses, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    centre = -R.T @ t
    return np.array(
        [
            [rotation_error_deg(p.R, R), np.linalg.norm(p.t - t), np.linalg.norm(p.camera_centre - centre)]
            for p in poses
        ]
    )


def study_image(sample, cam, cfg: PosedConfig, args, rng: np.random.Generator) -> dict:
    points = object_points(NAMES[cam.category_id], cfg)
    truth = (cam.R, cam.t)
    kp = sample.annotations[0].keypoints.astype(np.float64)
    centre = kp + rng.normal(0, args.offset, kp.shape)
    lo, hi = centre - args.half_width, centre + args.half_width
    start = time.perf_counter()
    bound = pose_error_bound(
        points, (lo, hi), cam.K, truth, rtol=args.rtol, time_limit_s=args.time_limit or None,
        max_boxes=args.max_boxes,
    )
    bound_s = time.perf_counter() - start
    configs = lo + rng.random((args.samples, *kp.shape)) * (hi - lo)
    vertices = args.samples // 5
    configs[:vertices] = np.where(rng.random((vertices, *kp.shape)) < 0.5, lo, hi)
    start = time.perf_counter()
    poses = solve_pnp(points, configs, cam.K)
    sample_s = time.perf_counter() - start
    errs = errors_of(poses, *truth)
    checked = min(200, len(poses))
    uncovered = sum(not bound.covers(p, c) for p, c in zip(poses[:checked], configs[:checked], strict=True))
    attack = attack_pose_error(
        points, (lo, hi), cam.K, truth, rounds=3, coordinate_sweeps=1, gradient_steps=3
    )
    bounds = np.array([bound.rotation_deg, bound.translation, bound.camera_position])
    attacked = np.array([attack.rotation_deg, attack.translation, attack.camera_position])
    witnessed = np.array([bound.worst_rotation_deg, bound.worst_translation, bound.worst_camera_position])
    worst = np.maximum(np.maximum(errs.max(0), attacked), witnessed)
    return {
        "image_id": int(sample.image_id),
        "object": NAMES[cam.category_id],
        "distance": bound.distance,
        "bound": bounds.tolist(),
        "sampled_max": errs.max(0).tolist(),
        "attacked": attacked.tolist(),
        "witness": witnessed.tolist(),
        "tightness": (bounds / np.maximum(worst, 1e-300)).tolist(),
        "violations_sampled": (errs > bounds).sum(0).tolist(),
        "violations_attacked": (attacked > bounds).tolist(),
        "uncovered": int(uncovered),
        "checked": checked,
        "converged": bool(bound.converged),
        "boxes": bound.boxes,
        "bound_s": bound_s,
        "solve_s_per_1000": 1000 * sample_s / args.samples,
    }


def summarise(rows: list[dict]) -> str:
    lines = [
        f"{'object':8s} {'n':>4s} {'viol.samp':>9s} {'viol.att':>8s} {'uncov':>6s} "
        + " ".join(f"{q[:5] + ' tight p50/p90/max':>24s}" for q in QUANTITIES)
        + f" {'conv':>5s} {'s p50':>6s}"
    ]
    for name in ("runway", "cuboid", "all"):
        sel = [r for r in rows if name == "all" or r["object"] == name]
        if not sel:
            continue
        tight = np.array([r["tightness"] for r in sel])
        cells = [
            f"{np.median(tight[:, q]):6.2f}/{np.quantile(tight[:, q], 0.9):6.2f}/{tight[:, q].max():6.2f}"
            for q in range(3)
        ]
        lines.append(
            f"{name:8s} {len(sel):4d} {sum(sum(r['violations_sampled']) for r in sel):9d} "
            f"{sum(sum(r['violations_attacked']) for r in sel):8d} {sum(r['uncovered'] for r in sel):6d} "
            + " ".join(f"{c:>24s}" for c in cells)
            + f" {np.mean([r['converged'] for r in sel]):5.2f} {np.median([r['bound_s'] for r in sel]):6.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="posed images (default 200)")
    parser.add_argument(
        "--samples", type=int, default=10_000, help="sampled configurations per image (default 10000)"
    )
    parser.add_argument(
        "--half-width", type=float, default=2.0, help="keypoint box half-width, pixels (default 2)"
    )
    parser.add_argument(
        "--offset", type=float, default=0.5, help="std of the box-centre shift, pixels (default 0.5)"
    )
    parser.add_argument("--rtol", type=float, default=0.25, help="bound search tolerance (default 0.25)")
    parser.add_argument(
        "--time-limit", type=float, default=10.0,
        help="bound search budget per image, s (0: none; default 10)",
    )
    parser.add_argument(
        "--max-boxes", type=int, default=200_000,
        help="bound search budget per image in pose boxes (load-independent, unlike --time-limit; with "
        "--time-limit 0 the only budget; default 200000)",
    )
    parser.add_argument("--image-size", type=int, default=128, help="image side, pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="data and sampling seed (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--out", default="", help="folder for results.jsonl (resumable); empty: keep in memory"
    )
    parser.add_argument("--quick", action="store_true", help="6 images, 500 samples, 10 s budget")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.samples, args.time_limit = 6, 500, 10.0
    torch.set_num_threads(args.threads)
    cfg = PosedConfig(image_size=args.image_size)
    data = generate_posed(args.images, seed=args.seed, config=cfg)
    done: dict[int, dict] = {}
    path = Path(args.out) / "results.jsonl" if args.out else None
    if path is not None and path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["image_id"]] = row
    print(
        f"load: {os.getloadavg()[0]:.1f}; threads {args.threads}; {len(done)} image(s) already done",
        flush=True,
    )
    for sample, cam in zip(data.samples, data.cameras, strict=True):
        if sample.image_id in done:
            continue
        rng = np.random.default_rng([args.seed, sample.image_id, 1])
        row = study_image(sample, cam, cfg, args, rng)
        done[row["image_id"]] = row
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:  # one line per image, flushed: an interrupted run resumes here
                f.write(json.dumps(row) + "\n")
        print(
            f"image {row['image_id']:4d} {row['object']:7s} bound {np.round(row['bound'], 3).tolist()} "
            f"tight {np.round(row['tightness'], 2).tolist()} viol {sum(row['violations_sampled'])} "
            f"{row['bound_s']:.1f}s",
            flush=True,
        )
    rows = [done[i] for i in sorted(done)]
    print(summarise(rows))
    print(f"load at end: {os.getloadavg()[0]:.1f}")
    return 0 if all(sum(r["violations_sampled"]) + sum(r["violations_attacked"]) == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
