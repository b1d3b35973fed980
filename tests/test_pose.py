"""geo_rs.solve_pnp and pose utilities: exact recovery, conventions, one-line errors for bad input."""

from __future__ import annotations

import doctest

import cv2
import numpy as np
import pytest

import geo_rs.pose
from geo_rs import Pose, UserError, pose_error_bound, project_points, rotation_error_deg, solve_pnp
from geo_rs.pose import cayley_from_rotation, rotation_from_cayley

pytestmark = pytest.mark.usefixtures("one_thread")

K = np.array([[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]])
SQUARE = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float)
CUBOID = np.array([[x, y, z] for x in (-1, 1) for y in (-0.6, 0.6) for z in (0.0, 0.8)])


def _pose(rvec, t) -> tuple[np.ndarray, np.ndarray]:
    return cv2.Rodrigues(np.asarray(rvec, float))[0], np.asarray(t, float)


@pytest.mark.parametrize("points", [SQUARE, CUBOID])
def test_solve_pnp_recovers_the_pose_exactly_and_in_batches(points):
    truth = _pose([0.5, -0.3, 0.2], [0.1, -0.2, 6.0])
    u = project_points(points, truth, K)
    pose = solve_pnp(points, u, K)
    assert rotation_error_deg(pose.R, truth[0]) < 1e-6 and np.allclose(pose.t, truth[1], atol=1e-8)
    noisy = u[None] + np.random.default_rng(0).normal(0, 0.5, (5, *u.shape))
    poses = solve_pnp(points, noisy, K)
    assert len(poses) == 5 and all(isinstance(p, Pose) for p in poses)
    # each answer is a stationary point of the reprojection error: Newton from it does not move it
    for p, obs in zip(poses, noisy, strict=True):
        again = solve_pnp(points, obs, K, start=p)
        assert rotation_error_deg(again.R, p.R) < 1e-7 and np.allclose(again.t, p.t, atol=1e-9)


def test_geometry_helpers_match_their_definitions():
    R1, _ = _pose([0.3, 0.1, -0.2], [0, 0, 1])
    R2, _ = _pose([-0.1, 0.4, 0.3], [0, 0, 1])
    expected = np.degrees(np.arccos((np.trace(R1 @ R2.T) - 1) / 2))
    assert rotation_error_deg(R1, R2) == pytest.approx(expected, rel=1e-10)
    assert rotation_error_deg(R1, R1) == 0.0
    c = np.array([0.1, -0.2, 0.3])
    Q = rotation_from_cayley(c)
    assert np.allclose(Q @ Q.T, np.eye(3)) and np.linalg.det(Q) == pytest.approx(1)
    assert np.allclose(cayley_from_rotation(Q), c)
    assert rotation_error_deg(Q, np.eye(3)) == pytest.approx(np.degrees(2 * np.arctan(np.linalg.norm(c))))
    R, t = _pose([0.2, 0.1, 0.0], [0.0, 0.0, 5.0])
    cam = (SQUARE @ R.T + t) @ K.T
    assert np.allclose(project_points(SQUARE, (R, t), K), cam[:, :2] / cam[:, 2:])
    assert np.allclose(Pose(R, t).camera_centre, -R.T @ t)


def test_bad_input_gives_one_line_user_errors():
    truth = _pose([0.5, -0.3, 0.2], [0.1, -0.2, 6.0])
    u = project_points(CUBOID, truth, K)
    box = (u - 1, u + 1)
    bad = [
        lambda: solve_pnp(SQUARE[:3], u[:3], K),  # < 4 planar
        lambda: solve_pnp(CUBOID[:5], u[:5], K),  # < 6 general
        lambda: solve_pnp(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0.0]]), u[:4], K),  # collinear
        lambda: solve_pnp(np.zeros((6, 3)), u[:6], K),  # coincident
        lambda: solve_pnp(CUBOID, u, np.eye(2)),  # K not 3x3
        lambda: solve_pnp(CUBOID, u, np.array([[300.0, 0, 64], [1, 300, 64], [0, 0, 1]])),
        lambda: solve_pnp(CUBOID, u, np.array([[-300.0, 0, 64], [0, 300, 64], [0, 0, 1]])),
        lambda: solve_pnp(CUBOID, u[:7], K),  # shape mismatch
        lambda: solve_pnp(CUBOID * np.nan, u, K),
        lambda: solve_pnp(CUBOID, np.zeros((8, 2)) + 30, K),  # coincident 2D points: OpenCV asserts
        lambda: pose_error_bound(CUBOID, (u + 1, u - 1), K, truth),  # lower > upper
        lambda: pose_error_bound(CUBOID, [u[i : i + 1] for i in range(7)], K, truth),  # 7 sets for 8 points
        lambda: pose_error_bound(CUBOID, [np.zeros((0, 2))] + [u[i : i + 1] for i in range(1, 8)], K, truth),
        lambda: pose_error_bound(CUBOID, box, K, (2 * np.eye(3), truth[1])),  # not a rotation
        lambda: pose_error_bound(CUBOID, box, K, truth, constraints=(np.zeros((2, 5)), np.zeros(2))),
        lambda: pose_error_bound(CUBOID, "boxes", K, truth),
        lambda: pose_error_bound(CUBOID, box, K, truth, rtol=-1),
    ]
    for call in bad:
        with pytest.raises(UserError) as info:
            call()
        assert "\n" not in str(info.value)


def test_module_doctest():
    result = doctest.testmod(geo_rs.pose)
    assert result.attempted > 0 and result.failed == 0
