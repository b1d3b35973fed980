"""Benchmark: ``MedianSmooth.certify`` over a dataset vs the same number of plain forward passes.

A keypoint-regression CNN (the ~1 M-parameter CNN of ``bench_certify.py`` with ``--outputs`` regression
outputs, e.g. 6 keypoints × 2 coordinates) certifies ``--images`` images at ``--n`` noise samples each.
Baseline, measured in the same run: ``images × n`` forward passes of the same model in batches of the
same size on inputs made once (no noise, no sorting). The ratio certify / baseline is the price of median
smoothing (noise drawing, scattering the outputs, sorting, the order-statistic lookup); goal ≤ 1.15×.
The two are timed alternately ``--repeats`` times; the best of each is reported.

Usage:
    python bench/bench_median.py                       # 200 images, n = 1,000
    python bench/bench_median.py --quick               # 20 images, n = 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from geo_rs import MedianSmooth

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_certify import make_cnn, plain_forwards  # noqa: E402  (the same CNN and baseline loop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images certified (default 200)")
    parser.add_argument("--n", type=int, default=1000, help="noise samples per image (default 1000)")
    parser.add_argument("--outputs", type=int, default=12, help="regression outputs m (default 12)")
    parser.add_argument("--batch-size", type=int, default=1000, help="forward batch (default 1000)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise std, input units (default 0.25)")
    parser.add_argument("--eps", type=float, default=0.25, help="certified L2 radius (default 0.25)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timing repeats (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    parser.add_argument("--quick", action="store_true", help="20 images, n = 200, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.n, args.repeats = 20, 200, 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_cnn(args.outputs).to(device).eval()
    x = torch.rand(args.images, 3, 32, 32, device=device)
    smooth = MedianSmooth(model, args.sigma)
    inputs = torch.rand(args.batch_size, 3, 32, 32, device=device)
    total = args.images * args.n
    best_cert, best_plain = float("inf"), float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        cert = smooth.certify(
            x, args.eps, args.n, 0.001, batch_size=args.batch_size, generator=0, progress=False
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best_cert = min(best_cert, time.perf_counter() - start)
        start = time.perf_counter()
        with torch.inference_mode():
            plain_forwards(model, inputs, total)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best_plain = min(best_plain, time.perf_counter() - start)
    print(f"load {os.getloadavg()[0]:.1f}, threads {args.threads}, device {device}")
    print(
        f"{args.images} images × n = {args.n} ({total:,} samples), m = {args.outputs}, "
        f"batch {args.batch_size}"
    )
    print(
        f"certify {best_cert:.2f} s   plain forwards {best_plain:.2f} s   ratio {best_cert / best_plain:.3f}"
    )
    print(
        f"certified coordinates: {cert.certified.float().mean().item():.3f} "
        f"(eps {args.eps}, sigma {args.sigma})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
