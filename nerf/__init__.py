"""nerf — a smoothed voxel radiance field whose geometry is a certified (weak) SDF.

Pipeline (the paper's Fig. 2): density grid θ → f = sigmoid(θ) → f̂ = gaussian_blur3d(f, σ) →
weak SDF s = σ·Φ⁻¹(f̂) → occupancy G = sigmoid(α·s/σ) → density −log(1 + ε − G) → nerfacc volume
rendering. σ and α follow schedules (coarse to fine); the mesh is the zero level of s at the final σ
(marching cubes), a certified-distance surface, and ``field.clearance(points)`` queries it soundly.
Data: the Blender layout, instant-ngp/nerfstudio ``transforms.json`` or a COLMAP text model
(:func:`load_capture`), normalised into the training frame (:mod:`nerf.normalize`).

Names are resolved lazily (PEP 562) like ``geo_rs``'s: ``geo-rs nerf --help`` imports the CLI module,
which imports this package, and must not pay for torch, open3d or nerfacc.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("c2w_to_open3d_extrinsic", "focal_from_angle", "look_at", "orbit_cameras", "pixel_rays",
         "ray_box_intersect", "sphere_directions"), "cameras"),
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    **dict.fromkeys(("Capture", "load_capture", "load_colmap", "load_transforms_json", "split_indices"),
                    "capture"),
    "write_capture": "capture_write",
    **dict.fromkeys(("Normalization", "Similarity", "estimate_normalization"), "normalize"),
    **dict.fromkeys(("orbit_poses", "render_turntable"), "turntable"),
    "intrinsics_tensor": "cameras", "undistort_points": "cameras", "distort_points": "cameras",
    "NerfConfig": "config", "load_config": "config",
    **dict.fromkeys(("SceneInfo", "Views", "load_blender", "load_scene_info"), "dataset"),
    **dict.fromkeys(("extract_and_score", "fill_cavities", "psnr", "render_test_views", "ssim"), "evaluate"),
    **dict.fromkeys(
        ("GridSpec", "PlainDensity", "RadianceField", "SHColor", "SmoothedDensity", "log_density",
         "sample_grid", "sample_grid_naive", "sh_basis"), "field"),
    **dict.fromkeys(("make_estimator", "render_image", "render_rays"), "render"),
    **dict.fromkeys(("builtin_scene_names", "load_scene_mesh", "make_capture", "make_scene", "render_views"),
                    "scene"),
    **dict.fromkeys(("Trainer", "build_field", "load_field", "resolution_schedule", "total_variation"),
                    "train"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nerf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
