"""Benchmark: geo_rs.extract_mesh vs calling scikit-image's marching cubes directly on the same grid.

Goal (issue 14): extract_mesh ≤ 1.1 × the time of ``skimage.measure.marching_cubes`` on the same
float32 grid with the same arguments (level, spacing, non-degenerate faces). Also times the
implementation before issue 14 (a float64 copy that scikit-image converts back to float32, faces
reversed and copied, ``trimesh.Trimesh(process=True)``) for reference. Calls are interleaved so load
changes hit every variant alike; median [min] seconds. Writes nothing.

    python bench/bench_mesh.py [--res 128 256] [--repeats 7] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def _ball_grid(n: int):
    from geo_rs import VoxelGrid

    g = VoxelGrid.around((-1, -1, -1), (1, 1, 1), res=n, padding_voxels=2)
    c = g.centers()
    # a bumpy ball: many triangles, like a trained weak SDF
    r = c.norm(dim=-1)
    bumps = 0.08 * torch.sin(9 * c[..., 0]) * torch.sin(7 * c[..., 1]) * torch.sin(8 * c[..., 2])
    return g.with_values((0.7 + bumps - r).float())


def _old_extract(grid, level: float = 0.0):
    """extract_mesh as it was before issue 14 (for the reference column)."""
    import trimesh
    from skimage.measure import marching_cubes

    vol = grid.values.detach().cpu().double().numpy()
    if not np.isfinite(vol).all():
        raise ValueError("NaN")
    h = grid.voxel_size
    verts, faces, _, _ = marching_cubes(vol, level=level, spacing=(h, h, h), allow_degenerate=False)
    verts = verts + grid.origin.detach().cpu().double().numpy()
    return trimesh.Trimesh(vertices=verts, faces=np.ascontiguousarray(faces[:, ::-1]), process=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--res", type=int, nargs="+", default=[128, 256], help="grid sizes (voxels; default 128 256)"
    )
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per variant (default 7)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="res 96 128, 3 repeats")
    args = ap.parse_args()
    if args.quick:
        args.res, args.repeats = [96, 128], 3
    if args.threads:
        torch.set_num_threads(args.threads)
    from skimage.measure import marching_cubes

    from geo_rs import extract_mesh

    load = os.getloadavg()[0]
    print(
        f"torch threads {torch.get_num_threads()}, load average {load:.2f}, repeats {args.repeats} "
        "(median [min] seconds; calls interleaved)"
    )
    print(
        f"{'grid':>6} {'faces':>9} {'skimage direct':>16} {'extract_mesh':>16} {'ratio':>6} "
        f"{'before #14':>16} {'ratio':>6}"
    )
    worst = 0.0
    for n in args.res:
        grid = _ball_grid(n)
        h = grid.voxel_size
        vol = grid.values.numpy()
        variants = {
            "skimage": lambda vol=vol, h=h: marching_cubes(
                vol, 0.0, spacing=(h, h, h), gradient_direction="ascent", allow_degenerate=False
            ),
            "extract": lambda grid=grid: extract_mesh(grid, 0.0),
            "old": lambda grid=grid: _old_extract(grid, 0.0),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        low = {k: min(v) for k, v in times.items()}
        faces = len(extract_mesh(grid, 0.0).faces)
        ratio, ratio_old = med["extract"] / med["skimage"], med["old"] / med["skimage"]
        worst = max(worst, ratio)
        print(
            f"{n:>5}³ {faces:>9} {med['skimage']:9.3f} [{low['skimage']:.3f}] "
            f"{med['extract']:9.3f} [{low['extract']:.3f}] {ratio:6.2f} "
            f"{med['old']:9.3f} [{low['old']:.3f}] {ratio_old:6.2f}",
            flush=True,
        )
    verdict = "MET" if worst <= 1.1 else "NOT MET"
    print(f"worst ratio extract_mesh / scikit-image: {worst:.2f} (goal <= 1.1) -> {verdict}")


if __name__ == "__main__":
    main()
