"""Newton refinement of camera poses to stationary points of the reprojection error (batched).

:func:`refine_stationary_poses` is the last step of :func:`geo_rs.solve_pnp` and the solver behind the
witness searches of :func:`geo_rs.pose_error_bound`: damped Newton (Levenberg–Marquardt on the full
Hessian of :mod:`geo_rs.pose_model`) in the (c, t) parameters, until ‖∇E‖∞ ≤ grad_tol / 10.
"""

from __future__ import annotations

import torch

from .pose_model import Intrinsics, error_derivatives, reprojection_terms

__all__ = ["refine_stationary_poses"]


def refine_stationary_poses(
    Z: torch.Tensor,
    intr: Intrinsics,
    u: torch.Tensor,
    start: torch.Tensor,
    grad_tol: float,
    max_iter: int = 100,
    second_order: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped Newton (Levenberg–Marquardt on the full Hessian) on E(·; u) in (c, t), batched over L problems.

    Args:
        Z: (L, N, 3) rotated model points; u: (L, N, 2) keypoints; start: (L, 6) initial poses.
        grad_tol: stop when ‖∇E‖∞ ≤ grad_tol / 10.
        second_order: use the full Hessian (else Gauss–Newton 2JᵀJ: cheaper, slower near a non-zero-residual
            minimum; for a few warm-up steps).

    Returns:
        ``(poses (L, 6), converged (L,))``; converged means ‖∇E‖∞ ≤ grad_tol / 10 with all depths > 0.
        Near the minimum a step is accepted when it lowers E *or* keeps E within rounding and lowers the
        gradient, so the iteration does not stall on float64 rounding of E. Only unconverged problems are
        iterated.
    """
    pose = start.clone()
    num = len(pose)
    eye = torch.eye(6, dtype=pose.dtype)

    def evaluate(p, z, uu):
        terms = reprojection_terms(p[:, :3], p[:, 3:], z, intr, second=second_order)
        energy = ((terms.p - uu) ** 2).sum((-1, -2))
        grad, hess = error_derivatives(terms.p, terms.jac, terms.second, uu)
        if hess is None:  # Gauss–Newton
            jac = terms.jac.reshape(len(p), -1, 6)
            hess = 2 * jac.transpose(1, 2) @ jac
        valid = (terms.depth > 0).all(-1) & torch.isfinite(energy) & torch.isfinite(grad).all(-1)
        return energy, grad, hess, valid

    energy, grad, hess, valid = evaluate(pose, Z, u)
    damping = torch.full((num,), 1e-4, dtype=pose.dtype)
    converged = valid & (grad.abs().amax(-1) <= grad_tol / 10)
    for _ in range(max_iter):
        act = torch.nonzero(~converged).squeeze(-1)
        if len(act) == 0:
            break
        scale = hess[act].diagonal(dim1=-2, dim2=-1).abs().clamp(min=1e-12)
        system = hess[act] + damping[act, None, None] * torch.diag_embed(scale) + 1e-12 * eye
        step, info = torch.linalg.solve_ex(system, -grad[act])
        trial = pose[act] + torch.where((info == 0)[:, None], step, torch.zeros_like(step))
        t_energy, t_grad, t_hess, t_valid = evaluate(trial, Z[act], u[act])
        g_old, g_new = grad[act].abs().amax(-1), t_grad.abs().amax(-1)
        lower = t_energy < energy[act]
        flat = (t_energy <= energy[act] * (1 + 1e-12) + 1e-300) & (g_new < g_old)
        better = t_valid & (lower | flat)
        pose[act] = torch.where(better[:, None], trial, pose[act])
        energy[act] = torch.where(better, t_energy, energy[act])
        grad[act] = torch.where(better[:, None], t_grad, grad[act])
        hess[act] = torch.where(better[:, None, None], t_hess, hess[act])
        damping[act] = torch.where(better, damping[act] / 4, damping[act] * 8).clamp(1e-12, 1e12)
        valid[act] = valid[act] | better
        converged[act] = valid[act] & (grad[act].abs().amax(-1) <= grad_tol / 10)
    return pose, converged
