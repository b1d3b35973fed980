"""geo-rs sdf: weak (certified) SDF of a mesh, a built-in shape or an occupancy grid.

Outputs in --out DIR:
  sdf.npy      the weak SDF, float32 (X, Y, Z), world units, positive inside
  grid.json    origin, voxel_size, shape, σ (voxels and world) and the index convention
  sdf.npz      the same as a geo_rs.VoxelGrid file (VoxelGrid.load)
  mesh.ply     marching cubes of the weak SDF at level 0 (world coordinates, outward normals)
  slices.png   three axis cuts of the weak SDF with the zero level in black
  report.json  timings, |weak SDF − exact SDF| in a band around the surface (voxels) and mesh
               metrics of mesh.ply against the input mesh (Chamfer-L1, normal consistency, F-score)

A mesh INPUT must be closed: an open one is closed by filling its holes first, and the console and
report.json ("repair") say so. A grid INPUT is used at its own resolution: --res, --padding, --band
and --points apply to meshes only and are refused for grids.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ..checks import count, positive_finite
from ..errors import UserError

GRID_SUFFIXES = (".npy", ".npz")
DEFAULT_RES = 128
DEFAULT_BAND = 2.0
DEFAULT_POINTS = 100_000
# Peak bytes a voxel of the mesh pipeline: float64 voxel centres for the occupancy query, occupancy,
# blur buffers, weak SDF, the band's distance transform (float64) and the slices' float64 copy.
BYTES_PER_VOXEL = 64


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sdf", help="weak (certified) SDF of a mesh or built-in shape, with mesh, slices and report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT",
                   help="mesh file (PLY/OBJ/STL/OFF/GLB), occupancy grid (.npy in [0,1] or VoxelGrid .npz), "
                        "or a built-in shape: sphere, torus, parts, box")
    p.add_argument("--res", type=int, default=None,
                   help="voxels along the longest side, padding included "
                        f"(voxels, >= 8; default {DEFAULT_RES}); mesh INPUT only: a grid INPUT keeps its "
                        "own shape")
    p.add_argument("--sigma", type=float, default=1.5,
                   help="Gaussian smoothing std (voxels, > 0; default 1.5)")
    p.add_argument("--out", type=Path, default=Path("runs/sdf"),
                   help="output folder, created (default runs/sdf)")
    p.add_argument("--padding", type=int, default=None,
                   help="empty voxels around the shape on each side (voxels, >= 0; default max(2, ceil(2σ)), "
                        "less on tiny grids); mesh INPUT only")
    p.add_argument("--band", type=float, default=None,
                   help="error band half-width: voxel centres with |exact SDF| <= band are compared (voxels, "
                        f"> 0; default {DEFAULT_BAND:g}); mesh INPUT only")
    p.add_argument("--points", type=int, default=None,
                   help="surface samples per mesh for the metrics "
                        f"(points, >= 100; default {DEFAULT_POINTS}); mesh INPUT only")
    p.add_argument("--voxel-size", type=float, default=None,
                   help="voxel size of a bare .npy occupancy INPUT (world units, > 0; "
                        "default 1 / its largest dimension); a .npz grid carries its own, a mesh's follows "
                        "from --res")
    p.add_argument("--kernel", choices=("integrated", "sampled"), default="integrated",
                   help="blur taps: 'integrated' (the Gaussian integrated over each voxel, exact for box "
                        "voxels) or 'sampled' (point-sampled, scipy's) (default integrated)")
    p.add_argument("--seed", type=int, default=0, help="seed of the surface sampling for the metrics "
                                                       "(>= 0; default 0)")
    p.set_defaults(func=run)


# -- arguments ---------------------------------------------------------------------------------------
def _validate(args: argparse.Namespace, src: Path) -> bool:
    """Check every option against the kind of INPUT; returns whether INPUT is a grid file."""
    from ..config import check_memory

    is_grid = src.suffix.lower() in GRID_SUFFIXES
    positive_finite("--sigma", args.sigma, "voxels")
    count("--seed", args.seed, minimum=0)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    if is_grid:
        for flag, value in (("--res", args.res), ("--padding", args.padding)):
            if value is not None:
                raise UserError(f"{flag} {value} does not apply to a grid INPUT ({src}): the grid is used at "
                                "its own resolution (omit it)")
        for flag, value in (("--band", args.band), ("--points", args.points)):
            if value is not None:
                raise UserError(f"{flag} {value} applies to a mesh INPUT only: a grid INPUT ({src}) has no "
                                "exact SDF or reference mesh to compare with")
        if args.voxel_size is not None:
            if src.suffix.lower() != ".npy":
                raise UserError(f"--voxel-size applies to a bare .npy INPUT only: {src} carries its own")
            positive_finite("--voxel-size", args.voxel_size, "world units")
        return True
    if args.voxel_size is not None:
        raise UserError("--voxel-size applies to a bare .npy grid INPUT only: a mesh's voxel size follows "
                        "from --res")
    args.res = count("--res", DEFAULT_RES if args.res is None else args.res, minimum=8)
    check_memory(BYTES_PER_VOXEL * float(args.res) ** 3, f"--res {args.res} (a {args.res}³ grid)")
    if args.padding is not None:
        count("--padding", args.padding, minimum=0)
    args.band = positive_finite("--band", DEFAULT_BAND if args.band is None else args.band, "voxels")
    args.points = count("--points", DEFAULT_POINTS if args.points is None else args.points, minimum=100)
    return False


# -- inputs ------------------------------------------------------------------------------------------
def _load_grid_input(path: Path, voxel_size: float | None):
    """An occupancy grid given directly: .npz written by VoxelGrid.save, or a bare .npy array."""
    import numpy as np
    import torch

    from ..checks import finite_tensor
    from ..grid import VoxelGrid

    if not path.is_file():
        raise UserError(f"grid file not found: {path}")
    if path.suffix.lower() == ".npz":
        grid = VoxelGrid.load(path)
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            reason = " ".join(str(exc).split())[:160]
            raise UserError(f"cannot read occupancy grid {path}: {reason}") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            kind = getattr(arr, "dtype", type(arr).__name__)
            raise UserError(f"occupancy grid {path} must be a numeric array, got {kind}")
        if arr.ndim != 3 or min(arr.shape) < 2:
            raise UserError(f"occupancy grid {path} must be a 3-D array (X, Y, Z); got shape {arr.shape}")
        h = voxel_size if voxel_size is not None else 1.0 / max(arr.shape)
        grid = VoxelGrid(torch.from_numpy(np.asarray(arr, dtype=np.float32)), (0.0, 0.0, 0.0), h)
    v = grid.values
    finite_tensor(f"occupancy grid {path}", v)
    if v.numel() and (float(v.min()) < 0 or float(v.max()) > 1):
        raise UserError(f"occupancy grid {path} must lie in [0, 1]; "
                        f"got [{float(v.min()):.4g}, {float(v.max()):.4g}]")
    if min(grid.shape) < 8:
        raise UserError(f"occupancy grid {path} is too small: shape {grid.shape} (≥ 8 per axis)")
    return grid.to(dtype=torch.float32)


def _closed_mesh(mesh) -> tuple[object, dict | None]:
    """The mesh made watertight (see geo_rs.meshes.ensure_watertight) and a record of any repair."""
    from ..meshes import ensure_watertight, mesh_name

    closed = ensure_watertight(mesh)
    if closed is mesh:
        return mesh, None
    added = len(closed.faces) - len(mesh.faces)
    return closed, {
        "input_watertight": False,
        "faces_before": int(len(mesh.faces)),
        "faces_after": int(len(closed.faces)),
        "faces_added": int(added),
        "note": f"{mesh_name(mesh)} is not watertight: it was closed (vertices merged, winding fixed, "
                f"{max(added, 0)} triangles filled into its holes) before inside/outside was computed; the "
                "weak SDF, the exact SDF and the metrics are those of the closed mesh",
    }


def _padding(args: argparse.Namespace) -> int:
    if args.padding is not None:
        padding = args.padding
    else:  # 2σ of empty margin, shrunk on tiny grids so that a few voxels remain for the shape
        padding = max(0, min(max(2, math.ceil(2 * args.sigma)), (args.res - 5) // 2))
    if args.res - 1 - 2 * padding < 4:
        raise UserError(f"--res {args.res} leaves fewer than 4 voxels inside --padding {padding}")
    return padding


# -- the command -------------------------------------------------------------------------------------
class _Stages:
    """Times the stages and prints them on stderr."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.t0 = self.start = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.t0, 4)
        print(f"  {name:<14s} {self.timings[name]:8.3f} s", file=sys.stderr)
        self.t0 = now


