"""Branch and bound over pose boxes with per-box Lagrangian bounds (the engine of ``pose_error_bound``).

For one error (rotation, translation or camera position) the error is the norm of a vector f(P) ∈ R³.
Boxes live in coordinates η (P = P̃ + basis·η, basis = W·Q: whitened, rotated so that f depends to first
order on η₀…η₂ only). For every box, every component f_k and sign s, and **any** λ ∈ R⁶, a stationary
pose P in the box (∇E(P; u) = g, |g|∞ ≤ g_tol, u in the keypoint set) satisfies

    s·f_k(P) = s·f_k(P) + λᵀ(∇E(P; u) − g)
             ≤ s·f_k(P_c) + max_u λᵀ∇E(P_c; u) + Σ_j |((s∇f_k + Hλ)ᵀ basis)_j| h_j + (…)·|e| + ‖λ‖₁ g_tol

(mean-value theorem on P ↦ s·f_k(P) + λᵀ∇E(P; u) around the box centre P_c; e the rounding of P_c). The
term max_u λᵀ∇E(P_c; u) is exact (∇E is affine in u). With λ ≈ −H⁻¹s∇f_k the first-order dependence on P
cancels, so the bound is the exact linearised maximum plus a *second-order* slack: boxes can stay large.
λ is chosen per box by iteratively reweighted least squares on that (convex, piecewise-linear) bound;
the bound is then evaluated rigorously in outward-rounded intervals, so λ's quality affects only
tightness. Six such bounds (±f₀, ±f₁, ±f₂) give a box of f-values; an empty one, or a seventh test
(λᵀ∇E ≠ 0 throughout: no stationary pose at all), removes the box. The box's error bound is the norm of
the farthest corner of its f-box.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .pose_frame import PoseFrame, error_uppers
from .pose_interval import _U, MidRad, OutwardInterval, mr_einsum, rsum
from .pose_model import cayley_terms, depth_terms, error_derivatives, reprojection_terms
from .pose_refine import refine_stationary_poses

__all__ = ["Search", "branch_and_bound", "make_search"]

_BATCH = 64  # boxes split per round
_WITNESS_EVERY, _WITNESSES = 3, 6  # every 3rd round, solve the 6 configurations behind the worst bounds
_IRLS_ITERS = 12  # more iterations were no tighter on the bench images (30: same or looser, 25 % slower)
_REGION_SCALE, _REGION_PAD = 1.5, 1.0  # R₀ = 1.5 × the first-order solution set + 1 (whitened units)


@dataclass
class Search:
    """The fixed data of one error's branch and bound (see the module doc)."""

    frame: PoseFrame
    quantity: int  # 0 rotation, 1 translation, 2 camera position
    basis: torch.Tensor  # (6, 6)
    basis_inv: torch.Tensor
    sensitivity: torch.Tensor  # (6,) first-order change of f per unit of η_k
    region: torch.Tensor  # (6,) R₀ = [−region, region] in η

    def contains(self, params: torch.Tensor) -> bool:
        eta = self.basis_inv @ (params - self.frame.nominal)
        return bool((eta.abs() < self.region * (1 - 1e-9)).all())


def _objective_map(frame: PoseFrame, quantity: int) -> torch.Tensor:
    """(3, 6) first-order derivative at P̃ of the vector f whose norm is the error."""
    if quantity < 2:
        return torch.eye(6, dtype=torch.float64)[3 * quantity : 3 * quantity + 3]
    box = OutwardInterval.point(frame.nominal[None])
    return _objective_gradient(frame, quantity, box)[0].mid


def make_search(frame: PoseFrame, quantity: int) -> Search:
    jac = _objective_map(frame, quantity) @ frame.W  # (3, 6)
    _, sv, vt = torch.linalg.svd(jac, full_matrices=True)
    basis = frame.W @ vt.T
    basis_inv = vt @ frame.W_inv
    sensitivity = torch.cat([sv, torch.zeros(6 - len(sv), dtype=sv.dtype)])
    half = torch.from_numpy(((frame.kset.upper - frame.kset.lower) / 2).reshape(-1))
    spread = (basis_inv @ frame.response).abs() @ half  # first-order extent of the solution set in η
    return Search(frame, quantity, basis, basis_inv, sensitivity, _REGION_SCALE * spread + _REGION_PAD)


