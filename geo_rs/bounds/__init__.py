"""geo_rs.bounds — interval arithmetic, perturbation sets, output bounds (auto_LiRPA) and MILP encodings.

auto_LiRPA is imported only when bounds are computed (it is slow to import), so ``import geo_rs`` stays fast.
"""

from importlib import import_module

from .interval import Interval, interval_max, interval_min
from .output_bounds import (
    SUPPORTED_LAYERS,
    LayerBounds,
    UnsupportedModelError,
    clear_bounds_cache,
    layer_bounds,
    output_bounds,
)
from .perturbations import Brightness, Composed, Contrast, Perturbation, WhiteNoise, affine_pieces

_LAZY = {
    # MILP (pulp)
    "Verdict": "milp_result",
    "MilpResult": "milp_result",
    "solve_milp": "milp_result",
    "make_solver": "milp_result",
    "add_argmax": "milp_argmax",
    "add_max": "milp_argmax",
    "ArgmaxGadget": "milp_argmax",
    "prune_candidates": "milp_argmax",
    "add_bounded_variables": "milp_argmax",
    "encode_network": "milp_relu",
    "NetworkEncoding": "milp_relu",
    "output_extremum": "milp_relu",
    "ExtremumResult": "milp_relu",
    "verify_linear": "milp_relu",
}

__all__ = [
    "Interval",
    "interval_max",
    "interval_min",
    "Brightness",
    "Composed",
    "Contrast",
    "Perturbation",
    "WhiteNoise",
    "affine_pieces",
    "SUPPORTED_LAYERS",
    "LayerBounds",
    "UnsupportedModelError",
    "clear_bounds_cache",
    "layer_bounds",
    "output_bounds",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
