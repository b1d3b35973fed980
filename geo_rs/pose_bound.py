"""A sound upper bound on the camera-pose error over every keypoint configuration in a set.

What is certified
-----------------
The estimator is the least-squares pose: a stationary point of the reprojection error
E(R, t; u) = Σᵢ‖π(K(R Xᵢ + t)) − uᵢ‖² (what :func:`geo_rs.solve_pnp` returns: OpenCV's start refined by
Newton until ‖∇E‖∞ ≤ ``grad_tol``). :func:`pose_error_bound` proves: for **every** configuration u in the
keypoint set and **every** pose P in the search region R₀ with ‖∇E(P; u)‖∞ ≤ ``grad_tol`` and all points in
front of the camera, the rotation error (geodesic, degrees), the translation error ‖t − t_ref‖ and the
camera-position error ‖Rᵀt − R_refᵀt_ref‖ are at most ``.rotation_deg``, ``.translation`` and
``.camera_position``. R₀ (reported as ``.region_rotation_deg`` / ``.region_translation``) is a box in
whitened pose coordinates around the nominal pose: 1.5× the first-order solution set plus one whitened
unit (≈ one pixel² of reprojection error) along each axis. Stationary points outside R₀ (e.g. the
mirror solution of a planar target, another local minimum the
solver could jump to) are **not** covered: ``result.covers(pose, u)`` checks a solver answer (inside R₀,
gradient ≤ tol, u in the set). A minimiser that is not unique is fine: all stationary points in R₀ are.

How (branch and bound over the pose, not over the keypoints)
------------------------------------------------------------
The gradient ∇E(P; u) = 2 Σᵢ Jᵢ(P)ᵀ(pᵢ(P) − uᵢ) is **affine in u**. R₀ is cut into boxes of poses
(boxes in whitened coordinates P = P̃ + Wη, W = H̃^(−1/2), rotated so that the error depends on three of
the six axes to first order). For a box, each error component f_k (c for rotation, t − t_ref for
translation, t − Cay(c)t_ref for the camera position: the same norm as Cay(−c)t − t_ref, linear in t)
and sign s, and any λ ∈ R⁶, every stationary pose
in the box obeys s·f_k(P) ≤ s·f_k(P_c) + max_u λᵀ∇E(P_c; u) + slack (a Lagrangian bound, the mean-value
theorem on P ↦ s·f_k(P) + λᵀ∇E(P; u); see :mod:`geo_rs.pose_search`). The max over u is exact (affine in
u: boxes, or finite candidate sets as sums of per-keypoint extremes); λ ≈ −H⁻¹s∇f_k cancels the
first-order dependence on P, so the slack — bounded by a first-order Taylor model of ∇φ built from
interval second derivatives of the projections — is second order in the box size. λ is chosen by
iteratively reweighted least squares; the bound itself is evaluated in outward-rounded interval /
midpoint–radius arithmetic (:mod:`geo_rs.pose_interval`), so λ only affects tightness. A seventh
Lagrangian (f = 0) removes boxes without stationary poses. Boxes are split best-first until every
surviving box is within ``rtol`` of the worst error found (witnesses are real configurations solved by
Newton from the nominal pose, improved during the search) or the budget ends; the bound is the largest
surviving box's. Six pose dimensions whatever the number of keypoints; only boxes near the worst poses
get refined.

Rounding: all enclosures are rigorous against real arithmetic; final norms carry a 10⁻¹² relative
margin. A joint polytope on the configuration (``constraints``) filters witnesses and is otherwise
relaxed (ignored), which keeps the bound sound, possibly loose.

Limits: R₀ is 1.5× the first-order solution set plus one whitened unit: a stationary set much bigger
than its linearisation is cut off (``covers`` then refuses the solver answers
outside). Boxes that straddle a point's depth 0 cannot be removed. Runtime grows with the size of the
set relative to what the keypoints determine (ill-conditioned views) and with 1/rtol; the budget
(``max_boxes``, ``time_limit_s``) then ends the search with a sound, looser bound (``converged`` False).
Tightness (bound / worst found) on the synthetic scenes of ``bench/bench_pose.py``: see the README.

"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import checks
from .pose import (
    GRAD_TOL,
    Pose,
    as_intrinsics,
    as_points_2d,
    as_points_3d,
    opencv_starts,
    project_points,
    refine_poses,
    rotation_error_deg,
    solve_pnp,
)
from .pose_attack import QUANTITIES, search_worst
from .pose_frame import PoseFrame, build_frame
from .pose_refine import refine_stationary_poses
from .pose_search import SearchResult, branch_and_bound, make_search
from .pose_sets import as_keypoint_set

__all__ = ["PoseErrorBound", "pose_error_bound"]


@dataclass(frozen=True)
class PoseErrorBound:
    """Result of :func:`pose_error_bound` (all errors relative to the reference pose).

    Attributes:
        rotation_deg, translation, camera_position: sound upper bounds (degrees / world units); inf when
            nothing could be proved.
        translation_percent, camera_position_percent: the same as % of the reference distance ‖t_ref‖.
        worst_rotation_deg, worst_translation, worst_camera_position: largest errors found at actual
            configurations of the set (lower bounds on the true maxima; the tightness denominators).
        estimate_rotation_deg, estimate_translation, estimate_camera_position: first-order sensitivity
            estimates (linearised at the nominal pose, maximised over the set's boxes) — **estimates, not
            bounds**.
        converged: the bound is within ``rtol`` of the worst found (else the budget ended first).
        region_rotation_deg, region_translation: extent of the search region R₀ (upper bounds of the
            rotation and translation errors of a pose in it).
        nominal: the least-squares pose at the set's centre. distance: ‖t_ref‖.
        branches: solution branches covered (2 when a planar target's second IPPE solution is close enough
            in reprojection error that the solver may pick it somewhere in the set; see the module doc).
        boxes: pose boxes evaluated; seconds: wall time.
        outside_region: (rotation, translation, camera position) errors of stationary poses that the
            witness search reached **outside** R₀ (0 where none was found). Non-zero means that some
            configuration of the set has a stationary pose the bounds do not cover (a set too large for
            R₀): the bounds still hold inside R₀, but a solver may return such a pose — see
            :attr:`leaves_region`. The ``worst_*`` values count poses inside R₀ only.
    """

    rotation_deg: float
    translation: float
    camera_position: float
    translation_percent: float
    camera_position_percent: float
    worst_rotation_deg: float
    worst_translation: float
    worst_camera_position: float
    estimate_rotation_deg: float
    estimate_translation: float
    estimate_camera_position: float
    converged: bool
    region_rotation_deg: float
    region_translation: float
    nominal: Pose
    distance: float
    boxes: int
    seconds: float
    branches: int
    outside_region: tuple[float, float, float]
    worst_configurations: dict = field(repr=False, compare=False)
    _branches: tuple = field(repr=False, compare=False)  # ((frame, searches), ...)

    @property
    def leaves_region(self) -> bool:
        """Whether a stationary pose outside the search region was found for some configuration."""
        return any(v > 0 for v in self.outside_region)

    @property
    def tightness(self) -> dict[str, float]:
        """bound / worst found per error (1 = tight; inf if nothing was found)."""
        pairs = {
            "rotation_deg": (self.rotation_deg, self.worst_rotation_deg),
            "translation": (self.translation, self.worst_translation),
            "camera_position": (self.camera_position, self.worst_camera_position),
        }
        return {k: (b / w if w > 0 else math.inf) for k, (b, w) in pairs.items()}

    def covers(self, pose: object, points_2d: object, tol: float = 1e-9) -> bool:
        """Whether the bound applies to ``pose`` solved from ``points_2d`` (N, 2): u is in the set, the pose
        lies in the search region of a covered branch and is stationary (‖∇E‖∞ ≤ grad_tol, in interval
        arithmetic)."""
        frame0 = self._branches[0][0]
        u = as_points_2d(points_2d, frame0.num_points)
        if not frame0.kset.contains(u, tol=tol):
            return False
        pose_obj = pose if isinstance(pose, Pose) else Pose(*(np.asarray(p, dtype=np.float64) for p in pose))
        for frame, searches in self._branches:
            params = torch.from_numpy(frame.params_of(pose_obj))
            if all(search.contains(params) for search in searches):  # R₀: intersection of three regions
                grad = frame.gradient(params[None], torch.from_numpy(u)[None])
                return bool((grad.mag <= frame.grad_tol).all())
        return False


def _first_order_estimates(frame: PoseFrame) -> np.ndarray:
    """Largest linearised errors over the set's box hull, at the support vertices of ±principal directions."""
    half = torch.from_numpy(((frame.kset.upper - frame.kset.lower) / 2).reshape(-1))
    resp = frame.response * half  # (6, 2N)
    _, _, vt = torch.linalg.svd(resp, full_matrices=False)
    signs = torch.sign(torch.cat([vt, -vt]))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    params = frame.nominal + signs @ resp.T
    return frame.errors(torch.cat([params, frame.nominal[None]])).amax(0).numpy()


def pose_error_bound(
    points_3d: object,
    keypoint_set: object,
    K: object,
    reference_pose: object,
    *,
    constraints: object | None = None,
    rtol: float = 0.25,
    max_boxes: int = 200_000,
    time_limit_s: float | None = 60.0,
    grad_tol: float = GRAD_TOL,
    nominal_pose: Pose | None = None,
    targets: tuple[float | None, float | None, float | None] | None = None,
) -> PoseErrorBound:
    """Sound bounds on the pose error over every configuration of ``keypoint_set`` (see the module doc).

    Args:
        points_3d: (N, 3) object keypoints in world units (N ≥ 4 coplanar, ≥ 6 otherwise).
        keypoint_set: ``(lower, upper)`` (N, 2) pixel boxes, or a list of N (n_i, 2) candidate-pixel arrays.
        K: (3, 3) intrinsics.
        reference_pose: (R, t) or :class:`~geo_rs.Pose` the errors are measured against (e.g. ground truth).
        constraints: optional joint polytope ``(A, b)``: ``A @ u.reshape(-1) <= b`` (:class:`KeypointSet`).
        rtol: stop refining once every bound is within (1 + rtol) × the worst error found.
        max_boxes, time_limit_s: search budget (default 60 s; None: no time limit), shared by the three
            errors in turn (rotation, translation, camera position): what one leaves unused goes to the
            next; exhausting it leaves a sound, looser bound (``converged`` False).
        grad_tol: gradient tolerance of a "stationary" pose (as in :func:`geo_rs.solve_pnp`).
        nominal_pose: pose at the set's centre, if already solved (default: :func:`geo_rs.solve_pnp`).
        targets: optional tolerances (rotation_deg, translation, camera_position), None entries ignored:
            each search then stops as soon as its bound is proved below the tolerance or a witness exceeds
            it (a yes/no question, e.g. :func:`geo_rs.max_keypoint_box`); bounds are then only as tight as
            needed for the answer, and errors whose target is None are not searched (their bound is inf).

    Example:
        >>> import cv2, numpy as np
        >>> from geo_rs import pose_error_bound, project_points
        >>> X = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.]]) * 2 - 1
        >>> K = np.array([[600, 0, 64], [0, 600, 64], [0, 0, 1.]])
        >>> truth = (cv2.Rodrigues(np.array([0.8, 0.0, 0.0]))[0], np.array([0.0, 0.0, 6.0]))  # oblique view
        >>> u = project_points(X, truth, K)
        >>> b = pose_error_bound(X, (u - 0.5, u + 0.5), K, truth, rtol=0.5)
        >>> b.worst_rotation_deg <= b.rotation_deg and b.tightness["rotation_deg"] < 2
        True
    """
    start_time = time.perf_counter()
    pts, _ = as_points_3d(points_3d)
    k = as_intrinsics(K)
    kset = as_keypoint_set(keypoint_set, len(pts), constraints)
    rtol = checks.non_negative_finite("rtol", rtol)
    max_boxes = checks.count("max_boxes", max_boxes)
    grad_tol = checks.positive_finite("grad_tol", grad_tol)
    nominals = [nominal_pose] if nominal_pose is not None else solution_branches(pts, kset, k, grad_tol)
    deadline = None if time_limit_s is None else start_time + time_limit_s
    per_branch = []
    for b, nominal in enumerate(nominals):
        branch_end = (
            None
            if deadline is None
            else time.perf_counter() + (deadline - time.perf_counter()) / (len(nominals) - b)
        )
        frame = build_frame(pts, kset, k, reference_pose, grad_tol, nominal)
        per_branch.append(
            (frame, *_bound_branch(frame, rtol, max_boxes // len(nominals), branch_end, targets))
        )
    frame = per_branch[0][0]
    results = [max((branch[2][q] for branch in per_branch), key=lambda r: r.bound) for q in range(3)]
    bound = np.array([r.bound for r in results])
    worst = np.array([max(branch[2][q].worst for branch in per_branch) for q in range(3)])
    estimate = np.max([branch[3] for branch in per_branch], axis=0)
    outside = np.max([branch[4] for branch in per_branch], axis=0)
    region_upper = np.max(
        [np.array([r.region_upper for r in branch[2]]).min(0) for branch in per_branch], axis=0
    )
    distance = float(np.linalg.norm(frame.reference.t))
    pct = 100.0 / distance if distance > 0 else math.inf
    return PoseErrorBound(
        rotation_deg=float(bound[0]),
        translation=float(bound[1]),
        camera_position=float(bound[2]),
        translation_percent=float(bound[1] * pct),
        camera_position_percent=float(bound[2] * pct),
        worst_rotation_deg=float(worst[0]),
        worst_translation=float(worst[1]),
        worst_camera_position=float(worst[2]),
        estimate_rotation_deg=float(estimate[0]),
        estimate_translation=float(estimate[1]),
        estimate_camera_position=float(estimate[2]),
        converged=all(r.converged for branch in per_branch for r in branch[2]),
        region_rotation_deg=float(region_upper[0]),
        region_translation=float(region_upper[1]),
        nominal=frame.pose_of(frame.nominal.numpy()),
        distance=distance,
        boxes=sum(r.boxes for branch in per_branch for r in branch[2]),
        seconds=time.perf_counter() - start_time,
        branches=len(per_branch),
        outside_region=tuple(float(v) for v in outside),
        worst_configurations={n: r.worst_configuration for n, r in zip(QUANTITIES, results, strict=True)},
        _branches=tuple((branch[0], branch[1]) for branch in per_branch),
    )


def _bound_branch(frame: PoseFrame, rtol: float, max_boxes: int, deadline: float | None, targets):
    """Witness search and the three branch-and-bound searches around one nominal pose."""
    searches = [make_search(frame, q) for q in range(3)]
    lower, configs, outside = _witnesses_in_region(frame, searches, search_worst(frame, rounds=3))
    results = []
    used = 0  # boxes (and time) a search leaves unused go to the searches after it
    for q, search in enumerate(searches):
        budget_end = (
            None if deadline is None else time.perf_counter() + (deadline - time.perf_counter()) / (3 - q)
        )
        cfg = configs[q]
        if targets is not None and targets[q] is None:  # not asked: not searched
            results.append(SearchResult(math.inf, float(lower[q]), cfg, 0, False, np.full(3, math.inf)))
            continue
        target = None if targets is None else float(targets[q])
        boxes = max(1, (max_boxes - used) // (3 - q))
        results.append(branch_and_bound(search, float(lower[q]), cfg, rtol, boxes, budget_end, target))
        used += results[-1].boxes
    return tuple(searches), results, _first_order_estimates(frame), outside


def _witnesses_in_region(frame: PoseFrame, searches, witness) -> tuple[np.ndarray, list, np.ndarray]:
    """Split the witness search's worst configurations by where their stationary pose lies.

    Inside R₀ they are lower bounds on what the search bounds (and its stopping threshold); outside,
    they show that the set reaches stationary poses the bound does not speak about — reported as
    ``outside_region``, replaced by the nominal pose (error at the set's centre) as the starting witness.
    """
    lower = np.zeros(3)
    outside = np.zeros(3)
    configs = []
    nominal_errors = frame.errors(frame.nominal[None])[0].numpy()
    for q, name in enumerate(QUANTITIES):
        cfg = witness.configurations[name]
        u = torch.from_numpy(np.ascontiguousarray(cfg))[None]
        params, ok = refine_stationary_poses(
            frame.Z_batch(1), frame.intr, u, frame.nominal[None], frame.grad_tol
        )
        # the pose re-solved here (not the search's batched value) is the one classified and reported
        value = float(frame.errors(params)[0, q])
        if bool(ok[0]) and all(search.contains(params[0]) for search in searches):
            lower[q] = value
            configs.append(cfg)
            continue
        if bool(ok[0]):  # a stationary pose outside R₀ (an unconverged refinement is no witness at all)
            outside[q] = max(value, np.finfo(np.float64).tiny)  # > 0: "found one", even at zero error
        lower[q] = nominal_errors[q]
        configs.append(frame.kset.centre)
    return lower, configs, outside


def solution_branches(points: np.ndarray, kset, K: np.ndarray, grad_tol: float) -> list[Pose]:
    """Nominal poses to cover: the solver's pose at the set's centre, plus every other stationary pose that
    the solver's starts reach there if the solver might prefer it somewhere in the set.

    ``solve_pnp`` refines every OpenCV start (IPPE's two solutions and SQPnP's for a planar target) and
    keeps the refined pose with the least reprojection error E. For another branch, the gap
    g(u) = E₂(u) − E₁(u) > 0 at the centre changes at the rate ∂g/∂u = −2(p(P₂) − p(P₁)) (envelope theorem).
    The branch is covered when the gap is below 1.2 × that rate over the box half-widths + Σr², or when a
    Frank–Wolfe search (u → the set's support point along p(P₂) − p(P₁), branches followed by Newton) drives
    it below a quarter of its centre value. A heuristic, not a proof: ``covers`` checks any solver answer
    against the covered branches, and ``bench/bench_pose.py`` counts the answers it refuses.
    """
    centre = kset.centre
    _, planar = as_points_3d(points)
    starts = [Pose(R, t) for R, t in opencv_starts(points, centre, K, planar)]
    refined = refine_poses(points, np.repeat(centre[None], len(starts), 0), K, starts, grad_tol)
    energies = [((project_points(points, p, K) - centre) ** 2).sum() for p in refined]
    order = np.argsort(energies)
    first = refined[order[0]]
    half = (kset.upper - kset.lower) / 2
    branches = [first]
    for i in order[1:]:
        other = refined[i]
        if not np.isfinite(energies[i]) or any(rotation_error_deg(other.R, b.R) < 1e-3 for b in branches):
            continue
        gap = energies[i] - energies[order[0]]
        rate = 2 * np.abs(project_points(points, other, K) - project_points(points, first, K))
        if (
            gap <= 1.2 * (rate * half).sum() + (half**2).sum()
            or _gap_search(points, kset, K, first, other) <= gap / 4
        ):
            branches.append(other)
    return branches


def _gap_search(points: np.ndarray, kset, K: np.ndarray, first: Pose, other: Pose, rounds: int = 4) -> float:
    """Smallest E₂(u) − E₁(u) found by Frank–Wolfe steps over the set (each branch followed by Newton)."""
    u, best = kset.centre, np.inf
    for _ in range(rounds):
        a = project_points(points, solve_pnp(points, u, K, start=first), K)
        b = project_points(points, solve_pnp(points, u, K, start=other), K)
        best = min(best, float(((b - u) ** 2).sum() - ((a - u) ** 2).sum()))
        u = kset.support(b - a)
    return best
