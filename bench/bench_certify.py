"""Benchmark: ``Smooth.certify`` vs the same number of plain forward passes of the base CNN.

Baseline (measured in the same run): ``images × (n0 + n)`` forward evaluations of the same CNN, in
batches of the same size, under ``torch.inference_mode``, on inputs made once before timing (no noise,
no argmax, no counting). The ratio certify / baseline is the price of smoothing; goal ≤ 1.15×.
The two are timed interleaved, image by image, so machine-load drift hits both alike.

With ``--cli`` the same comparison runs through ``geo-rs smooth certify`` in a subprocess (one
worker, one torch thread, per-input units, result files, TSV and plots): the per-input time column
of certify.tsv and the command's whole wall time are compared with plain forwards on one thread
(goal: per input within 1.1×).

Usage:
    python bench/bench_certify.py                       # full size: n0=100, n=100,000, 2 images
    python bench/bench_certify.py --n 5000 --images 2   # quick
    python bench/bench_certify.py --profile             # also time noise drawing alone
    python bench/bench_certify.py --cli --n 20000 --images 4   # through the CLI

Prints only; writes nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from geo_rs import Smooth


def make_cnn(num_classes: int = 10) -> nn.Module:
    """A CIFAR-sized CNN with ~1.0 M parameters (most in the first dense layer)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32×16×16
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 64×8×8
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 128×4×4
        nn.Flatten(), nn.Linear(128 * 4 * 4, 448), nn.ReLU(), nn.Linear(448, num_classes),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def plain_forwards(model: nn.Module, inputs: torch.Tensor, total: int) -> None:
    """``total`` forward evaluations in batches of ``len(inputs)`` (last one partial)."""
    batch = len(inputs)
    done = 0
    while done < total:
        size = min(batch, total - done)
        model(inputs[:size])
        done += size


@torch.inference_mode()
def noise_only(inputs: torch.Tensor, x: torch.Tensor, total: int, sigma: float, gen: torch.Generator) -> None:
    batch = len(inputs)
    done = 0
    while done < total:
        size = min(batch, total - done)
        inputs[:size].normal_(generator=gen).mul_(sigma).add_(x)
        done += size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="also time the noise draw alone")
    parser.add_argument("--cli", action="store_true",
                        help="measure through `geo-rs smooth certify` (one worker, one thread)")
    args = parser.parse_args(argv)
    if args.cli:
        return cli_benchmark(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_cnn().to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    images = torch.rand(args.images, 3, 32, 32, device=device)
    premade = torch.rand(args.batch_size, 3, 32, 32, device=device)
    smooth = Smooth(model, num_classes=10, sigma=args.sigma)
    per_image = args.n0 + args.n
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"device={device} threads={torch.get_num_threads()} cnn_params={params:,} batch={args.batch_size} "
          f"n0={args.n0} n={args.n} images={args.images} loadavg={load}", flush=True)

    # warm-up (allocator, kernels, cuDNN autotune) on a small run of each
    smooth.certify(images[:1], n0=10, n=2 * args.batch_size, alpha=0.001, batch_size=args.batch_size,
                   generator=0, progress=False)
    plain_forwards(model, premade, 2 * args.batch_size)
    _sync(device)

    t_certify = t_plain = 0.0
    cpu = {"certify": 0.0, "plain": 0.0}  # process CPU seconds: less sensitive to other users' load

    def time_certify(i: int) -> tuple[float, object]:
        start, start_cpu = time.perf_counter(), time.process_time()
        cert = smooth.certify(images[i : i + 1], n0=args.n0, n=args.n, alpha=0.001,
                              batch_size=args.batch_size, generator=i, progress=False)
        _sync(device)
        cpu["certify"] += time.process_time() - start_cpu
        return time.perf_counter() - start, cert

    def time_plain() -> float:
        start, start_cpu = time.perf_counter(), time.process_time()
        plain_forwards(model, premade, per_image)
        _sync(device)
        cpu["plain"] += time.process_time() - start_cpu
        return time.perf_counter() - start

    for i in range(args.images):
        # alternate which goes first, so a load change during the run hits both sides alike
        if i % 2 == 0:
            t_c, cert = time_certify(i)
            t_p = time_plain()
        else:
            t_p = time_plain()
            t_c, cert = time_certify(i)
        t_certify += t_c
        t_plain += t_p
        print(f"image {i}: certify {t_c:.2f} s, plain {t_p:.2f} s, ratio {t_c / t_p:.3f}  "
              f"(prediction {cert.prediction.item()}, radius {cert.radius.item():.3f})", flush=True)
    print(f"TOTAL certify {t_certify:.2f} s vs plain forwards {t_plain:.2f} s "
          f"({args.images * per_image:,} evaluations each): ratio {t_certify / t_plain:.3f} (goal <= 1.15)")
    print(f"CPU time: certify {cpu['certify']:.2f} s vs plain {cpu['plain']:.2f} s: "
          f"ratio {cpu['certify'] / cpu['plain']:.3f}")
    print(f"throughput: certify {args.images * per_image / t_certify:,.0f} samples/s, "
          f"plain {args.images * per_image / t_plain:,.0f} samples/s")
    if args.profile:
        gen = torch.Generator(device=device).manual_seed(0)
        buffer = torch.empty_like(premade)
        start = time.perf_counter()
        noise_only(buffer, images[0], args.images * per_image, args.sigma, gen)
        _sync(device)
        t_noise = time.perf_counter() - start
        print(f"profile: noise draw alone {t_noise:.2f} s = {t_noise / t_plain:.3f} of the plain forwards")
    return 0


