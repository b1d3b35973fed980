"""Attack check of a box-verification study: no attack may go below a certified IoU lower bound.

For the MNIST-canvas runs written by ``geo-rs box verify`` (merged if several), attacks every image at
the chosen ε steps of each perturbation (random points of the set + PGD, ``keypoint.box.attack``) and
compares the smallest IoU found with the certified lower bounds of every method and extension:
a violation (attack IoU < certified lower bound) would mean the verifier is unsound. Also prints how
far the bounds are from the empirical worst case. Writes ``attack_check.json`` into the first run dir.

    python scripts/box_study.py runs/box/study_fast runs/box/study_crown_noise --eps-steps 5 10
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from keypoint.box.attack import attack_min_iou  # noqa: E402
from keypoint.box.data import mnist_canvas  # noqa: E402
from keypoint.box.model import load_detector  # noqa: E402
from keypoint.box.report import load_results, merge_results  # noqa: E402
from keypoint.box.verify import make_perturbation  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--eps-steps", type=int, nargs="+", default=[-1], help="indices into each ε grid")
    ap.add_argument("--images", type=int, default=0, help="first N images (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed the MNIST canvases were drawn with")
    ap.add_argument("--n-random", type=int, default=64)
    ap.add_argument("--pgd-steps", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = [load_results(d) for d in args.runs]
    res = merge_results(runs) if len(runs) > 1 else runs[0]
    model, _ = load_detector(res["model"]["weights"])
    n = res["n_images"] if not args.images else min(args.images, res["n_images"])
    images, boxes, _ = mnist_canvas(res["n_images"], "test", seed=args.seed)
    if boxes.tolist() != res["gt_boxes"]:
        sys.exit("the regenerated canvases do not match the run's ground truth (other --seed or data?)")
    cfg = res["config"]
    by_key: dict = {}
    for r in res["records"]:
        by_key.setdefault((r["image"], r["perturbation"], r["eps"]), []).append(r)
    rows, violations = [], 0
    t0 = time.time()
    for p in cfg["perturbations"]:
        grid = cfg["eps"][p]
        for step in args.eps_steps:
            eps = float(grid[step])
            for i in range(n):
                worst = attack_min_iou(model, images[i], boxes[i], make_perturbation(p, eps),
                                       n_random=args.n_random, pgd_steps=args.pgd_steps, pgd_restarts=2,
                                       seed=i).iou
                for r in by_key.get((i, p, eps), []):
                    for ext in cfg["extensions"]:
                        bad = worst < r[ext]["lower"] - 1e-6
                        violations += bad
                        rows.append({"image": i, "perturbation": p, "eps": eps, "method": r["method"],
                                     "extension": ext, "certified_lower": r[ext]["lower"],
                                     "stable": r[ext]["stable"], "attack_iou": worst, "violation": bool(bad)})
            print(f"{p} eps={eps:g}: {n} images attacked ({time.time() - t0:.0f} s)", flush=True)
    print(f"\n{'perturbation':12s} {'eps':>8s} {'method':10s} {'ext':8s} {'stable':>6s} {'cert. lower':>11s} "
          f"{'attack IoU':>10s} {'violations':>10s}")
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["perturbation"], row["eps"], row["method"], row["extension"]), []).append(row)
    for (p, eps, m, ext), g in groups.items():
        lower = np.mean([x["certified_lower"] for x in g])
        attack = np.mean([x["attack_iou"] for x in g])
        print(f"{p:12s} {eps:8g} {m:10s} {ext:8s} {sum(x['stable'] for x in g):6d} {lower:11.4f} "
              f"{attack:10.4f} {sum(x['violation'] for x in g):10d}")
    print(f"\n{len(rows)} (image, perturbation, eps, method, extension) checks, {violations} violations")
    out = Path(args.runs[0]) / "attack_check.json"
    out.write_text(json.dumps({"rows": rows, "violations": violations}, indent=0))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
