"""Surface extraction from voxel grids (scikit-image marching cubes) and mesh export.

``extract_mesh(grid, level)`` returns a ``trimesh.Trimesh`` in world coordinates whose faces are
wound so normals point **outward**, i.e. from ``values > level`` (inside: weak SDF > 0, smoothed
occupancy > ½) towards ``values < level``. Use level 0 for a weak SDF and 0.5 for a smoothed
occupancy. Where the surface touches the grid's border the mesh is open there.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError
from .grid import VoxelGrid

__all__ = ["export_mesh", "extract_mesh"]


def extract_mesh(grid: VoxelGrid, level: float = 0.0):
    """Marching cubes at ``level`` → ``trimesh.Trimesh`` (world coordinates, outward normals).

    Args:
        grid: a :class:`VoxelGrid` (weak SDF: positive inside; or smoothed occupancy).
        level: iso-value (0 for a weak SDF, 0.5 for occupancy).

    Raises:
        UserError: NaN values, or no crossing of ``level`` in the grid (empty surface).

    Example:
        >>> import torch
        >>> from geo_rs import VoxelGrid
        >>> x = torch.linspace(-1, 1, 21)
        >>> sdf = 0.6 - torch.stack(torch.meshgrid(x, x, x, indexing="ij")).norm(dim=0)
        >>> m = extract_mesh(VoxelGrid(sdf, (-1, -1, -1), 0.1))
        >>> bool(abs(np.linalg.norm(m.vertices, axis=1).mean() - 0.6) < 0.01), m.is_watertight
        (True, True)
    """
    import trimesh
    from skimage.measure import marching_cubes

    vol = grid.values.detach().cpu().double().numpy()
    if not np.isfinite(vol).all():
        bad = int((~np.isfinite(vol)).sum())
        raise UserError(f"grid values contain NaN/inf ({bad} voxels); cannot extract a mesh")
    lo, hi = float(vol.min()), float(vol.max())
    if not (lo < level < hi):
        raise UserError(f"no surface at level {level}: grid values range over [{lo:.4g}, {hi:.4g}]")
    h = grid.voxel_size
    verts, faces, _normals, _ = marching_cubes(vol, level=level, spacing=(h, h, h), allow_degenerate=False)
    verts = verts + grid.origin.detach().cpu().double().numpy()
    # scikit-image winds faces so the right-hand normal points towards *increasing* values (into our
    # inside); reversing the winding makes normals outward. Checked in tests/test_meshes.py.
    mesh = trimesh.Trimesh(vertices=verts, faces=np.ascontiguousarray(faces[:, ::-1]), process=True)
    mesh.metadata["name"] = f"marching cubes at level {level}"
    return mesh


def export_mesh(mesh, path: str | Path) -> Path:
    """Write ``mesh`` as PLY (binary) or OBJ depending on the suffix; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".obj", ".stl", ".off"):
        raise UserError(f"unsupported mesh export format '{path.suffix}' for {path} "
                        "(use .ply, .obj, .stl, .off)")
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    return path
