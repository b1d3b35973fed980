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
