"""Surface reconstruction metrics as in Occupancy Networks (Mescheder et al. 2019).

Both meshes are sampled uniformly by area (``n_points`` each, seeded), with the normal of the face
each point lies on. With d(a, B) the distance from point a to the nearest sample of B:

* ``accuracy``      = mean over pred samples of d(p, GT)       (lower is better, world units)
* ``completeness``  = mean over GT samples of d(g, pred)
* ``chamfer_l1``    = ½ (accuracy + completeness)
* ``chamfer_l2``    = ½ (mean d(p, GT)² + mean d(g, pred)²)
* ``normal_consistency`` = ½ (mean |n_p · n_nn(p)| + mean |n_g · n_nn(g)|), in [0, 1] (absolute dot
  product: orientation-agnostic, as in ONet)
* ``fscore`` = 2PR/(P+R) with precision P = fraction of pred samples within τ of GT and recall R =
  fraction of GT samples within τ of pred, τ = ``fscore_ratio`` × the diagonal of the GT mesh's
  axis-aligned bounding box (ONet normalises shapes to a unit box; the diagonal makes τ independent
  of the object's scale). ``precision``, ``recall`` and ``fscore_threshold`` are returned too.

Distances are in world units (not normalised); nearest neighbours via ``scipy.spatial.cKDTree``.
"""
from __future__ import annotations

import numpy as np

from .checks import count, positive_finite
from .errors import UserError

__all__ = ["mesh_metrics", "sample_surface"]


def sample_surface(mesh, n_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_points`` area-uniform samples (n, 3) and their face normals (n, 3), reproducible by seed."""
    import trimesh

    if len(mesh.faces) == 0 or not mesh.area > 0:  # also NaN vertices (NaN area)
        raise UserError(f"cannot sample {getattr(mesh, 'metadata', {}).get('name', 'a mesh')}: no triangles, "
                        "zero area or non-finite vertices")
    pts, face_idx = trimesh.sample.sample_surface(mesh, int(n_points), seed=seed)
    return np.asarray(pts), np.asarray(mesh.face_normals[face_idx])


def mesh_metrics(pred, gt, n_points: int = 100_000, fscore_ratio: float = 0.01, seed: int = 0,
                 workers: int | None = None) -> dict:
    """Compare a reconstructed mesh ``pred`` with a ground-truth mesh ``gt`` (both ``trimesh.Trimesh``).

    Args:
        workers: threads of the nearest-neighbour queries; default ``torch.get_num_threads()``, the
            caller's thread setting (``--threads``, ``OMP_NUM_THREADS``). Results do not depend on it.

    Returns:
        dict of floats: accuracy, completeness, chamfer_l1, chamfer_l2, normal_consistency, fscore,
        precision, recall, fscore_threshold (see the module doc for the definitions).

    Example:
        >>> from geo_rs import load_mesh
        >>> m = mesh_metrics(load_mesh("sphere"), load_mesh("sphere"), n_points=20_000)
        >>> m["fscore"] > 0.95, m["normal_consistency"] > 0.99, m["chamfer_l1"] < 0.01
        (True, True, True)
    """
    from scipy.spatial import cKDTree

    n_points = count("n_points", n_points)
    fscore_ratio = positive_finite("fscore_ratio", fscore_ratio)
    seed = count("seed", seed, minimum=0)
    if workers is None:
        import torch

        workers = torch.get_num_threads()
    workers = count("workers", workers)
    p_pts, p_nrm = sample_surface(pred, n_points, seed)
    g_pts, g_nrm = sample_surface(gt, n_points, seed + 1)
    d_pg, i_pg = cKDTree(g_pts).query(p_pts, workers=workers)
    d_gp, i_gp = cKDTree(p_pts).query(g_pts, workers=workers)
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    nc_p = np.abs(np.sum(p_nrm * g_nrm[i_pg], axis=1)).mean()
    nc_g = np.abs(np.sum(g_nrm * p_nrm[i_gp], axis=1)).mean()
    lo, hi = gt.bounds
    tau = float(fscore_ratio) * float(np.linalg.norm(hi - lo))
    precision, recall = float((d_pg < tau).mean()), float((d_gp < tau).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "accuracy": acc,
        "completeness": comp,
        "chamfer_l1": 0.5 * (acc + comp),
        "chamfer_l2": 0.5 * float((d_pg**2).mean() + (d_gp**2).mean()),
        "normal_consistency": float(0.5 * (nc_p + nc_g)),
        "fscore": float(fscore),
        "precision": precision,
        "recall": recall,
        "fscore_threshold": tau,
    }