# ------------------------------------------------------------------------------ objective pieces
def _objective_value(frame: PoseFrame, quantity: int, point: OutwardInterval) -> OutwardInterval:
    """f(P) (M, 3) as intervals, for pose intervals (M, 6)."""
    t_ref = torch.from_numpy(frame.reference.t)
    if quantity == 0:
        return point[..., :3]
    if quantity == 1:
        return point[..., 3:] - t_ref
    # ‖Cay(−c)t − t_ref‖ = ‖t − Cay(c)t_ref‖ (Cay(c) is a rotation): the second form is linear in t and
    # its rotation part involves the constant t_ref only, so its interval gradients are much narrower
    A, _, _ = cayley_terms(point[..., :3], _t_ref_rows(t_ref, point), order=0)  # Cay(c)·t_ref
    return OutwardInterval.wrap(_stack3([point[..., 3 + k] - A[k][..., 0] for k in range(3)]))


def _t_ref_rows(t_ref: torch.Tensor, like: OutwardInterval) -> torch.Tensor:
    return t_ref.to(like.lower.dtype).expand(*like.lower.shape[:-1], 1, 3)


def _stack3(items):
    return OutwardInterval(
        torch.stack([i.lower for i in items], -1), torch.stack([i.upper for i in items], -1)
    )


def _objective_gradient(frame: PoseFrame, quantity: int, box: OutwardInterval) -> OutwardInterval:
    """∇f_k over pose boxes: (M, 3, 6) intervals."""
    m = box.lower.shape[0]
    eye = torch.eye(6, dtype=torch.float64)
    if quantity < 2:
        g = eye[3 * quantity : 3 * quantity + 3].expand(m, -1, -1)
        return OutwardInterval(g, g)
    c = box[..., :3]
    _, dA, _ = cayley_terms(c, _t_ref_rows(torch.from_numpy(frame.reference.t), box), order=1)
    rows = []
    for l in range(3):
        d_c = [-(dA[l][a][..., 0]) for a in range(3)]  # f = t − Cay(c)t_ref
        d_t = [float(l == j) for j in range(3)]
        rows.append(_row6(d_c + d_t))
    return OutwardInterval(torch.stack([r.lower for r in rows], -2), torch.stack([r.upper for r in rows], -2))


def _row6(items) -> OutwardInterval:
    like = next(i for i in items if isinstance(i, OutwardInterval))
    items = [i if isinstance(i, OutwardInterval) else OutwardInterval.point(torch.full_like(like.lower, i))
             for i in items]
    return OutwardInterval(
        torch.stack([i.lower for i in items], -1), torch.stack([i.upper for i in items], -1)
    )


# ------------------------------------------------------------------------------ λ by IRLS
def _irls(a, vecs, beta, costs, start, iters: int = _IRLS_ITERS):
    """min_λ λᵀa + Σᵢ cᵢ|λᵀvᵢ + βᵢ| (batched: a (P, 6), vecs (P, 6, K), beta/costs (P, K), start (P, 6))."""
    lam = start
    eye = torch.eye(6, dtype=torch.float64)
    for _ in range(iters):
        resid = (lam.unsqueeze(-1) * vecs).sum(-2) + beta
        total = (costs * resid.abs()).sum(-1, keepdim=True)
        weights = costs / torch.maximum(resid.abs(), 1e-9 * total + 1e-300)
        mat = (vecs * weights[:, None, :]) @ vecs.transpose(1, 2)
        mat = mat + (1e-12 * mat.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None] + 1e-300) * eye
        rhs = a + (vecs * (weights * beta)[:, None, :]).sum(-1)
        new = -torch.linalg.solve(mat, rhs.unsqueeze(-1)).squeeze(-1)
        lam = torch.where(torch.isfinite(new).all(-1, keepdim=True), new, lam)
    return lam


