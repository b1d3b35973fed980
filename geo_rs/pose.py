"""Camera pose from 2D–3D keypoint correspondences: checks, projection, errors and ``solve_pnp``.

Conventions (OpenCV's): a world point X maps to the camera point ``Y = R X + t`` (x right, y down, z
forward) and to pixels ``K·Y / Y_z``, pixel centres at integers. ``t`` is the object origin in the camera
frame; the camera centre in the world is ``−Rᵀt``. Rotation errors are geodesic angles
``arccos((tr(R₁R₂ᵀ) − 1)/2)`` in degrees (computed stably), translation errors Euclidean in world units.

:func:`solve_pnp` is the estimator whose output :func:`geo_rs.pose_error_bound` certifies: OpenCV's
``solvePnPGeneric`` (IPPE's two solutions for coplanar points, SQPnP otherwise), keeping the solution with
every point in front of the camera and the least reprojection error, then damped Newton on the summed
squared reprojection error E(R, t) = Σᵢ‖π(K(R Xᵢ + t)) − uᵢ‖² until its gradient is below
``grad_tol``/10 (a stationary point of E, in practice the local least-squares minimum next to the start).

Example:
    >>> import numpy as np
    >>> from geo_rs import project_points, solve_pnp, rotation_error_deg
    >>> X = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.]])
    >>> K = np.array([[500, 0, 64], [0, 500, 64], [0, 0, 1.]])
    >>> truth = (np.eye(3), np.array([-0.5, -0.5, 5.0]))
    >>> pose = solve_pnp(X, project_points(X, truth, K), K)
    >>> round(rotation_error_deg(pose.R, truth[0]), 6), np.round(pose.t, 6).tolist()
    (0.0, [-0.5, -0.5, 5.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UserError

__all__ = [
    "GRAD_TOL",
    "Pose",
    "as_intrinsics",
    "as_points_2d",
    "as_points_3d",
    "as_pose",
    "cayley_from_rotation",
    "project_points",
    "rotation_error_deg",
    "rotation_from_cayley",
    "solve_pnp",
]

GRAD_TOL = 1e-6
"""Default tolerance on ‖∇E‖∞ (pixels² per Cayley unit or per world unit) of a "stationary" pose."""

_PLANAR_TOL = 1e-9  # smallest/largest singular value of the centred 3D points below which they are coplanar
_DEGENERATE_TOL = 1e-6  # second singular value ratio below which the points are (nearly) collinear


@dataclass(frozen=True)
class Pose:
    """A camera pose: ``R`` (3, 3) rotation and ``t`` (3,) translation (world → camera). Unpacks as (R, t)."""

    R: np.ndarray
    t: np.ndarray

    def __iter__(self):
        return iter((self.R, self.t))

    @property
    def camera_centre(self) -> np.ndarray:
        """The camera centre in world coordinates, −Rᵀt."""
        return -self.R.T @ self.t


# ------------------------------------------------------------------------------------------- checks
def _array(name: str, value: object, shape_text: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(
            f"{name} must be a numeric array of shape {shape_text}, got {type(value).__name__}"
        ) from None
    return arr


def as_points_3d(points_3d: object, name: str = "points_3d") -> tuple[np.ndarray, bool]:
    """``points_3d`` as float64 (N, 3) and whether they are coplanar; refuses too few or degenerate points.

    Coplanar sets need ≥ 4 points (IPPE), general ones ≥ 6; collinear or coincident points are refused.
    """
    pts = _array(name, points_3d, "(N, 3)")
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise UserError(f"{name} must have shape (N, 3), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise UserError(f"{name} contains NaN or infinite values")
    if len(pts) < 4:
        raise UserError(
            f"{name}: need at least 4 keypoints for a planar object (6 in general), got {len(pts)}"
        )
    centred = pts - pts.mean(0)
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[0] == 0 or sv[1] <= _DEGENERATE_TOL * sv[0]:
        raise UserError(f"{name} are degenerate (coincident or collinear): the pose is not determined")
    planar = bool(sv[2] <= _PLANAR_TOL * sv[0])
    if not planar and len(pts) < 6:
        raise UserError(f"{name}: need at least 6 keypoints for a non-planar object, got {len(pts)}")
    return pts, planar


def as_points_2d(points_2d: object, num: int, name: str = "points_2d") -> np.ndarray:
    """``points_2d`` as float64 (..., N, 2) with N = ``num``."""
    pts = _array(name, points_2d, f"({num}, 2)")
    if pts.ndim < 2 or pts.shape[-2:] != (num, 2):
        raise UserError(f"{name} must have shape ({num}, 2) (or a batch (B, {num}, 2)), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise UserError(f"{name} contains NaN or infinite values")
    return pts


def as_intrinsics(K: object) -> np.ndarray:
    """``K`` as float64 (3, 3) ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` with fx, fy > 0."""
    k = _array("K", K, "(3, 3)")
    if k.shape != (3, 3):
        raise UserError(f"K must be a 3x3 intrinsics matrix, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise UserError("K contains NaN or infinite values")
    if k[1, 0] != 0 or k[2, 0] != 0 or k[2, 1] != 0 or k[2, 2] != 1:
        raise UserError(
            f"K must have the form [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got bottom rows {k[1:].tolist()}"
        )
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise UserError(f"K needs focal lengths fx, fy > 0, got {k[0, 0]}, {k[1, 1]}")
    return k


def as_pose(pose: object, name: str = "reference_pose") -> Pose:
    """A :class:`Pose` from a Pose or an (R, t) pair; R must be orthonormal with det +1 (within 1e-6)."""
    try:
        R, t = pose  # type: ignore[misc]
    except (TypeError, ValueError):
        raise UserError(
            f"{name} must be a Pose or a pair (R (3, 3), t (3,)), got {type(pose).__name__}"
        ) from None
    R = _array(f"{name} R", R, "(3, 3)")
    t = _array(f"{name} t", t, "(3,)").reshape(-1)
    if R.shape != (3, 3) or t.shape != (3,):
        raise UserError(f"{name} must be (R (3, 3), t (3,)), got shapes {R.shape} and {t.shape}")
    if not (np.isfinite(R).all() and np.isfinite(t).all()):
        raise UserError(f"{name} contains NaN or infinite values")
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-6 or np.linalg.det(R) <= 0:
        raise UserError(f"{name} R is not a rotation matrix (RᵀR ≠ I or det ≤ 0)")
    u, _, vt = np.linalg.svd(R)  # nearest rotation: exactly what the bound's parametrisation assumes
    return Pose(u @ vt, t.copy())


# ------------------------------------------------------------------------------------- geometry
def project_points(points_3d: object, pose: object, K: object) -> np.ndarray:
    """Pixels (N, 2) of ``points_3d`` (N, 3) seen with ``pose`` (R, t) and intrinsics ``K``."""
    pts = _array("points_3d", points_3d, "(N, 3)").reshape(-1, 3)
    R, t = as_pose(pose, "pose")
    k = as_intrinsics(K)
    cam = pts @ R.T + t
    uvw = cam @ k.T
    return uvw[:, :2] / uvw[:, 2:3]


def rotation_error_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    """Geodesic angle between two rotations, degrees (atan2 form: accurate near 0 and 180°)."""
    Q = np.asarray(R1) @ np.asarray(R2).T
    cos = (np.trace(Q) - 1) / 2
    sin = np.linalg.norm([Q[2, 1] - Q[1, 2], Q[0, 2] - Q[2, 0], Q[1, 0] - Q[0, 1]]) / 2
    return float(np.degrees(np.arctan2(sin, cos)))


def rotation_from_cayley(c: np.ndarray) -> np.ndarray:
    """Cay(c) = ((1 − cᵀc)I + 2ccᵀ + 2[c]×)/(1 + cᵀc): a rotation by 2·atan‖c‖ about c; c (..., 3)."""
    c = np.asarray(c, dtype=np.float64)
    cc = (c * c).sum(-1)[..., None, None]
    cross = np.zeros(c.shape[:-1] + (3, 3))
    cross[..., 0, 1], cross[..., 0, 2] = -c[..., 2], c[..., 1]
    cross[..., 1, 0], cross[..., 1, 2] = c[..., 2], -c[..., 0]
    cross[..., 2, 0], cross[..., 2, 1] = -c[..., 1], c[..., 0]
    outer = c[..., :, None] * c[..., None, :]
    return ((1 - cc) * np.eye(3) + 2 * outer + 2 * cross) / (1 + cc)


def cayley_from_rotation(Q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_from_cayley` for rotations by less than 180°: c = axis·tan(θ/2)."""
    Q = np.asarray(Q, dtype=np.float64)
    # [c]× = (Q − Qᵀ) / (1 + tr Q) (from the Cayley form); stable for θ < 180°
    denom = 1 + np.trace(Q, axis1=-2, axis2=-1)
    vec = np.stack(
        [Q[..., 2, 1] - Q[..., 1, 2], Q[..., 0, 2] - Q[..., 2, 0], Q[..., 1, 0] - Q[..., 0, 1]], -1
    )
    return vec / denom[..., None]


# -------------------------------------------------------------------------------------- solving
def opencv_starts(
    pts3: np.ndarray, pts2: np.ndarray, k: np.ndarray, planar: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every OpenCV solution with all points in front of the camera: IPPE's two and SQPnP's for coplanar
    points (IPPE alone fails on near-degenerate grazing views), SQPnP's otherwise. Falls back to the first
    solution when none is in front."""
    import cv2

    flags = [cv2.SOLVEPNP_IPPE, cv2.SOLVEPNP_SQPNP] if planar else [cv2.SOLVEPNP_SQPNP]
    starts, fallback, failures = [], None, []
    for flag in flags:
        try:
            count, rvecs, tvecs, _ = cv2.solvePnPGeneric(pts3, pts2, k, None, flags=flag)
        except cv2.error as exc:  # e.g. SQPnP asserts when the 2D points (nearly) coincide
            failures.append(" ".join(str(exc).split())[-120:])
            continue
        for i in range(count):
            R, _ = cv2.Rodrigues(rvecs[i])
            t = tvecs[i].reshape(3)
            fallback = fallback or (R, t)
            if ((pts3 @ R.T + t)[:, 2] > 0).all():
                starts.append((R, t))
    if not starts and fallback is None:
        spread = float(np.ptp(pts2, axis=0).max()) if len(pts2) else 0.0
        why = f" (OpenCV: {failures[-1]})" if failures else ""
        raise UserError(f"cv2.solvePnP found no pose for these keypoints: 2D spread {spread:.3g} px{why}")
    return starts or [fallback]


