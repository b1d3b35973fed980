"""Benchmark: Certified Box Accuracy of the optimal vs the vanilla IoU extension on a verify run.

Reads the ``results.json`` of one or more ``geo-rs box verify`` runs on the same images (merged), and
prints, for every method x perturbation x ε: CBA(vanilla), CBA(optimal), the gap, the mean IoU lower
bound of both, and the step-2 time of both extensions against the step-1 (box bounds) time. The
baseline named in the ratios is the vanilla extension. It also checks the paper's headline, CBA(optimal)
>= CBA(vanilla) at every ε, and says where it fails. Writes nothing.

    python bench/bench_cba.py runs/box/study_fast runs/box/study_crown_noise runs/box/study_crown_bc
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from keypoint.box.report import load_results, merge_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders (each with results.json), same images")
    args = ap.parse_args()
    runs = [load_results(d) for d in args.runs]
    res = merge_results(runs) if len(runs) > 1 else runs[0]
    look = {(r["extension"], r["method"], r["perturbation"], r["eps"]): r for r in res["cba"]}
    cfg = res["config"]
    print(f"N = {res['n_images']} images, t = {cfg['threshold']}, "
          f"detector mean IoU {res['mean_clean_iou']:.4f}")
    print(f"{'method':10s} {'perturbation':12s} {'eps':>8s} {'CBA van':>8s} {'CBA opt':>8s} {'gap':>7s} "
          f"{'IoU_lo van':>10s} {'IoU_lo opt':>10s}")
    violations, gaps = [], []
    for m in cfg["methods"]:
        for p in cfg["perturbations"]:
            for e in cfg["eps"][p]:
                v, o = look.get(("vanilla", m, p, e)), look.get(("optimal", m, p, e))
                if not (v and o):
                    continue
                gap = o["cba"] - v["cba"]
                gaps.append(gap)
                if gap < 0:
                    violations.append((m, p, e, gap))
                print(f"{m:10s} {p:12s} {e:8g} {v['cba']:8.1f} {o['cba']:8.1f} {gap:+7.1f} "
                      f"{v['mean_lower']:10.4f} {o['mean_lower']:10.4f}")
    recs = res["records"]
    t_box = np.array([r["time_box"] for r in recs])
    t_van = np.array([r["vanilla"]["time"] for r in recs])
    t_opt = np.array([r["optimal"]["time"] for r in recs])
    med_van, med_opt, med_box = np.median(t_van), np.median(t_opt), np.median(t_box)
    print(f"\nstep 2 per box (median): vanilla {med_van * 1e3:.3f} ms, optimal {med_opt * 1e3:.3f} ms "
          f"(optimal/vanilla = {med_opt / med_van:.2f}x); step 1 (box bounds) median {med_box:.3f} s "
          f"= {med_box / med_opt:.0f}x step 2")
    print(f"gap optimal - vanilla over {len(gaps)} cells: mean {np.mean(gaps):+.1f}, "
          f"max {np.max(gaps):+.1f} points")
    if violations:
        print(f"HEADLINE FAILS in {len(violations)} cells: {violations[:5]}")
    else:
        print("headline holds: CBA(optimal) >= CBA(vanilla) at every method, perturbation and eps")


if __name__ == "__main__":
    main()
