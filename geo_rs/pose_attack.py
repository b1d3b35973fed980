"""Adversarial search for keypoint configurations that maximise the pose error (witnesses, tightness).

Used two ways: inside :func:`geo_rs.pose_error_bound` (a few cheap rounds, to report the worst error
found beside the bound), and as :func:`attack_pose_error` to test the bound: Frank–Wolfe vertex walks
(the configuration maximising the linearised error, re-linearised at each new solution), coordinate
search (move one keypoint coordinate to the other end of its box / another candidate) and projected
gradient ascent with shrinking steps. Poses come from the real solver (:func:`geo_rs.solve_pnp`) or from
Newton refinement started at the nominal pose (``follow_branch=True``, the branch the bound covers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .pose import Pose, as_intrinsics, as_points_3d, solve_pnp
from .pose_frame import PoseFrame, build_frame
from .pose_model import error_derivatives, reprojection_terms
from .pose_refine import refine_stationary_poses
from .pose_sets import as_keypoint_set

__all__ = ["AttackResult", "attack_pose_error", "error_gradients", "search_worst"]

QUANTITIES = ("rotation_deg", "translation", "camera_position")


@dataclass(frozen=True)
class AttackResult:
    """Worst errors found (one search per quantity) and the configurations (N, 2) that produce them."""

    rotation_deg: float
    translation: float
    camera_position: float
    configurations: dict[str, np.ndarray]
    evaluations: int

    def value(self, quantity: str) -> float:
        return float(getattr(self, quantity))


def _cayley_torch(c: torch.Tensor) -> torch.Tensor:
    cc = (c * c).sum(-1)[..., None, None]
    zero = torch.zeros_like(c[..., 0])
    cross = torch.stack(
        [
            torch.stack([zero, -c[..., 2], c[..., 1]], -1),
            torch.stack([c[..., 2], zero, -c[..., 0]], -1),
            torch.stack([-c[..., 1], c[..., 0], zero], -1),
        ],
        -2,
    )
    eye = torch.eye(3, dtype=c.dtype)
    return ((1 - cc) * eye + 2 * c[..., :, None] * c[..., None, :] + 2 * cross) / (1 + cc)


def _errors_torch(params: torch.Tensor, t_ref: torch.Tensor) -> torch.Tensor:
    c, t = params[..., :3], params[..., 3:]
    rot = 2 * torch.atan(c.norm(dim=-1).clamp(min=1e-300))
    trans = (t - t_ref).norm(dim=-1)
    cam = (torch.einsum("...ji,...j->...i", _cayley_torch(c), t) - t_ref).norm(dim=-1)
    return torch.stack([rot, trans, cam], -1)


def error_gradients(frame: PoseFrame, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(M, 3, N, 2): derivative of each error with respect to the keypoints, through the LS solution
    (implicit function theorem: dP/du = H⁻¹·2Jᵀ at the stationary point)."""
    p = params.clone().requires_grad_(True)
    errs = _errors_torch(p, torch.from_numpy(frame.reference.t))
    grads = torch.stack(
        [torch.autograd.grad(errs[:, k].sum(), p, retain_graph=k < 2)[0] for k in range(3)], 1
    )
    terms = reprojection_terms(
        params[:, :3], params[:, 3:], frame.Z_batch(len(params)), frame.intr, second=True
    )
    _, hess = error_derivatives(terms.p, terms.jac, terms.second, u)
    jac = terms.jac.reshape(len(params), -1, 6)
    dpdu = torch.linalg.solve(hess, 2 * jac.transpose(1, 2))  # (M, 6, 2N)
    return (grads @ dpdu).reshape(len(params), 3, -1, 2)


