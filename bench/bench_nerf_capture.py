"""Training on users'-style captures: the larger version of tests/test_nerf_capture.py.

The built-in Lego-like scene (or ``--source MESH``) is rendered as a capture without a split —
``transforms.json`` and a COLMAP text model — at a non-square size with the principal point off
centre, after a known similarity (scale 3, rotations 30°/−20°/75°, translation (5, −2, 1)) was applied
to the world. Each capture is normalised by the loader (cameras / sparse points), trained with the
smoothed field, and scored: test PSNR/SSIM, mesh metrics in the capture's coordinates (report.json,
against the capture's mesh_gt.ply), the same after also undoing the known similarity (against the
original mesh), and how well the normalisation recovered the world's up axis and centre.
Writes only under runs/bench_nerf_capture/ (git-ignored).

    python bench/bench_nerf_capture.py [--quick] [--threads 1] [--formats transforms colmap]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIMILARITY = [3.0, 30, -20, 75, 5, -2, 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="lego", help="built-in scene or mesh file (default lego)")
    ap.add_argument("--formats", nargs="+", default=["transforms", "colmap"])
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--views", type=int, default=100)
    ap.add_argument("--grid-res", type=int, default=96)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--time-limit", type=float, default=600.0, help="training seconds per capture")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="48x36 px, 24 views, a 32³ grid, 200 steps")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_nerf_capture"))
    args = ap.parse_args()
    if args.quick:
        args.width, args.height, args.views, args.grid_res, args.steps = 48, 36, 24, 32, 200

    import numpy as np
    import torch
    import trimesh

    from geo_rs import mesh_metrics
    from nerf import Trainer, load_config
    from nerf.scene import load_scene_mesh, make_capture, similarity_from_args

    torch.set_num_threads(args.threads)
    truth = similarity_from_args(SIMILARITY)
    _, gt = load_scene_mesh(args.source)
    diag = float(np.linalg.norm(gt.bounds[1] - gt.bounds[0]))
    cx, cy = 0.56 * args.width, 0.43 * args.height  # off-centre principal point
    rows, load = {}, os.getloadavg()[0]
    for fmt in args.formats:
        t0 = time.perf_counter()
        data = make_capture(args.source, Path(args.out) / fmt, fmt, views=args.views, width=args.width,
                            height=args.height, cx=cx, cy=cy, transform=truth)
        cfg = load_config(ROOT / "configs" / "nerf_lego.yaml", data=str(data), grid_res=args.grid_res,
                          coarse_res=max(8, args.grid_res // 2), steps=args.steps,
                          time_limit_s=args.time_limit,
                          eval_every=100_000, ckpt_every=100_000, metric_points=50_000,
                          threads=args.threads)
        trainer = Trainer(cfg, Path(args.out) / f"run_{fmt}", quiet=True)
        trainer.run()
        rep = trainer.finalize()
        mesh = trimesh.load(Path(args.out) / f"run_{fmt}" / "mesh_capture.ply", force="mesh")
        mesh.vertices = truth.inverse().apply(mesh.vertices)  # undo the known similarity too
        orig = mesh_metrics(mesh, gt, n_points=50_000)
        total = trainer.capture.normalization.transform.compose(truth)  # original world → training frame
        up_err = float(np.degrees(np.arccos(np.clip(total.rotation[2, 2], -1, 1))))
        rows[fmt] = {
            "normalisation": trainer.capture.normalization.method,
            "test PSNR (dB)": rep["test_psnr"], "test SSIM": rep["test_ssim"],
            "F-score@1% (capture frame)": rep["mesh_metrics"]["fscore"],
            "Chamfer/diag % (capture)": 100 * rep["chamfer_l1_over_diag"],
            "F-score@1% (original frame)": float(orig["fscore"]),
            "Chamfer/diag % (original)": 100 * float(orig["chamfer_l1"]) / diag,
            "normal consistency": float(orig["normal_consistency"]),
            "up-axis error (deg)": up_err,
            "steps": rep["steps"], "train wall (s)": rep["train_time_s"],
            "total (s)": time.perf_counter() - t0,
        }
        print(f"{fmt}: done ({rep['steps']} steps)", flush=True)
    print(f"\n{args.source} as a capture: {args.width}x{args.height} px, "
          f"principal point ({cx:.1f}, {cy:.1f}), "
          f"{args.views} views (every 8th tests), grid {args.grid_res}, {args.threads} thread(s), load "
          f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at the end; similarity {SIMILARITY}")
    print(f"{'':30s}" + "".join(f"{f:>16s}" for f in rows))
    for key in next(iter(rows.values())):
        vals = [r[key] for r in rows.values()]
        print(f"{key:30s}" + "".join(f"{v:>16.4f}" if isinstance(v, float) else f"{v!s:>16s}" for v in vals))
    out = Path(args.out) / "summary.json"
    out.write_text(json.dumps({"load_start": load, "rows": rows, "args": vars(args)}, indent=1))
    print(f"full reports: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
