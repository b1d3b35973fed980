"""Surface extraction from voxel grids (scikit-image marching cubes) and mesh export.

``extract_mesh(grid, level)`` returns a ``trimesh.Trimesh`` in world coordinates whose faces are
wound so normals point **outward**, i.e. from ``values > level`` (inside: weak SDF > 0, smoothed
occupancy > ½) towards ``values < level``. Use level 0 for a weak SDF and 0.5 for a smoothed
occupancy. Where the surface touches the grid's border the mesh is open there.
"""
from __future__ import annotations

from pathlib import Path

from .atomic import write_bytes
from .blur import check_finite
from .checks import finite_number
from .errors import UserError
from .grid import VoxelGrid

__all__ = ["export_mesh", "extract_mesh"]


def extract_mesh(grid: VoxelGrid, level: float = 0.0):
    """Marching cubes at ``level`` → ``trimesh.Trimesh`` (world coordinates, outward normals).

    Args:
        grid: a :class:`VoxelGrid` (weak SDF: positive inside; or smoothed occupancy).
        level: iso-value (0 for a weak SDF, 0.5 for occupancy).

    Raises:
        UserError: NaN/inf values (count and first position), or no crossing of ``level`` in the grid
            (an empty surface; the message gives the value range).

    Example:
        >>> import torch
        >>> from geo_rs import VoxelGrid
        >>> x = torch.linspace(-1, 1, 21)
        >>> sdf = 0.6 - torch.stack(torch.meshgrid(x, x, x, indexing="ij")).norm(dim=0)
        >>> m = extract_mesh(VoxelGrid(sdf, (-1, -1, -1), 0.1))
        >>> bool(abs(np.linalg.norm(m.vertices, axis=1).mean() - 0.6) < 0.01), m.is_watertight
        (True, True)
    """
    import torch
    import trimesh
    from skimage.measure import marching_cubes

    level = finite_number("level", level)
    # scikit-image works on a C-contiguous float32 volume: hand it one, so it makes no copy.
    values = grid.values.detach().to(device="cpu", dtype=torch.float32).contiguous()
    check_finite(values, "grid values")  # NaN voxels would silently read as "outside"
    vol = values.numpy()
    h = grid.voxel_size
    try:
        # "ascent": faces wound so the right-hand normal points towards *decreasing* values, i.e.
        # outward from our inside (values > level). Checked in tests/test_meshes.py.
        verts, faces, _normals, _ = marching_cubes(vol, level=level, spacing=(h, h, h),
                                                   gradient_direction="ascent", allow_degenerate=False)
    except (ValueError, RuntimeError):  # level outside the data range, or no crossing at all
        lo, hi = float(vol.min()), float(vol.max())
        if min(vol.shape) < 2:
            raise UserError(f"marching cubes needs >= 2 voxels per axis; grid shape {vol.shape}") from None
        if not lo < level < hi:
            raise UserError(f"no surface at level {level}: grid values range over [{lo:.4g}, {hi:.4g}]") \
                from None
        raise
    verts = verts + grid.origin.detach().cpu().double().numpy()
    # process=False: marching cubes already shares vertices and drops degenerate faces; trimesh's
    # processing (vertex merging by hashing) would only cost time.
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    mesh.metadata["name"] = f"marching cubes at level {level}"
    return mesh


def export_mesh(mesh, path: str | Path) -> Path:
    """Write ``mesh`` as PLY (binary) or OBJ depending on the suffix; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".obj", ".stl", ".off"):
        raise UserError(f"unsupported mesh export format '{path.suffix}' for {path} "
                        "(use .ply, .obj, .stl, .off)")
    data = mesh.export(file_type=suffix[1:])  # bytes (PLY, STL) or text (OBJ, OFF)
    return write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)
