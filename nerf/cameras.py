"""Pinhole cameras in the NeRF-synthetic (Blender) convention and the rays they shoot.

Convention (the one of ``transforms_*.json``): a 4×4 camera-to-world matrix ``c2w`` whose columns
are the camera x (right), y (up) and z axes and the camera centre, OpenGL style — the camera looks
down its **−z** axis, y is up in the image. Pixel (row v, column u) has its centre at
(u + ½, v + ½) in pixel units; the focal length is ``0.5 * W / tan(0.5 * camera_angle_x)``.
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


def pixel_rays(
    c2w: torch.Tensor, height: int, width: int, focal: float, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres.

    Args:
        c2w: (..., 4, 4) or (..., 3, 4) camera-to-world, OpenGL axes.
        height, width: image size in pixels; focal: focal length in pixels.
        normalize: return unit directions (then ray parameter t is the Euclidean distance).

    Returns:
        origins, directions: each (..., H, W, 3), same dtype/device as ``c2w``.

    Example:
        >>> o, d = pixel_rays(torch.eye(4), 2, 2, 1.0)
        >>> o.shape, bool((d[..., 2] < 0).all())   # the camera looks down −z
        (torch.Size([2, 2, 3]), True)
    """
    dev, dt = c2w.device, c2w.dtype
    v, u = torch.meshgrid(
        torch.arange(height, device=dev, dtype=dt), torch.arange(width, device=dev, dtype=dt), indexing="ij"
    )
    cam = torch.stack(
        [(u + 0.5 - 0.5 * width) / focal, -(v + 0.5 - 0.5 * height) / focal, -torch.ones_like(u)], -1
    )
    rot = c2w[..., :3, :3]
    dirs = torch.einsum("...ij,hwj->...hwi", rot, cam)
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
