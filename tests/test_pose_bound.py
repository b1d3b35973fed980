"""geo_rs.pose_error_bound: never exceeded by sampled or attacked configurations (solved by the real solver),
covers the solver's answers, handles candidate sets and polytopes, and the converse box budget is proved."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from geo_rs import (
    attack_pose_error,
    max_keypoint_box,
    pose_error_bound,
    project_points,
    rotation_error_deg,
    solve_pnp,
)

pytestmark = pytest.mark.usefixtures("one_thread")

K = np.array([[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]])
SQUARE = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float)
CUBOID = np.array([[x, y, z] for x in (-1, 1) for y in (-0.6, 0.6) for z in (0.0, 0.8)])
SCENES = {
    "planar": (SQUARE, (cv2.Rodrigues(np.array([0.8, 0.0, 0.1]))[0], np.array([0.2, -0.1, 5.0]))),
    "cuboid": (CUBOID, (cv2.Rodrigues(np.array([0.6, -0.4, 0.2]))[0], np.array([0.1, 0.1, 6.0]))),
}


def _errors(poses, truth) -> np.ndarray:
    R, t = truth
    centre = -R.T @ t
    return np.array(
        [
            [rotation_error_deg(p.R, R), np.linalg.norm(p.t - t), np.linalg.norm(p.camera_centre - centre)]
            for p in poses
        ]
    )


def _bounds(b) -> np.ndarray:
    return np.array([b.rotation_deg, b.translation, b.camera_position])


@pytest.mark.slow
@pytest.mark.parametrize("scene", ["planar", "cuboid"])
def test_bound_dominates_samples_and_attacks_and_covers_the_solver(scene):
    points, truth = SCENES[scene]
    rng = np.random.default_rng(0)
    u = project_points(points, truth, K) + rng.uniform(-0.3, 0.3, (len(points), 2))  # truth not centred
    lo, hi = u - 0.5, u + 0.5
    bound = pose_error_bound(points, (lo, hi), K, truth, rtol=0.5, time_limit_s=60)
    configs = lo + rng.random((600, *u.shape)) * (hi - lo)
    configs[:200] = np.where(rng.random((200, *u.shape)) < 0.5, lo, hi)  # vertices, where maxima live
    poses = solve_pnp(points, configs, K)
    errs = _errors(poses, truth)
    assert (errs <= _bounds(bound)).all(), (errs.max(0), _bounds(bound))
    assert all(bound.covers(p, c) for p, c in zip(poses[:100], configs[:100], strict=True))
    attack = attack_pose_error(points, (lo, hi), K, truth, rounds=3, coordinate_sweeps=1, gradient_steps=2)
    found = np.array([attack.rotation_deg, attack.translation, attack.camera_position])
    assert (found <= _bounds(bound)).all()
    worst = np.maximum(
        np.maximum(found, errs.max(0)),
        [bound.worst_rotation_deg, bound.worst_translation, bound.worst_camera_position],
    )
    assert (_bounds(bound) / worst < 2.0).all()  # and it is meaningful: within 2× of the worst found
    # the first-order estimate is labelled as such: it may undershoot the truth, never the bound
    assert bound.estimate_rotation_deg <= bound.rotation_deg


def test_covers_refuses_foreign_configurations_and_poses():
    points, truth = SCENES["planar"]
    u = project_points(points, truth, K)
    bound = pose_error_bound(points, (u - 0.5, u + 0.5), K, truth, rtol=0.5, time_limit_s=60)
    pose = solve_pnp(points, u, K)
    assert bound.covers(pose, u)
    assert not bound.covers(pose, u + 2.0)  # configuration outside the set
    far = (cv2.Rodrigues(np.array([0.0, 1.0, 0.0]))[0] @ pose.R, pose.t)
    assert not bound.covers(far, u)  # pose outside R₀ / not stationary


@pytest.mark.slow
def test_candidate_sets_bound_every_configuration_exhaustively():
    """Hand-made candidate pixels (3 per keypoint, 81 configurations): all solved, none exceeds the bound;
    a polytope that forbids some configurations keeps the bound valid for the rest."""
    points, truth = SCENES["planar"]
    u = project_points(points, truth, K)
    offsets = np.array([[0.0, 0.0], [0.6, -0.3], [-0.4, 0.5]])
    candidates = [u[i] + offsets[(np.arange(3) + i) % 3] for i in range(len(points))]
    bound = pose_error_bound(points, candidates, K, truth, rtol=0.5, time_limit_s=60)
    configs = np.array(
        [
            [candidates[i][j] for i, j in enumerate(choice)]
            for choice in itertools.product(range(3), repeat=len(points))
        ]
    )
    errs = _errors(solve_pnp(points, configs, K), truth)
    assert (errs <= _bounds(bound)).all()
    assert bound.worst_rotation_deg <= errs[:, 0].max() + 1e-9  # witnesses are real configurations
    # joint polytope: the mean x-shift of keypoints 0 and 1 stays below 0.3 px
    A = np.zeros((1, 2 * len(points)))
    A[0, [0, 2]] = 0.5
    b = np.array([0.5 * (u[0, 0] + u[1, 0]) + 0.3])
    constrained = pose_error_bound(
        points, candidates, K, truth, constraints=(A, b), rtol=0.5, time_limit_s=60
    )
    feasible = configs.reshape(len(configs), -1) @ A[0] <= b[0] + 1e-12
    assert (errs[feasible] <= _bounds(constrained)).all()


def test_converse_box_budget_is_proved():
    points, truth = SCENES["planar"]
    u = project_points(points, truth, K)
    budget = max_keypoint_box(points, u, K, max_rotation_deg=1.0, r_max=2.0, tol=0.25, time_limit_s=60)
    assert 0 < budget.half_width < 2.0 and budget.bound.rotation_deg <= 1.0
    r = budget.half_width
    errs = _errors(
        solve_pnp(points, u + np.random.default_rng(1).uniform(-r, r, (300, *u.shape)), K),
        solve_pnp(points, u, K),
    )
    assert errs[:, 0].max() <= 1.0
    assert any(not ok for _, ok in budget.tried)  # the bisection found a box it could not prove


def test_sets_too_large_for_the_region_say_so_and_worst_stays_below_the_bound():
    # ±10 px around a cuboid 6 units away: the witness search reaches stationary poses outside R₀
    points, truth = SCENES["cuboid"]
    u = project_points(points, truth, K)
    lo, hi = u - 10, u + 10
    bound = pose_error_bound(points, (lo, hi), K, truth, max_boxes=6000, time_limit_s=None)
    assert bound.leaves_region and max(bound.outside_region) > 0
    worst = [bound.worst_rotation_deg, bound.worst_translation, bound.worst_camera_position]
    assert (_bounds(bound) >= worst).all()
    rng = np.random.default_rng(1)
    configs = lo + rng.random((200, *u.shape)) * (hi - lo)
    poses = solve_pnp(points, configs, K)
    covered = [bound.covers(p, c) for p, c in zip(poses, configs, strict=True)]
    errs = _errors(poses, truth)[np.array(covered)]
    assert len(errs) and (errs <= _bounds(bound)).all()  # inside R₀ the bounds hold


def test_box_budget_left_by_one_error_goes_to_the_next(monkeypatch):
    import geo_rs.pose_bound as pb

    calls = []

    def recording(search, worst, cfg, rtol, max_boxes, *rest):
        result = pb_original(search, worst, cfg, rtol, max_boxes, *rest)
        calls.append((max_boxes, result.boxes, result.converged))
        return result

    pb_original = pb.branch_and_bound
    monkeypatch.setattr(pb, "branch_and_bound", recording)
    points, truth = SCENES["planar"]
    u = project_points(points, truth, K)
    bound = pose_error_bound(
        points, (u - 0.5, u + 0.5), K, truth, rtol=0.5, max_boxes=3000, time_limit_s=None
    )
    assert len(calls) == 3 * bound.branches
    budget = 3000 // bound.branches
    used = 0
    for q, (given, boxes, _) in enumerate(calls[:3]):
        assert given == max(1, (budget - used) // (3 - q))  # what the earlier searches left, shared out
        used += boxes
    assert any(conv for *_, conv in calls[:2]) and calls[2][0] > budget // 3  # a converged search gave boxes


def test_module_doctests():
    import doctest

    import geo_rs.pose_bound
    import geo_rs.pose_budget

    for module in (geo_rs.pose_bound, geo_rs.pose_budget):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
