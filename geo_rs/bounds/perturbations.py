"""Perturbation sets around an image ``x`` with pixels in [0, 1].

Every set is a *clamped linear family*::

    x'(θ, δ) = clamp(x + Σ_k θ_k · A_k(x) + δ, 0, 1),   θ_k ∈ [lo_k, hi_k],   δ ∈ [-η, η]^pixels

* :class:`WhiteNoise` ``(eps)``: no θ, η = eps (the L∞ ball, clipped to the pixel range).
* :class:`Brightness` ``(eps)``: one θ = b ∈ [-eps, eps], ``A = 1`` (x + b).
* :class:`Contrast` ``(eps)``: one θ = c − 1 ∈ [-eps, eps], ``A = x`` (x · c, c ∈ [1 − eps, 1 + eps]).
* ``p1 + p2`` (:class:`Composed`): all parameters at once, one final clamp, e.g.
  ``Contrast(0.1) + Brightness(0.01) + WhiteNoise(0.001)`` is ``clamp(c·x + b + δ)``.

The bound adapter (``output_bounds``) does not push the clamp through the network as ReLUs: it splits
the θ-box at the values where pixels start to clip (:meth:`Perturbation.pieces`), so that on each piece
every pixel is either affine in (θ, δ), constant 0/1, or (rarely) an independent interval. That keeps
brightness/contrast exact at the first layer even for IBP.

Example::

    >>> import torch
    >>> from geo_rs import Brightness, WhiteNoise
    >>> x = torch.rand(2, 1, 8, 8)
    >>> s = Brightness(0.01).sample(x, 100)        # (100, 2, 1, 8, 8) points of the set
    >>> bool(((s - x).abs() <= 0.01 + 1e-7).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError

_PIXEL_TOL = 1e-6


def check_image(x: Tensor, name: str = "x") -> Tensor:
    """Validate an image batch ``(B, C, H, W)`` (or ``(B, D)``) of floats in [0, 1]; returns it."""
    if not isinstance(x, Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise UserError(f"{name} must be batched (B, ...), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UserError(f"{name} must be a float tensor, got {x.dtype}")
    if x.numel() and (
        bool(torch.isnan(x).any()) or float(x.min()) < -_PIXEL_TOL or float(x.max()) > 1 + _PIXEL_TOL
    ):
        raise UserError(
            f"{name} must hold pixels in [0, 1] without NaN; "
            f"got range [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    return x


def _check_eps(eps: float, cls: str) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{cls}(eps): eps must be a number, got {eps!r}") from exc
    if not (eps >= 0 and eps < float("inf")):
        raise UserError(f"{cls}(eps): eps must be finite and >= 0, got {eps}")
    return eps


@dataclass(frozen=True)
class LinearFamily:
    """The parametrisation of a perturbation set at a batch of images (see module docstring).

    Attributes:
        directions: ``(B, k, *image)`` the ``A_k(x)``; ``k = 0`` for pure white noise.
        theta_lo, theta_hi: ``(k,)`` parameter box.
        noise: η >= 0, the per-pixel L∞ noise radius.
    """

    directions: Tensor
    theta_lo: Tensor
    theta_hi: Tensor
    noise: float

    @property
    def n_params(self) -> int:
        return self.directions.shape[1]


class Perturbation:
    """Base class: a set of images around ``x``. Subclasses define :meth:`terms`."""

    def terms(self) -> list[Perturbation]:
        return [self]

    # -- what each elementary perturbation contributes ------------------------------------------
    def _direction(self, x: Tensor) -> Tensor | None:  # (B, *image) or None for noise
        return None

    def _range(self) -> tuple[float, float]:
        return (0.0, 0.0)

    def _noise(self) -> float:
        return 0.0

    # -- public API -------------------------------------------------------------------------------
    def family(self, x: Tensor) -> LinearFamily:
        """The clamped linear family of this set at images ``x`` ``(B, *image)``."""
        check_image(x)
        dirs, lo, hi, noise = [], [], [], 0.0
        for t in self.terms():
            d = t._direction(x)
            if d is None:
                noise += t._noise()
            else:
                dirs.append(d)
                lo.append(t._range()[0])
                hi.append(t._range()[1])
        directions = torch.stack(dirs, 1) if dirs else x.new_zeros((x.shape[0], 0, *x.shape[1:]))
        return LinearFamily(directions, x.new_tensor(lo), x.new_tensor(hi), noise)

    def apply(self, x: Tensor, theta: Tensor | None = None, delta: Tensor | None = None) -> Tensor:
        """The perturbed image ``clamp(x + Σ θ_k A_k + δ, 0, 1)``.

        Args:
            x: ``(B, *image)``; theta: ``(..., B, k)``; delta: ``(..., B, *image)`` (leading sample
            dimensions broadcast). Values outside the parameter box are *not* rejected (PGD projects).
        """
        fam = self.family(x)
        z = x
        if theta is not None and fam.n_params:
            shape = theta.shape[:-1] + (1,) * (x.dim() - 1)
            for k in range(fam.n_params):
                z = z + theta[..., k].reshape(shape) * fam.directions[:, k]
        if delta is not None:
            z = z + delta
        return z.clamp(0.0, 1.0)

    def sample(self, x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points of the set per image: ``(n, B, *image)``. About a quarter of the samples sit at
        corners of the parameter box (where extrema of piecewise-linear networks often are)."""
        fam = self.family(x)
        b = x.shape[0]
        theta = None
        if fam.n_params:
            u = torch.rand((n, b, fam.n_params), generator=generator, device=x.device, dtype=x.dtype)
            corner = torch.rand((n, 1, 1), generator=generator, device=x.device) < 0.25
            u = torch.where(corner, u.round(), u)
            theta = fam.theta_lo + u * (fam.theta_hi - fam.theta_lo)
        delta = None
        if fam.noise > 0:
            v = torch.rand((n, *x.shape), generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
            corner = torch.rand((n,) + (1,) * x.dim(), generator=generator, device=x.device) < 0.25
            delta = torch.where(corner, v.sign(), v) * fam.noise
        return self.apply(x, theta, delta)

    def input_box(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-pixel bounds ``(lo, hi)`` of the set (the white-noise box that contains it)."""
        fam = self.family(x)
        lo = x - fam.noise
        hi = x + fam.noise
        for k in range(fam.n_params):
            a = fam.directions[:, k]
            lo = lo + torch.minimum(a * fam.theta_lo[k], a * fam.theta_hi[k])
            hi = hi + torch.maximum(a * fam.theta_lo[k], a * fam.theta_hi[k])
        return lo.clamp(0, 1), hi.clamp(0, 1)

    def __add__(self, other: Perturbation) -> Composed:
        if not isinstance(other, Perturbation):
            return NotImplemented
        return Composed(tuple(self.terms()) + tuple(other.terms()))


@dataclass(frozen=True)
class WhiteNoise(Perturbation):
    """L∞ ball of radius ``eps`` around ``x``, clipped to [0, 1]."""

    eps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _check_eps(self.eps, "WhiteNoise"))

    def _noise(self) -> float:
        return self.eps


@dataclass(frozen=True)
class Brightness(Perturbation):
    """``clamp(x + b)``, ``b ∈ [-eps, eps]`` (one shared offset for all pixels)."""

    eps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _check_eps(self.eps, "Brightness"))

    def _direction(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)

    def _range(self) -> tuple[float, float]:
        return (-self.eps, self.eps)


@dataclass(frozen=True)
class Contrast(Perturbation):
    """``clamp(c · x)``, ``c ∈ [1 - eps, 1 + eps]`` (parameter θ = c − 1)."""

    eps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _check_eps(self.eps, "Contrast"))

    def _direction(self, x: Tensor) -> Tensor:
        return x

    def _range(self) -> tuple[float, float]:
        return (-self.eps, self.eps)


@dataclass(frozen=True)
class Composed(Perturbation):
    """Several perturbations applied at once with one final clamp (build it with ``+``)."""

    parts: tuple[Perturbation, ...]

    def terms(self) -> list[Perturbation]:
        return list(self.parts)


# ------------------------------------------------------------------------------------------------
# Pieces: split the θ-box where pixels start clipping, so the set is affine per piece.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AffinePieces:
    """A sound affine cover of a clamped linear family, piece by piece (``P`` pieces per image).

    On piece ``p`` of image ``b`` every point of the set is ``base + Σ_k θ_k G_k + s`` for some
    ``θ ∈ [theta_lo, theta_hi]`` and ``s ∈ [s_lo, s_hi]``:

    Attributes:
        theta_lo, theta_hi: ``(B, P, k)``.
        base: ``(B, P, *image)``; directions: ``(B, P, k, *image)`` (zero on clipped / mixed pixels).
        s_lo, s_hi: ``(B, P, *image)`` independent per-pixel slack (noise on affine pixels, the whole
            clipped range on the few pixels that clip inside a piece).
    """

    theta_lo: Tensor
    theta_hi: Tensor
    base: Tensor
    directions: Tensor
    s_lo: Tensor
    s_hi: Tensor

    @property
    def n_pieces(self) -> int:
        return self.base.shape[1]

    @property
    def has_slack(self) -> bool:
        return bool((self.s_hi > self.s_lo).any())


def _breakpoints(x: Tensor, fam: LinearFamily, max_pieces: int) -> list[Tensor]:
    """Per image, sorted split values of θ_0 (1-parameter families) inside (lo, hi)."""
    lo, hi = float(fam.theta_lo[0]), float(fam.theta_hi[0])
    out = []
    a = fam.directions[:, 0].flatten(1)
    xf = x.flatten(1)
    for b in range(x.shape[0]):
        nz = a[b] != 0
        cands = []
        for offset in {-fam.noise, fam.noise}:
            for edge in (0.0, 1.0):
                cands.append((edge - xf[b][nz] - offset) / a[b][nz])
        t = torch.cat(cands) if cands else x.new_zeros(0)
        t = torch.unique(t[(t > lo) & (t < hi)])
        if t.numel() > max_pieces - 1:
            # Keep 0 (pixels that are exactly 0 or 1 clip there) and evenly spaced quantiles.
            q = torch.quantile(t, torch.linspace(0, 1, max_pieces - 1, dtype=t.dtype, device=t.device)[1:-1])
            zero = t.new_zeros(1) if lo < 0 < hi else t.new_zeros(0)
            t = torch.unique(torch.cat([q, zero]))
        out.append(t)
    return out


def affine_pieces(perturbation: Perturbation, x: Tensor, max_pieces: int = 8) -> AffinePieces:
    """Split the parameter box of ``perturbation`` at ``x`` into at most ``max_pieces`` pieces.

    1-parameter families (brightness, contrast, possibly with noise) are split at the parameter values
    where pixels reach 0 or 1; multi-parameter families at θ_k = 0 for every k (pixels that are exactly
    0 or 1 clip there). Pure white noise is one piece with only slack.
    """
    fam = perturbation.family(x)
    b, k = x.shape[0], fam.n_params
    eta = fam.noise
    if k == 0:
        grids = [x.new_zeros((b, 1, 0)), x.new_zeros((b, 1, 0))]
    elif k == 1:
        bps = _breakpoints(x, fam, max_pieces)
        n_p = max(t.numel() for t in bps) + 1
        lo_all, hi_all = x.new_empty((b, n_p, 1)), x.new_empty((b, n_p, 1))
        for i, t in enumerate(bps):
            edges = torch.cat([fam.theta_lo[:1], t, fam.theta_hi[:1]])
            los, his = edges[:-1], edges[1:]
            pad = n_p - los.numel()  # duplicate the last piece: harmless for a hull
            los = torch.cat([los, los[-1:].expand(pad)])
            his = torch.cat([his, his[-1:].expand(pad)])
            lo_all[i, :, 0], hi_all[i, :, 0] = los, his
        grids = [lo_all, hi_all]
    else:
        axes = []
        for j in range(k):
            lo_j, hi_j = float(fam.theta_lo[j]), float(fam.theta_hi[j])
            axes.append([(lo_j, 0.0), (0.0, hi_j)] if lo_j < 0 < hi_j else [(lo_j, hi_j)])
        boxes = [[]]
        for ax in axes:
            boxes = [bx + [iv] for bx in boxes for iv in ax]
        lo_t = x.new_tensor([[iv[0] for iv in bx] for bx in boxes])
        hi_t = x.new_tensor([[iv[1] for iv in bx] for bx in boxes])
        grids = [lo_t.expand(b, -1, -1).clone(), hi_t.expand(b, -1, -1).clone()]
    theta_lo, theta_hi = grids
    n_p = theta_lo.shape[1]
    img = x.shape[1:]
    xe = x.unsqueeze(1).expand(b, n_p, *img)
    # z range of every pixel over the piece (without clamp).
    zlo = xe - eta
    zhi = xe + eta
    dirs = fam.directions.unsqueeze(1).expand(b, n_p, k, *img)
    view = (b, n_p) + (1,) * len(img)
    for j in range(k):
        a = dirs[:, :, j]
        tl, th = theta_lo[:, :, j].reshape(view), theta_hi[:, :, j].reshape(view)
        zlo = zlo + torch.minimum(a * tl, a * th)
        zhi = zhi + torch.maximum(a * tl, a * th)
    affine = (zlo >= 0) & (zhi <= 1)
    clip1 = zlo >= 1
    mixed = ~affine & ~clip1 & (zhi > 0)
    base = torch.where(affine, xe, torch.where(clip1, torch.ones_like(xe), torch.zeros_like(xe)))
    directions = dirs * affine.unsqueeze(2)
    zero = torch.zeros_like(xe)
    s_lo = torch.where(affine, zero - eta, torch.where(mixed, zlo.clamp(0, 1), zero))
    s_hi = torch.where(affine, zero + eta, torch.where(mixed, zhi.clamp(0, 1), zero))
    return AffinePieces(theta_lo, theta_hi, base, directions.contiguous(), s_lo, s_hi)
