"""Rigorous bounds on how far a float network can be from the same network in real arithmetic.

The MILP encoder (:mod:`geo_rs.bounds.milp_relu`) reasons about the network with the *exact* values of
its float32 parameters in real arithmetic, while the model a user deploys computes in float32. This
module bounds the gap, layer by layer, from magnitudes (the classical forward error analysis, Higham,
*Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1 and Lemma 3.1):

* an affine output ``y = Σ_{i<n} w_i h_i + b`` evaluated in floating point with unit roundoff ``u`` —
  in *any* summation order, with or without fused multiply-adds — satisfies
  ``|fl(y) - y| <= γ_{n+1} (Σ |w_i||h_i| + |b|) + (n+1)·tiny``, ``γ_m = m u / (1 - m u)``; ``tiny`` (the
  smallest normal number) covers underflow, also with flush-to-zero;
* an error ``e`` already present on the inputs grows to ``|A| e`` (``A`` the layer's matrix);
* ReLU and MaxPool are exact and 1-Lipschitz: they pass errors through unchanged (per window max).

Each affine layer is described by an :class:`AffineOp` (its linear part, the same with ``|W|``, its bias
and the magnitudes of the bias-like terms of the float evaluation, ``n``): Linear, Conv2d,
ConvTranspose2d (``n`` = fan-in + 1), BatchNorm in eval (``n = 10``, covering the computation of
``w / sqrt(var + eps)`` and the shift ``b - mean·w/sqrt(var + eps)`` in any order), AvgPool2d
(``n`` = window + 2: the sum and the division), bilinear/linear Upsample (``n = 4`` plus the rounding of
the interpolation weights, ``32 u (size + 2)`` times the largest input magnitude of the channel),
Flatten / Identity / Dropout (eval) / nearest Upsample (exact).

Scope of the guarantee: IEEE binary floating point with round-to-nearest in the dtype of the
parameters, each affine output evaluated as a sum of products (true for PyTorch's CPU kernels).
Not covered: TF32 or reduced-precision matmuls (CUDA's default for convolutions), and Winograd / FFT
convolution algorithms (cuDNN may pick them), whose errors are not bounded by γ_n·|W||x|.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from geo_rs.bounds.float_error import affine_ops, block_errors
    >>> lin = nn.Linear(3, 2)
    >>> ops = affine_ops(lin)
    >>> lo, hi = -torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    >>> local, total, mags = block_errors(ops, lo, hi, 0.0, 0.0)
    >>> bool((local > 0).all() and (local < 1e-5).all())
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .perturbations import LinearFamily

U64 = 2.0**-53
# The MILP's own float64 work (merged block matrices, interval arithmetic, constant folding) rounds
# too; it has the same structure as the float evaluation, so 2·u64 more per operation covers it.
_EXTRA_U = 2 * U64
# Magnitudes are themselves computed in float64 (relative error ~ n·u64 ≪ 1e-9): a relative
# inflation of every error bound by 1e-6 covers that second-order effect.
_INFLATE = 1.0 + 1e-6


def unit_roundoff(dtype: torch.dtype) -> float:
    """Unit roundoff ``u`` of a floating dtype (2^-24 for float32)."""
    if not dtype.is_floating_point:
        raise UserError(f"float error analysis needs a floating dtype, got {dtype}")
    return float(torch.finfo(dtype).eps) / 2


def gamma(n: int, u: float) -> float:
    """Higham's ``γ_n = n u / (1 - n u)``."""
    if n <= 0:
        return 0.0
    if n * u >= 0.5:
        raise UserError(f"float error bound undefined: {n} accumulated operations at unit roundoff {u:g}")
    return n * u / (1 - n * u)


@dataclass
class AffineOp:
    """One affine layer ``h -> A h + c`` and what its float evaluation can get wrong.

    Attributes:
        name: for messages. linear: ``h -> A h`` (float64, batched). abs_linear: ``h -> |A| h``.
        bias: ``c``, a per-channel vector (``(C,)``, broadcast along dim 1 of the output) or None.
        bias_mag: per-channel magnitudes of the bias-like terms of the float evaluation (>= ``|c|``).
        n: the ``n`` of ``γ_n`` (0: exact, no rounding). u: unit roundoff of the layer's dtype.
        tiny: smallest normal number of that dtype (underflow term ``n·tiny``).
        extra: optional additional error given the input magnitudes (bilinear weights).
    """

    name: str
    linear: Callable[[Tensor], Tensor]
    abs_linear: Callable[[Tensor], Tensor]
    bias: Tensor | None
    bias_mag: Tensor | None
    n: int
    u: float
    tiny: float
    extra: Callable[[Tensor], Tensor] | None = None
    bias_last: bool = False  # Linear: the bias runs along the last dimension, not dim 1

    def _shaped(self, v: Tensor, out: Tensor) -> Tensor:
        return v if self.bias_last else _per_channel(v, out.dim())

    def magnitude(self, mag: Tensor) -> Tensor:
        """``|A| mag + β``: a bound on the magnitudes of the products and bias terms summed."""
        m = self.abs_linear(mag)
        return m if self.bias_mag is None else m + self._shaped(self.bias_mag, m)

    def apply(self, h: Tensor) -> Tensor:
        """``A h + c`` in float64."""
        out = self.linear(h)
        return out if self.bias is None else out + self._shaped(self.bias, out)

    def error(self, mag: Tensor) -> Tensor:
        """Bound on ``|fl(A h + c) - (A h + c)|`` for inputs with ``|h| <= mag`` (float and the
        MILP's float64 arithmetic together)."""
        m = self.magnitude(mag)
        if self.n == 0:
            return torch.zeros_like(m)
        err = gamma(self.n, self.u + _EXTRA_U) * m + self.n * self.tiny
        if self.extra is not None:
            err = err + self.extra(mag)
        return err