def run(args: argparse.Namespace) -> int:
    src = Path(args.input)
    is_grid = _validate(args, src)
    from ..atomic import write_json

    stages = _Stages()
    what = "grid at its own resolution" if is_grid else f"res={args.res}"
    print(f"geo-rs sdf: {args.input} {what} σ={args.sigma} voxels → {args.out}", file=sys.stderr)
    mesh, repair, occ = _occupancy(args, src, is_grid, stages)
    sdf = _weak_sdf(args, occ, stages)
    pred, not_produced = _write_outputs(args, sdf, stages)
    report = _report(args, src, is_grid, occ, sdf, pred, mesh, repair, stages, not_produced)
    stages.timings["total"] = round(time.perf_counter() - stages.start, 4)
    report["timings_s"] = stages.timings
    write_json(args.out / "report.json", report, indent=2)
    _summary(args, report)
    return 0


def _occupancy(args: argparse.Namespace, src: Path, is_grid: bool, stages: _Stages):
    from ..meshes import load_mesh, occupancy_grid

    if is_grid:
        occ = _load_grid_input(src, args.voxel_size)
        stages.done("load")
        mesh, repair = None, None
    else:
        mesh = load_mesh(args.input)
        mesh, repair = _closed_mesh(mesh)
        if repair:
            print(f"  warning: {repair['note']}", file=sys.stderr)
        stages.done("load")
        occ = occupancy_grid(mesh, args.res, padding_voxels=_padding(args))
        stages.done("occupancy")
    if float(occ.values.max()) <= 0:
        raise UserError(f"{args.input}: the occupancy grid is empty (no voxel centre inside the shape); "
                        "raise --res or check the mesh")
    return mesh, repair, occ


