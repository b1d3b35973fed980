"""Benchmark: optimal IoU bounds (geo_rs.iou_bounds) vs baselines, measured in one run.

Baselines: (1) a straightforward vectorised 16-corner evaluation in torch (all corner boxes as an
(N, 16, 4) tensor, IoU of each, min) plus the clamped-gt upper bound; (2) the vanilla interval
extension; (3) the per-box Python reference ``iou_bounds_naive`` on 10^3 domains.

    python bench/bench_iou.py [--n 1000000] [--threads 2] [--repeats 3]

Prints wall-clock (best of ``repeats``) and process CPU time; the machine is shared, so ratios measured
in the same run are the figures to quote. Writes nothing.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from geo_rs import box_iou, iou_bounds, iou_bounds_naive  # noqa: E402


def random_domains(n: int, dtype=torch.float32, seed: int = 0):
    """Detector-like domains: gt boxes 8-38 px, predictions within a few px, half-widths up to 3 px."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 50
    gt = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g, dtype=dtype) * 30], 1)
    center = gt + torch.randn(n, 4, generator=g, dtype=dtype) * 3
    radius = torch.rand(n, 4, generator=g, dtype=dtype) * 3
    return center - radius, center + radius, gt


_CORNERS = torch.tensor(list(itertools.product((False, True), repeat=4)))  # (16, 4): take upper end?


def corners16(lo: torch.Tensor, hi: torch.Tensor, gt: torch.Tensor):
    """The straightforward baseline: IoU at all 16 corners, min; clamped gt for the max."""
    boxes = torch.where(_CORNERS[None], hi[:, None, :], lo[:, None, :])
    lower, _ = box_iou(boxes, gt[:, None, :]).min(1)
    upper = box_iou(torch.maximum(torch.minimum(gt, hi), lo), gt)
    return lower, upper


def timed(fn, repeats: int):
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return out, min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-naive", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                    help="torch threads (default: both cores; use 1 on a machine busy with other work)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lo, hi, gt = random_domains(args.n)
    print(f"N = {args.n:,} float32 domains, {args.threads} threads, load avg {os.getloadavg()[0]:.2f}")

    opt, t_opt, c_opt = timed(lambda: iou_bounds(lo, hi, gt, "optimal"), args.repeats)
    base, t_base, c_base = timed(lambda: corners16(lo, hi, gt), args.repeats)
    van, t_van, c_van = timed(lambda: iou_bounds(lo, hi, gt, "vanilla"), args.repeats)
    m = args.n_naive
    (ref_lo, ref_hi), t_ref, c_ref = timed(lambda: iou_bounds_naive(lo[:m], hi[:m], gt[:m]), 1)

    # Agreement (float32 kernels vs float64 reference) and tightness.
    err = max(
        float((opt.lower[:m].double() - torch.tensor(ref_lo, dtype=torch.float64)).abs().max()),
        float((opt.upper[:m].double() - torch.tensor(ref_hi, dtype=torch.float64)).abs().max()),
    )
    err16 = float((opt.lower - base[0]).abs().max())
    print(f"{'method':38s} {'wall s':>9s} {'cpu s':>9s} {'per box':>10s} {'vs optimal':>11s}")
    rows = [
        ("optimal (geo_rs.iou_bounds)", t_opt, c_opt, args.n),
        ("16-corner torch baseline", t_base, c_base, args.n),
        ("vanilla interval arithmetic", t_van, c_van, args.n),
        (f"per-box Python reference ({m} boxes)", t_ref, c_ref, m),
    ]
    for name, wall, cpu, n in rows:
        per = wall / n
        print(f"{name:38s} {wall:9.4f} {cpu:9.4f} {per * 1e6:8.3f}us {per / (t_opt / args.n):10.1f}x")
    print(f"speed-up vs 16-corner baseline: {t_base / t_opt:.2f}x wall, {c_base / c_opt:.2f}x cpu")
    print(f"max |optimal - reference| on {m} boxes: {err:.2e}; max |optimal - 16-corner| lower: {err16:.2e}")
    print(
        f"mean IoU bounds: optimal [{float(opt.lower.mean()):.4f}, {float(opt.upper.mean()):.4f}], "
        f"vanilla [{float(van.lower.mean()):.4f}, {float(van.upper.mean()):.4f}]"
    )
    goal = "met" if t_opt <= 0.25 else "NOT met (machine load?)"
    print(f"goal 10^6 optimal bounds <= 0.25 s wall: {goal} ({t_opt * 1e6 / args.n:.3f} s per 10^6)")


if __name__ == "__main__":
    main()
