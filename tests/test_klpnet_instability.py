"""Location Instability Strategy on a constructed overlap of two same-class objects."""
import numpy as np
import pytest

from geo_rs.errors import UserError
from keypoint.instability import (
    boxes_membership,
    fit_similarity,
    fit_templates,
    group_nodes_lis,
    group_nodes_naive,
    relocalise_missing,
)

SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def test_fit_similarity_recovers_transform_and_rejects_reflection():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(6, 2))
    ang = 0.7
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = 2.5 * src @ rot.T + [3.0, -1.0]
    a, t = fit_similarity(src, dst)
    assert np.allclose(src @ a.T + t, dst)
    # a mirror image cannot be matched exactly by a proper similarity
    a2, _ = fit_similarity(src, src * [-1, 1])
    assert np.linalg.det(a2) > 0
    with pytest.raises(UserError):
        fit_similarity(src[:1], dst[:1])


def test_fit_templates_recovers_mean_shape_up_to_similarity():
    rng = np.random.default_rng(1)
    shapes = []
    for _ in range(20):
        ang = rng.uniform(-0.5, 0.5)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        shapes.append(rng.uniform(5, 30) * SQUARE @ rot.T + rng.uniform(0, 90, 2))
    tpl = fit_templates([shapes, []])
    assert tpl[1] is None
    a, t = fit_similarity(tpl[0], SQUARE)
    assert np.allclose(tpl[0] @ a.T + t, SQUARE, atol=1e-6)
    assert np.allclose(tpl[0].mean(0), 0) and np.isclose(np.sqrt((tpl[0] ** 2).sum(1).mean()), 1)


def _overlap_case():
    """Objects A and B (same class, 4 keypoints) overlapping at one corner each, plus a spurious node."""
    a = np.array([[10.0, 10], [40, 10], [40, 40], [10, 40]])
    b = a + 20.0
    spurious = np.array([[35.0, 35.0]])
    nodes = np.concatenate([a, b, spurious])  # indices: A 0-3, B 4-7, spurious 8
    scores = np.array([0.9, 0.5, 0.9, 0.9, 0.95, 0.9, 0.9, 0.9, 0.6])  # B0 outranks A1
    boxes = np.array([[10.0, 10, 30, 30], [30.0, 30, 30, 30]])
    k = 4
    logp = np.full((9, 2, k + 1), -1e6)
    member = boxes_membership(nodes, boxes)
    uniform = np.log(1.0 / (k + 1))
    for j in range(9):
        for o in range(2):
            if not member[j, o]:
                continue
            if member[j].sum() > 1:  # debatable: the features cannot tell (uniform)
                logp[j, o] = uniform
            else:  # fixed nodes: the features identify their slot
                own = j if j < 4 else j - 4
                logp[j, o] = np.log(0.02)
                logp[j, o, own] = np.log(0.9)
    return nodes, scores, boxes, logp, member


def test_constructed_overlap_roles():
    nodes, scores, boxes, logp, member = _overlap_case()
    # A2 (40,40), B0 (30,30) and the spurious node lie in both enlarged boxes
    assert set(np.flatnonzero(member.sum(1) > 1)) == {2, 4, 8}


def test_lis_resolves_overlap_that_naive_grouping_gets_wrong():
    nodes, scores, boxes, logp, _ = _overlap_case()
    naive = group_nodes_naive(nodes, scores, boxes, logp, [4, 4])
    # naive: A's top-4 by score includes B's corner B0 (index 4) and drops its own A1 (index 1)
    assert 4 in naive.node_index[0] and 1 not in naive.node_index[0]
    assert naive.role[4] == "shared"

    tpl = [SQUARE, SQUARE]
    lis = group_nodes_lis(nodes, scores, boxes, logp, [4, 4], templates=tpl)
    assert lis.node_index[0].tolist() == [0, 1, 2, 3]
    assert lis.node_index[1].tolist() == [4, 5, 6, 7]
    assert lis.role[2] == "inferred" and lis.role[4] == "inferred"
    assert lis.role[8] == "outlier"
    assert lis.role[0] == "fixed"
    kp = lis.keypoints(nodes)
    assert np.allclose(kp[1], nodes[4:8])