def _weak_sdf(args: argparse.Namespace, occ, stages: _Stages):
    import torch

    from ..sdf import weak_sdf

    values = weak_sdf(occ.values, args.sigma, occ.voxel_size, kernel=args.kernel)
    stages.done("weak_sdf")
    if not torch.isfinite(values).all():  # cannot happen for valid occupancy; never write NaN silently
        raise UserError("weak SDF has non-finite values")
    return occ.with_values(values)


def _write_outputs(args: argparse.Namespace, sdf, stages: _Stages):
    import io

    import numpy as np

    from ..atomic import write_bytes, write_json
    from ..marching import export_mesh, extract_mesh
    from ..plots import plot_sdf_slices
    from ..radius import max_radius_sigmas

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    h = sdf.voxel_size
    buf = io.BytesIO()
    np.save(buf, sdf.values.numpy().astype(np.float32))
    write_bytes(out / "sdf.npy", buf.getvalue())
    sdf.save(out / "sdf.npz")
    write_json(out / "grid.json", {
        "origin": [float(v) for v in sdf.origin.tolist()], "voxel_size": h, "shape": list(sdf.shape),
        "sigma_voxels": args.sigma, "sigma_world": args.sigma * h, "kernel": args.kernel,
        "convention": "sdf[i,j,k] is the weak SDF at world point origin + voxel_size*(i,j,k); "
                      "positive inside, world units",
        "max_abs_value": max_radius_sigmas() * args.sigma * h,
    }, indent=2)
    stages.done("save_grid")
    not_produced: dict[str, str] = {}
    pred = None
    if float(sdf.values.max()) <= 0:
        not_produced["mesh.ply"] = (f"σ={args.sigma} voxels smooths the whole shape away (weak SDF < 0 "
                                    "everywhere): no surface at level 0")
        print(f"  warning: {not_produced['mesh.ply']}", file=sys.stderr)
        (out / "mesh.ply").unlink(missing_ok=True)  # never leave a stale mesh from an earlier run
    else:
        pred = extract_mesh(sdf, 0.0)
        export_mesh(pred, out / "mesh.ply")
    stages.done("marching_cubes")
    title = (f"weak SDF of {Path(str(args.input)).name}: "
             + (f"res {args.res}, " if args.res else f"grid {tuple(sdf.shape)}, ")
             + f"σ = {args.sigma} voxels ({args.sigma * h:.4g} world)")
    plot_sdf_slices(sdf, out / "slices.png", title=title)
    stages.done("slices_png")
    return pred, not_produced