def _exclusion_irls(a, vecs, costs):
    """min Σᵢ cᵢ|λᵀvᵢ| subject to λᵀa = 1: the direction that best separates 0 from the gradients."""
    lam = a / (a * a).sum(-1, keepdim=True).clamp(min=1e-300)
    eye = torch.eye(6, dtype=torch.float64)
    for _ in range(_IRLS_ITERS):
        proj = (lam.unsqueeze(-1) * vecs).sum(-2).abs()
        total = (costs * proj).sum(-1, keepdim=True)
        weights = costs / torch.maximum(proj, 1e-9 * total + 1e-300)
        mat = (vecs * weights[:, None, :]) @ vecs.transpose(1, 2)
        mat = mat + (1e-12 * mat.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None] + 1e-300) * eye
        x = torch.linalg.solve(mat, a.unsqueeze(-1)).squeeze(-1)
        new = x / (a * x).sum(-1, keepdim=True)
        lam = torch.where(torch.isfinite(new).all(-1, keepdim=True), new, lam)
    return lam


# ------------------------------------------------------------------------------ one batch of boxes
def linear_range(frame: PoseFrame, weights: OutwardInterval, p: OutwardInterval) -> OutwardInterval:
    """Range of Σᵢₖ wᵢₖ (pᵢₖ − uᵢₖ) over the keypoint set (weights, p: (M, N, 2) intervals)."""
    kset = frame.kset
    if kset.candidates is None:
        u = OutwardInterval(torch.from_numpy(kset.lower), torch.from_numpy(kset.upper))
        return rsum(rsum(weights * (p - u), -1), -1)
    lows, highs = [], []
    for i, cand in enumerate(kset.candidates):
        cand_t = torch.from_numpy(cand)  # (n_i, 2)
        w = weights[:, i]
        values = w[:, None, 0] * (p[:, i, None, 0] - cand_t[:, 0]) + w[:, None, 1] * (
            p[:, i, None, 1] - cand_t[:, 1]
        )
        lows.append(values.lower.amin(-1))
        highs.append(values.upper.amax(-1))
    return rsum(OutwardInterval(torch.stack(lows, -1), torch.stack(highs, -1)), -1)


@dataclass
class _Evaluation:
    alive: torch.Tensor  # (M,)
    upper: torch.Tensor  # (M,) error upper bound
    axis: torch.Tensor  # (M,) axis to split next
    witness: torch.Tensor  # (M, N, 2) the configuration maximising the worst component's bound


def _evaluate(search: Search, lo: torch.Tensor, hi: torch.Tensor) -> _Evaluation:
    frame, basis, m = search.frame, search.basis, len(lo)
    box = frame.hull(lo, hi, basis)
    eta_c = (lo + hi) / 2
    half = torch.maximum(hi - eta_c, eta_c - lo) * (1 + 1e-15)
    centre_box = frame.point_of(eta_c, basis)  # encloses the exact P̃ + basis·η_c
    centre = centre_box.mid
    box = OutwardInterval(
        torch.minimum(box.lower, centre_box.lower), torch.maximum(box.upper, centre_box.upper)
    )
    f_box = _objective_value(frame, search.quantity, box)  # plain interval evaluation, (M, 3)
    f_lo, f_hi = f_box.lower.clone(), f_box.upper.clone()
    depth = depth_terms(box[..., :3], box[..., 3:], frame.Z_batch(m))
    behind = (depth.upper <= 0).any(-1)  # a point behind the camera everywhere in the box: not a valid pose
    testable = (depth.lower > 0).all(-1)
    excluded = torch.zeros(m, dtype=torch.bool)
    axis = (half * (search.sensitivity / search.sensitivity.max() + 1e-3)).argmax(-1)
    witness = torch.from_numpy(frame.kset.centre).expand(m, -1, -1).clone()
    idx = torch.nonzero(testable).squeeze(-1)
    if len(idx):
        res = _lagrangian_bounds(search, box[idx], centre[idx], centre_box[idx], half[idx])
        f_lo[idx] = torch.maximum(f_lo[idx], res[0])
        f_hi[idx] = torch.minimum(f_hi[idx], res[1])
        excluded[idx] = res[2]
        axis[idx] = res[3]
        witness[idx] = res[4]
    excluded |= (f_lo > f_hi).any(-1)
    mags = torch.maximum(f_lo.abs(), f_hi.abs())
    norm = mags.square().sum(-1).sqrt() * (1 + 1e-12)
    upper = torch.rad2deg(2 * torch.atan(norm)) * (1 + 1e-12) if search.quantity == 0 else norm
    return _Evaluation(~behind & ~excluded, upper, axis, witness)


