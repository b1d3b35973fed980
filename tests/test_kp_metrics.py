"""Keypoint metrics on hand-computed cases (and COCO AP against pycocotools)."""
import contextlib
import io
import math

import numpy as np
import pytest

from geo_rs.errors import UserError
from keypoint.metrics import keypoint_recall, nme, oks, oks_ap, pck, pck_per_keypoint, visibility_split


def test_pck_and_nme_by_hand():
    gt = np.zeros((2, 3, 2))
    # distances 5, 1, 10 / 0, 10, √2
    pred = np.array([[[3, 4], [0, 1], [10, 0]], [[0, 0], [6, 8], [1, 1]]], float)
    mask = np.array([[1, 1, 1], [1, 0, 1]])
    norm = np.array([20.0, 50.0])
    # thresholds: α·norm = 4 (inst 0), 10 (inst 1) → hits: 1 (d=1) of 3; inst 1: 0 and √2 → 2 of 2
    assert pck(pred, gt, mask, norm, alpha=0.2) == pytest.approx(3 / 5)
    np.testing.assert_allclose(pck_per_keypoint(pred, gt, mask, norm, 0.2), [0.5, 1.0, 0.5])
    assert nme(pred, gt, mask, norm) == pytest.approx((5 / 20 + 1 / 20 + 10 / 20 + 0 + math.sqrt(2) / 50) / 5)
    # Per-axis normalisation (box w, h): x error 3 of w=10 and y error 4 of h=40 → (0.3, 0.1)
    assert pck(pred[:1, :1], gt[:1, :1], mask[:1, :1], np.array([[10.0, 40.0]]), 0.3) == 0.0
    assert pck(pred[:1, :1], gt[:1, :1], mask[:1, :1], np.array([[10.0, 40.0]]), 0.33) == 1.0


def test_visibility_split_by_hand():
    gt = np.zeros((1, 4, 2))
    pred = np.array([[[1, 0], [0, 3], [4, 0], [9, 9]]], float)
    scores = np.array([[0.9, 0.7, 0.2, 0.5]])
    vis = np.array([[2, 2, 1, 0]])
    out = visibility_split(pred, scores, gt, vis)
    assert out["vis_error"] == pytest.approx(2.0) and out["vis_score"] == pytest.approx(0.8)
    assert out["inv_error"] == pytest.approx(4.0) and out["inv_score"] == pytest.approx(0.2)
    assert out["n_vis"] == 2 and out["n_inv"] == 1


def test_oks_by_hand():
    sig = np.array([0.1, 0.1])
    gt = np.array([[0.0, 0.0], [10.0, 0.0]])
    pred = np.array([[2.0, 0.0], [10.0, 0.0]])
    # e = d² / (2 · area · (2σ)²) = 4 / (2 · 100 · 0.04) = 0.5 for the first keypoint, 0 for the second.
    assert oks(pred, gt, np.array([2, 1]), 100.0, sig) == pytest.approx((math.exp(-0.5) + 1) / 2)
    # Unlabelled keypoints do not count.
    assert oks(pred, gt, np.array([0, 2]), 100.0, sig) == pytest.approx(1.0)


def _gt(kps, areas, vis=None, cats=None):
    kps = np.asarray(kps, float)
    return {"keypoints": kps, "visibility": np.full(kps.shape[:2], 2) if vis is None else np.asarray(vis),
            "areas": np.asarray(areas, float), **({} if cats is None else {"category_ids": np.asarray(cats)})}


def test_oks_ap_hand_cases():
    sig = np.array([0.1, 0.1])
    g = _gt([[[0, 0], [10, 0]], [[50, 50], [60, 50]]], [100, 100])
    perfect = {"keypoints": g["keypoints"], "scores": np.array([0.9, 0.8])}
    r = oks_ap([perfect], [g], sig)
    assert r["AP"] == pytest.approx(1.0) and r["AR"] == pytest.approx(1.0)
    # One detection far away with the highest score, then the two correct ones: precision 1/2, 2/3 at
    # recalls 0.5, 1 → interpolated precision 2/3 at every recall threshold.
    det = {"keypoints": np.concatenate([[[[200, 200], [210, 200]]], g["keypoints"]]),
           "scores": np.array([0.99, 0.9, 0.8])}
    assert oks_ap([det], [g], sig)["AP"] == pytest.approx(2 / 3)
    # Only one of two GTs found: precision 1 up to recall 0.5 → 51 of 101 recall thresholds.
    half = {"keypoints": g["keypoints"][:1], "scores": np.array([0.9])}
    r = oks_ap([half], [g], sig)
    assert r["AP"] == pytest.approx(51 / 101) and r["AR"] == pytest.approx(0.5)
    # A detection at OKS exactly e^-0.5·½+½ ≈ 0.80 counts for thresholds ≤ 0.80 (0.50 … 0.80: 7 of 10).
    shifted = {"keypoints": np.array([[[2.0, 0], [10, 0]]]), "scores": np.array([1.0])}
    r = oks_ap([shifted], [_gt(g["keypoints"][:1], [100])], sig)
    assert r["AP"] == pytest.approx(0.7)
    assert r["AP50"] == pytest.approx(1.0) and r["AP75"] == pytest.approx(1.0)


