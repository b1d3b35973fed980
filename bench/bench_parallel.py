"""Benchmark of geo_rs.parallel on dataset-scale certification (``geo-rs smooth certify``'s job).

Two ratios, each against a baseline measured in the same run:

1. 2 local workers vs 1 (in this process, one torch thread): throughput of certifying MNIST digits
   with ``geo_rs.smooth_models:mnist_cnn`` at n = 10⁴ (target ≥ 1.7× on a quiet machine). Also shown:
   one process with ``--threads`` torch threads, the alternative to a second worker.
2. Dask ``LocalCluster`` (2 process workers) vs the local pool (2 workers) on units of ≥ 1 s (n chosen
   so): overhead = time ratio − 1 (target ≤ 10 %).

Each comparison runs its two sides in A B B A order (``--repeats`` pairs) and averages, so load
drift hits both alike. Each figure is given twice: **wall** (everything, worker start-up included)
and **steady** (throughput between the moment every worker has finished its first unit and the
last unit; start-up excluded), since start-up (spawning, importing torch) is a fixed cost that long
runs amortise.

Usage:
    python bench/bench_parallel.py              # full: 32 digits at n=10⁴; 16 units of ≥ 1 s
    python bench/bench_parallel.py --quick      # 8 digits at n=2,000; 8 units of ~0.5 s
    python bench/bench_parallel.py --part 2 --repeats 3
Prints only; writes nothing outside a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from geo_rs.parallel import ExecOptions  # noqa: E402
from geo_rs.smooth_data import mnist_digits  # noqa: E402
from geo_rs.smooth_model import model_source  # noqa: E402
from geo_rs.smooth_run import SmoothSettings, run_smoothing  # noqa: E402


def timed_run(n: int, inputs: int, options: ExecOptions, out: Path, batch_size: int) -> dict:
    """Certify ``inputs`` digits at n; wall time and steady-state throughput (units/s)."""
    data = mnist_digits("test")
    src = model_source(factory="geo_rs.smooth_models:mnist_cnn")
    settings = SmoothSettings("certify", n0=100, n=n, alpha=0.001, batch_size=batch_size, seed=0)
    stamps: list[float] = []
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    _, run, _ = run_smoothing(data, list(range(inputs)), {0.25: src}, settings, options, out=out,
                              on_result=lambda unit, result, secs: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    k = min(run.workers, len(stamps) - 1)
    steady = (len(stamps) - 1 - (k - 1)) / (stamps[-1] - stamps[k - 1]) if len(stamps) > k else float("nan")
    unit_s = sum(run.seconds.values()) / len(run.seconds)
    return {"wall": wall, "steady": steady, "unit_s": unit_s, "cpu_per_unit": cpu / inputs,
            "engine": run.engine, "workers": run.workers}


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (pool and LocalCluster workers): a figure
    that load from other users' jobs barely changes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def threaded_baseline(n: int, inputs: int, threads: int, batch_size: int) -> float:
    """One process, ``threads`` torch threads, Smooth.certify per digit (no execution layer)."""
    import torch

    from geo_rs import Smooth
    from geo_rs.smooth_models import mnist_cnn

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.from_numpy(mnist_digits("test").inputs(list(range(inputs))))
    smooth = Smooth(mnist_cnn().eval(), 10, 0.25)
    t0 = time.perf_counter()
    for i in range(inputs):
        smooth.certify(x[i : i + 1], n0=100, n=n, alpha=0.001, batch_size=batch_size, generator=i,
                       progress=False)
    wall = time.perf_counter() - t0
    torch.set_num_threads(before)
    return wall


def _abba(run_a, run_b, repeats: int) -> tuple[dict, dict]:
    """Run A and B as A B B A … (``repeats`` pairs) so that load drift hits both alike; mean figures."""
    a_runs, b_runs = [], []
    for k in range(repeats):
        first, second = (run_a, run_b) if k % 2 == 0 else (run_b, run_a)
        r1, r2 = first(k), second(k)
        a_runs.append(r1 if first is run_a else r2)
        b_runs.append(r2 if first is run_a else r1)

    def mean(runs: list[dict]) -> dict:
        return {k: (sum(r[k] for r in runs) / len(runs) if isinstance(runs[0][k], float) else runs[0][k])
                for k in runs[0]}

    return mean(a_runs), mean(b_runs)


def _line(name: str, r: dict, inputs: int) -> str:
    return (f"  {name:<28s} wall {r['wall']:7.2f} s ({inputs / r['wall']:6.2f} inputs/s)   steady "
            f"{r['steady']:6.2f} inputs/s   {r['unit_s']:.3f} s per unit in the worker   "
            f"{r['cpu_per_unit']:.3f} CPU s per unit (all processes, start-up included)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (default: full sizes)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads of the one-process alternative in part 1 (default: %(default)s)")
    ap.add_argument("--part", type=int, choices=(0, 1, 2), default=0,
                    help="run only part 1 or 2 (default: 0, both)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="pairs of runs per comparison, in A B B A order (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=400,
                    help="forward batch (samples; default %(default)s, as `geo-rs smooth certify`)")
    args = ap.parse_args(argv)
    n1, inputs1 = (2000, 8) if args.quick else (10_000, 32)
    n2, inputs2 = (5000, 8) if args.quick else (70_000, 16)  # ≥ 1 s units on a quiet 2-core box
    print(f"bench_parallel: loadavg {os.getloadavg()} cpus {os.cpu_count()} quick={args.quick}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.part in (0, 1):
            print(f"1) certify {inputs1} MNIST digits at n={n1:,} (mnist_cnn, batch {args.batch_size})",
                  flush=True)
            one, two = _abba(lambda k: timed_run(n1, inputs1, ExecOptions(workers=1), tmp / f"w1_{k}",
                                                 args.batch_size),
                             lambda k: timed_run(n1, inputs1, ExecOptions(workers=2), tmp / f"w2_{k}",
                                                 args.batch_size), args.repeats)
            print(_line("1 worker (this process)", one, inputs1), flush=True)
            print(_line("2 workers (local pool)", two, inputs1), flush=True)
            t_thr = threaded_baseline(n1, inputs1, args.threads, args.batch_size)
            print(f"  1 process, {args.threads} torch threads  wall {t_thr:7.2f} s "
                  f"({inputs1 / t_thr:6.2f} inputs/s)")
            print(f"  RATIO 2 workers / 1 worker: wall {one['wall'] / two['wall']:.2f}x, steady "
                  f"{two['steady'] / one['steady']:.2f}x (target >= 1.7x); vs {args.threads} threads: "
                  f"{t_thr / two['wall']:.2f}x", flush=True)
        if args.part in (0, 2):
            print(f"2) {inputs2} units of n={n2:,}: Dask LocalCluster (2 workers) vs local pool (2 workers)",
                  flush=True)
            pool, dask = _abba(
                lambda k: timed_run(n2, inputs2, ExecOptions(workers=2), tmp / f"pool_{k}", args.batch_size),
                lambda k: timed_run(n2, inputs2, ExecOptions(workers=2, cluster="local"), tmp / f"dask_{k}",
                                    args.batch_size), args.repeats)
            print(_line("local pool, 2 workers", pool, inputs2), flush=True)
            print(_line("Dask LocalCluster, 2 workers", dask, inputs2), flush=True)
            print(f"  RATIO Dask / pool time: wall {dask['wall'] / pool['wall']:.3f}, steady "
                  f"{pool['steady'] / dask['steady']:.3f}, compute per unit "
                  f"{dask['unit_s'] / pool['unit_s']:.3f} (overhead target <= 1.10; units of "
                  f"{pool['unit_s']:.2f} s)", flush=True)
    print(f"loadavg at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
