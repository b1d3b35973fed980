"""The pose bound's building blocks: closed-form derivatives vs autograd, rigorous interval / midpoint–radius
arithmetic against exact rational arithmetic, enclosures over boxes and the Taylor slack against samples."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from geo_rs.pose_interval import MidRad, OutwardInterval, mr_einsum, rsum
from geo_rs.pose_model import Intrinsics, error_derivatives, reprojection_terms

pytestmark = pytest.mark.usefixtures("one_thread")
DT = torch.float64
INTR = Intrinsics(500.0, 480.0, 64.0, 60.0, 3.0)


def _energy(P: torch.Tensor, Z: torch.Tensor, u: torch.Tensor):
    c, t = P[:3], P[3:]
    cc = (c * c).sum()
    cross = torch.zeros(3, 3, dtype=DT)
    cross[0, 1], cross[0, 2], cross[1, 0] = -c[2], c[1], c[2]
    cross[1, 2], cross[2, 0], cross[2, 1] = -c[0], -c[1], c[0]
    R = ((1 - cc) * torch.eye(3, dtype=DT) + 2 * torch.outer(c, c) + 2 * cross) / (1 + cc)
    Y = Z @ R.T + t
    p = torch.stack(
        [
            INTR.fx * Y[:, 0] / Y[:, 2] + INTR.skew * Y[:, 1] / Y[:, 2] + INTR.cx,
            INTR.fy * Y[:, 1] / Y[:, 2] + INTR.cy,
        ],
        -1,
    )
    return ((p - u) ** 2).sum(), p


def _scene(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    Z = torch.randn(5, 3, generator=gen, dtype=DT)
    u = torch.randn(5, 2, generator=gen, dtype=DT) * 20 + 64
    P = torch.tensor([0.1, -0.2, 0.05, 0.3, -0.1, 6.0], dtype=DT)
    return Z, u, P


def test_closed_form_derivatives_match_autograd():
    Z, u, P = _scene()
    terms = reprojection_terms(P[:3], P[3:], Z, INTR, second=True)
    grad, hess = error_derivatives(terms.p, terms.jac, terms.second, u)
    auto_p = torch.autograd.functional.jacobian(lambda q: _energy(q, Z, u)[1], P)
    auto_g = torch.autograd.functional.jacobian(lambda q: _energy(q, Z, u)[0], P)
    auto_h = torch.autograd.functional.hessian(lambda q: _energy(q, Z, u)[0], P)
    assert torch.allclose(terms.p, _energy(P, Z, u)[1], atol=1e-10)
    assert torch.allclose(terms.jac, auto_p, rtol=1e-9, atol=1e-9)
    assert torch.allclose(grad, auto_g, rtol=1e-9, atol=1e-7)
    assert torch.allclose(hess, auto_h, rtol=1e-9, atol=1e-6)


def test_interval_evaluation_contains_every_sampled_point():
    Z, u, P = _scene(1)
    w = torch.tensor([0.01, 0.01, 0.01, 0.05, 0.05, 0.1], dtype=DT)
    box = OutwardInterval(P - w, P + w)
    ubox = OutwardInterval(u - 1, u + 1)
    enc = reprojection_terms(box[:3], box[3:], Z, INTR, second=True)
    g_enc, h_enc = error_derivatives(enc.p, enc.jac, enc.second, ubox)
    gen = torch.Generator().manual_seed(2)
    for _ in range(100):
        Ps = P + (torch.rand(6, generator=gen, dtype=DT) * 2 - 1) * w
        us = u + torch.rand(5, 2, generator=gen, dtype=DT) * 2 - 1
        pt = reprojection_terms(Ps[:3], Ps[3:], Z, INTR, second=True)
        g, h = error_derivatives(pt.p, pt.jac, pt.second, us)
        for value, enclosure in (
            (pt.p, enc.p),
            (pt.jac, enc.jac),
            (pt.second, enc.second),
            (g, g_enc),
            (h, h_enc),
        ):
            assert bool(((value >= enclosure.lower) & (value <= enclosure.upper)).all())


def _exact(x: torch.Tensor) -> list[Fraction]:
    return [Fraction(v) for v in x.reshape(-1).tolist()]


def test_outward_rounding_contains_the_exact_real_results():
    """Random endpoints with very different magnitudes: every result encloses the exact rational value."""
    gen = torch.Generator().manual_seed(3)
    lo = torch.randn(400, generator=gen, dtype=DT) * torch.exp(torch.randn(400, generator=gen, dtype=DT) * 5)
    hi = lo + torch.rand(400, generator=gen, dtype=DT) * lo.abs()
    lo2 = torch.randn(400, generator=gen, dtype=DT) * 3
    hi2 = lo2 + torch.rand(400, generator=gen, dtype=DT)
    a, b = OutwardInterval(lo, hi), OutwardInterval(lo2, hi2)
    positive = OutwardInterval(hi2.abs() + 0.5, hi2.abs() + 1.0)
    cases = {
        "add": (a + b, lambda x, y: x + y, (lo, lo2)),
        "sub": (a - b, lambda x, y: x - y, (hi, lo2)),
        "mul": (a * b, lambda x, y: x * y, (lo, hi2)),
        "div": (a / positive, lambda x, y: x / y, (hi, positive.lower)),
    }
    for name, (res, op, (x, y)) in cases.items():
        for xv, yv, r_lo, r_hi in zip(
            _exact(x), _exact(y), _exact(res.lower), _exact(res.upper), strict=True
        ):
            assert r_lo <= op(xv, yv) <= r_hi, name
    total = rsum(OutwardInterval(lo, lo), 0)
    exact = sum(_exact(lo))
    assert Fraction(float(total.lower)) <= exact <= Fraction(float(total.upper))


def test_midpoint_radius_einsum_contains_exact_products():
    gen = torch.Generator().manual_seed(4)
    a_mid = torch.randn(3, 7, generator=gen, dtype=DT) * 1e3
    b_mid = torch.randn(7, 4, generator=gen, dtype=DT)
    a = MidRad(a_mid, torch.zeros_like(a_mid))
    b = MidRad(b_mid, torch.zeros_like(b_mid))
    out = mr_einsum("ik,kj->ij", a, b)
    A, B = a_mid.tolist(), b_mid.tolist()
    for i in range(3):
        for j in range(4):
            exact = sum(Fraction(A[i][k]) * Fraction(B[k][j]) for k in range(7))
            mid, rad = Fraction(float(out.mid[i, j])), Fraction(float(out.rad[i, j]))
            assert mid - rad <= exact <= mid + rad
    # radii propagate: any point of the input boxes lands in the output box
    a_r, b_r = MidRad(a_mid, torch.full_like(a_mid, 0.5)), MidRad(b_mid, torch.full_like(b_mid, 0.01))
    out = mr_einsum("ik,kj->ij", a_r, b_r)
    for _ in range(50):
        x = a_mid + (torch.rand(3, 7, generator=gen, dtype=DT) * 2 - 1) * 0.5
        y = b_mid + (torch.rand(7, 4, generator=gen, dtype=DT) * 2 - 1) * 0.01
        assert bool(((x @ y - out.mid).abs() <= out.rad).all())


def test_taylor_slack_bounds_sampled_directional_terms():
    """The slack of the per-box Lagrangian bound dominates ∇φ(ζ)ᵀ·basis·δ at sampled ζ, δ, u."""
    import numpy as np_

    from geo_rs import project_points
    from geo_rs.pose_frame import build_frame
    from geo_rs.pose_search import _directions, _objective_gradient, _taylor_slack, make_search
    from geo_rs.pose_sets import as_keypoint_set

    X = np_.array([[x, y, z] for x in (-1, 1) for y in (-0.6, 0.6) for z in (0.0, 0.8)])
    Kmat = np_.array([[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]])
    import cv2

    truth = (cv2.Rodrigues(np_.array([0.6, -0.4, 0.2]))[0], np_.array([0.1, 0.1, 6.0]))
    u = project_points(X, truth, Kmat)
    kset = as_keypoint_set((u - 1, u + 1), 8)
    frame = build_frame(X, kset, Kmat, truth, 1e-6)
    search = make_search(frame, 0)
    gen = torch.Generator().manual_seed(5)
    lo = (torch.rand(3, 6, generator=gen, dtype=DT) - 0.5) * search.region
    hi = lo + 0.3 * search.region
    box = frame.hull(lo, hi, search.basis)
    centre = frame.point_of((lo + hi) / 2, search.basis).mid
    half = (hi - lo) / 2
    at = reprojection_terms(
        OutwardInterval.point(centre[:, :3]),
        OutwardInterval.point(centre[:, 3:]),
        frame.Z_batch(3),
        frame.intr,
    )
    lam = torch.randn(3, 7, 6, generator=gen, dtype=DT) * 1e-3
    grad_f = _objective_gradient(frame, 0, box)
    slack, _, _ = _taylor_slack(frame, at, box, search.basis, half, lam, _directions(grad_f, 3))
    d = _directions(grad_f, 3).mid  # rotation: constant ±e_k, exact
    for _ in range(200):
        dz = (torch.rand(3, 6, generator=gen, dtype=DT) * 2 - 1) * half
        dd = (torch.rand(3, 6, generator=gen, dtype=DT) * 2 - 1) * half
        zeta = centre + dz @ search.basis.T
        us = torch.from_numpy(
            kset.lower
            + np.random.default_rng(int(torch.randint(0, 10**6, (1,), generator=gen))).random(
                kset.lower.shape
            )
            * (kset.upper - kset.lower)
        )
        pt = reprojection_terms(zeta[:, :3], zeta[:, 3:], frame.Z_batch(3), frame.intr, second=True)
        _, hess = error_derivatives(pt.p, pt.jac, pt.second, us[None])
        grad_phi = d + torch.einsum("mab,mqb->mqa", hess, lam)
        value = (grad_phi @ search.basis * dd[:, None, :]).sum(-1)
        assert bool((value <= slack * (1 + 1e-9)).all())