def _per_channel(v: Tensor, like_dim: int) -> Tensor:
    """A per-channel vector shaped to broadcast against ``(N, C, ...)`` tensors of ``like_dim`` dims."""
    return v.reshape((1, -1) + (1,) * (like_dim - 2))


def _exact(name: str, fn: Callable[[Tensor], Tensor]) -> AffineOp:
    return AffineOp(name, fn, fn, None, None, 0, 0.0, 0.0)


def _dtype_of(layer: nn.Module) -> torch.dtype:
    for t in list(layer.parameters()) + list(layer.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _rounding(layer: nn.Module) -> tuple[float, float]:
    dt = _dtype_of(layer)
    return unit_roundoff(dt), float(torch.finfo(dt).tiny)


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(device="cpu", dtype=torch.float64)


def affine_ops(layer: nn.Module) -> list[AffineOp]:
    """The :class:`AffineOp` description of one affine layer (float64 copies of its exact parameters).

    Raises:
        UserError: the layer is not an affine layer this analysis knows.
    """
    name = type(layer).__name__
    u, tiny = _rounding(layer)
    if isinstance(layer, (nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten)):
        if isinstance(layer, nn.Dropout) and layer.training:
            raise UserError("Dropout in training mode is random, not affine; call model.eval()")
        return [_exact(name, layer.forward)]
    if isinstance(layer, nn.Linear):
        w, b = _f64(layer.weight), _f64(layer.bias)
        mag = None if b is None else b.abs()
        n = layer.in_features + 1
        lin, abs_lin = (lambda h: F.linear(h, w)), (lambda h: F.linear(h, w.abs()))
        return [AffineOp(name, lin, abs_lin, b, mag, n, u, tiny, bias_last=True)]
    if isinstance(layer, nn.Conv2d):
        return [_conv_op(layer, u, tiny)]
    if isinstance(layer, nn.ConvTranspose2d):
        return [_conv_transpose_op(layer, u, tiny)]
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return [_batchnorm_op(layer, u, tiny)]
    if isinstance(layer, nn.AvgPool2d):
        pool = lambda h: F.avg_pool2d(  # noqa: E731
            h,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.ceil_mode,
            layer.count_include_pad,
            layer.divisor_override,
        )
        k = layer.kernel_size if isinstance(layer.kernel_size, tuple) else (layer.kernel_size,) * 2
        return [AffineOp(name, pool, pool, None, None, k[0] * k[1] + 2, u, tiny)]
    if isinstance(layer, nn.Upsample):
        return [_upsample_op(layer, u, tiny)]
    raise UserError(f"no float error analysis for layer {name}")


def _conv_op(layer: nn.Conv2d, u: float, tiny: float) -> AffineOp:
    w, b = _f64(layer.weight), _f64(layer.bias)
    conv = layer._conv_forward  # handles padding modes (zeros, reflect, replicate, circular)
    kh, kw = layer.kernel_size
    n = layer.in_channels // layer.groups * kh * kw + 1
    mag = None if b is None else b.abs()
    return AffineOp(
        "Conv2d", lambda h: conv(h, w, None), lambda h: conv(h, w.abs(), None), b, mag, n, u, tiny
    )


def _conv_transpose_op(layer: nn.ConvTranspose2d, u: float, tiny: float) -> AffineOp:
    w, b = _f64(layer.weight), _f64(layer.bias)
    if layer.padding_mode != "zeros":
        raise UserError("ConvTranspose2d with padding_mode other than 'zeros' is not supported")

    def tconv(h: Tensor, weight: Tensor) -> Tensor:
        return F.conv_transpose2d(
            h, weight, None, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation
        )

    kh, kw = layer.kernel_size
    n = layer.in_channels // layer.groups * kh * kw + 1  # an upper bound on the terms per output
    mag = None if b is None else b.abs()
    return AffineOp("ConvTranspose2d", lambda h: tconv(h, w), lambda h: tconv(h, w.abs()), b, mag, n, u, tiny)


def _batchnorm_op(layer: nn.modules.batchnorm._BatchNorm, u: float, tiny: float) -> AffineOp:
    if layer.training or not layer.track_running_stats or layer.running_mean is None:
        raise UserError(
            f"{type(layer).__name__} is affine only in eval mode with running statistics "
            "(model.eval(), track_running_stats=True)"
        )
    mean, var = _f64(layer.running_mean), _f64(layer.running_var)
    scale = 1.0 / torch.sqrt(var + float(layer.eps))
    if layer.weight is not None:
        scale = scale * _f64(layer.weight)
    beta = _f64(layer.bias) if layer.bias is not None else torch.zeros_like(mean)
    shift = beta - mean * scale
    # |beta| + |mean·scale| >= |shift|: the float evaluation rounds the two terms separately.
    mag = beta.abs() + (mean * scale).abs()

    def mul(v: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda h: h * _per_channel(v, h.dim())

    return AffineOp(type(layer).__name__, mul(scale), mul(scale.abs()), shift, mag, 10, u, tiny)


def _upsample_op(layer: nn.Upsample, u: float, tiny: float) -> AffineOp:
    def up(h: Tensor) -> Tensor:
        return F.interpolate(h, layer.size, layer.scale_factor, layer.mode, layer.align_corners)

    if layer.mode == "nearest":
        return _exact("Upsample(nearest)", up)
    if layer.mode not in ("bilinear", "linear"):
        raise UserError(f"Upsample mode {layer.mode!r} is not supported (nearest, bilinear, linear are)")

    def extra(mag: Tensor) -> Tensor:
        # Interpolation weights are computed from coordinates in float: absolute error <= ~8 u (size + 2)
        # each, at most 4 weights per output -> 32 u (size + 2) times the largest input of the channel.
        out = up(mag)
        size = max(max(mag.shape[2:]), max(out.shape[2:])) + 2
        peak = mag.flatten(2).amax(2).reshape(mag.shape[0], mag.shape[1], *([1] * (mag.dim() - 2)))
        return 32 * (u + _EXTRA_U) * size * peak.expand_as(out)

    return AffineOp(f"Upsample({layer.mode})", up, up, None, None, 4, u, tiny, extra)


# ------------------------------------------------------------------------------------------------
# Propagation through a block of affine layers, and the input rounding.
# ------------------------------------------------------------------------------------------------


def block_errors(
    ops: list[AffineOp], lo: Tensor, hi: Tensor, e_local: Tensor | float, e_total: Tensor | float
) -> tuple[Tensor, Tensor, Tensor]:
    """Errors of a block of affine layers evaluated in float, against real arithmetic.

    Args:
        ops: the block's layers. lo, hi: ``(1, *in)`` bounds of the block's (float) input values.
        e_local: deviation of the float inputs from the values the block is compared with in the MILP
            (the input rounding ``D_0`` for the first block, else 0).
        e_total: deviation of the float inputs from the real network's values (``D`` so far).

    Returns:
        ``(local, total, magnitude)``, each ``(1, *out)``: the bound on ``|float block output - real
        block applied to the block's MILP input|``, on ``|float output - real network output|``, and a
        bound on ``|float output|``.
    """
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    e_loc = torch.as_tensor(e_local, dtype=torch.float64) + torch.zeros_like(mid)
    e_tot = torch.as_tensor(e_total, dtype=torch.float64) + torch.zeros_like(mid)
    for op in ops:
        mag = mid.abs() + rad + e_loc  # |float input of this layer|
        err = op.error(mag)
        e_loc = op.abs_linear(e_loc) + err
        e_tot = op.abs_linear(e_tot) + err
        mid, rad = op.apply(mid), op.abs_linear(rad)
    return e_loc * _INFLATE, e_tot * _INFLATE, mid.abs() + rad + e_loc * _INFLATE


def input_rounding(fam: LinearFamily, x: Tensor) -> Tensor:
    """Bound ``(1, *image)`` on ``|float pixel - real pixel|`` for ``clamp(x + Σ θ_k A_k + δ)`` computed
    as :meth:`Perturbation.apply` does (2 roundings per θ term, 1 for δ; the clamp is exact and
    1-Lipschitz), for any real θ, δ in the set."""
    k = fam.n_params
    n_ops = 2 * k + (1 if fam.noise > 0 else 0)
    x64 = x.detach().to(device="cpu", dtype=torch.float64)
    if n_ops == 0:
        return torch.zeros_like(x64)
    mag = x64.abs() + fam.noise
    dirs = fam.directions.detach().to(device="cpu", dtype=torch.float64)
    for j in range(k):
        t = max(abs(float(fam.theta_lo[j])), abs(float(fam.theta_hi[j])))
        mag = mag + t * dirs[:, j].abs()
    u, tiny = unit_roundoff(x.dtype), float(torch.finfo(x.dtype).tiny)
    return (gamma(n_ops, u + _EXTRA_U) * mag + n_ops * tiny) * _INFLATE
