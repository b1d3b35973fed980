"""geo_rs — the shared core of geo-rs: randomized smoothing, smoothed voxel grids and weak SDFs,
meshes, bound propagation, MILP encodings and IoU interval extensions.

The public API is flat: everything documented in the README is importable from ``geo_rs``. Names
are resolved lazily (PEP 562), so ``import geo_rs`` — and with it ``geo-rs --help`` — does not import
torch, open3d or auto_LiRPA until a name that needs them is used.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import UserError

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "certified_radius": "radius", "max_radius_sigmas": "radius",
    "Interval": "bounds",
    "ABSTAIN": "smoothing", "Certificate": "smoothing", "Prediction": "smoothing", "Smooth": "smoothing",
    "MedianCertificate": "median_smoothing", "MedianPrediction": "median_smoothing",
    "MedianSmooth": "median_smoothing", "max_certifiable_eps": "median_smoothing",
    "Pose": "pose", "project_points": "pose", "rotation_error_deg": "pose", "solve_pnp": "pose",
    "PoseErrorBound": "pose_bound", "pose_error_bound": "pose_bound",
    "AttackResult": "pose_attack", "attack_pose_error": "pose_attack", "KeypointSet": "pose_sets",
    "KeypointBudget": "pose_budget", "max_keypoint_box": "pose_budget",
    "IoUBounds": "iou", "box_iou": "iou", "iou_bounds": "iou",
    "FastMaxPool2d": "max_pool", "max_pool2d_branch_free": "max_pool", "max_pool2d_naive": "max_pool",
    "iou_bounds_naive": "iou",
    "GaussianBlur3d": "blur", "gaussian_blur3d": "blur", "gaussian_blur3d_naive": "blur",
    "VoxelGrid": "grid",
    "WeakSDF": "sdf", "weak_sdf": "sdf", "certified_sdf_at": "sdf", "weak_sdf_max_radius": "sdf",
    "export_mesh": "marching", "extract_mesh": "marching",
    "mesh_metrics": "mesh_scores",
    "builtin_shapes": "meshes", "load_mesh": "meshes", "mesh_sdf": "meshes", "occupancy_grid": "meshes",
    "plot_sdf_slices": "plots",
    "ExecOptions": "parallel", "ResultStore": "parallel", "RunResult": "parallel", "Task": "parallel",
    "Unit": "parallel", "run_units": "parallel", "unit_seed": "parallel",
}
for _name in (
    "ArgmaxGadget", "Brightness", "Composed", "Contrast", "ExtremumResult", "LayerBounds", "MilpResult",
    "NetworkEncoding", "Perturbation", "UnsupportedModelError", "Verdict", "WhiteNoise", "add_argmax",
    "add_bounded_variables", "add_max", "encode_network", "layer_bounds", "output_bounds",
    "output_extremum", "prune_candidates", "solve_milp", "verify_linear",
):
    _EXPORTS[_name] = "bounds"

__all__ = ["UserError", "__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geo_rs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