def test_oks_ap_per_category_sigmas_and_ragged_keypoints():
    gts = {"keypoints": [np.zeros((2, 2)), np.ones((3, 2))], "visibility": [np.full(2, 2), np.full(3, 2)],
           "areas": np.array([100.0, 100.0]), "category_ids": np.array([1, 2])}
    dets = {"keypoints": [np.zeros((2, 2)), np.ones((3, 2)) + 100], "scores": np.array([0.5, 0.5]),
            "category_ids": np.array([1, 2])}
    r = oks_ap([dets], [gts], {1: np.full(2, 0.1), 2: np.full(3, 0.1)})
    assert r["per_category"] == {1: pytest.approx(1.0), 2: pytest.approx(0.0)}
    assert r["AP"] == pytest.approx(0.5)


def test_oks_ap_matches_pycocotools():
    from pycocotools import cocoeval  # in requirements.txt: a missing install fails, not skips
    from pycocotools.coco import COCO

    rng = np.random.default_rng(7)
    k, sig = 4, np.array([0.05, 0.07, 0.09, 0.04])
    images, anns, dets_json, gts, dets = [], [], [], [], []
    for i in range(8):
        images.append({"id": i + 1, "width": 100, "height": 100})
        ng = int(rng.integers(0, 4))
        gk = rng.uniform(0, 100, (ng, k, 2))
        gv = rng.integers(0, 3, (ng, k))
        if ng:
            gv[0, 0] = 0
        ar = rng.uniform(1500, 9000, ng)
        bx = np.concatenate([gk.min(1), gk.max(1) - gk.min(1)], 1) if ng else np.zeros((0, 4))
        for g in range(ng):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "keypoints": np.concatenate([gk[g], gv[g][:, None]], 1).ravel().tolist(),
                         "num_keypoints": int((gv[g] > 0).sum()), "area": float(ar[g]),
                         "bbox": bx[g].tolist()})
        dk = np.concatenate([gk + rng.normal(0, rng.uniform(0, 3), gk.shape), rng.uniform(0, 100, (2, k, 2))])
        ds = rng.random(len(dk))
        for d in range(len(dk)):
            dets_json.append({"image_id": i + 1, "category_id": 1, "score": float(ds[d]),
                              "keypoints": np.concatenate([dk[d], np.ones((k, 1))], 1).ravel().tolist()})
        gts.append({"keypoints": gk, "visibility": gv, "areas": ar, "boxes": bx})
        dets.append({"keypoints": dk, "scores": ds})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": 1, "name": "x", "keypoints": list("abcd"), "skeleton": []}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = cocoeval.COCOeval(coco, coco.loadRes(dets_json), "keypoints")
        ev.params.kpt_oks_sigmas = sig
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = oks_ap(dets, gts, sig)
    assert ours["AP"] == pytest.approx(ev.stats[0], abs=1e-9)
    assert ours["AP50"] == pytest.approx(ev.stats[1], abs=1e-9)
    assert ours["AP75"] == pytest.approx(ev.stats[2], abs=1e-9)
    assert ours["AR"] == pytest.approx(ev.stats[5], abs=1e-9)
    assert 0.05 < ours["AP"] < 0.95  # a case that exercises both hits and misses


def test_keypoint_recall_appendix_matching():
    gt = np.array([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]])
    pred = np.array([[1.0, 0.0], [2.0, 0.0], [49.0, 50.0]])
    scores = np.array([0.9, 0.8, 0.1])
    # Greedy by score: (1,0)→gt0, (2,0)→gt1 (gt0 taken), (49,50)→gt2.
    assert keypoint_recall(pred, scores, gt) == (3, 3)
    # With a 5 px limit the second prediction (8 px from gt1) no longer matches.
    assert keypoint_recall(pred, scores, gt, max_distance=5.0) == (2, 3)
    assert keypoint_recall(np.zeros((0, 2)), np.zeros(0), gt) == (0, 3)
    with pytest.raises(UserError):
        keypoint_recall(pred, scores[:2], gt)


def test_metric_shape_errors():
    with pytest.raises(UserError, match=r"\(N, K, 2\)"):
        pck(np.zeros((2, 2)), np.zeros((2, 2)), np.ones(2), np.ones(2))
    with pytest.raises(UserError, match="norm"):
        pck(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((1, 2)), np.ones(3))