def _lagrangian_bounds(
    search: Search,
    box: OutwardInterval,
    centre: torch.Tensor,
    centre_box: OutwardInterval,
    half: torch.Tensor,
):
    """Per box: rigorous (f_lo (M, 3), f_hi (M, 3)), excluded (M,), split axis (M,), witness u (M, N, 2)."""
    frame, basis, m = search.frame, search.basis, len(centre)
    kset = frame.kset
    at = reprojection_terms(
        OutwardInterval.point(centre[:, :3]),
        OutwardInterval.point(centre[:, 3:]),
        frame.Z_batch(m),
        frame.intr,
    )
    # --- λ by IRLS on the linearised bound (floats; any λ is valid)
    point = reprojection_terms(centre[:, :3], centre[:, 3:], frame.Z_batch(m), frame.intr, second=True)
    u0 = torch.from_numpy(kset.centre)
    a, hess_c = error_derivatives(point.p, point.jac, point.second, u0)
    b_mat = 2 * point.jac.reshape(m, -1, 6).transpose(1, 2)  # (M, 6, 2N) = −∂∇E/∂u
    r = torch.from_numpy(((kset.upper - kset.lower) / 2).reshape(-1))
    grad_f = _objective_gradient(frame, search.quantity, box)  # (M, 3, 6)
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64)
    d_mid = (signs[:, None, None, None] * grad_f.mid[None]).permute(1, 2, 0, 3).reshape(m, 6, 6)  # ±∇f_k
    vecs = torch.cat([b_mat, hess_c @ basis], -1)  # (M, 6, K)
    costs = torch.cat([r.expand(m, -1), half], -1)
    n2 = r.numel()
    beta = torch.zeros(m, 6, vecs.shape[-1], dtype=torch.float64)
    beta[:, :, n2:] = d_mid @ basis  # |((d + Hλ)ᵀ basis)_k|: d gives the offsets of the H·basis terms
    rep = lambda x: x.repeat_interleave(6, 0)  # noqa: E731
    start = -torch.linalg.lstsq(rep(hess_c), d_mid.reshape(-1, 6).unsqueeze(-1)).solution.squeeze(-1)
    lam = _irls(rep(a), rep(vecs), beta.reshape(6 * m, -1), rep(costs), start).reshape(m, 6, 6)
    lam_all = torch.cat([lam, _exclusion_irls(a, vecs, costs)[:, None]], 1)  # (M, 7, 6)
    # --- rigorous evaluation of the seven bounds
    weights = 2.0 * rsum(at.jac[:, None] * lam_all[:, :, None, None, :], -1)  # (M, 7, N, 2)
    lin = _linear7(frame, weights, at.p)
    d_iv = _directions(grad_f, m)  # (M, 7, 6)
    slack, per_axis, grad_mag = _taylor_slack(frame, at, box, basis, half, lam_all, d_iv)
    err = (centre_box - centre).mag  # |exact centre − P_c|
    slack = slack + (grad_mag * err[:, None, :]).sum(-1)
    slack = slack * (1 + 1e-12) + lam_all.abs().sum(-1) * frame.grad_tol * (1 + 1e-12)
    fc = _fc7(_objective_value(frame, search.quantity, centre_box))  # (M, 7): ±f_k(P_c) upper ends; 0
    bound = (fc + lin.upper + slack) * (1 + 1e-12) + 1e-300  # upper bound of s·f_k over stationary poses
    bound = torch.where(torch.isfinite(bound), bound, torch.full_like(bound, math.inf))
    f_hi = bound[:, 0:6:2]
    f_lo = -bound[:, 1:6:2]
    excluded = (lin.lower[:, 6] > slack[:, 6]) | (lin.upper[:, 6] < -slack[:, 6])
    # split where the slack of the loosest component comes from; witness: the u behind its bound
    worst = (bound[:, :6] - fc[:, :6]).argmax(-1)
    rows = torch.arange(m)
    axis = per_axis[rows, worst].argmax(-1)
    w = weights.mid[rows, worst]  # (M, N, 2): the u maximising λᵀ∇E(P_c; u) minimises Σ w·u
    witness = torch.stack([torch.from_numpy(kset.support(-wi.numpy())) for wi in w])
    return f_lo, f_hi, excluded, axis, witness


