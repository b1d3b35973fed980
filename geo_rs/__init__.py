"""geo_rs — the shared core of geo-rs: randomized smoothing, smoothed voxel grids and weak SDFs,
meshes, bound propagation, MILP encodings and IoU interval extensions.

The public API is flat: everything documented in the README is importable from ``geo_rs``.
"""
from .errors import UserError
from .radius import certified_radius, max_radius_sigmas

__version__ = "0.1.0"
__all__ = ["UserError", "__version__", "certified_radius", "max_radius_sigmas"]