def solve_pnp(
    points_3d: object,
    points_2d: object,
    K: object,
    refine: bool = True,
    grad_tol: float = GRAD_TOL,
    start: object | None = None,
) -> Pose | list[Pose]:
    """The pose (R, t) that best reprojects ``points_3d`` onto ``points_2d`` (least squares, pixels).

    Every OpenCV solution in front of the camera (:func:`opencv_starts`) is refined by damped Newton; the
    refined pose with the smallest reprojection error wins (multi-start: a single IPPE start can land in a
    poor local minimum on grazing views of a planar target).

    Args:
        points_3d: (N, 3) object keypoints (N ≥ 4 coplanar, N ≥ 6 otherwise).
        points_2d: (N, 2) pixels, or a batch (B, N, 2) (then a list of B poses; the Newton refinement runs
            batched).
        K: (3, 3) intrinsics.
        refine: polish to a stationary point of the reprojection error (‖∇E‖∞ ≤ ``grad_tol``/10 in the
            Cayley/translation parameters); the certified estimator needs it. Without it: OpenCV's
            solution with the smallest reprojection error.
        grad_tol: gradient tolerance of the refinement.
        start: optional (R, t) to start the refinement from instead (a single start, e.g. the pose at the
            nominal keypoints, to follow one solution branch).
    """
    pts3, planar = as_points_3d(points_3d)
    pts2 = as_points_2d(points_2d, len(pts3))
    k = as_intrinsics(K)
    batch = pts2.reshape(-1, len(pts3), 2)
    if start is None:
        per_item = [opencv_starts(pts3, p, k, planar) for p in batch]
    else:
        fixed = as_pose(start, "start")
        per_item = [[(fixed.R, fixed.t)]] * len(batch)
    owner = np.repeat(np.arange(len(batch)), [len(c) for c in per_item])
    candidates = [Pose(R, t) for starts in per_item for R, t in starts]
    if refine:
        # a few Newton steps for every start, then only the starts still in the running (energy within
        # 1.5× + 1 px² of their item's best) to convergence: poor starts stop early
        candidates = refine_poses(pts3, batch[owner], k, candidates, grad_tol, max_iter=8, second_order=False)
        errors = _reprojection_errors(pts3, batch[owner], k, candidates)
        best = np.full(len(batch), np.inf)
        np.minimum.at(best, owner, errors)
        keep = np.flatnonzero(errors <= 1.5 * best[owner] + 1.0)
        polished = refine_poses(pts3, batch[owner[keep]], k, [candidates[i] for i in keep], grad_tol)
        for i, pose in zip(keep, polished, strict=True):
            candidates[i] = pose
        errors = np.full(len(candidates), np.inf)
        errors[keep] = _reprojection_errors(pts3, batch[owner[keep]], k, polished)
    else:
        errors = _reprojection_errors(pts3, batch[owner], k, candidates)
    # owner is sorted (np.repeat): each item's starts are one slice (a mask per item was O(B²))
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in per_item])])
    poses = [
        candidates[offsets[i] + int(np.argmin(errors[offsets[i] : offsets[i + 1]]))]
        for i in range(len(batch))
    ]
    return poses if pts2.ndim == 3 else poses[0]


