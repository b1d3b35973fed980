"""How far the detector *as it computes in float32* can be from the real-arithmetic network whose bounds
the engine computes (``geo_rs.layer_bounds(..., dtype=torch.float64)``), over a perturbation set.

``geo_rs.output_bounds`` adds no float32 rounding margin: its bounds hold for the network in real
arithmetic. A certificate must hold for the float32 model a user runs, so every bound the verifier uses
at the interval and linear levels is widened by :func:`float_deviation` (per output) plus an allowance
for the engine's own float64 rounding (:attr:`FloatMargin.allowance`).

The deviation is Higham's forward-error bound, layer by layer, from :mod:`geo_rs.bounds.float_error`
(the analysis the MILP encoder uses): pixels start with the rounding of ``clamp(x + Σ θ A + δ)``
(:func:`~geo_rs.bounds.float_error.input_rounding`); an affine layer adds ``γ_{n+1}(|W||h| + |b|)`` on
interval magnitudes of its float inputs and multiplies incoming errors by ``|W|``; ReLU / MaxPool pass
errors through (1-Lipschitz); a residual add adds ``u·|a + b|``. Supported structures: ``nn.Sequential``
(nested), the verification detector's :class:`~keypoint.verify.detector.Residual`, the verifier's own
wrappers, and the affine layers of ``float_error``. Anything else: ``None`` (the caller falls back to a
heuristic margin and says so in the result's notes).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from geo_rs import WhiteNoise
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, 1, 1), nn.ReLU(), nn.Conv2d(2, 1, 1), nn.Flatten())
    >>> m = float_deviation(net, torch.rand(1, 1, 8, 8), WhiteNoise(0.01))
    >>> m.dev.shape, bool((m.dev > 0).all() and (m.dev < 1e-4).all())
    ((64,), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

U32 = 2.0**-24
U64 = 2.0**-53
HEURISTIC = 1e-5  # relative + absolute, only for models whose structure the analysis does not know


@dataclass
class FloatMargin:
    """Per flat output: ``dev`` bounds ``|float32 model − real-arithmetic model|`` on the set; ``mag``
    bounds every term of the engine's sums (for its float64 rounding); ``rigorous`` is False for the
    heuristic fallback."""

    dev: np.ndarray
    mag: np.ndarray
    terms: int
    rigorous: bool = True

    @property
    def allowance(self) -> np.ndarray:
        """Float64 rounding of the bound engine's own computation (CROWN sums ``terms`` products)."""
        n = max(self.terms, 1)
        return 2 * (n * U64 / (1 - n * U64)) * self.mag + 1e-300

    def output(self) -> np.ndarray:
        """Total widening per output."""
        return self.dev + self.allowance


@dataclass
class _State:
    lo: Tensor  # bounds of the float values (1, *shape), float64
    hi: Tensor
    dev: Tensor  # |float value − real value|
    mag: Tensor  # magnitude chain with relaxation intercepts
    terms: int = 0


class _Unknown(Exception):
    pass


def _affine(layer: nn.Module, s: _State) -> _State:
    from geo_rs.bounds.float_error import affine_ops, block_errors

    try:
        ops = affine_ops(layer)
    except Exception as exc:
        raise _Unknown(type(layer).__name__) from exc
    local, total, _ = block_errors(ops, s.lo, s.hi, 0.0, s.dev)
    mid, rad, mag = (s.lo + s.hi) / 2, (s.hi - s.lo) / 2, s.mag
    for op in ops:
        mid, rad, mag = op.apply(mid), op.abs_linear(rad), op.magnitude(mag)
    slack = local + 1e-12 * (mid.abs() + rad)  # + the float64 rounding of this interval pass
    return _State(mid - rad - slack, mid + rad + slack, total, mag, s.terms + sum(op.n for op in ops) + 1)


def _relu(s: _State) -> _State:
    inter = torch.maximum(s.lo.abs(), s.hi.abs())
    return _State(s.lo.clamp(min=0), s.hi.clamp(min=0), s.dev, s.mag + inter, s.terms + 1)


def _maxpool(layer: nn.MaxPool2d, s: _State) -> _State:
    pool = lambda t: F.max_pool2d(  # noqa: E731
        t, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
    )
    inter = torch.maximum(s.lo.abs(), s.hi.abs())
    return _State(pool(s.lo), pool(s.hi), pool(s.dev), pool(s.mag + inter), s.terms + 1)


def _walk(module: nn.Module, s: _State) -> _State:
    from .detector import Residual
    from .wrappers import FlatHeatmaps, HeatmapsOf

    if isinstance(module, nn.Sequential):
        for layer in module:
            s = _walk(layer, s)
        return s
    if isinstance(module, (FlatHeatmaps, HeatmapsOf)):
        if isinstance(module, HeatmapsOf):
            raise _Unknown("dict-output keypoint model")
        return _walk(module.model, s)
    if isinstance(module, Residual):
        b = _walk(module.body, s)
        lo, hi = s.lo + b.lo, s.hi + b.hi
        big = torch.maximum(lo.abs(), hi.abs())
        add = U32 * big * (1 + 1e-6) + torch.finfo(torch.float32).tiny
        out = _State(lo - add, hi + add, s.dev + b.dev + add, s.mag + b.mag, max(s.terms, b.terms) + 1)
        return _walk(module.act, out)
    if isinstance(module, nn.ReLU):
        return _relu(s)
    if isinstance(module, nn.MaxPool2d):
        return _maxpool(module, s)
    if any(p.dtype != torch.float32 for p in module.parameters()):
        raise _Unknown("non-float32 parameters")
    return _affine(module, s)


def float_deviation(model: nn.Module, x: Tensor, perturbation) -> FloatMargin | None:
    """The :class:`FloatMargin` of ``model`` on the set around ``x (1, C, H, W)``, or None when the model's
    structure is not one the analysis knows (see module docstring)."""
    from geo_rs.bounds.float_error import input_rounding

    fam = perturbation.family(x)
    lo, hi = (t.detach().double().cpu() for t in perturbation.input_box(x))
    d0 = input_rounding(fam, x)
    s = _State((lo - d0).clamp(0, 1), (hi + d0).clamp(0, 1), d0, (hi + d0).clamp(0, 1))
    try:
        with torch.no_grad():
            s = _walk(model, s)
    except _Unknown:
        return None
    return FloatMargin(s.dev.flatten().numpy(), s.mag.flatten().numpy(), s.terms)


def heuristic_margin(n_out: int, magnitude: np.ndarray) -> FloatMargin:
    """The fallback: ``HEURISTIC · (1 + |v|)`` — not a proof for float32 (the result's notes say so)."""
    return FloatMargin(HEURISTIC * (1 + np.abs(magnitude)), np.zeros(n_out), 1, rigorous=False)
