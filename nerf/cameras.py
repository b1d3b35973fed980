"""Pinhole cameras in the NeRF-synthetic (Blender) convention and the rays they shoot.

Convention (the one of ``transforms_*.json``): a 4×4 camera-to-world matrix ``c2w`` whose columns
are the camera x (right), y (up) and z axes and the camera centre, OpenGL style — the camera looks
down its **−z** axis, y is up in the image. Pixel (row v, column u) has its centre at
(u + ½, v + ½) in pixel units (the origin is the top-left corner of the top-left pixel, as in COLMAP
and nerfstudio). Intrinsics are per view: ``(fx, fy, cx, cy)`` in pixels, so non-square pixels
grids, non-square images and off-centre principal points are all expressed; the Blender layout's
``camera_angle_x`` gives fx = fy = ``0.5 * W / tan(0.5 * camera_angle_x)`` and (cx, cy) = (W/2, H/2).
Lens distortion is OpenCV's (k1, k2, p1, p2, k3): rays go through the *undistorted* direction of each
pixel (:func:`undistort_points`), so distorted images are used as they are, without resampling.
World is z-up for the cameras we generate (as in Blender).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from geo_rs import UserError

__all__ = [
    "focal_from_angle",
    "look_at",
    "sphere_directions",
    "orbit_cameras",
    "pixel_rays",
    "intrinsics_tensor",
    "distort_points",
    "undistort_points",
    "undistort_points_naive",
    "ray_box_intersect",
    "c2w_to_open3d_extrinsic",
]


def focal_from_angle(width: int, camera_angle_x: float) -> float:
    """Focal length in pixels from the horizontal field of view (radians)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """Camera-to-world (4, 4) for a camera at ``eye`` looking at ``target`` (OpenGL axes).

    ``up`` defaults to world +z; when the view direction is (anti)parallel to it, world +y is used.

    Example:
        >>> c2w = look_at(np.array([0, -4.0, 0]), np.zeros(3))
        >>> np.allclose(c2w[:3, 2], [0, -1, 0])   # camera z points back towards the eye
        True
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    z = eye - target
    if not np.isfinite(z).all() or np.linalg.norm(z) == 0:
        raise UserError(f"look_at: the camera at {eye.tolist()} must differ from its (finite) target "
                        f"{target.tolist()}")
    z /= np.linalg.norm(z)
    x = np.cross(up, z)
    if np.linalg.norm(x) < 1e-6:  # looking straight up/down: any horizontal right vector works
        x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def sphere_directions(n: int, mode: str = "fibonacci", seed: int = 0, hemisphere: bool = False) -> np.ndarray:
    """``n`` unit vectors (n, 3): a Fibonacci lattice (even coverage) or uniform random ones.

    With ``hemisphere`` only directions with z ≥ 0 (cameras above the ground plane, as in Blender).
    """
    if n <= 0:
        return np.zeros((0, 3))
    if mode == "fibonacci":
        i = np.arange(n) + 0.5
        z = 1 - i / n if hemisphere else 1 - 2 * i / n
        phi = i * math.pi * (3 - math.sqrt(5)) + 0.5  # golden angle; small offset avoids the exact pole
        r = np.sqrt(np.clip(1 - z**2, 0, 1))
        return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    if mode == "random":
        v = np.random.default_rng(seed).normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        if hemisphere:
            v[:, 2] = np.abs(v[:, 2])
        return v
    raise UserError(f"unknown sphere mode {mode!r} (fibonacci or random)")


def orbit_cameras(directions: np.ndarray, radius: float, target: np.ndarray | None = None) -> np.ndarray:
    """Camera-to-world matrices (n, 4, 4) at ``target + radius * direction`` looking at ``target``."""
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    return (
        np.stack([look_at(target + radius * d, target) for d in directions])
        if len(directions)
        else np.zeros((0, 4, 4))
    )


def intrinsics_tensor(intrinsics, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``(…, 4)`` tensor ``(fx, fy, cx, cy)`` from a focal length (square pixels, centred principal
    point) or anything tensor-like of 4 values per view; dtype/device of ``like``."""
    if isinstance(intrinsics, int | float):
        f = float(intrinsics)
        return torch.tensor([f, f, 0.5 * width, 0.5 * height], dtype=like.dtype, device=like.device)
    k = torch.as_tensor(intrinsics).to(dtype=like.dtype, device=like.device)
    if k.shape[-1:] != (4,):
        raise UserError(f"intrinsics must be a focal length or (..., 4) (fx, fy, cx, cy); got shape "
                        f"{tuple(k.shape)}")
    return k


# OpenCV distortion coefficients in this order; shorter vectors are padded with zeros.
DISTORTION_KEYS = ("k1", "k2", "p1", "p2", "k3")


def _distortion(dist: torch.Tensor) -> tuple[torch.Tensor, ...]:
    dist = torch.nn.functional.pad(dist, (0, 5 - dist.shape[-1]))
    return tuple(dist[..., i : i + 1] for i in range(5))