def test_lis_without_geometry_cannot_decide_but_respects_counts():
    nodes, scores, boxes, logp, _ = _overlap_case()
    lis = group_nodes_lis(nodes, scores, boxes, logp, [4, 4], templates=None)
    # every node used at most once, every object at most its 4 keypoints
    used = np.concatenate([i[i >= 0] for i in lis.node_index])
    assert len(used) == len(set(used.tolist()))
    assert all(len(i) == 4 for i in lis.node_index)


def test_grouping_input_errors():
    nodes, scores, boxes, logp, _ = _overlap_case()
    with pytest.raises(UserError, match="logp"):
        group_nodes_lis(nodes, scores, boxes, logp[:, :, :3], [4, 4])
    with pytest.raises(UserError, match="num_keypoints"):
        group_nodes_naive(nodes, scores, boxes, logp, [4])


# ------------------------------------------------------------------------------ LIS feedback to CKLM
def _square_object():
    """A 4-keypoint object (square, side 16 px) with its last slot empty; map stride 4 on a 16×16 map."""
    tpl = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    kp = np.array([[20.0, 20.0], [36.0, 20.0], [36.0, 36.0], [np.nan, np.nan]])
    return tpl, kp, np.array([0.9, 0.9, 0.9, 0.0]), np.array([[18.0, 18.0, 20.0, 20.0]])


def test_feedback_relocalises_an_empty_slot_from_a_weak_peak():
    tpl, kp, sc, box = _square_object()
    heat = np.zeros((16, 16))
    offsets = np.zeros((2, 16, 16))
    # expected position of slot 3: (20, 36) px → cell ((20 + .5)/4 − .5, (36 + .5)/4 − .5) = (4.625, 8.625)
    heat[9, 5] = 0.1  # a peak too weak to be a node (peak_threshold 0.2), next to the expected cell
    offsets[:, 9, 5] = [-0.25, 0.5]  # sub-cell offset from the offset map
    heat[2, 13] = 0.95  # a strong response far from the expected position: not taken
    new_kp, new_sc, moved = relocalise_missing(heat, offsets, 4, [kp], [sc], [tpl], box, radius=0.2,
                                               min_score=0.05)
    assert moved[0].tolist() == [False, False, False, True]
    cell = np.array([5 - 0.25, 9 + 0.5])
    assert new_kp[0][3] == pytest.approx((cell + 0.5) * 4 - 0.5)
    assert new_sc[0][3] == pytest.approx(0.1)
    assert np.array_equal(new_kp[0][:3], kp[:3]) and np.isnan(kp[3]).all()  # inputs untouched


def test_feedback_leaves_a_slot_empty_without_support():
    tpl, kp, sc, box = _square_object()
    heat = np.zeros((16, 16))
    heat[9, 5] = 0.03  # below min_score
    offsets = np.zeros((2, 16, 16))
    _, _, moved = relocalise_missing(heat, offsets, 4, [kp], [sc], [tpl], box, radius=0.2,
                                     min_score=0.05)
    assert not moved[0].any()
    _, _, moved = relocalise_missing(heat + 0.5, offsets, 4, [kp], [sc], [None], box)  # no template
    assert not moved[0].any()
    # the only support is next to an assigned keypoint (a cell another slot already uses): not reused
    heat = np.zeros((16, 16))
    heat[5, 5] = 0.9  # keypoint 0 at (20, 20) px sits at cell (4.625, 4.625): its neighbourhood
    _, _, moved = relocalise_missing(heat, offsets, 4, [kp], [sc], [tpl], box, radius=2.0,
                                     min_score=0.05)
    assert not moved[0].any()