def _taylor_slack(
    frame: PoseFrame,
    at,
    box: OutwardInterval,
    basis: torch.Tensor,
    half: torch.Tensor,
    lam: torch.Tensor,
    d_iv: OutwardInterval,
):
    """Bound of ∇φ(ζ)ᵀ·basis·δ over ζ, P_c + basis·δ in the box, φ(P) = dᵀP + λᵀ∇E(P; u), u in the set.

    With s_k(δ') = (∇φ(ζ)ᵀ basis)_k = d_k' + 2Σᵢ[(Jᵢλ)ᵀ(Jᵢ b_k) + ρᵢᵀ∇²pᵢ[λ, b_k]] (b_k the basis columns,
    ρ = p − u) and first-order mean-value forms Jᵢ(ζ)v ∈ Jᵢ(P_c)v + Σⱼ ∇²pᵢ(𝐏)[v, b_j]δ'ⱼ,
    ρᵢ(ζ) ∈ pᵢ(P_c) − u + Σⱼ Jᵢ(𝐏)b_j δ'ⱼ: s_k(δ') ∈ s_k⁰ + Σⱼ C_kj δ'ⱼ + R_k(δ') with interval s⁰, C and a
    quadratic R, so Σ_k s_k δ_k ≤ Σ_k |s_k⁰|h_k + Σ_kj |C_kj| h_j h_k + Σ_k max|R_k| h_k. Contracting λ, b_k
    *before* taking magnitudes keeps the cancellations that an interval Hessian would lose.

    Args: ``at`` point terms at P_c; ``lam`` (M, P, 6); ``d_iv`` (M, P, 6) interval ∇f over the box.
    Returns: slack (M, P), per-axis slack (M, P, 6), and a bound on |∇φ| (M, P, 6) over the box.
    """
    m = lam.shape[0]
    kset = frame.kset
    direct = reprojection_terms(box[..., :3], box[..., 3:], frame.Z_batch(m), frame.intr, second=True)
    mr = MidRad.from_interval
    basis_mr, lam_mr = MidRad.point(basis), MidRad.point(lam)
    jac_c, jac_box, second = mr(at.jac), mr(direct.jac), mr(direct.second)
    u_c = torch.from_numpy(kset.centre)
    u_r = torch.from_numpy((kset.upper - kset.lower) / 2) * (1 + 4 * _U) + 1e-300
    rho = mr(at.p) + MidRad(-u_c, u_r)  # p(P_c) − u over the set (its box hull)
    sec_b = mr_einsum("mnxab,bj->mnxaj", second, basis_mr)  # ∇²p·basis
    b_sec_b = mr_einsum("ak,mnxaj->mnxkj", basis_mr, sec_b)  # basisᵀ∇²p·basis
    jb_c = mr_einsum("mnxa,aj->mnxj", jac_c, basis_mr)  # J(P_c)·basis
    jb_box = mr_einsum("mnxa,aj->mnxj", jac_box, basis_mr)  # J(𝐏)·basis
    alpha = mr_einsum("mnxa,mqa->mqnx", jac_c, lam_mr)  # Jᵢ(P_c)λ
    A = mr_einsum("mnxaj,mqa->mqnxj", sec_b, lam_mr)  # ∇²pᵢ(𝐏)[λ, b_j]
    d_b = mr_einsum("mqa,aj->mqj", mr(d_iv), basis_mr)
    s0 = d_b + (mr_einsum("mqnx,mnxj->mqj", alpha, jb_c) + mr_einsum("mnx,mqnxj->mqj", rho, A)).scale(2.0)
    C = (
        mr_einsum("mqnx,mnxkj->mqkj", alpha, b_sec_b)
        + mr_einsum("mqnxj,mnxk->mqkj", A, jb_c)
        + mr_einsum("mnxj,mqnxk->mqkj", jb_box, A)
    ).scale(2.0)
    up = 1 + 1e-12  # rounding of the non-negative sums below (≤ 10⁴ terms each)
    abs_a = torch.einsum("mqnxj,mj->mqnx", A.mag, half) * up  # Σⱼ|A_ijm| h_j
    abs_b = torch.einsum("mnxkj,mj->mnxk", b_sec_b.mag, half) * up  # Σⱼ|B_ikjm| h_j
    quad = 2.0 * torch.einsum("mqnx,mnxk->mqk", abs_a, abs_b) * up  # max |R_k|
    s_mag = (s0.mag + torch.einsum("mqkj,mj->mqk", C.mag, half) * up + quad) * up  # ≥ |s_k(δ')| on the box
    per_axis = s_mag * half[:, None, :] * up
    slack = per_axis.sum(-1) * up
    grad_mag = (s_mag @ torch.linalg.inv(basis).abs()) * up  # ∇φ = basis⁻ᵀ s
    return slack, per_axis, grad_mag


