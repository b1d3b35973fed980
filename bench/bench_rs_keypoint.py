"""Benchmark: median-smoothing certification of a keypoint (or box) detector vs as many plain forward passes.

For each instance of a COCO/posed folder: (A) ``keypoint.rs_keypoints.certify_instance`` — n noisy images,
crop + network + decode (the pipeline ``geo-rs keypoint certify-rs`` runs), sort, certify every ε; (B) the
same pipeline on n clean copies in the same batch sizes, no noise, no statistics. A and B alternate per
instance (so load changes hit both); the ratio ΣA / ΣB is the overhead of certification (target ≤ 1.15).

``--box WEIGHTS``: the same for the box detector of ``geo-rs box verify --certifier median-smoothing``
(``keypoint.box.rs.rs_records``: n noisy canvases, sort, every (perturbation, ε) of the paper grid →
certified corner intervals → IoU bounds, both extensions) vs n plain passes, on MNIST test canvases.

Usage:
    python bench/bench_rs_keypoint.py CHECKPOINT --data runs/keypoint/posed_data/val --images 200 --n 1000
    python bench/bench_rs_keypoint.py CHECKPOINT --data DIR --quick       # 10 images, n = 200
    python bench/bench_rs_keypoint.py --box runs/box/mnist_box.pt --images 200 --n 1000 --sigma 0.25
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial

import torch

from keypoint.checkpoints import load_checkpoint
from keypoint.data.coco import load_coco
from keypoint.data.dataset import KeypointLayout
from keypoint.rs_keypoints import CropKeypoints, certify_instance, instance_inputs


def plain_passes(f, image: torch.Tensor, n: int, batch_size: int) -> None:
    done = 0
    with torch.no_grad():
        while done < n:
            k = min(batch_size, n - done)
            f(image[None].expand(k, -1, -1, -1).contiguous())
            done += k


def noisy_passes(f, image: torch.Tensor, n: int, batch_size: int, sigma: float, seed: int) -> float:
    """Seconds of ``f`` on n noisy copies drawn *before* the clock starts (``--noisy-baseline``): forward
    speed can depend on the data (max-pooling / ReLU on noise vs on a mostly blank canvas), which a
    baseline of clean copies misses."""
    gen = torch.Generator().manual_seed(seed)
    seconds = 0.0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            k = min(batch_size, n - start)
            batch = image[None] + sigma * torch.randn((k, *image.shape), generator=gen)
            t0 = time.perf_counter()
            f(batch)
            seconds += time.perf_counter() - t0
    return seconds


def alternate(units, total: int, args) -> tuple[float, float, int, float]:
    """Time ``(certify, plain[, noisy])`` callables alternately → (Σ certify s, Σ plain s, instances done,
    Σ noisy-baseline s); ``noisy`` returns its own seconds."""
    t_rs = t_plain = t_noisy = 0.0
    done = 0
    for done, (certify, plain, *noisy) in enumerate(units, 1):
        t0 = time.perf_counter()
        certify()
        t1 = time.perf_counter()
        plain()
        t2 = time.perf_counter()
        t_rs, t_plain = t_rs + t1 - t0, t_plain + t2 - t1
        extra = ""
        if noisy:
            t_noisy += noisy[0]()
            extra = f", vs noisy-input passes {t_rs / t_noisy:.3f}"
        print(f"instance {done}/{total}: certify {t1 - t0:.2f} s, plain {t2 - t1:.2f} s, running ratio "
              f"{t_rs / t_plain:.3f}{extra}", flush=True)
        if out_of_time(args):
            break
    return t_rs, t_plain, done, t_noisy


def keypoint_times(args) -> tuple[float, float, int, float]:
    """(Σ certify seconds, Σ plain seconds, instances) of the keypoint pipeline."""
    model, ck = load_checkpoint(args.checkpoint)
    data = load_coco(f"{args.data}/annotations.json")
    data.samples = data.samples[: args.images]
    size = int(ck["input_size"])
    items = instance_inputs(data, KeypointLayout.from_dict(ck["layout"]), size, float(ck["padding"]))

    def pairs():
        for i, inst in enumerate(items):
            f = CropKeypoints(model, inst.affine, tuple(inst.image.shape[1:]), size, inst.channels).eval()
            yield (partial(certify_instance, model, inst, size, args.eps, args.sigma, args.n, 0.001,
                           args.batch_size, seed=i),
                   partial(plain_passes, f, inst.image, args.n, args.batch_size))

    return alternate(pairs(), len(items), args)


def box_times(args) -> tuple[float, float, int, float]:
    """(Σ certify seconds, Σ plain seconds, images) of ``box verify --certifier median-smoothing``."""
    from keypoint.box.data import mnist_canvas
    from keypoint.box.model import load_detector
    from keypoint.box.rs import rs_records
    from keypoint.box.verify import PAPER_EPS, VerifyConfig

    model, _ = load_detector(args.box)
    images, boxes, _ = mnist_canvas(args.images, "test", seed=0)
    config = VerifyConfig(certifiers=["median-smoothing"], sigma=args.sigma, n=args.n, alpha=0.001,
                          rs_batch_size=args.batch_size)
    grid = {p: list(v) for p, v in PAPER_EPS.items()}
    args.eps = [e for v in grid.values() for e in v]
    def units():
        for i in range(len(images)):
            unit = (partial(rs_records, model, images[i], boxes[i], grid, config, seed=i),
                    partial(plain_passes, model, images[i], args.n, args.batch_size))
            if args.noisy_baseline:
                unit += (partial(noisy_passes, model, images[i], args.n, args.batch_size, args.sigma, i),)
            yield unit

    return alternate(units(), len(images), args)


def out_of_time(args) -> bool:
    """``--time-limit``: stop after the instance that crosses it (the ratio covers the finished ones)."""
    return args.time_limit > 0 and time.perf_counter() - args.started > args.time_limit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=None, help="keypoint checkpoint (last.pt)")
    p.add_argument("--data", default=None, help="COCO folder (annotations.json, images/) of the keypoint run")
    p.add_argument("--box", default=None, metavar="WEIGHTS",
                   help="box detector weights ('geo-rs box train'): time box certification on MNIST test "
                        "canvases instead (default: keypoints)")
    p.add_argument("--images", type=int, default=200, help="instances (default 200)")
    p.add_argument("--n", type=int, default=1000, help="noisy samples per instance (default 1000)")
    p.add_argument("--batch-size", type=int, default=1000, help="forward batch (default 1000)")
    p.add_argument("--sigma", type=float, default=0.1, help="noise std (default 0.1)")
    p.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2],
                   help="radii certified (keypoints; boxes: the paper grid, 33 values)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--time-limit", type=float, default=0.0,
                   help="stop after this many seconds and report the instances done (seconds; 0: none; "
                        "default 0)")
    p.add_argument("--noisy-baseline", action="store_true",
                   help="--box: also time the forward passes alone on noisy copies drawn outside the clock "
                        "(default: off)")
    p.add_argument("--quick", action="store_true", help="10 instances, n = 200")
    args = p.parse_args()
    if (args.box is None) == (args.checkpoint is None) or (args.checkpoint is not None and not args.data):
        p.error("give CHECKPOINT --data DIR (keypoints) or --box WEIGHTS (boxes)")
    if args.quick:
        args.images, args.n = 10, 200
    torch.set_num_threads(args.threads)
    args.started = time.perf_counter()
    t_rs, t_plain, count, t_noisy = box_times(args) if args.box else keypoint_times(args)
    load = os.getloadavg()
    print(f"{'box' if args.box else 'keypoint'}: {count} instances, n = {args.n}, batch {args.batch_size}, "
          f"σ = {args.sigma:g}, {args.threads} thread(s), {len(args.eps)} ε per sample set; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"certify (noise + forward + sort + {len(args.eps)} certificates): {t_rs:.1f} s "
          f"({1000 * t_rs / count:.0f} ms/instance)")
    print(f"plain forward passes (same count, same batches):      {t_plain:.1f} s "
          f"({1000 * t_plain / count:.0f} ms/instance)")
    if t_noisy:
        print(f"forward passes alone on noisy inputs (noise drawn outside the clock): {t_noisy:.1f} s "
              f"({1000 * t_noisy / count:.0f} ms/instance); certify / noisy-input passes = "
              f"{t_rs / t_noisy:.3f}")
    print(f"ratio certify / plain = {t_rs / t_plain:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
