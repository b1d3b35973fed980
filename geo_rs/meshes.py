"""Meshes as ground truth: loading, occupancy grids and exact signed distance (open3d).

Sign convention: **positive inside**, negative outside, world units (open3d's own signed distance
is negative inside; it is flipped here). open3d and trimesh are imported lazily so ``import geo_rs``
stays fast.

Watertightness: occupancy (inside/outside) is only defined for closed meshes. ``occupancy_grid``
and ``mesh_sdf`` first try a light repair (merge duplicate vertices, fix winding, fill simple holes
with trimesh) and raise :class:`UserError` naming the mesh if it is still not watertight.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .grid import VoxelGrid
from .shapes import builtin_shapes, make_shape

__all__ = ["builtin_shapes", "ensure_watertight", "load_mesh", "mesh_name", "mesh_sdf", "occupancy_grid"]

MESH_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb", ".gltf")


def mesh_name(mesh) -> str:
    """A short name for messages: the built-in shape name or the file it was loaded from."""
    md = getattr(mesh, "metadata", {}) or {}
    return str(md.get("name") or md.get("file_path") or md.get("file_name") or "<mesh>")


def load_mesh(source: str | Path):
    """Load a triangle mesh file (PLY/OBJ/STL/OFF/GLB) or build a built-in shape by name.

    Args:
        source: a path, or one of :func:`builtin_shapes` (``sphere``, ``torus``, ``parts``, ``box``).
            An existing file wins over a built-in name.

    Returns:
        ``trimesh.Trimesh`` with ``metadata["name"]`` set. Scenes (GLB) are merged into one mesh.

    Raises:
        UserError: missing file, unknown format, unreadable or empty mesh, non-finite vertices.

    Example:
        >>> len(load_mesh("sphere").faces) > 0
        True
    """
    import trimesh

    path = Path(source)
    if not path.exists():
        if str(source) in builtin_shapes():
            return make_shape(str(source))
        raise UserError(f"mesh file not found: {source} (built-in shapes: {', '.join(builtin_shapes())})")
    if path.is_dir():
        raise UserError(f"expected a mesh file, got a directory: {path}")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise UserError(f"unsupported mesh format '{path.suffix}' for {path} "
                        f"(use {', '.join(MESH_SUFFIXES)})")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)  # processing would drop NaN vertices
    except Exception as exc:  # trimesh raises many types for corrupt files  # noqa: BLE001
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise UserError(f"cannot read mesh {path}: {reason}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise UserError(f"mesh {path} is empty (no triangles)")
    if not np.isfinite(mesh.vertices).all():
        bad = int((~np.isfinite(mesh.vertices).all(axis=1)).sum())
        raise UserError(f"mesh {path} has {bad} vertices with non-finite (NaN/inf) coordinates")
    mesh.process()  # merge duplicate vertices (STL stores each triangle's own), drop degenerate faces
    mesh.metadata["name"] = str(path)
    return mesh


def ensure_watertight(mesh, repair: bool = True):
    """Return a watertight version of ``mesh`` (a repaired copy if needed) or raise UserError."""
    if mesh.is_watertight:
        return mesh
    name = mesh_name(mesh)
    if repair:
        import trimesh

        fixed = mesh.copy()
        fixed.merge_vertices()
        fixed.update_faces(fixed.nondegenerate_faces())
        fixed.remove_unreferenced_vertices()
        trimesh.repair.fill_holes(fixed)
        trimesh.repair.fix_normals(fixed)
        if fixed.is_watertight:
            fixed.metadata["name"] = name
            fixed.metadata["repaired"] = True
            return fixed
    raise UserError(f"mesh {name} is not watertight (open boundary or non-manifold edges) and could not be "
                    "repaired; inside/outside is undefined — close it first (e.g. in MeshLab/Blender)")


def _raycasting_scene(mesh):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    tmesh = o3d.t.geometry.TriangleMesh()
    tmesh.vertex.positions = o3d.core.Tensor(np.ascontiguousarray(mesh.vertices, dtype=np.float32))
    tmesh.triangle.indices = o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.int32))
    scene.add_triangles(tmesh)
    return scene


def _points_f32(points) -> np.ndarray:
    pts = points.detach().cpu().numpy() if torch.is_tensor(points) else np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise UserError(f"points must have shape (N, 3); got {pts.shape}")
    return np.ascontiguousarray(pts, dtype=np.float32)


def occupancy_grid(mesh, grid: VoxelGrid | int, padding_voxels: int = 2, repair: bool = True,
                   nsamples: int = 1) -> VoxelGrid:
    """Occupancy (1 inside, 0 outside) of a watertight mesh at the voxel centres of a grid.

    Args:
        mesh: ``trimesh.Trimesh`` (e.g. from :func:`load_mesh`).
        grid: a :class:`VoxelGrid` giving the placement (its values are ignored), or an int ``res``:
            then ``VoxelGrid.around(mesh.bounds, res, padding_voxels)``.
        padding_voxels: empty margin when ``grid`` is an int.
        repair: try a light repair before refusing a non-watertight mesh.
        nsamples: open3d's ray count per query (odd; >1 votes, more robust on messy meshes).

    Returns:
        VoxelGrid with float32 values in {0, 1} (CPU).
    """
    if nsamples < 1 or nsamples % 2 == 0:
        raise UserError(f"nsamples must be an odd number >= 1 (a majority vote of rays), got {nsamples!r}")
    mesh = ensure_watertight(mesh, repair=repair)
    if isinstance(grid, VoxelGrid):
        placement = grid
    else:
        placement = VoxelGrid.around(mesh.bounds[0], mesh.bounds[1], int(grid), padding_voxels)
    centres = placement.centers().reshape(-1, 3).double().cpu().numpy()
    scene = _raycasting_scene(mesh)
    import open3d as o3d

    occ = scene.compute_occupancy(o3d.core.Tensor(centres.astype(np.float32)), nsamples=nsamples).numpy()
    values = torch.from_numpy(occ.astype(np.float32).reshape(placement.shape))
    return VoxelGrid(values, placement.origin.double().cpu(), placement.voxel_size).to(dtype=torch.float32)


def mesh_sdf(mesh, points, repair: bool = True, batch: int = 1 << 18) -> torch.Tensor:
    """Exact signed distance from ``points`` (N, 3) to a watertight mesh: positive inside (open3d).

    Exact but slow (~10⁴–10⁶ points/s depending on the mesh); query only the points you need.
    Returns a float32 tensor (N,) on the CPU.
    """
    import open3d as o3d

    mesh = ensure_watertight(mesh, repair=repair)
    pts = _points_f32(points)
    scene = _raycasting_scene(mesh)
    out = np.empty(len(pts), dtype=np.float32)
    for i in range(0, len(pts), batch):
        out[i:i + batch] = scene.compute_signed_distance(o3d.core.Tensor(pts[i:i + batch])).numpy()
    return torch.from_numpy(-out)  # open3d: negative inside → flip to geo-rs' positive inside