def cli_benchmark(args: argparse.Namespace) -> int:
    """``geo-rs smooth certify`` on ``args.images`` random CIFAR-sized inputs vs plain forwards."""
    import numpy as np

    torch.set_num_threads(1)  # the CLI's worker runs one torch thread
    torch.manual_seed(0)
    model = make_cnn().eval()
    per_image = args.n0 + args.n
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save(model.state_dict(), tmp / "cnn.pt")
        rng = np.random.default_rng(0)
        np.savez(tmp / "inputs.npz", x=rng.random((args.images, 3, 32, 32), dtype=np.float32),
                 y=rng.integers(0, 10, args.images))
        cmd = [sys.executable, "-m", "geo_rs.cli", "smooth", "certify", "--model-factory",
               "bench_certify:make_cnn", "--weights", str(tmp / "cnn.pt"), "--data", str(tmp / "inputs.npz"),
               "--sigma", str(args.sigma), "--n0", str(args.n0), "--n", str(args.n), "--batch-size",
               str(args.batch_size), "--workers", "1", "--out", str(tmp / "out"), "--quiet"]
        premade = torch.rand(args.batch_size, 3, 32, 32)
        plain_forwards(model, premade, 2 * args.batch_size)  # warm-up
        print(f"cli: threads=1 images={args.images} n0={args.n0} n={args.n} batch={args.batch_size} "
              f"loadavg={os.getloadavg()}", flush=True)
        t_plain = []
        start = time.perf_counter()
        for _ in range(args.images):
            t0 = time.perf_counter()
            plain_forwards(model, premade, per_image)
            t_plain.append(time.perf_counter() - t0)
        t_plain_1 = time.perf_counter() - start
        start = time.perf_counter()
        here = os.path.dirname(os.path.abspath(__file__))  # the factory module is this file
        proc = subprocess.run(cmd, cwd=here, capture_output=True, text=True)
        t_cli = time.perf_counter() - start
        if proc.returncode:
            print(proc.stderr)
            return proc.returncode
        start = time.perf_counter()  # plain again after: load drift hits both sides
        for _ in range(args.images):
            plain_forwards(model, premade, per_image)
        t_plain_2 = time.perf_counter() - start
        rows = json.loads((tmp / "out" / "results.json").read_text())["sigmas"][f"{args.sigma:g}"]["rows"]
    plain = (t_plain_1 + t_plain_2) / 2 / args.images
    per_input = sum(r["time"] for r in rows) / len(rows)
    print(f"plain forwards {plain:.3f} s per input ({per_image:,} samples; before/after {t_plain_1:.2f} / "
          f"{t_plain_2:.2f} s)")
    print(f"geo-rs smooth certify: {per_input:.3f} s per input (time column), whole command {t_cli:.2f} s "
          f"for {args.images} inputs ({t_cli / args.images:.3f} s per input, start-up included)")
    print(f"RATIO per input (time column) / plain: {per_input / plain:.3f} (goal <= 1.1); whole command / "
          f"plain: {t_cli / args.images / plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
