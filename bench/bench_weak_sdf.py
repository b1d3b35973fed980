"""Benchmark: weak SDF of a 256³ float32 grid (blur + Φ⁻¹) vs scipy.ndimage.gaussian_filter alone.

Goal (issue 2): geo_rs.weak_sdf ≤ 0.5 × the time of ``scipy.ndimage.gaussian_filter(mode="constant")``
on the same grid, at σ ∈ {1, 2, 4} voxels, measured in the same run. Prints a table of median times
(and the min) over a few repeats, the ratio against scipy, and both blur methods ("matmul", used
by "auto" at this size, and "slices"). Writes nothing.

Threads (issue 14): a second table times ``gaussian_blur3d`` at 64³, 128³ and 256³ with torch set to
1 thread, to 2 threads with the per-call thread policy off (every call on 2 threads), and to 2
threads with the policy on (geo_rs/blur_threads.py: each call on 1 or 2 threads, whichever measured
faster for that size lately). Calls of the three variants are interleaved, so a change of load hits
all alike; the mean includes the policy's occasional tries of the slower option. Goal: "2 threads,
policy on" never loses to 1 thread.

    python bench/bench_weak_sdf.py [--res 256] [--repeats 5] [--sigmas 1 2 4] [--threads N]
                                   [--thread-sizes 64 128 256] [--thread-repeats 24] [--quick]
                                   [--threads-only]

On a machine shared with other busy processes, multi-threaded torch suffers far more than
single-threaded scipy (every OpenMP barrier waits for a descheduled thread): check the load
average printed in the header, and compare ``--threads 1`` for a like-for-like work ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from scipy import ndimage

from geo_rs import gaussian_blur3d, weak_sdf


def _time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (allocator, BLAS threads, page faults)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def threads_table(sizes: list[int], repeats: int, sigma: float = 1.0) -> None:
    """gaussian_blur3d on 1 thread, on 2 threads, and on 2 threads with the per-call policy."""
    from geo_rs import blur

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"gaussian_blur3d σ={sigma:g}, float32, calls interleaved; load average {load:.2f} at start "
          "(median / mean milliseconds)")
    print(f"{'grid':>6} {'1 thread':>17} {'2 threads':>17} {'2 thr, policy':>17} "
          f"{'2 thr / 1 thr':>14} {'policy / 1 thr':>15} {'policy ran on 1 thr':>20}")
    saved = torch.get_num_threads()
    blur.THREAD_POLICY.reset()
    picks: list[int] = []  # threads the policy ran each timed call on
    record = blur.THREAD_POLICY.record

    def spy(voxels: int, threads: int, seconds: float, requested: int) -> None:
        if blur.THREAD_POLICY.enabled:
            picks.append(threads)
        record(voxels, threads, seconds, requested)

    blur.THREAD_POLICY.record = spy  # type: ignore[method-assign]
    try:
        for n in sizes:
            g = (torch.rand(n, n, n, generator=torch.Generator().manual_seed(0)) > 0.5).float()
            reps = max(4, int(repeats * (64 / n) ** 1.5))
            times: dict[str, list[float]] = {"one": [], "two": [], "policy": []}

            def call(name: str, g: torch.Tensor = g, times: dict = times) -> None:
                torch.set_num_threads(1 if name == "one" else 2)
                blur.THREAD_POLICY.enabled = name == "policy"
                t0 = time.perf_counter()
                gaussian_blur3d(g, sigma)
                times[name].append(time.perf_counter() - t0)

            for name in times:  # warm-up: allocator, thread pool, the policy's first measurements
                call(name)
                call(name)
            for name in times:
                times[name].clear()
            picks.clear()
            names = list(times)
            for r in range(reps):  # rotate the order: a variant run right after "2 threads" meets its
                for name in names[r % 3:] + names[:r % 3]:  # still-spinning second thread
                    call(name)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            mean = {k: statistics.fmean(v) * 1e3 for k, v in times.items()}
            print(f"{n:>5}³ {med['one']:8.1f} /{mean['one']:7.1f} {med['two']:8.1f} /{mean['two']:7.1f} "
                  f"{med['policy']:8.1f} /{mean['policy']:7.1f} "
                  f"{med['two'] / med['one']:6.2f} /{mean['two'] / mean['one']:6.2f} "
                  f"{med['policy'] / med['one']:7.2f} /{mean['policy'] / mean['one']:6.2f} "
                  f"{picks.count(1) / max(1, len(picks)):19.0%}", flush=True)
        print("ratios: median / mean; the policy's mean includes its tries of the slower option")
    finally:
        blur.THREAD_POLICY.record = record  # type: ignore[method-assign]
        blur.THREAD_POLICY.enabled = True
        torch.set_num_threads(saved)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice, all cores); scipy is single-threaded")
    ap.add_argument("--thread-sizes", type=int, nargs="+", default=[64, 128, 256],
                    help="grid sizes of the 1-vs-2-threads table (voxels a side; default 64 128 256)")
    ap.add_argument("--thread-repeats", type=int, default=24,
                    help="calls per variant in the threads table at 64³, fewer on larger grids (default 24)")
    ap.add_argument("--quick", action="store_true", help="res 128, 3 repeats, σ 1 2, thread sizes 64 128")
    ap.add_argument("--threads-only", action="store_true", help="only the 1-vs-2-threads table")
    args = ap.parse_args()
    if args.quick:
        args.res, args.repeats, args.sigmas, args.thread_sizes = 128, 3, [1.0, 2.0], [64, 128]
        args.thread_repeats = 12
    threads_table(args.thread_sizes, args.thread_repeats)
    if args.threads_only:
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    n = args.res
    rng = np.random.default_rng(0)
    # A shape-like occupancy: a thresholded smooth random field (content does not change the cost).
    coarse = rng.random((n // 8,) * 3).astype(np.float32)
    occ_np = (np.kron(coarse, np.ones((8, 8, 8), np.float32)) > 0.5).astype(np.float32)
    occ = torch.from_numpy(occ_np)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"grid {n}³ float32, torch threads {torch.get_num_threads()}, scipy single-threaded, "
          f"load average {load:.2f}, repeats {args.repeats} (median [min] seconds)")
    header = (f"{'σ':>4} {'scipy gaussian_filter':>22} {'weak_sdf (auto)':>18} {'ratio':>6} "
              f"{'blur matmul':>14} {'blur slices':>14} {'weak_sdf slices':>16} {'ratio':>6}")
    print(header)
    worst = 0.0
    for s in args.sigmas:
        sc_med, sc_min = _time(lambda s=s: ndimage.gaussian_filter(occ_np, s, mode="constant"), args.repeats)
        ws_med, ws_min = _time(lambda s=s: weak_sdf(occ, s, 1.0 / n), args.repeats)
        bm_med, _ = _time(lambda s=s: gaussian_blur3d(occ, s, method="matmul"), args.repeats)
        bs_med, _ = _time(lambda s=s: gaussian_blur3d(occ, s, method="slices"), args.repeats)
        wss_med, _ = _time(lambda s=s: weak_sdf(occ, s, 1.0 / n, method="slices"), args.repeats)
        ratio, ratio_s = ws_med / sc_med, wss_med / sc_med
        worst = max(worst, ratio)
        print(f"{s:4g} {sc_med:12.3f} [{sc_min:.3f}] {ws_med:9.3f} [{ws_min:.3f}] {ratio:6.2f} "
              f"{bm_med:14.3f} {bs_med:14.3f} {wss_med:16.3f} {ratio_s:6.2f}")
    # Sanity: the blur agrees with scipy (sampled kernel = scipy's kernel).
    ref = ndimage.gaussian_filter(occ_np, 2.0, mode="constant")
    err = float(np.abs(gaussian_blur3d(occ, 2.0, kernel="sampled").numpy() - ref).max())
    print(f"max |gaussian_blur3d(kernel='sampled') − scipy| at σ=2: {err:.2e}")
    verdict = "MET" if worst <= 0.5 else "NOT MET"
    print(f"worst ratio weak_sdf / scipy blur: {worst:.2f} (goal ≤ 0.5) -> {verdict}")


if __name__ == "__main__":
    main()
