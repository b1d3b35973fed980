"""Interval arithmetic on tensors: the primitives of interval extensions (e.g. the IoU "vanilla" one).

An :class:`Interval` is a pair of tensors ``lower <= upper`` (same dtype/device, broadcastable shapes)
standing for the box of all tensors ``x`` with ``lower <= x <= upper`` element-wise. Every operation
returns an interval that contains the result of the same operation applied to *any* point of its
operand intervals (the *containment* property; tested with hypothesis in ``tests/test_interval.py``).

Floating point: endpoints are computed with the same round-to-nearest operation as the point result
(e.g. ``x / y`` is bounded by the corner quotients, never by ``x * (1 / y)``), and rounding is
monotone, so the containment holds exactly for floating-point evaluations of the same formula. Against
*real* arithmetic, an endpoint may be off by one rounding; call :meth:`Interval.outward` to widen by a
few ulps when a certificate must hold for the exact real value.

Example::

    >>> import torch
    >>> from geo_rs import Interval
    >>> a = Interval(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 2.0]))
    >>> b = Interval.point(torch.tensor([2.0, 3.0]))
    >>> (a * b - 1).upper
    tensor([1., 5.])
    >>> a.square().lower
    tensor([0., 0.])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

Operand = Union["Interval", Tensor, float, int]


def _as_tensor(value: Tensor | float | int, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=torch.promote_types(like.dtype, value.dtype))
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


class Interval:
    """Element-wise interval ``[lower, upper]`` of tensors.

    Args:
        lower: tensor of lower ends, any shape ``S1``.
        upper: tensor of upper ends, shape ``S2`` broadcastable with ``S1``; both are broadcast to the
            common shape. Integer tensors are converted to the default float dtype.
        check: verify ``lower <= upper`` and no NaN (raises ``ValueError`` naming the count of bad
            entries). Internal operations pass ``check=False``: they preserve the order by construction.

    Supports ``+ - * /`` with intervals, tensors and Python scalars on either side (division only by an
    interval/tensor that is strictly positive), unary ``-``, ``min``/``max``, ``clamp``, ``square``,
    ``abs``, ``relu``, ``sqrt``, ``sum``, indexing and reshaping. All results broadcast like torch.
    """

    __slots__ = ("lower", "upper")

    # Make ``tensor + interval`` dispatch to ``Interval.__radd__`` instead of torch broadcasting on us.
    __array_priority__ = 1000

    def __init__(self, lower: Tensor, upper: Tensor, *, check: bool = True) -> None:
        lower = torch.as_tensor(lower)
        upper = torch.as_tensor(upper, device=lower.device)
        dtype = torch.promote_types(lower.dtype, upper.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        lower, upper = torch.broadcast_tensors(lower.to(dtype), upper.to(dtype))
        if check:
            bad = torch.isnan(lower) | torch.isnan(upper) | (lower > upper)
            n_bad = int(bad.sum())
            if n_bad:
                raise ValueError(
                    f"Interval needs lower <= upper and no NaN; {n_bad} of {bad.numel()} entries violate it "
                    f"(shape {tuple(lower.shape)})"
                )
        self.lower = lower
        self.upper = upper

    # ------------------------------------------------------------------ constructors
    @classmethod
    def point(cls, x: Tensor) -> Interval:
        """Degenerate interval ``[x, x]``."""
        x = torch.as_tensor(x)
        return cls(x, x, check=False) if x.is_floating_point() else cls(x, x)

    @classmethod
    def from_center_radius(cls, center: Tensor, radius: Tensor | float) -> Interval:
        """``[center - radius, center + radius]``; ``radius`` must be >= 0."""
        center = torch.as_tensor(center)
        radius = _as_tensor(radius, center)
        if bool((radius < 0).any()):
            raise ValueError("Interval.from_center_radius: radius must be non-negative")
        return cls(center - radius, center + radius)

    @staticmethod
    def stack(intervals: Sequence[Interval], dim: int = 0) -> Interval:
        """Stack intervals along a new dimension (like ``torch.stack``)."""
        return Interval(
            torch.stack([i.lower for i in intervals], dim),
            torch.stack([i.upper for i in intervals], dim),
            check=False,
        )

    @staticmethod
    def cat(intervals: Sequence[Interval], dim: int = 0) -> Interval:
        """Concatenate intervals along an existing dimension (like ``torch.cat``)."""
        return Interval(
            torch.cat([i.lower for i in intervals], dim),
            torch.cat([i.upper for i in intervals], dim),
            check=False,
        )

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> torch.Size:
        return self.lower.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.lower.dtype

    @property
    def device(self) -> torch.device:
        return self.lower.device

    @property
    def width(self) -> Tensor:
        """``upper - lower`` (>= 0)."""
        return self.upper - self.lower

    @property
    def center(self) -> Tensor:
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> Tensor:
        return (self.upper - self.lower) / 2

    def contains(self, x: Tensor | Interval, tol: float = 0.0) -> Tensor:
        """Bool tensor: ``lower - tol <= x <= upper + tol`` element-wise (or the sub-interval test)."""
        if isinstance(x, Interval):
            return (x.lower >= self.lower - tol) & (x.upper <= self.upper + tol)
        x = _as_tensor(x, self.lower)
        return (x >= self.lower - tol) & (x <= self.upper + tol)

    def outward(self, ulps: int = 1) -> Interval:
        """Widen each end by ``ulps`` units in the last place (covers rounding of real arithmetic)."""
        lo, hi = self.lower, self.upper
        neg_inf = torch.full_like(lo, float("-inf"))
        pos_inf = torch.full_like(hi, float("inf"))
        for _ in range(ulps):
            lo = torch.nextafter(lo, neg_inf)
            hi = torch.nextafter(hi, pos_inf)
        return Interval(lo, hi, check=False)

    def to(self, *args, **kwargs) -> Interval:
        return Interval(self.lower.to(*args, **kwargs), self.upper.to(*args, **kwargs), check=False)

    def __getitem__(self, index) -> Interval:
        return Interval(self.lower[index], self.upper[index], check=False)

    def reshape(self, *shape) -> Interval:
        return Interval(self.lower.reshape(*shape), self.upper.reshape(*shape), check=False)

    def unsqueeze(self, dim: int) -> Interval:
        return Interval(self.lower.unsqueeze(dim), self.upper.unsqueeze(dim), check=False)

    def __len__(self) -> int:
        return len(self.lower)

    def __repr__(self) -> str:
        return f"Interval(lower={self.lower!r}, upper={self.upper!r})"

    # ------------------------------------------------------------------ helpers
    def _coerce(self, other: Operand) -> Interval:
        if isinstance(other, Interval):
            return other
        t = _as_tensor(other, self.lower)
        return Interval(t, t, check=False)

    # ------------------------------------------------------------------ arithmetic
    def __neg__(self) -> Interval:
        return Interval(-self.upper, -self.lower, check=False)

    def __pos__(self) -> Interval:
        return self

    def __add__(self, other: Operand) -> Interval:
        o = self._coerce(other)
        return Interval(self.lower + o.lower, self.upper + o.upper, check=False)

    __radd__ = __add__

    def __sub__(self, other: Operand) -> Interval:
        o = self._coerce(other)
        return Interval(self.lower - o.upper, self.upper - o.lower, check=False)

    def __rsub__(self, other: Operand) -> Interval:
        return self._coerce(other) - self

    def __mul__(self, other: Operand) -> Interval:
        o = self._coerce(other)
        corners = torch.stack(
            torch.broadcast_tensors(
                self.lower * o.lower, self.lower * o.upper, self.upper * o.lower, self.upper * o.upper
            )
        )
        # 0 * inf = nan can only arise from unbounded operands; treat those as an error, not a bound.
        return Interval(corners.amin(0), corners.amax(0), check=bool(torch.isnan(corners).any()))

    __rmul__ = __mul__

    def __truediv__(self, other: Operand) -> Interval:
        o = self._coerce(other)
        if not bool((o.lower > 0).all()):
            raise ValueError(
                "Interval division needs a strictly positive divisor; "
                f"smallest divisor lower bound is {float(o.lower.min())}"
            )
        # Corner quotients (not self * (1/o)): the same single rounding as the point result x / y.
        corners = torch.stack(
            torch.broadcast_tensors(
                self.lower / o.lower, self.lower / o.upper, self.upper / o.lower, self.upper / o.upper
            )
        )
        return Interval(corners.amin(0), corners.amax(0), check=False)

    def __rtruediv__(self, other: Operand) -> Interval:
        return self._coerce(other) / self

    def square(self) -> Interval:
        """``{x*x}``: ``[0, max(l², u²)]`` when the interval straddles 0 (tighter than ``self * self``)."""
        l2, u2 = self.lower * self.lower, self.upper * self.upper
        lo = torch.where(self.lower >= 0, l2, torch.where(self.upper <= 0, u2, torch.zeros_like(l2)))
        return Interval(lo, torch.maximum(l2, u2), check=False)

    def abs(self) -> Interval:
        al, au = self.lower.abs(), self.upper.abs()
        straddles = (self.lower < 0) & (self.upper > 0)
        lo = torch.where(straddles, torch.zeros_like(al), torch.minimum(al, au))
        return Interval(lo, torch.maximum(al, au), check=False)

    def sqrt(self) -> Interval:
        """Monotone square root; needs ``lower >= 0``."""
        if bool((self.lower < 0).any()):
            raise ValueError(f"Interval.sqrt needs lower >= 0; got min lower {float(self.lower.min())}")
        return Interval(self.lower.sqrt(), self.upper.sqrt(), check=False)

    def relu(self) -> Interval:
        return Interval(self.lower.clamp(min=0), self.upper.clamp(min=0), check=False)

    # ------------------------------------------------------------------ order operations
    def minimum(self, other: Operand) -> Interval:
        """Element-wise ``min(x, y)``: ``[min(lx, ly), min(ux, uy)]``."""
        o = self._coerce(other)
        return Interval(torch.minimum(self.lower, o.lower), torch.minimum(self.upper, o.upper), check=False)

    def maximum(self, other: Operand) -> Interval:
        """Element-wise ``max(x, y)``: ``[max(lx, ly), max(ux, uy)]``."""
        o = self._coerce(other)
        return Interval(torch.maximum(self.lower, o.lower), torch.maximum(self.upper, o.upper), check=False)

    def clamp(self, min: Operand | None = None, max: Operand | None = None) -> Interval:  # noqa: A002
        """``clamp(x, min, max)`` for point or interval limits (monotone in all three arguments)."""
        out = self
        if min is not None:
            out = out.maximum(min)
        if max is not None:
            out = out.minimum(max)
        return out

    def amin(self, dim: int, keepdim: bool = False) -> Interval:
        """Reduction ``min`` over ``dim``."""
        return Interval(self.lower.amin(dim, keepdim), self.upper.amin(dim, keepdim), check=False)

    def amax(self, dim: int, keepdim: bool = False) -> Interval:
        """Reduction ``max`` over ``dim``."""
        return Interval(self.lower.amax(dim, keepdim), self.upper.amax(dim, keepdim), check=False)

    def sum(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Interval:
        if dim is None:
            return Interval(self.lower.sum(), self.upper.sum(), check=False)
        return Interval(self.lower.sum(dim, keepdim), self.upper.sum(dim, keepdim), check=False)

    def hull(self, other: Interval) -> Interval:
        """Smallest interval containing both."""
        return Interval(
            torch.minimum(self.lower, other.lower), torch.maximum(self.upper, other.upper), check=False
        )


def interval_min(a: Operand, b: Operand) -> Interval:
    """Functional ``min`` of two operands, at least one of them an :class:`Interval`."""
    return a.minimum(b) if isinstance(a, Interval) else b.minimum(a)  # type: ignore[union-attr]


def interval_max(a: Operand, b: Operand) -> Interval:
    """Functional ``max`` of two operands, at least one of them an :class:`Interval`."""
    return a.maximum(b) if isinstance(a, Interval) else b.maximum(a)  # type: ignore[union-attr]
