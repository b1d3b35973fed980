"""The fixed data of one pose-bound problem: model points, intrinsics, reference, nominal pose, whitening.

Pose parameters P = (c, t) are relative to the *reference* rotation (``R = Cay(c)·R_ref``, see
:mod:`geo_rs.pose_model`), so the rotation error of P is exactly 2·atan‖c‖ and its translation error
‖t − t_ref‖. The search space is parametrised by whitened coordinates ξ with P = P̃ + Wξ, where P̃ is the
least-squares pose at the centre of the keypoint set and W = H̃^(−1/2) the inverse square root of the
reprojection-error Hessian there: one unit of ξ changes the reprojection error by about one pixel², so
boxes in ξ are about equally informative in every direction however ill-conditioned the pose is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .pose import Pose, as_pose, cayley_from_rotation, rotation_from_cayley, solve_pnp
from .pose_interval import OutwardInterval, interval_matmul
from .pose_model import Intrinsics, cayley_terms, error_derivatives, reprojection_terms
from .pose_sets import KeypointSet

__all__ = ["PoseFrame", "build_frame"]


@dataclass
class PoseFrame:
    """Everything the bound's search needs (float64 torch tensors unless stated)."""

    points: np.ndarray  # (N, 3) model points
    Z: torch.Tensor  # (N, 3) R_ref·X
    intr: Intrinsics
    K: np.ndarray
    reference: Pose
    nominal: torch.Tensor  # (6,) P̃
    W: torch.Tensor  # (6, 6) H̃^(−1/2)
    W_inv: torch.Tensor  # (6, 6)
    response: torch.Tensor  # (6, 2N) dP/du at the nominal pose (linear response of the pose to keypoints)
    kset: KeypointSet
    grad_tol: float

    @property
    def num_points(self) -> int:
        return len(self.points)

    def Z_batch(self, size: int) -> torch.Tensor:
        return self.Z.expand(size, -1, -1)

    def pose_of(self, params: np.ndarray | torch.Tensor) -> Pose:
        """The :class:`Pose` of parameters (6,)."""
        p = np.asarray(params, dtype=np.float64)
        return Pose(rotation_from_cayley(p[:3]) @ self.reference.R, p[3:].copy())

    def params_of(self, pose: Pose) -> np.ndarray:
        """Parameters (6,) of a pose (its rotation must be < 180° from the reference)."""
        return np.concatenate([cayley_from_rotation(pose.R @ self.reference.R.T), pose.t])

    def errors(self, params: torch.Tensor) -> torch.Tensor:
        """(M, 3) rotation (degrees), translation and camera-position errors of parameters (M, 6)."""
        c, t = params[:, :3], params[:, 3:]
        rot = torch.rad2deg(2 * torch.atan(c.norm(dim=-1)))
        t_ref = torch.from_numpy(self.reference.t)
        trans = (t - t_ref).norm(dim=-1)
        cam_rot = torch.from_numpy(rotation_from_cayley(-c.numpy()))  # Cay(−c) = Cay(c)ᵀ
        cam = (torch.einsum("mij,mj->mi", cam_rot, t) - t_ref).norm(dim=-1)
        return torch.stack([rot, trans, cam], -1)

    def gradient(self, params: torch.Tensor, u: torch.Tensor) -> OutwardInterval:
        """Rigorous enclosure of ∇E at parameters (M, 6) for keypoints (M, N, 2)."""
        box = OutwardInterval.point(params)
        terms = reprojection_terms(box[..., :3], box[..., 3:], self.Z_batch(len(params)), self.intr)
        grad, _ = error_derivatives(terms.p, terms.jac, None, OutwardInterval.point(u))
        return grad

    def hull(self, lo: torch.Tensor, hi: torch.Tensor, basis: torch.Tensor | None = None) -> OutwardInterval:
        """Enclosure of {P̃ + Bη : η ∈ [lo, hi]} (M, 6), B = ``basis`` (default W, the whitening)."""
        eta = OutwardInterval(lo, hi).unsqueeze(-1)
        basis = self.W if basis is None else basis
        return OutwardInterval.point(self.nominal) + interval_matmul(basis, eta).squeeze(-1)

    def point_of(self, eta: torch.Tensor, basis: torch.Tensor | None = None) -> OutwardInterval:
        """Enclosure of the exact P̃ + Bη for float η (M, 6) (a tiny box)."""
        return self.hull(eta, eta, basis)


def error_uppers(frame: PoseFrame, box: OutwardInterval) -> torch.Tensor:
    """(M, 3) upper bounds of the rotation (deg), translation and camera-position errors over pose boxes."""
    c, t = box[..., :3], box[..., 3:]
    t_ref = torch.from_numpy(frame.reference.t)
    c_norm = _norm_upper(c.mag)
    rot = torch.rad2deg(2 * torch.atan(c_norm)) * (1 + 1e-12)
    trans = _norm_upper((t - t_ref).mag)
    A, _, _ = cayley_terms(-c, t.unsqueeze(-2), order=0)  # Cay(−c)·t, each component (M, 1)
    cam = _norm_upper(torch.stack([(A[k] - float(t_ref[k])).mag[..., 0] for k in range(3)], -1))
    return torch.stack([rot, trans, cam], -1)


def _norm_upper(mags: torch.Tensor) -> torch.Tensor:
    return mags.square().sum(-1).sqrt() * (1 + 1e-12)


def build_frame(
    points: np.ndarray,
    kset: KeypointSet,
    K: np.ndarray,
    reference: object,
    grad_tol: float,
    nominal: Pose | None = None,
) -> PoseFrame:
    """Solve the nominal pose at the set's centre and whiten the search space around it."""
    ref = as_pose(reference)
    centre = kset.centre
    if nominal is None:
        nominal = solve_pnp(points, centre, K, grad_tol=grad_tol)
    intr = Intrinsics.from_matrix(K)
    Z = torch.from_numpy(points @ ref.R.T)
    frame = PoseFrame(
        points,
        Z,
        intr,
        K,
        ref,
        torch.zeros(6, dtype=torch.float64),
        torch.eye(6, dtype=torch.float64),
        torch.eye(6, dtype=torch.float64),
        torch.zeros(6, 2 * len(points), dtype=torch.float64),
        kset,
        grad_tol,
    )
    p0 = torch.from_numpy(frame.params_of(nominal))
    u0 = torch.from_numpy(centre)
    terms = reprojection_terms(p0[:3], p0[3:], Z, intr, second=True)
    _, hess = error_derivatives(terms.p, terms.jac, terms.second, u0)
    jac = terms.jac.reshape(-1, 6)
    gauss_newton = 2 * jac.T @ jac
    evals, evecs = torch.linalg.eigh((hess + hess.T) / 2)
    if not bool(evals[0] > 1e-9 * evals[-1]):
        evals, evecs = torch.linalg.eigh(gauss_newton)
    frame.nominal = p0
    frame.W = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    frame.W_inv = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    frame.response = torch.linalg.solve(
        (hess + hess.T) / 2 if bool(torch.linalg.eigvalsh(hess)[0] > 0) else gauss_newton, 2 * jac.T
    )
    return frame
