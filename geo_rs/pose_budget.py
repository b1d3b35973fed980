"""The converse of the pose bound: the largest keypoint box for which the pose error stays within tolerances.

:func:`max_keypoint_box` bisects the half-width r (pixels, the same for every keypoint and axis) of the
boxes ``[u − r, u + r]`` around nominal keypoints u, calling :func:`geo_rs.pose_error_bound` with the
tolerances as targets. The answer is a half-width at which the bound is **proved** (so a sound budget for
a keypoint certifier); the bound is not monotone in r in general (it is a search), so a slightly larger
box may also be provable — bisection stops at ``tol`` pixels.

Example:
    >>> import cv2, numpy as np
    >>> from geo_rs import max_keypoint_box, project_points
    >>> X = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.]]) * 2 - 1
    >>> K = np.array([[600, 0, 64], [0, 600, 64], [0, 0, 1.]])
    >>> u = project_points(X, (cv2.Rodrigues(np.array([0.8, 0.0, 0.0]))[0], np.array([0.0, 0.0, 6.0])), K)
    >>> budget = max_keypoint_box(X, u, K, max_rotation_deg=2.0, r_max=4.0, tol=0.25)
    >>> 0 < budget.half_width <= 4.0 and budget.bound.rotation_deg <= 2.0
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import checks
from .errors import UserError
from .pose import Pose, as_intrinsics, as_points_2d, as_points_3d, as_pose, solve_pnp
from .pose_bound import PoseErrorBound, pose_error_bound

__all__ = ["KeypointBudget", "max_keypoint_box"]


@dataclass(frozen=True)
class KeypointBudget:
    """Result of :func:`max_keypoint_box`.

    Attributes:
        half_width: the largest half-width r (pixels) found whose boxes are proved within the tolerances
            (0.0 if even the smallest tried box could not be proved).
        bound: the :class:`~geo_rs.PoseErrorBound` proved at ``half_width`` (None if half_width is 0).
        tried: ``(r, proved)`` for every bisection step, in order.
    """

    half_width: float
    bound: PoseErrorBound | None
    tried: tuple[tuple[float, bool], ...]


def max_keypoint_box(
    points_3d: object,
    keypoints_2d: object,
    K: object,
    *,
    max_rotation_deg: float | None = None,
    max_translation: float | None = None,
    max_camera_position: float | None = None,
    reference_pose: object | None = None,
    r_max: float = 16.0,
    tol: float = 0.1,
    time_limit_s: float | None = 30.0,
) -> KeypointBudget:
    """Largest r such that boxes ``keypoints_2d ± r`` provably keep the pose errors within the tolerances.

    Args:
        points_3d: (N, 3) object keypoints; keypoints_2d: (N, 2) nominal pixels; K: (3, 3) intrinsics.
        max_rotation_deg, max_translation, max_camera_position: tolerances (at least one).
        reference_pose: what errors are measured against (default: the pose solved at ``keypoints_2d``).
        r_max: largest half-width tried (pixels). tol: bisection stops when the bracket is below it.
        time_limit_s: budget of each bound computation.
    """
    pts, _ = as_points_3d(points_3d)
    u = as_points_2d(keypoints_2d, len(pts), "keypoints_2d")
    k = as_intrinsics(K)
    targets = tuple(
        None if v is None else checks.positive_finite(name, v)
        for name, v in (
            ("max_rotation_deg", max_rotation_deg),
            ("max_translation", max_translation),
            ("max_camera_position", max_camera_position),
        )
    )
    if all(v is None for v in targets):
        raise UserError(
            "max_keypoint_box needs at least one tolerance (max_rotation_deg, max_translation, ...)"
        )
    r_max = checks.positive_finite("r_max", r_max, "pixels")
    tol = checks.positive_finite("tol", tol, "pixels")
    nominal = solve_pnp(pts, u, k)
    reference = nominal if reference_pose is None else as_pose(reference_pose)
    tried: list[tuple[float, bool]] = []
    best: tuple[float, PoseErrorBound | None] = (0.0, None)
    lo, hi = 0.0, r_max
    while hi - lo > tol or not tried:
        r = hi if not tried else (lo + hi) / 2
        result = _proved(pts, u, k, reference, nominal, r, targets, time_limit_s)
        tried.append((r, result is not None))
        if result is not None:
            best, lo = (r, result), r
            if r == r_max:
                break
        else:
            hi = r
    return KeypointBudget(best[0], best[1], tuple(tried))


def _proved(
    pts: np.ndarray,
    u: np.ndarray,
    k: np.ndarray,
    reference: Pose,
    nominal: Pose,
    r: float,
    targets: tuple,
    time_limit_s: float | None,
) -> PoseErrorBound | None:
    bound = pose_error_bound(
        pts, (u - r, u + r), k, reference, nominal_pose=nominal, targets=targets, time_limit_s=time_limit_s
    )
    values = (bound.rotation_deg, bound.translation, bound.camera_position)
    ok = all(t is None or (math.isfinite(v) and v <= t) for v, t in zip(values, targets, strict=True))
    return bound if ok else None