def _reprojection_errors(pts3: np.ndarray, batch: np.ndarray, k: np.ndarray, poses: list[Pose]) -> np.ndarray:
    """Σᵢ‖π(K(R Xᵢ + t)) − uᵢ‖² per pose (vectorised; inf where a point is not in front of the camera)."""
    R = np.stack([p.R for p in poses])
    t = np.stack([p.t for p in poses])
    cam = np.einsum("bij,nj->bni", R, pts3) + t[:, None, :]
    uvw = cam @ k.T
    with np.errstate(divide="ignore", invalid="ignore"):
        err = ((uvw[..., :2] / uvw[..., 2:3] - batch) ** 2).sum((-1, -2))
    return np.where((cam[..., 2] > 0).all(-1) & np.isfinite(err), err, np.inf)


def refine_poses(
    pts3: np.ndarray,
    batch: np.ndarray,
    k: np.ndarray,
    poses: list[Pose],
    grad_tol: float,
    max_iter: int = 100,
    second_order: bool = True,
) -> list[Pose]:
    """Damped Newton from each pose (batched); poses whose refinement fails keep their start."""
    import torch

    if not poses:
        return []
    from .pose_model import Intrinsics
    from .pose_refine import refine_stationary_poses

    rot = np.stack([p.R for p in poses])
    Z = torch.from_numpy(np.einsum("bij,nj->bni", rot, pts3))
    start = torch.cat(
        [torch.zeros(len(poses), 3, dtype=torch.float64), torch.from_numpy(np.stack([p.t for p in poses]))], 1
    )
    u = torch.from_numpy(np.ascontiguousarray(batch))
    found, _ = refine_stationary_poses(
        Z, Intrinsics.from_matrix(k), u, start, grad_tol, max_iter, second_order
    )
    found = found.numpy()
    R = np.einsum("bij,bjk->bik", rotation_from_cayley(found[:, :3]), rot)
    return [Pose(R[i], found[i, 3:].copy()) for i in range(len(poses))]
