"""Benchmark: median-smoothing certification of a keypoint detector vs as many plain forward passes.

For each instance of a COCO/posed folder: (A) ``keypoint.rs_keypoints.certify_instance`` — n noisy images,
crop + network + decode (the pipeline ``geo-rs keypoint certify-rs`` runs), sort, certify every ε; (B) the
same pipeline on n clean copies in the same batch sizes, no noise, no statistics. A and B alternate per
instance (so load changes hit both); the ratio ΣA / ΣB is the overhead of certification (target ≤ 1.15).

Usage:
    python bench/bench_rs_keypoint.py CHECKPOINT --data runs/keypoint/posed_data/val --images 200 --n 1000
    python bench/bench_rs_keypoint.py CHECKPOINT --data DIR --quick       # 10 images, n = 200
"""
from __future__ import annotations

import argparse
import os
import time

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="keypoint checkpoint (last.pt)")
    p.add_argument("--data", required=True, help="COCO folder (annotations.json, images/)")
    p.add_argument("--images", type=int, default=200, help="instances (default 200)")
    p.add_argument("--n", type=int, default=1000, help="noisy samples per instance (default 1000)")
    p.add_argument("--batch-size", type=int, default=1000, help="forward batch (default 1000)")
    p.add_argument("--sigma", type=float, default=0.1, help="noise std (default 0.1)")
    p.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2], help="radii certified")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--quick", action="store_true", help="10 instances, n = 200")
    args = p.parse_args()
    if args.quick:
        args.images, args.n = 10, 200
    torch.set_num_threads(args.threads)
    model, ck = load_checkpoint(args.checkpoint)
    data = load_coco(f"{args.data}/annotations.json")
    data.samples = data.samples[: args.images]
    size = int(ck["input_size"])
    items = instance_inputs(data, KeypointLayout.from_dict(ck["layout"]), size, float(ck["padding"]))
    t_rs = t_plain = 0.0
    for i, inst in enumerate(items):
        f = CropKeypoints(model, inst.affine, tuple(inst.image.shape[1:]), size, inst.channels).eval()
        t0 = time.perf_counter()
        certify_instance(model, inst, size, args.eps, args.sigma, args.n, 0.001, args.batch_size, seed=i)
        t1 = time.perf_counter()
        plain_passes(f, inst.image, args.n, args.batch_size)
        t2 = time.perf_counter()
        t_rs, t_plain = t_rs + t1 - t0, t_plain + t2 - t1
        print(f"instance {i + 1}/{len(items)}: certify {t1 - t0:.2f} s, plain {t2 - t1:.2f} s, running ratio "
              f"{t_rs / t_plain:.3f}", flush=True)
    load = os.getloadavg()
    print(f"{len(items)} instances, n = {args.n}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{len(args.eps)} ε per sample set; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"certify (noise + forward + sort + {len(args.eps)} certificates): {t_rs:.1f} s "
          f"({1000 * t_rs / len(items):.0f} ms/instance)")
    print(f"plain forward passes (same count, same batches):      {t_plain:.1f} s "
          f"({1000 * t_plain / len(items):.0f} ms/instance)")
    print(f"ratio certify / plain = {t_rs / t_plain:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
