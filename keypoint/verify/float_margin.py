"""How far the detector *as it computes in its own dtype* (float32, or float64 for a ``model.double()``
deployment) can be from the real-arithmetic network whose bounds the engine computes
(``geo_rs.layer_bounds(..., dtype=torch.float64)``), over a perturbation set.

``geo_rs.output_bounds`` adds no rounding margin: its bounds hold for the network in real arithmetic. A
certificate must hold for the model a user runs, so every bound the verifier uses at the interval and
linear levels is widened by :func:`float_deviation` (per output) plus an allowance for the engine's own
float64 rounding (:attr:`FloatMargin.allowance`). The unit roundoff is the model's: 2^-24 for float32,
2^-53 for float64 (the analysis is the same; the float64 margin is ~10^9 times smaller).

The deviation is Higham's forward-error bound, layer by layer, from :mod:`geo_rs.bounds.float_error`
(the analysis the MILP encoder uses): pixels start with the rounding of ``clamp(x + Σ θ A + δ)``
(:func:`~geo_rs.bounds.float_error.input_rounding`); an affine layer adds ``γ_{n+1}(|W||h| + |b|)`` on
interval magnitudes of its float inputs and multiplies incoming errors by ``|W|``; ReLU / MaxPool pass
errors through (1-Lipschitz), except that a ReLU whose input is ``<= 0`` for the float *and* the real
network (``hi + dev <= 0``: the float value is ``<= hi`` and the real one within ``dev`` of it) outputs
exactly 0 in both, so its deviation is 0 (in general ``min(dev, max(hi + dev, 0))``); a residual add
adds ``u·|a + b|``. The float values' intervals come from an interval pass over the input box,
intersected with the engine's bounds of the real pre-activations when given (``pre_activations``: for
brightness / contrast the engine fuses the set with the first layer, which decides far more ReLUs
stably off) — widened by the deviation so far and the engine's own rounding.
Supported structures: ``nn.Sequential``
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
        return engine_rounding(self.terms, self.mag)

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
    u: float = U32  # unit roundoff of the model's dtype


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
    terms = s.terms + sum(op.n for op in ops) + 1
    return _State(mid - rad - slack, mid + rad + slack, total, mag, terms, s.u)


def relu_deviation(hi: Tensor, dev: Tensor) -> Tensor:
    """Deviation after a ReLU whose float input is ``<= hi`` and within ``dev`` of the real one: both
    inputs are ``<= hi + dev``, so both outputs lie in ``[0, max(hi + dev, 0)]`` — and ReLU is
    1-Lipschitz: ``min(dev, max(hi + dev, 0))``. It is 0 where ``hi + dev <= 0`` (both inputs ``<= 0``,
    both outputs exactly 0)."""
    return torch.minimum(dev, (hi + dev).clamp(min=0))


class _Mismatch(Exception):
    """Engine bounds that do not line up with the walk (count, shape, or an empty intersection)."""


def engine_rounding(terms: int, mag):
    """Float64 rounding of the bound engine's own sums of ``terms`` products of magnitude ``mag``
    (Higham's γ_n, twice for margin): :attr:`FloatMargin.allowance`, and the engine's bounds met mid-walk."""
    n = max(terms, 1)
    return 2 * (n * U64 / (1 - n * U64)) * mag + 1e-300


def _tighten(s: _State, bound: tuple[Tensor, Tensor] | None) -> _State:
    """Intersect the float values' interval with the engine's bounds of the *real* pre-activation
    ``[lo_r, hi_r]``: the float value is within ``dev`` of the real one, so it lies in
    ``[lo_r − dev − a, hi_r + dev + a]`` (``a``: the engine's float64 rounding)."""
    if bound is None:
        return s
    lo_r, hi_r = (t.detach().to(device="cpu", dtype=torch.float64) for t in bound)
    if lo_r.shape != s.lo.shape or hi_r.shape != s.hi.shape:
        raise _Mismatch(f"engine bounds {tuple(lo_r.shape)} for an activation {tuple(s.lo.shape)}")
    a = engine_rounding(s.terms, s.mag)
    lo = torch.maximum(s.lo, lo_r - s.dev - a)
    hi = torch.minimum(s.hi, hi_r + s.dev + a)
    if bool((lo > hi).any()):  # two sound enclosures of the same values cannot be disjoint
        raise _Mismatch("engine bounds disjoint from the interval pass")
    return _State(lo, hi, s.dev, s.mag, s.terms, s.u)


def _relu(s: _State, bound: tuple[Tensor, Tensor] | None = None) -> _State:
    s = _tighten(s, bound)
    inter = torch.maximum(s.lo.abs(), s.hi.abs())
    dev = relu_deviation(s.hi, s.dev)
    return _State(s.lo.clamp(min=0), s.hi.clamp(min=0), dev, s.mag + inter, s.terms + 1, s.u)


def _maxpool(layer: nn.MaxPool2d, s: _State) -> _State:
    pool = lambda t: F.max_pool2d(  # noqa: E731
        t, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
    )
    inter = torch.maximum(s.lo.abs(), s.hi.abs())
    return _State(pool(s.lo), pool(s.hi), pool(s.dev), pool(s.mag + inter), s.terms + 1, s.u)


def _walk(module: nn.Module, s: _State, pre: list | None = None) -> _State:
    from .detector import Residual
    from .wrappers import FlatHeatmaps, HeatmapsOf

    if isinstance(module, nn.Sequential):
        for layer in module:
            s = _walk(layer, s, pre)
        return s
    if isinstance(module, (FlatHeatmaps, HeatmapsOf)):
        if isinstance(module, HeatmapsOf):
            raise _Unknown("dict-output keypoint model")
        return _walk(module.model, s, pre)
    if isinstance(module, Residual):
        b = _walk(module.body, s, pre)
        lo, hi = s.lo + b.lo, s.hi + b.hi
        big = torch.maximum(lo.abs(), hi.abs())
        tiny = torch.finfo(torch.float64 if s.u == U64 else torch.float32).tiny
        # the model's rounding of the add, plus the float64 rounding of this interval sum (2 u64)
        add = (s.u + 2 * U64) * big * (1 + 1e-6) + tiny
        terms = max(s.terms, b.terms) + 1
        out = _State(lo - add, hi + add, s.dev + b.dev + add, s.mag + b.mag, terms, s.u)
        return _walk(module.act, out, pre)
    if isinstance(module, nn.ReLU):
        if pre is None:
            return _relu(s)
        if not pre:
            raise _Mismatch("fewer engine bounds than ReLUs")
        return _relu(s, pre.pop(0))
    if isinstance(module, nn.MaxPool2d):
        return _maxpool(module, s)
    want = torch.float64 if s.u == U64 else torch.float32
    if any(p.dtype != want for p in module.parameters()):
        raise _Unknown(f"parameters not in the input's dtype {want}")
    return _affine(module, s)


def float_deviation(
    model: nn.Module, x: Tensor, perturbation, pre_activations: list | None = None
) -> FloatMargin | None:
    """The :class:`FloatMargin` of ``model`` on the set around ``x (1, C, H, W)``, or None when the model's
    structure is not one the analysis knows (see module docstring). The model runs in ``x``'s dtype
    (float32 or float64); every parameter must have that dtype.

    ``pre_activations``: optional sound bounds ``(lo, hi)`` of every ReLU input of the *real-arithmetic*
    network, in execution order (e.g. :func:`geo_rs.layer_bounds`' ``pre_activations``, whose
    brightness / contrast bounds fuse the first layer and are much tighter than the interval pass): the
    float values' intervals are intersected with them, widened by the deviation so far and the engine's
    rounding, which decides more ReLUs stably off. If they do not line up with the walk (count or shape),
    they are ignored and the margin is computed from the interval pass alone."""
    from geo_rs.bounds.float_error import input_rounding

    if x.dtype not in (torch.float32, torch.float64):
        return None
    fam = perturbation.family(x)
    lo, hi = (t.detach().double().cpu() for t in perturbation.input_box(x))
    d0 = input_rounding(fam, x)
    u = U64 if x.dtype == torch.float64 else U32
    s0 = _State((lo - d0).clamp(0, 1), (hi + d0).clamp(0, 1), d0, (hi + d0).clamp(0, 1), 0, u)
    try:
        with torch.no_grad():
            if pre_activations is not None:
                try:
                    queue = list(pre_activations)
                    s = _walk(model, s0, queue)
                    if queue:
                        raise _Mismatch("more engine bounds than ReLUs")
                except _Mismatch:
                    s = _walk(model, s0)
            else:
                s = _walk(model, s0)
    except _Unknown:
        return None
    return FloatMargin(s.dev.flatten().numpy(), s.mag.flatten().numpy(), s.terms)


def heuristic_margin(n_out: int, magnitude: np.ndarray) -> FloatMargin:
    """The fallback: ``HEURISTIC · (1 + |v|)`` — not a proof for float32 (the result's notes say so)."""
    return FloatMargin(HEURISTIC * (1 + np.abs(magnitude)), np.zeros(n_out), 1, rigorous=False)
