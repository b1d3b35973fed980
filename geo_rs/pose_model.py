"""The reprojection-error model of a pinhole camera, with exact first and second derivatives.

Pose parameters P = (c, t) ∈ R⁶: rotation ``R = Cay(c) · R₀`` with the Cayley map
``Cay(c) = ((1 − cᵀc) I + 2ccᵀ + 2[c]×) / (1 + cᵀc)`` (a rotation by 2·atan‖c‖ about c; rational, so
interval arithmetic evaluates it without sin/cos), and translation t (camera frame, world units). A point
X maps to ``Y = R X + t = Cay(c) Z + t`` with ``Z = R₀ X``, then to pixels
``p = (fx·Y₀/Y₂ + s·Y₁/Y₂ + cx, fy·Y₁/Y₂ + cy)``. The reprojection error of keypoints u (N, 2) is
``E(P; u) = Σᵢ ‖pᵢ(P) − uᵢ‖²``; its gradient ``G = 2 Σᵢ Jᵢᵀ (pᵢ − uᵢ)`` and Hessian
``H = 2 Σᵢ (JᵢᵀJᵢ + Σₖ (pᵢ − uᵢ)ₖ ∇²pᵢₖ)`` are computed in closed form (chain rule through the
Cayley map and the perspective division).

Every function here is written with ``+ − × ÷`` and the helpers of :mod:`geo_rs.pose_interval` only, so
it evaluates float64 tensors (a point) or :class:`~geo_rs.pose_interval.OutwardInterval` boxes (a
rigorous enclosure over a box of poses and keypoints) with the same code. Leading batch axes ``...``
broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .pose_interval import OutwardInterval, cat, rsum, stack

__all__ = [
    "Intrinsics",
    "ReprojectionTerms",
    "cayley_terms",
    "depth_terms",
    "error_derivatives",
    "reprojection_terms",
]


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics ``K = [[fx, skew, cx], [0, fy, cy], [0, 0, 1]]`` (pixels)."""

    fx: float
    fy: float
    cx: float
    cy: float
    skew: float = 0.0

    @classmethod
    def from_matrix(cls, K) -> Intrinsics:
        return cls(float(K[0][0]), float(K[1][1]), float(K[0][2]), float(K[1][2]), float(K[0][1]))


def _cross_unit(a: int, Z: list) -> list:
    """(e_a × Z) as three components."""
    zero = 0.0
    if a == 0:
        return [zero, -Z[2], Z[1]]
    if a == 1:
        return [Z[2], zero, -Z[0]]
    return [-Z[1], Z[0], zero]


def cayley_terms(c, Z: torch.Tensor, order: int = 2):
    """``A = Cay(c) Z`` and its derivatives in c.

    Args:
        c: (..., 3) tensor or interval.
        Z: (..., N, 3) float64 tensor (points already rotated by R₀).
        order: 0, 1 or 2 derivatives.

    Returns:
        ``(A, dA, d2A)``: ``A[l]`` (..., N) for l = 0..2; ``dA[l][a]`` = ∂A_l/∂c_a; ``d2A[l][a][b]``;
        lists of components (None above ``order``).
    """
    cs = [c[..., None, a] for a in range(3)]  # (..., 1): broadcast over the N points
    Zs = [Z[..., l] for l in range(3)]
    squares = [x.square() for x in cs]
    cc = squares[0] + squares[1] + squares[2]
    cz = cs[0] * Zs[0] + cs[1] * Zs[1] + cs[2] * Zs[2]
    cross = [cs[1] * Zs[2] - cs[2] * Zs[1], cs[2] * Zs[0] - cs[0] * Zs[2], cs[0] * Zs[1] - cs[1] * Zs[0]]
    s = 1.0 + cc
    one_minus = 1.0 - cc
    A = [(one_minus * Zs[l] + 2.0 * cs[l] * cz + 2.0 * cross[l]) / s for l in range(3)]
    if order == 0:
        return A, None, None
    dA = [[None] * 3 for _ in range(3)]
    for a in range(3):
        ecross = _cross_unit(a, Zs)
        for l in range(3):
            dn = -2.0 * cs[a] * Zs[l] + 2.0 * cs[l] * Zs[a] + 2.0 * ecross[l]
            if l == a:
                dn = dn + 2.0 * cz
            dA[l][a] = (dn - 2.0 * cs[a] * A[l]) / s
    if order == 1:
        return A, dA, None
    d2A = [[[None] * 3 for _ in range(3)] for _ in range(3)]
    for l in range(3):
        for a in range(3):
            for b in range(a, 3):
                d2n = 0.0 * Zs[l]
                if a == b:
                    d2n = d2n - 2.0 * Zs[l]
                if a == l:
                    d2n = d2n + 2.0 * Zs[b]
                if b == l:
                    d2n = d2n + 2.0 * Zs[a]
                value = d2n - 2.0 * cs[a] * dA[l][b] - 2.0 * cs[b] * dA[l][a]
                if a == b:
                    value = value - 2.0 * A[l]
                d2A[l][a][b] = d2A[l][b][a] = value / s
    return A, dA, d2A


