"""The certified-radius relation r = σ·Φ⁻¹(p), shared by randomized smoothing and weak SDFs.

For randomized smoothing, p is a lower confidence bound on the top-class probability and r the
certified L2 radius (Cohen et al. 2019). For an occupancy grid smoothed with a Gaussian of std σ, p is
the smoothed occupancy f̂(x) and r is the weak SDF: positive inside (p > ½), negative outside.

Φ⁻¹ diverges at 0 and 1, so p is clamped to [δ, 1 − δ] where 1 − δ is the largest float below 1
in p's dtype (δ = 2⁻²⁴ in float32, 2⁻⁵³ in float64). The largest representable |r| is therefore
``max_radius_sigmas(dtype) * sigma``: 5.29σ in float32, 8.21σ in float64 (never inf). Gradients are
zero where the clamp is active.

Pass a *lower bound* on the probability (as CERTIFY does with Clopper–Pearson): a value that is 1 only
because it was rounded would claim the clamp's maximal radius. ``geo_rs.weak_sdf`` adds its own slack
for the blur's truncation and rounding for exactly that reason.
"""
from __future__ import annotations

import torch

from .checks import positive_finite, probabilities

__all__ = ["certified_radius", "max_radius_sigmas"]


def _delta(dtype: torch.dtype) -> float:
    # 1 - eps/2 is the largest representable value below 1 for IEEE binary formats.
    return torch.finfo(dtype).eps / 2


def max_radius_sigmas(dtype: torch.dtype = torch.float32) -> float:
    """Largest |Φ⁻¹(p)| representable in ``dtype`` (5.29 for float32, 8.21 for float64)."""
    return float(torch.special.ndtri(torch.tensor(1 - _delta(dtype), dtype=torch.float64)))


def certified_radius(p: torch.Tensor | float, sigma: float, check: bool = True) -> torch.Tensor:
    """Signed radius ``sigma * Φ⁻¹(p)``, finite everywhere, differentiable in ``p``.

    Args:
        p: probabilities in [0, 1], any shape. Non-float inputs are converted to float64.
        sigma: noise standard deviation (> 0), in the units the radius should have.
        check: validate that ``p`` has no NaN and lies in [0, 1] (one reduction pass).

    Returns:
        Tensor of ``p``'s shape (and dtype, if floating): positive where p > ½, negative where
        p < ½, zero at ½, with |r| ≤ ``max_radius_sigmas(dtype) * sigma``.

    Example:
        >>> float(certified_radius(torch.tensor(0.5), 0.25))
        0.0
        >>> round(float(certified_radius(torch.tensor(1.0, dtype=torch.float64), 1.0)), 2)
        8.21
    """
    sigma = positive_finite("sigma", sigma)
    p = torch.as_tensor(p)
    if not p.is_floating_point():
        p = p.to(torch.float64)
    if check:
        probabilities("p", p)
    d = _delta(p.dtype)
    return sigma * torch.special.ndtri(p.clamp(d, 1 - d))