class _Evaluator:
    """Poses and errors of configurations, by the real solver or by branch-following refinement."""

    def __init__(self, frame: PoseFrame, follow_branch: bool) -> None:
        self.frame, self.follow_branch, self.count = frame, follow_branch, 0

    def __call__(self, configs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        frame = self.frame
        self.count += len(configs)
        if self.follow_branch:
            u = torch.from_numpy(configs)
            start = frame.nominal.expand(len(configs), -1)
            params, _ = refine_stationary_poses(
                frame.Z_batch(len(configs)), frame.intr, u, start, frame.grad_tol
            )
        else:
            poses = solve_pnp(frame.points, configs, frame.K, grad_tol=frame.grad_tol)
            params = torch.from_numpy(np.stack([frame.params_of(p) for p in poses]))
        return params, frame.errors(params)


def _feasible(frame: PoseFrame, configs: np.ndarray) -> np.ndarray:
    return np.array([frame.kset.contains(c, tol=1e-9) for c in configs])


def _starts(frame: PoseFrame, quantity: int) -> np.ndarray:
    """Support configurations in the directions that the linearised error favours (± principal axes)."""
    kset = frame.kset
    resp = frame.response.numpy()  # (6, 2N)
    rows = {0: slice(0, 3), 1: slice(3, 6), 2: slice(0, 6)}[quantity]
    half = ((kset.upper - kset.lower) / 2).reshape(-1)
    block = resp[rows] * half[None, :]
    _, _, vt = np.linalg.svd(block, full_matrices=False)
    directions = [v for v in vt[:3]] + [-v for v in vt[:3]]
    return np.stack([kset.support(d.reshape(-1, 2)) for d in directions])


def search_worst(
    frame: PoseFrame,
    rounds: int = 3,
    follow_branch: bool = True,
    coordinate_sweeps: int = 0,
    gradient_steps: int = 0,
) -> AttackResult:
    """Search configurations of ``frame.kset`` that maximise each error; see the module doc."""
    evaluate = _Evaluator(frame, follow_branch)
    best_vals = np.zeros(3)
    best_cfg: dict[str, np.ndarray] = {}
    centre = frame.kset.centre[None]
    _, errs = evaluate(centre)
    best_vals[:] = errs[0].numpy()
    for q, name in enumerate(QUANTITIES):
        best_cfg[name] = centre[0]
        configs = _starts(frame, q)
        for _ in range(rounds):
            configs = configs[_feasible(frame, configs)] if frame.kset.constraints is not None else configs
            if len(configs) == 0:
                break
            params, errs = evaluate(configs)
            _record(best_vals, best_cfg, errs.numpy(), configs)
            grads = error_gradients(frame, params, torch.from_numpy(configs))[:, q].numpy()
            configs = np.stack([frame.kset.support(g) for g in grads])
        best = best_cfg[name][None]
        for _ in range(coordinate_sweeps):
            moved = _coordinate_moves(frame, best[0])
            moved = moved[_feasible(frame, moved)] if frame.kset.constraints is not None else moved
            if len(moved) == 0:
                break
            _, errs = evaluate(moved)
            _record(best_vals, best_cfg, errs.numpy(), moved)
            if np.array_equal(best_cfg[name], best[0]):
                break
            best = best_cfg[name][None]
        if gradient_steps and frame.kset.candidates is None:
            _gradient_ascent(frame, evaluate, q, best_vals, best_cfg, gradient_steps)
    return AttackResult(
        float(best_vals[0]), float(best_vals[1]), float(best_vals[2]), best_cfg, evaluate.count
    )


def _record(best_vals: np.ndarray, best_cfg: dict, errs: np.ndarray, configs: np.ndarray) -> None:
    for q, name in enumerate(QUANTITIES):
        i = int(np.argmax(errs[:, q]))
        if errs[i, q] > best_vals[q]:
            best_vals[q] = errs[i, q]
            best_cfg[name] = configs[i].copy()


def _coordinate_moves(frame: PoseFrame, config: np.ndarray) -> np.ndarray:
    """Every configuration that differs from ``config`` in one keypoint coordinate (box) or candidate."""
    kset, moves = frame.kset, []
    if kset.candidates is None:
        for i in range(len(config)):
            for k in range(2):
                for value in (kset.lower[i, k], kset.upper[i, k]):
                    if value != config[i, k]:
                        moved = config.copy()
                        moved[i, k] = value
                        moves.append(moved)
    else:
        for i, cand in enumerate(kset.candidates):
            for point in cand:
                if not np.array_equal(point, config[i]):
                    moved = config.copy()
                    moved[i] = point
                    moves.append(moved)
    return np.stack(moves) if moves else np.zeros((0,) + config.shape)


def _gradient_ascent(frame, evaluate, q, best_vals, best_cfg, steps) -> None:
    """Projected gradient ascent inside the boxes from the best configuration, shrinking steps."""
    name = QUANTITIES[q]
    kset = frame.kset
    config = best_cfg[name].copy()
    step = float((kset.upper - kset.lower).max()) / 4
    for _ in range(steps):
        params, _ = evaluate(config[None])
        grad = error_gradients(frame, params, torch.from_numpy(config[None]))[0, q].numpy()
        trials = np.stack(
            [np.clip(config + s * np.sign(grad), kset.lower, kset.upper) for s in (step, step / 4)]
        )
        _, errs = evaluate(trials)
        _record(best_vals, best_cfg, errs.numpy(), trials)
        config = best_cfg[name].copy()
        step /= 2


def attack_pose_error(
    points_3d: object,
    keypoint_set: object,
    K: object,
    reference_pose: object,
    *,
    follow_branch: bool = False,
    rounds: int = 6,
    coordinate_sweeps: int = 3,
    gradient_steps: int = 6,
    constraints: object | None = None,
    nominal_pose: Pose | None = None,
) -> AttackResult:
    """The largest pose errors found inside ``keypoint_set`` by an adversarial search (a lower bound on the
    true maxima, for testing :func:`geo_rs.pose_error_bound`). Arguments as for that function; by default
    poses come from :func:`geo_rs.solve_pnp` as a user would run it (``follow_branch=False``)."""
    pts, _ = as_points_3d(points_3d)
    k = as_intrinsics(K)
    kset = as_keypoint_set(keypoint_set, len(pts), constraints)
    frame = build_frame(pts, kset, k, reference_pose, 1e-6, nominal_pose)
    return search_worst(frame, rounds, follow_branch, coordinate_sweeps, gradient_steps)