def distort_points(x: torch.Tensor, y: torch.Tensor, dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's forward model on normalised image coordinates (y down): undistorted → distorted.

    ``x``, ``y``: (B, P); ``dist``: (B, ≤5) (k1, k2, p1, p2, k3) of each row's camera.
    """
    k1, k2, p1, p2, k3 = _distortion(dist)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def undistort_points(xd: torch.Tensor, yd: torch.Tensor, dist: torch.Tensor,
                     iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert :func:`distort_points` by Newton's method on the 2×2 Jacobian (vectorised over points).

    Converges to float precision in a few steps for the mild distortions of real lenses; points
    where it has not converged (|residual| > 1e-6 after ``iterations``) are a :class:`UserError`
    naming the coefficients (a fisheye lens needs a fisheye model, which is refused on load).
    """
    k1, k2, p1, p2, k3 = _distortion(dist)
    x, y = xd.clone(), yd.clone()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # ∂radial/∂(r²)
        fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
        a = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x  # ∂fx/∂x
        b = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y  # ∂fx/∂y = ∂fy/∂x
        d = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x  # ∂fy/∂y
        det = a * d - b * b
        x = x - (d * fx - b * fy) / det
        y = y - (a * fy - b * fx) / det
    rx, ry = distort_points(x, y, dist)
    err = torch.maximum((rx - xd).abs(), (ry - yd).abs())
    if not bool((err <= 1e-6 * (1 + xd.abs() + yd.abs())).all()):
        raise UserError(f"lens distortion {dist.reshape(-1, dist.shape[-1])[0].tolist()} (k1, k2, p1, p2, "
                        f"k3) "
                        "cannot be inverted over the whole image: not an OpenCV (perspective) lens?")
    return x, y


def undistort_points_naive(xd, yd, dist) -> tuple:
    """Reference for :func:`undistort_points`: OpenCV's ``cv2.undistortPoints`` (numpy in and out)."""
    import cv2

    pts = np.stack([np.asarray(xd, np.float64), np.asarray(yd, np.float64)], -1).reshape(-1, 1, 2)
    coeffs = np.zeros(5)
    coeffs[: len(dist)] = dist
    out = cv2.undistortPoints(pts, np.eye(3), coeffs, R=np.eye(3), P=np.eye(3),
                              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14))
    return out[:, 0, 0].reshape(np.shape(xd)), out[:, 0, 1].reshape(np.shape(xd))


def pixel_rays(
    c2w: torch.Tensor, height: int, width: int, intrinsics, normalize: bool = True,
    distortion: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres.

    Args:
        c2w: (..., 4, 4) or (..., 3, 4) camera-to-world, OpenGL axes.
        height, width: image size in pixels.
        intrinsics: a focal length in pixels (square pixels, principal point at the image centre) or
            (..., 4) ``(fx, fy, cx, cy)`` per camera, in pixels.
        normalize: return unit directions (then ray parameter t is the Euclidean distance).
        distortion: optional (..., ≤5) OpenCV coefficients (k1, k2, p1, p2, k3) per camera.

    Returns:
        origins, directions: each (..., H, W, 3), same dtype/device as ``c2w``.

    Example:
        >>> o, d = pixel_rays(torch.eye(4), 2, 2, 1.0)
        >>> o.shape, bool((d[..., 2] < 0).all())   # the camera looks down −z
        (torch.Size([2, 2, 3]), True)
    """
    dev, dt = c2w.device, c2w.dtype
    batch = c2w.shape[:-2]
    k = intrinsics_tensor(intrinsics, height, width, c2w).expand(*batch, 4)
    v, u = torch.meshgrid(
        torch.arange(height, device=dev, dtype=dt), torch.arange(width, device=dev, dtype=dt), indexing="ij"
    )
    kk = k.reshape(-1, 4)[:, :, None]  # (B, 4, 1) against (1, H·W) pixels
    x = (u.reshape(1, -1) + 0.5 - kk[:, 2]) / kk[:, 0]
    y = (v.reshape(1, -1) + 0.5 - kk[:, 3]) / kk[:, 1]  # OpenCV: y down
    if distortion is not None:
        dist = torch.as_tensor(distortion).to(dtype=dt, device=dev).expand(*batch, distortion.shape[-1])
        dist = dist.reshape(-1, dist.shape[-1])
        if bool(dist.abs().amax() > 0):
            x, y = undistort_points(x, y, dist)
    cam = torch.stack([x, -y, -torch.ones_like(x)], -1).reshape(*batch, height, width, 3)
    rot = c2w[..., :3, :3]
    dirs = torch.einsum("...ij,...hwj->...hwi", rot, cam)
    if normalize:
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[..., None, None, :3, 3].expand(dirs.shape)
    return origins, dirs


def ray_box_intersect(
    origins: torch.Tensor, dirs: torch.Tensor, bmin: torch.Tensor, bmax: torch.Tensor, near: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test. Returns ``t_near``, ``t_far`` (...,) clamped to ``t ≥ near`` and a hit mask."""
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (bmin - origins) / safe
    t1 = (bmax - origins) / safe
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(near)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far, t_far > t_near


def c2w_to_open3d_extrinsic(c2w: np.ndarray) -> np.ndarray:
    """World-to-camera (4, 4) in the OpenCV axes open3d uses (x right, y down, z forward)."""
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    return flip @ np.linalg.inv(c2w)