def _iv_expand(iv: OutwardInterval, k: int) -> OutwardInterval:
    return OutwardInterval(
        iv.lower.unsqueeze(1).expand(-1, k, *iv.lower.shape[1:]),
        iv.upper.unsqueeze(1).expand(-1, k, *iv.upper.shape[1:]),
    )


def _repeat7(p: OutwardInterval) -> OutwardInterval:
    return OutwardInterval(p.lower.repeat_interleave(7, 0), p.upper.repeat_interleave(7, 0))


def _linear7(frame: PoseFrame, weights: OutwardInterval, p: OutwardInterval) -> OutwardInterval:
    m = p.lower.shape[0]
    flat = OutwardInterval(
        weights.lower.reshape(7 * m, *weights.lower.shape[2:]),
        weights.upper.reshape(7 * m, *weights.upper.shape[2:]),
    )
    out = linear_range(frame, flat, _repeat7(p))
    return OutwardInterval(out.lower.reshape(m, 7), out.upper.reshape(m, 7))


def _directions(grad_f: OutwardInterval, m: int) -> OutwardInterval:
    """(M, 7, 6): +∇f₀, −∇f₀, +∇f₁, −∇f₁, +∇f₂, −∇f₂, 0."""
    lows, highs = [], []
    for k in range(3):
        lows += [grad_f.lower[:, k], -grad_f.upper[:, k]]
        highs += [grad_f.upper[:, k], -grad_f.lower[:, k]]
    zero = torch.zeros_like(grad_f.lower[:, 0])
    return OutwardInterval(torch.stack(lows + [zero], 1), torch.stack(highs + [zero], 1))


def _fc7(f_c: OutwardInterval) -> torch.Tensor:
    cols = []
    for k in range(3):
        cols += [f_c.upper[:, k], -f_c.lower[:, k]]
    return torch.stack(cols + [torch.zeros_like(f_c.upper[:, 0])], 1)