def _band_candidates(occ, reach: float):
    """Voxels within ``reach`` voxels of an occupancy change (a superset of the |SDF| ≤ band set)."""
    from scipy import ndimage

    inside = occ > 0.5
    boundary = inside ^ ndimage.binary_erosion(inside, border_value=0)
    boundary |= ~inside & ndimage.binary_dilation(inside)
    if not boundary.any():
        return boundary
    return ndimage.distance_transform_edt(~boundary) <= reach


def _band_error(args: argparse.Namespace, occ, sdf, mesh) -> dict:
    import numpy as np

    from ..meshes import mesh_sdf

    h = sdf.voxel_size
    cand = _band_candidates(occ.values.numpy(), args.band + 2.0)
    idx = np.nonzero(cand)
    pts = sdf.centers()[idx].reshape(-1, 3)
    exact = mesh_sdf(mesh, pts).numpy() / h                  # voxels
    weak = sdf.values.numpy()[idx] / h
    in_band = np.abs(exact) <= args.band
    err = np.abs(weak[in_band] - exact[in_band])
    return {
        "band_half_width_voxels": args.band,
        "definition": "voxel centres with |exact SDF| ≤ band; |weak SDF − exact SDF| in voxels",
        "n_voxels": int(in_band.sum()),
        "mean_abs": float(err.mean()) if err.size else None,
        "max_abs": float(err.max()) if err.size else None,
        "sign_disagreement_fraction": float(np.mean(np.sign(weak[in_band]) != np.sign(exact[in_band])))
        if err.size else None,
    }


def _report(args, src, is_grid, occ, sdf, pred, mesh, repair, stages, not_produced) -> dict:
    from ..mesh_scores import mesh_metrics
    from ..meshes import mesh_name

    values = sdf.values
    report: dict = {
        "input": str(args.input), "input_kind": "grid" if is_grid else "mesh",
        # the resolution actually used: --res for a mesh, the grid's own shape for a grid INPUT
        "res": args.res if not is_grid else None, "sigma_voxels": args.sigma,
        "sigma_world": args.sigma * sdf.voxel_size, "voxel_size": sdf.voxel_size, "shape": list(sdf.shape),
        "kernel": args.kernel, "mesh_faces": int(len(pred.faces)) if pred is not None else 0,
        "weak_sdf_range": [float(values.min()), float(values.max())],
        "repair": repair, "not_produced": not_produced,
    }
    if is_grid:
        report["band_error_voxels"] = None
        report["mesh_metrics"] = None
        report["note"] = "INPUT is a grid: no exact SDF or reference mesh, so no error band or mesh metrics"
        return report
    report["band_error_voxels"] = _band_error(args, occ, sdf, mesh)
    stages.done("exact_sdf_band")
    if pred is not None:
        metrics = mesh_metrics(pred, mesh, n_points=args.points, seed=args.seed)
        vs = mesh_name(mesh) + (" (closed by the repair)" if repair else "")
        report["mesh_metrics"] = {"vs": vs, "n_points": args.points,
                                  "fscore_threshold_definition":
                                      "1% of the input mesh's bounding-box diagonal",
                                  **metrics}
    else:
        report["mesh_metrics"] = None
        not_produced["mesh_metrics"] = "no mesh"
    stages.done("mesh_metrics")
    return report


def _summary(args: argparse.Namespace, report: dict) -> None:
    out = args.out
    written = ["sdf.npy", "grid.json", "sdf.npz"] + (["mesh.ply"] if report["mesh_faces"] else []) + \
        ["slices.png", "report.json"]
    print(f"wrote {out}/{{{', '.join(written)}}} in {report['timings_s']['total']:.2f} s")
    for name, why in report["not_produced"].items():
        print(f"  not produced: {name}: {why}")
    if report["repair"]:
        print(f"  note: {report['repair']['note']}")
    be, mm = report.get("band_error_voxels"), report.get("mesh_metrics")
    if be and be["mean_abs"] is not None:
        print(f"  |weak − exact| within ±{args.band:g} voxels of the surface: mean {be['mean_abs']:.3f}, "
              f"max {be['max_abs']:.3f} voxels ({be['n_voxels']} voxels)")
    if mm:
        print(f"  mesh vs input: Chamfer-L1 {mm['chamfer_l1']:.4g}, normal consistency "
              f"{mm['normal_consistency']:.3f}, F-score@1% {mm['fscore']:.3f}")
