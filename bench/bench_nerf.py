"""Smoothed (weak-SDF) field vs the plain DVGO-like density grid on the built-in Lego-like scene.

Both runs use configs/nerf_lego.yaml (100×100 px — or ``--scene-res`` — 100 training views, 20 test
views, same grid, colour model, rays, steps and time budget); only ``model`` differs (the smoothed
field's σ schedule 4 → 0.5 final voxels is part of that config; the plain model ignores it). Prints
test PSNR/SSIM, training wall and CPU time and the mesh metrics side by side, with ratios against the
plain baseline, and checks the targets: smoothed PSNR ≥ plain PSNR − 0.1 dB and F-score ≥ plain + 0.1
(issue 15), PSNR ≥ 28 dB, Chamfer-L1 ≤ 1 % of the bbox diagonal, F-score@1 % ≥ 0.9 (issue 9). Writes
only under runs/bench_nerf/ (git-ignored).

    python bench/bench_nerf.py [--scene-res 200] [--steps N] [--time-limit S] [--threads T] [--quick]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "nerf_lego.yaml"))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument(
        "--time-limit", type=float, default=None, help="training seconds per model (default: config)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core box)")
    ap.add_argument("--scene-res", type=int, default=None, help="image width = height (default: config, 100)")
    ap.add_argument("--quick", action="store_true", help="a 48³ grid, 300 steps, 8 test views: minutes")
    ap.add_argument("--models", nargs="+", default=["smoothed", "plain"])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_nerf"))
    args = ap.parse_args()
    quick = dict(grid_res=48, coarse_res=24, steps=300, rays_per_batch=2048, final_eval_views=8,
                 metric_points=20000, time_limit_s=None) if args.quick else {}

    import torch

    from nerf import Trainer, load_config
    from nerf.train import prepare_data

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    reports = {}
    # Render the scene once: both models train on the very same images.
    res = load_config(args.config, scene_res=args.scene_res).scene_res
    root = Path(args.out) / f"res{res}"
    scene = prepare_data(load_config(args.config, scene_res=res), root)
    for model in args.models:
        cfg = load_config(args.config, model=model, **{**quick, **{k: v for k, v in (
            ("steps", args.steps), ("time_limit_s", args.time_limit)) if v is not None}})
        cfg.data = str(scene)
        out = root / model
        trainer = Trainer(cfg, out, quiet=True)
        t0 = time.perf_counter()
        trainer.run()
        rep = trainer.finalize()
        rep["wall_total_s"] = time.perf_counter() - t0
        reports[model] = rep
        print(f"{model}: done in {rep['wall_total_s']:.0f} s ({rep['steps']} steps) -> {out}", flush=True)

    rows = [
        ("test PSNR (dB)", "test_psnr"),
        ("test SSIM", "test_ssim"),
        ("train wall (s)", "train_time_s"),
        ("train CPU (s)", "train_cpu_s"),
        ("steps", "steps"),
    ]
    mrows = [
        ("Chamfer-L1", "chamfer_l1"),
        ("accuracy", "accuracy"),
        ("completeness", "completeness"),
        ("normal consistency", "normal_consistency"),
        ("F-score@1%", "fscore"),
    ]
    base = reports.get("plain")
    print(f"\nLego-like scene at {res}x{res} px, grid {cfg.grid_res}, {args.threads} threads, load average "
          f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at the end")
    print(f"{'':22s}" + "".join(f"{m:>14s}" for m in reports) + ("   smoothed/plain" if base else ""))

    def line(label, getter):
        vals = [getter(r) for r in reports.values()]
        s = f"{label:22s}" + "".join(f"{v:14.4f}" if v is not None else f"{'-':>14s}" for v in vals)
        if (
            base
            and "smoothed" in reports
            and getter(base) not in (None, 0)
            and getter(reports["smoothed"]) is not None
        ):
            s += f"   {getter(reports['smoothed']) / getter(base):8.3f}"
        print(s)

    for label, key in rows:
        line(label, lambda r, k=key: r.get(k))
    for label, key in mrows:
        line(label, lambda r, k=key: r.get("mesh_metrics", {}).get(k))
    line(
        "Chamfer-L1 / diag (%)",
        lambda r: 100 * r["chamfer_l1_over_diag"] if "chamfer_l1_over_diag" in r else None,
    )

    if "smoothed" in reports:
        r = reports["smoothed"]
        mm = r.get("mesh_metrics", {})
        checks = {
            "PSNR >= 28 dB": r["test_psnr"] >= 28.0,
            "Chamfer-L1 <= 1% diag": r.get("chamfer_l1_over_diag", 1.0) <= 0.01,
            "F-score@1% >= 0.9": mm.get("fscore", 0.0) >= 0.9,
            "training <= 600 s wall": r["train_time_s"] <= 600,
        }
        if base:
            bm = base.get("mesh_metrics", {})
            checks["PSNR >= plain - 0.1 dB"] = r["test_psnr"] >= base["test_psnr"] - 0.1
            checks["F-score >= plain + 0.1"] = mm.get("fscore", 0.0) >= bm.get("fscore", 1.0) + 0.1
        print(
            "targets (smoothed): " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in checks.items())
        )
    summary = root / "summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(
        json.dumps({"load_average_start": load, "threads": args.threads, "reports": reports}, indent=1)
    )
    print(f"full reports: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
