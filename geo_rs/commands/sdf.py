"""geo-rs sdf: weak (certified) SDF of a mesh, a built-in shape or an occupancy grid.

Outputs in --out DIR:
  sdf.npy      the weak SDF, float32 (X, Y, Z), world units, positive inside
  grid.json    origin, voxel_size, shape, σ (voxels and world) and the index convention
  sdf.npz      the same as a geo_rs.VoxelGrid file (VoxelGrid.load)
  mesh.ply     marching cubes of the weak SDF at level 0 (world coordinates, outward normals)
  slices.png   three axis cuts of the weak SDF with the zero level in black
  report.json  timings, |weak SDF − exact SDF| in a band around the surface (voxels) and mesh
               metrics of mesh.ply against the input mesh (Chamfer-L1, normal consistency, F-score)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

GRID_SUFFIXES = (".npy", ".npz")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the description's layout and show defaults."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sdf", help="weak (certified) SDF of a mesh or built-in shape, with mesh, slices and report",
        description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("input", metavar="INPUT",
                   help="mesh file (PLY/OBJ/STL/OFF/GLB), occupancy grid (.npy in [0,1] or VoxelGrid .npz), "
                        "or a built-in shape: sphere, torus, parts, box")
    p.add_argument("--res", type=int, default=128,
                   help="voxels along the longest side, padding included (≥ 8)")
    p.add_argument("--sigma", type=float, default=1.5, help="Gaussian smoothing std in VOXELS (> 0)")
    p.add_argument("--out", type=Path, default=Path("runs/sdf"), help="output directory (created)")
    p.add_argument("--padding", type=int, default=None,
                   help="empty voxels around the shape on each side; unset: max(2, ceil(2σ)), "
                        "less on tiny grids")
    p.add_argument("--band", type=float, default=2.0,
                   help="error band half-width in voxels: voxels with |exact SDF| ≤ band are compared")
    p.add_argument("--points", type=int, default=100_000, help="surface samples per mesh for the metrics")
    p.add_argument("--voxel-size", type=float, default=None,
                   help="voxel size for a .npy occupancy INPUT (default: 1 / its largest dimension)")
    p.add_argument("--kernel", choices=("integrated", "sampled"), default="integrated",
                   help="blur taps: Gaussian integrated over voxels (exact for box voxels) or point-sampled")
    p.add_argument("--seed", type=int, default=0, help="seed of the surface sampling for the metrics")
    p.set_defaults(func=run)


def _validate(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.sigma) and args.sigma > 0):
        raise UserError(f"--sigma must be a finite number > 0 (voxels), got {args.sigma}")
    if args.res < 8:
        raise UserError(f"--res must be ≥ 8, got {args.res}")
    if args.res > 1024:
        raise UserError(f"--res {args.res} is too large (≤ 1024; 512³ float32 is already 0.5 GB)")
    if args.padding is not None and args.padding < 0:
        raise UserError(f"--padding must be ≥ 0, got {args.padding}")
    if not (args.band > 0):
        raise UserError(f"--band must be > 0 voxels, got {args.band}")
    if args.points < 100:
        raise UserError(f"--points must be ≥ 100, got {args.points}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a directory")


def _load_grid_input(path: Path, args: argparse.Namespace):
    """An occupancy grid given directly: .npz written by VoxelGrid.save, or a bare .npy array."""
    from ..grid import VoxelGrid

    if not path.is_file():
        raise UserError(f"grid file not found: {path}")
    if path.suffix == ".npz":
        grid = VoxelGrid.load(path)
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read occupancy grid {path}: {exc}") from None
        if arr.ndim != 3 or min(arr.shape) < 2:
            raise UserError(f"occupancy grid {path} must be a 3-D array (X, Y, Z); got shape {arr.shape}")
        h = args.voxel_size if args.voxel_size is not None else 1.0 / max(arr.shape)
        grid = VoxelGrid(torch.from_numpy(np.asarray(arr, dtype=np.float32)), (0.0, 0.0, 0.0), h)
    v = grid.values
    if not torch.isfinite(v).all():
        raise UserError(f"occupancy grid {path} contains NaN/inf values")
    if v.numel() and (float(v.min()) < 0 or float(v.max()) > 1):
        raise UserError(f"occupancy grid {path} must lie in [0, 1]; "
                        f"got [{float(v.min()):.4g}, {float(v.max()):.4g}]")
    if min(grid.shape) < 8:
        raise UserError(f"occupancy grid {path} is too small: shape {grid.shape} (≥ 8 per axis)")
    return grid.to(dtype=torch.float32)


def _band_candidates(occ: np.ndarray, reach: float) -> np.ndarray:
    """Voxels within ``reach`` voxels of an occupancy change (a superset of the |SDF| ≤ band set)."""
    from scipy import ndimage

    inside = occ > 0.5
    boundary = inside ^ ndimage.binary_erosion(inside, border_value=0)
    boundary |= ~inside & ndimage.binary_dilation(inside)
    if not boundary.any():
        return boundary
    return ndimage.distance_transform_edt(~boundary) <= reach


def run(args: argparse.Namespace) -> int:
    from ..marching import export_mesh, extract_mesh
    from ..mesh_scores import mesh_metrics
    from ..meshes import load_mesh, mesh_name, mesh_sdf, occupancy_grid
    from ..plots import plot_sdf_slices
    from ..radius import max_radius_sigmas
    from ..sdf import weak_sdf

    _validate(args)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 4)
        print(f"  {name:<14s} {timings[name]:8.3f} s", file=sys.stderr)

    src = Path(args.input)
    is_grid = src.suffix.lower() in GRID_SUFFIXES
    print(f"geo-rs sdf: {args.input} res={args.res} σ={args.sigma} voxels → {args.out}", file=sys.stderr)
    t0 = time.perf_counter()
    if is_grid:
        mesh = None
        occ = _load_grid_input(src, args)
        stage("load", t0)
    else:
        mesh = load_mesh(args.input)
        stage("load", t0)
        if args.padding is not None:
            padding = args.padding
        else:  # 2σ of empty margin, shrunk on tiny grids so that a few voxels remain for the shape
            padding = max(0, min(max(2, math.ceil(2 * args.sigma)), (args.res - 5) // 2))
        if args.res - 1 - 2 * padding < 4:
            raise UserError(f"--res {args.res} leaves fewer than 4 voxels inside --padding {padding}")
        t0 = time.perf_counter()
        occ = occupancy_grid(mesh, args.res, padding_voxels=padding)
        stage("occupancy", t0)
    if float(occ.values.max()) <= 0:
        raise UserError(f"{args.input}: the occupancy grid is empty (no voxel centre inside the shape); "
                        "raise --res or check the mesh")

    h = occ.voxel_size
    t0 = time.perf_counter()
    sdf_t = weak_sdf(occ.values, args.sigma, h, kernel=args.kernel)
    stage("weak_sdf", t0)
    if not torch.isfinite(sdf_t).all():  # cannot happen for valid occupancy; never write NaN silently
        raise UserError("weak SDF has non-finite values")
    sdf = occ.with_values(sdf_t)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    np.save(out / "sdf.npy", sdf_t.numpy().astype(np.float32))
    sdf.save(out / "sdf.npz")
    grid_info = {
        "origin": [float(v) for v in sdf.origin.tolist()], "voxel_size": h, "shape": list(sdf.shape),
        "sigma_voxels": args.sigma, "sigma_world": args.sigma * h, "kernel": args.kernel,
        "convention": "sdf[i,j,k] is the weak SDF at world point origin + voxel_size*(i,j,k); "
                      "positive inside, world units",
        "max_abs_value": max_radius_sigmas(torch.float32) * args.sigma * h,
    }
    (out / "grid.json").write_text(json.dumps(grid_info, indent=2))
    stage("save_grid", t0)

    t0 = time.perf_counter()
    smoothed_empty = float(sdf_t.max()) <= 0
    pred = None
    if smoothed_empty:
        print(f"  warning: σ={args.sigma} voxels smooths the whole shape away (weak SDF < 0 everywhere); "
              "no mesh written", file=sys.stderr)
        (out / "mesh.ply").unlink(missing_ok=True)  # never leave a stale mesh from an earlier run
    else:
        pred = extract_mesh(sdf, 0.0)
        export_mesh(pred, out / "mesh.ply")
    stage("marching_cubes", t0)

    t0 = time.perf_counter()
    title = (f"weak SDF of {Path(str(args.input)).name}: res {args.res}, "
             f"σ = {args.sigma} voxels ({args.sigma * h:.4g} world)")
    plot_sdf_slices(sdf, out / "slices.png", title=title)
    stage("slices_png", t0)

    report: dict = {
        "input": str(args.input), "res": args.res, "sigma_voxels": args.sigma, "sigma_world": args.sigma * h,
        "voxel_size": h, "shape": list(sdf.shape), "kernel": args.kernel,
        "mesh_faces": int(len(pred.faces)) if pred is not None else 0,
        "weak_sdf_range": [float(sdf_t.min()), float(sdf_t.max())],
    }
    if mesh is not None:
        t0 = time.perf_counter()
        cand = _band_candidates(occ.values.numpy(), args.band + 2.0)
        idx = np.nonzero(cand)
        pts = sdf.centers()[idx].reshape(-1, 3)
        exact = mesh_sdf(mesh, pts).numpy() / h                  # voxels
        weak = sdf_t.numpy()[idx] / h
        in_band = np.abs(exact) <= args.band
        err = np.abs(weak[in_band] - exact[in_band])
        report["band_error_voxels"] = {
            "band_half_width_voxels": args.band,
            "definition": "voxel centres with |exact SDF| ≤ band; |weak SDF − exact SDF| in voxels",
            "n_voxels": int(in_band.sum()),
            "mean_abs": float(err.mean()) if err.size else None,
            "max_abs": float(err.max()) if err.size else None,
            "sign_disagreement_fraction": float(np.mean(np.sign(weak[in_band]) != np.sign(exact[in_band])))
            if err.size else None,
        }
        stage("exact_sdf_band", t0)
        t0 = time.perf_counter()
        if pred is not None:
            metrics = mesh_metrics(pred, mesh, n_points=args.points, seed=args.seed)
            report["mesh_metrics"] = {"vs": mesh_name(mesh), "n_points": args.points,
                                      "fscore_threshold_definition":
                                          "1% of the input mesh's bounding-box diagonal",
                                      **metrics}
        else:
            report["mesh_metrics"] = None
        stage("mesh_metrics", t0)
    else:
        report["band_error_voxels"] = None
        report["mesh_metrics"] = None
        report["note"] = "INPUT is a grid: no exact SDF or reference mesh, so no error band or mesh metrics"
    timings["total"] = round(time.perf_counter() - t_all, 4)
    report["timings_s"] = timings
    (out / "report.json").write_text(json.dumps(report, indent=2))

    be, mm = report.get("band_error_voxels"), report.get("mesh_metrics")
    written = ["sdf.npy", "grid.json", "sdf.npz"] + (["mesh.ply"] if pred is not None else []) + \
        ["slices.png", "report.json"]
    print(f"wrote {out}/{{{', '.join(written)}}} in {timings['total']:.2f} s")
    if be and be["mean_abs"] is not None:
        print(f"  |weak − exact| within ±{args.band:g} voxels of the surface: mean {be['mean_abs']:.3f}, "
              f"max {be['max_abs']:.3f} voxels ({be['n_voxels']} voxels)")
    if mm:
        print(f"  mesh vs input: Chamfer-L1 {mm['chamfer_l1']:.4g}, normal consistency "
              f"{mm['normal_consistency']:.3f}, F-score@1% {mm['fscore']:.3f}")
    return 0