@dataclass
class ReprojectionTerms:
    """Projections of N points and their derivatives in P = (c, t) (tensors or intervals; ``...`` batch).

    Attributes:
        p: (..., N, 2) pixels. jac: (..., N, 2, 6) ∂p/∂P. depth: (..., N) Y₂.
        second: (..., N, 2, 6, 6) ∇²p (None unless asked for).
    """

    p: object
    jac: object
    depth: object
    second: object = None


def _outer(a, b):
    return a.unsqueeze(-1) * b.unsqueeze(-2)


def _zeros(like, shape):
    base = like.lower if isinstance(like, OutwardInterval) else like
    return torch.zeros(shape, dtype=base.dtype, device=base.device)


def _pad_rotation_block(block):
    """(..., 3, 3) → (..., 6, 6) with the block top-left (the c–c block) and zeros elsewhere."""
    lead = tuple(block.shape[:-2])
    return cat([cat([block, _zeros(block, lead + (3, 3))], -1), _zeros(block, lead + (3, 6))], -2)


def reprojection_terms(c, t, Z: torch.Tensor, intr: Intrinsics, second: bool = False) -> ReprojectionTerms:
    """Projections and their first (and optionally second) derivatives in the pose parameters.

    Args:
        c, t: (..., 3) pose parameters (tensors or intervals).
        Z: (..., N, 3) rotated model points R₀X (float64 tensor).
        intr: the intrinsics.
        second: also compute ∇²p.

    Interval inputs need every depth Y₂ > 0 over the box (check :func:`depth_terms` first); otherwise the
    interval division raises ``ValueError``.
    """
    A, dA, d2A = cayley_terms(c, Z, order=2 if second else 1)
    Y = [A[l] + t[..., None, l] for l in range(3)]
    w = 1.0 / Y[2]
    q0, q1 = Y[0] * w, Y[1] * w
    one = torch.ones((), dtype=Z.dtype, device=Z.device)
    zero = torch.zeros((), dtype=Z.dtype, device=Z.device)
    # D[l] = ∂Y_l/∂(c, t): (..., N, 6)
    D = [
        stack([dA[l][0], dA[l][1], dA[l][2]] + [one if m == l else zero for m in range(3)], -1)
        for l in range(3)
    ]
    wq = w.unsqueeze(-1)
    jq0 = wq * (D[0] - q0.unsqueeze(-1) * D[2])
    jq1 = wq * (D[1] - q1.unsqueeze(-1) * D[2])
    jp0 = intr.fx * jq0 + intr.skew * jq1 if intr.skew else intr.fx * jq0
    jp1 = intr.fy * jq1
    p0 = intr.fx * q0 + intr.skew * q1 + intr.cx if intr.skew else intr.fx * q0 + intr.cx
    p1 = intr.fy * q1 + intr.cy
    out = ReprojectionTerms(p=stack([p0, p1], -1), jac=stack([jp0, jp1], -2), depth=Y[2])
    if not second:
        return out
    # ∇²q_k = Dᵀ S_k D + Σ_l (∂q_k/∂Y_l) ∇²Y_l; only the c–c block of ∇²Y is non-zero.
    w2 = w.square()
    d0, d1, d2 = D
    dd2 = _outer(d2, d2)
    hq = []
    for k, (q, dk) in enumerate(((q0, d0), (q1, d1))):
        cross_term = -(w2[..., None, None] * (_outer(dk, d2) + _outer(d2, dk)))
        curvature = (2.0 * (q * w2))[..., None, None] * dd2
        coef = [w if k == 0 else 0.0 * w, w if k == 1 else 0.0 * w, -(q * w)]
        block = stack(
            [
                stack(
                    [
                        coef[0] * d2A[0][a][b] + coef[1] * d2A[1][a][b] + coef[2] * d2A[2][a][b]
                        for b in range(3)
                    ],
                    -1,
                )
                for a in range(3)
            ],
            -2,
        )
        hq.append(cross_term + curvature + _pad_rotation_block(block))
    hp0 = intr.fx * hq[0] + intr.skew * hq[1] if intr.skew else intr.fx * hq[0]
    hp1 = intr.fy * hq[1]
    out.second = stack([hp0, hp1], -3)
    return out


def error_derivatives(p, jac, second, u):
    """Gradient (..., 6) and Hessian (..., 6, 6) of E = Σᵢ‖pᵢ − uᵢ‖² from projection terms (tensors or
    intervals) and keypoints ``u`` (..., N, 2); ``second`` may be None (then only the gradient)."""
    rho = p - u
    grad = 2.0 * rsum(rsum(jac * rho.unsqueeze(-1), -2), -2)
    if second is None:
        return grad, None
    jtj = rsum(jac.unsqueeze(-1) * jac.unsqueeze(-2), -3)  # (..., N, 6, 6)
    curvature = rsum(rho[..., None, None] * second, -3)
    return grad, 2.0 * rsum(jtj + curvature, -3)


def depth_terms(c, t, Z: torch.Tensor):
    """Depths Y₂ (..., N) of the points (tensor or interval), without any division."""
    A, _, _ = cayley_terms(c, Z, order=0)
    return A[2] + t[..., None, 2]
