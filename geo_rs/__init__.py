"""geo_rs — the shared core of geo-rs: randomized smoothing, smoothed voxel grids and weak SDFs,
meshes, bound propagation, MILP encodings and IoU interval extensions.

The public API is flat: everything documented in the README is importable from ``geo_rs``.
"""
from .errors import UserError
from .radius import certified_radius, max_radius_sigmas

__version__ = "0.1.0"
__all__ = ["UserError", "__version__", "certified_radius", "max_radius_sigmas"]

from .bounds import Interval  # noqa: E402

__all__ += ["Interval"]

from .smoothing import ABSTAIN, Certificate, Prediction, Smooth  # noqa: E402

__all__ += ["ABSTAIN", "Certificate", "Prediction", "Smooth"]

from .iou_bounds import IoUBounds, box_iou, iou_bounds, iou_bounds_naive  # noqa: E402

__all__ += ["IoUBounds", "box_iou", "iou_bounds", "iou_bounds_naive"]

from .blur import GaussianBlur3d, gaussian_blur3d, gaussian_blur3d_naive  # noqa: E402
from .grid import VoxelGrid  # noqa: E402
from .sdf import WeakSDF, weak_sdf  # noqa: E402

__all__ += ["GaussianBlur3d", "VoxelGrid", "WeakSDF", "gaussian_blur3d", "gaussian_blur3d_naive", "weak_sdf"]

from .marching import export_mesh, extract_mesh  # noqa: E402
from .mesh_metrics import mesh_metrics  # noqa: E402
from .meshes import builtin_shapes, load_mesh, mesh_sdf, occupancy_grid  # noqa: E402
from .plots import plot_sdf_slices  # noqa: E402

__all__ += ["builtin_shapes", "export_mesh", "extract_mesh", "load_mesh", "mesh_metrics", "mesh_sdf",
            "occupancy_grid", "plot_sdf_slices"]

from .bounds import (  # noqa: E402
    ArgmaxGadget,
    Brightness,
    Composed,
    Contrast,
    ExtremumResult,
    LayerBounds,
    MilpResult,
    NetworkEncoding,
    Perturbation,
    UnsupportedModelError,
    Verdict,
    WhiteNoise,
    add_argmax,
    add_bounded_variables,
    add_max,
    encode_network,
    layer_bounds,
    output_bounds,
    output_extremum,
    prune_candidates,
    solve_milp,
    verify_linear,
)

__all__ += [
    "ArgmaxGadget",
    "Brightness",
    "Composed",
    "Contrast",
    "ExtremumResult",
    "LayerBounds",
    "MilpResult",
    "NetworkEncoding",
    "Perturbation",
    "UnsupportedModelError",
    "Verdict",
    "WhiteNoise",
    "add_argmax",
    "add_bounded_variables",
    "add_max",
    "encode_network",
    "layer_bounds",
    "output_bounds",
    "output_extremum",
    "prune_candidates",
    "solve_milp",
    "verify_linear",
]

from .sdf import certified_sdf_at, weak_sdf_max_radius  # noqa: E402

__all__ += ["certified_sdf_at", "weak_sdf_max_radius"]
