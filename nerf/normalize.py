"""Scene normalisation: a similarity transform from a capture's own coordinates to the training frame.

A capture posed by COLMAP (or any SfM tool) lives at an arbitrary position, orientation and scale.
The voxel grid wants the object near the origin, at a known size, with a known "up" (turntables
orbit it). :func:`estimate_normalization` finds ``x_train = s·R·x_capture + t``:

* **up** — R turns the mean of the cameras' up vectors (OpenGL +y) into +z (as nerfstudio's
  ``orientation_method="up"``); identity when the cameras' ups cancel out.
* **centre and scale from the cameras** — the centre is the point closest (least squares) to all
  optical axes, where the cameras look; the object's radius is estimated as the median over views
  of ``distance · sin(half the narrowest field of view)`` (the sphere that just fits each view);
  s maps that radius to 1, and the box is ``[-1.1, 1.1]³`` (10 % margin) times ``aabb_scale``.
* **centre and scale from sparse points** (COLMAP ``points3D.txt``) — the box between the 2nd and
  98th percentiles of the points on each axis (outliers dropped), padded by 25 %, times
  ``aabb_scale``; s maps its largest half-extent to 1.

Everything is recorded (:meth:`Similarity.to_dict`) in ``report.json`` and the checkpoint, so meshes
and clearance queries can be mapped back to the capture's coordinates (:meth:`Similarity.inverse`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from geo_rs import UserError

__all__ = ["Similarity", "Normalization", "estimate_normalization", "focus_point", "up_rotation"]


@dataclass
class Similarity:
    """``x ↦ scale · rotation @ x + translation`` (rotation proper, scale > 0)."""

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.rotation = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        self.translation = np.asarray(self.translation, dtype=np.float64).reshape(3)
        self.scale = float(self.scale)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise UserError(f"similarity scale must be a positive finite number, got {self.scale}")
        r = self.rotation
        if np.abs(r.T @ r - np.eye(3)).max() > 1e-6 or np.linalg.det(r) <= 0:
            raise UserError("similarity rotation must be a proper rotation matrix")

    @property
    def matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map (…, 3) points."""
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    def apply_c2w(self, c2w: np.ndarray) -> np.ndarray:
        """Map (…, 4, 4) camera-to-world poses: the centre moves like a point, the axes rotate (stay
        orthonormal: a camera has no scale)."""
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[..., :3, :3] = self.rotation @ out[..., :3, :3]
        out[..., :3, 3] = self.apply(out[..., :3, 3])
        return out

    def inverse(self) -> Similarity:
        rt = self.rotation.T
        return Similarity(1.0 / self.scale, rt, -(rt @ self.translation) / self.scale)

    def compose(self, first: Similarity) -> Similarity:
        """``self ∘ first`` (apply ``first``, then ``self``)."""
        return Similarity(self.scale * first.scale, self.rotation @ first.rotation,
                          self.scale * self.rotation @ first.translation + self.translation)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "rotation": self.rotation.tolist(),
                "translation": self.translation.tolist(),
                "matrix": self.matrix.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Similarity:
        return cls(d["scale"], d["rotation"], d["translation"])


@dataclass
class Normalization:
    """The capture → training-frame similarity, the training box, and how both were found."""

    transform: Similarity
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]]
    method: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"method": self.method, "capture_to_train": self.transform.to_dict(),
                "bounds_train": [list(self.bounds[0]), list(self.bounds[1])], "notes": self.notes,
                "meaning": "x_train = scale * rotation @ x_capture + translation; distances in the training "
                           "frame are scale times those of the capture"}


def focus_point(c2w: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares point nearest to every optical axis (OpenGL: the camera looks down −z) and the
    condition number of the 3×3 system (large: the axes are near parallel, the point is unreliable)."""
    origins, dirs = c2w[:, :3, 3], -c2w[:, :3, 2]
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # projector orthogonal to each axis
    a = proj.sum(0)
    b = np.einsum("nij,nj->i", proj, origins)
    return np.linalg.solve(a, b) if np.linalg.cond(a) < 1e8 else origins.mean(0), float(np.linalg.cond(a))


def up_rotation(c2w: np.ndarray) -> tuple[np.ndarray, bool]:
    """Rotation turning the mean camera up vector into +z (Rodrigues), and whether one was found."""
    up = c2w[:, :3, 1].mean(0)
    n = float(np.linalg.norm(up))
    if n < 1e-3:
        return np.eye(3), False
    up = up / n
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(up, z), float(up @ z)
    if c < -1 + 1e-9:  # up = −z: half turn about x
        return np.diag([1.0, -1.0, -1.0]), True
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c), True


def _half_fov(intrinsics: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per view: the half-angle from the principal point to the nearest image border (radians)."""
    fx, fy, cx, cy = intrinsics.T
    t = np.minimum.reduce([cx / fx, (width - cx) / fx, cy / fy, (height - cy) / fy])
    return np.arctan(np.clip(t, 1e-6, None))


def estimate_normalization(c2w: np.ndarray, intrinsics: np.ndarray, height: int, width: int,
                           method: str, points: np.ndarray | None = None,
                           aabb_scale: float = 1.0) -> Normalization:
    """The capture → training similarity and box (see the module docstring).

    Args:
        c2w: (N, 4, 4) camera poses of *all* views (train and test) in capture coordinates.
        intrinsics: (N, 4) ``(fx, fy, cx, cy)``; height, width: image size.
        method: ``cameras`` or ``points`` (``points`` needs ``points``).
        points: (M, 3) sparse points (COLMAP), capture coordinates.
        aabb_scale: box multiplier (instant-ngp's key; 1 for an object-centric capture).
    """
    notes = []
    rot, found = up_rotation(c2w)
    if not found:
        notes.append("camera up vectors cancel out: orientation kept")
    if method == "points":
        if points is None or len(points) < 8:
            raise UserError("normalize: points needs a sparse point cloud (COLMAP points3D.txt with >= 8 "
                            "points)")
        p = points @ rot.T
        lo, hi = np.percentile(p, 2, axis=0), np.percentile(p, 98, axis=0)
        centre = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo) * 1.25 * aabb_scale  # the percentiles cut into the object: a wide margin
        half = np.maximum(half, 0.05 * half.max())  # a flat point cloud still gets a box
        scale = 1.0 / float(half.max())
        notes.append(f"box from the 2nd-98th percentiles of {len(points)} sparse points, padded 25 %")
        bounds = (tuple((-half * scale).tolist()), tuple((half * scale).tolist()))
    elif method == "cameras":
        centre_c, cond = focus_point(c2w)
        if cond >= 1e8:
            notes.append("optical axes near parallel: centre = mean camera position")
        centre = rot @ centre_c
        dist = np.linalg.norm(c2w[:, :3, 3] - centre_c, axis=1)
        radius = float(np.median(dist * np.sin(_half_fov(intrinsics, height, width))))
        if not (math.isfinite(radius) and radius > 0):
            raise UserError("normalize: cannot estimate the scene's size from the cameras (all at the focus "
                            "point?); give bounds, or normalize: none")
        scale = 1.0 / radius
        h = 1.1 * aabb_scale
        notes.append("centre: nearest point to the optical axes; radius: median of distance * sin(half the "
                     "narrowest field of view) (the sphere that fills each view), box 1.1 radius")
        bounds = ((-h, -h, -h), (h, h, h))
    else:
        raise UserError(f"unknown normalization method {method!r} (cameras, points)")
    transform = Similarity(scale, rot, -scale * np.asarray(centre))
    return Normalization(transform, bounds, method, notes)