# ------------------------------------------------------------------------------ the loop
def _split(lo: torch.Tensor, hi: torch.Tensor, axis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mid = (lo + hi) / 2
    rows = torch.arange(len(lo))
    left_hi, right_lo = hi.clone(), lo.clone()
    left_hi[rows, axis] = mid[rows, axis]
    right_lo[rows, axis] = mid[rows, axis]
    return torch.cat([lo, right_lo]), torch.cat([left_hi, hi])


@dataclass
class SearchResult:
    bound: float
    worst: float
    worst_configuration: np.ndarray | None
    boxes: int
    converged: bool
    region_upper: np.ndarray  # (3,) error upper bounds over R₀


def _improve_witness(search: Search, configs: torch.Tensor, best: float, best_cfg):
    """Solve the configurations (branch-following from P̃); keep the worst error of solutions inside R₀."""
    frame = search.frame
    start = frame.nominal.expand(len(configs), -1)
    params, ok = refine_stationary_poses(
        frame.Z_batch(len(configs)), frame.intr, configs, start, frame.grad_tol
    )
    errs = frame.errors(params)[:, search.quantity]
    for i in torch.argsort(errs, descending=True).tolist():
        if float(errs[i]) <= best:
            break
        if bool(ok[i]) and search.contains(params[i]):
            return float(errs[i]), configs[i].numpy()
    return best, best_cfg


def branch_and_bound(
    search: Search,
    worst: float,
    worst_cfg,
    rtol: float,
    max_boxes: int,
    deadline: float | None,
    target: float | None = None,
) -> SearchResult:
    """Refine the boxes of R₀ until every surviving box's bound is within (1 + rtol) of the worst error found
    (or, with a ``target``, until the bound is proved ≤ target or a witness exceeds it)."""
    floor = 1e-9 if search.quantity == 0 else 1e-12 * (1 + float(np.linalg.norm(search.frame.reference.t)))
    lo, hi = -search.region[None].clone(), search.region[None].clone()
    region_upper = error_uppers(search.frame, search.frame.hull(lo, hi, search.basis))[0].numpy()
    ev = _evaluate(search, lo, hi)
    keep = ev.alive
    lo, hi, upper, axis = lo[keep], hi[keep], ev.upper[keep], ev.axis[keep]
    evaluated, converged, rounds = 1, False, 0
    while len(lo):
        threshold = max(worst, floor) * (1 + rtol) if target is None else target
        if target is not None and worst > target:
            break  # a real configuration exceeds the target: no proof possible
        todo = upper > threshold
        if not bool(todo.any()):
            converged = True
            break
        if evaluated >= max_boxes or (deadline is not None and time.perf_counter() > deadline):
            break
        order = torch.argsort(torch.where(todo, upper, torch.full_like(upper, -math.inf)), descending=True)
        pick = order[: min(_BATCH, int(todo.sum()))]
        rest = torch.ones(len(lo), dtype=torch.bool)
        rest[pick] = False
        child_lo, child_hi = _split(lo[pick], hi[pick], axis[pick])
        ev = _evaluate(search, child_lo, child_hi)
        evaluated += len(child_lo)
        rounds += 1
        if rounds % _WITNESS_EVERY == 1:  # solving witnesses costs about as much as a round: not every round
            alive_upper = torch.where(ev.alive, ev.upper, torch.full_like(ev.upper, -math.inf))
            top = torch.argsort(alive_upper, descending=True)[:_WITNESSES]
            worst, worst_cfg = _improve_witness(search, ev.witness[top], worst, worst_cfg)
        lo = torch.cat([lo[rest], child_lo[ev.alive]])
        hi = torch.cat([hi[rest], child_hi[ev.alive]])
        upper = torch.cat([upper[rest], ev.upper[ev.alive]])
        axis = torch.cat([axis[rest], ev.axis[ev.alive]])
    # nothing left would contradict the nominal stationary pose lying in R₀: then claim nothing
    bound = float(upper.max()) if len(lo) else math.inf
    return SearchResult(bound, worst, worst_cfg, evaluated, converged, region_upper)
