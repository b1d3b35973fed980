"""Keypoint metrics (numpy in, Python floats out).

Single-instance (per crop / per instance) metrics take ``pred (N, K, 2)``, ``gt (N, K, 2)`` and a
mask or COCO visibility ``(N, K)`` (2 = visible, 1 = labelled but hidden, 0 = unlabelled):

* :func:`pck` — PCK@α: fraction of labelled keypoints with ``‖(pred − gt) / norm‖ ≤ α``; ``norm``
  is per instance, ``(N,)`` (e.g. max box side) or ``(N, 2)`` (box w, h per axis, as mmpose).
* :func:`nme` — mean of ``‖pred − gt‖ / norm`` over labelled keypoints.
* :func:`visibility_split` — the AdaAnchor paper's Vis.Error / Vis.Score / Inv.Error / Inv.Score:
  mean Euclidean error (pixels of the given coordinates) and mean score over visible (v = 2) and
  invisible (v = 1) keypoints.

Multi-instance:

* :func:`oks` / :func:`oks_matrix` — COCO object keypoint similarity with **explicit** per-keypoint
  ``sigmas`` (pycocotools' formula: ``exp(−d² / (2·area·(2σ)²))`` averaged over labelled keypoints).
* :func:`oks_ap` — COCO keypoint AP (AP, AP50, AP75, AR; area range "all", 20 detections per
  image, 10 OKS thresholds 0.50:0.05:0.95, 101-point interpolated precision) per category with
  that category's sigmas, averaged over categories; ground truths with no labelled keypoint are
  "ignore" regions, as in pycocotools. Checked against pycocotools in the tests.
* :func:`keypoint_recall` — AdaAnchor appendix A.2: predictions sorted by confidence each take the
  closest still-unmatched ground truth; recall = matched / #gt. The appendix puts no distance limit
  (then recall = min(m, n)/n); pass ``max_distance`` to only match within that many pixels.

Example::

    >>> import numpy as np
    >>> gt = np.zeros((1, 2, 2)); pred = gt + [[[3.0, 4.0], [0.0, 0.0]]]
    >>> pck(pred, gt, np.ones((1, 2)), norm=np.array([10.0]), alpha=0.2)
    0.5
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geo_rs.errors import UserError


def _check(pred, gt, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise UserError(f"pred and gt must both be (N, K, 2); got {pred.shape} and {gt.shape}")
    m = np.ones(pred.shape[:2], bool) if mask is None else np.asarray(mask) > 0
    if m.shape != pred.shape[:2]:
        raise UserError(f"mask/visibility must be (N, K) = {pred.shape[:2]}, got {m.shape}")
    return pred, gt, m


def keypoint_errors(pred, gt) -> np.ndarray:
    """Euclidean distances ``(N, K)``."""
    pred, gt, _ = _check(pred, gt)
    return np.linalg.norm(pred - gt, axis=-1)


def _norm(norm, n: int) -> np.ndarray:
    norm = np.asarray(norm, np.float64)
    if norm.shape == (n,):
        norm = np.repeat(norm[:, None], 2, 1)
    if norm.shape != (n, 2):
        raise UserError(f"norm must be (N,) or (N, 2) with N={n}, got {norm.shape}")
    if (norm <= 0).any():
        raise UserError("norm must be positive")
    return norm


def pck(pred, gt, mask, norm, alpha: float = 0.2) -> float:
    """PCK@α over labelled keypoints (NaN if none)."""
    pred, gt, m = _check(pred, gt, mask)
    d = np.linalg.norm((pred - gt) / _norm(norm, len(pred))[:, None, :], axis=-1)
    return float((d[m] <= alpha).mean()) if m.any() else float("nan")


def pck_per_keypoint(pred, gt, mask, norm, alpha: float = 0.2) -> np.ndarray:
    """PCK@α per keypoint column ``(K,)`` (NaN where a column has no labelled keypoint)."""
    pred, gt, m = _check(pred, gt, mask)
    d = np.linalg.norm((pred - gt) / _norm(norm, len(pred))[:, None, :], axis=-1)
    hit = ((d <= alpha) & m).sum(0).astype(np.float64)
    cnt = m.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, hit / cnt, np.nan)


def nme(pred, gt, mask, norm) -> float:
    """Normalised mean error: mean of ``‖pred − gt‖ / norm`` (``norm (N,)``) over labelled keypoints."""
    pred, gt, m = _check(pred, gt, mask)
    norm = np.asarray(norm, np.float64)
    if norm.shape != (len(pred),) or (norm <= 0).any():
        raise UserError(f"nme norm must be positive with shape ({len(pred)},), got {norm.shape}")
    d = np.linalg.norm(pred - gt, axis=-1) / norm[:, None]
    return float(d[m].mean()) if m.any() else float("nan")


def visibility_split(pred, scores, gt, visibility) -> dict[str, float]:
    """AdaAnchor Vis./Inv. Error and Score: mean distance and mean score for v = 2 and v = 1."""
    pred, gt, _ = _check(pred, gt)
    scores = np.asarray(scores, np.float64)
    vis = np.asarray(visibility)
    if scores.shape != pred.shape[:2] or vis.shape != pred.shape[:2]:
        raise UserError(f"scores and visibility must be (N, K) = {pred.shape[:2]}, got "
                        f"{scores.shape}, {vis.shape}")
    d = np.linalg.norm(pred - gt, axis=-1)
    out = {}
    for name, sel in (("vis", vis == 2), ("inv", vis == 1)):
        out[f"{name}_error"] = float(d[sel].mean()) if sel.any() else float("nan")
        out[f"{name}_score"] = float(scores[sel].mean()) if sel.any() else float("nan")
        out[f"n_{name}"] = int(sel.sum())
    return out


# ----------------------------------------------------------------------------------------------
# OKS and COCO keypoint AP


def oks_matrix(dets, gts, gt_visibility, gt_areas, sigmas, gt_boxes=None) -> np.ndarray:
    """OKS between ``dets (D, K, 2)`` and ``gts (G, K, 2)`` → ``(D, G)`` (pycocotools formula).

    ``sigmas (K,)`` are the per-keypoint constants (COCO's 0.026…0.107 for people). A ground truth
    with no labelled keypoint uses pycocotools' fallback: the distance to its box enlarged 2x on
    each side (``gt_boxes (G, 4)`` xywh needed then).
    """
    dets = np.asarray(dets, np.float64).reshape(-1, *np.shape(dets)[-2:]) if len(dets) else \
        np.zeros((0, len(sigmas), 2))
    gts = np.asarray(gts, np.float64)
    vis = np.asarray(gt_visibility)
    areas = np.asarray(gt_areas, np.float64)
    sig = np.asarray(sigmas, np.float64)
    if gts.ndim != 3 or gts.shape[1:] != (len(sig), 2) or dets.shape[1:] != (len(sig), 2):
        raise UserError(f"oks: dets {dets.shape} and gts {gts.shape} must be (*, K, 2) with K = "
                        f"len(sigmas) = {len(sig)}")
    var = (2 * sig) ** 2
    out = np.zeros((len(dets), len(gts)))
    eps = np.spacing(1)
    for g in range(len(gts)):
        lab = vis[g] > 0
        if lab.any():
            d2 = ((dets - gts[g]) ** 2).sum(-1)
        else:
            if gt_boxes is None:
                raise UserError("oks: a ground truth without labelled keypoints needs gt_boxes")
            x, y, w, h = np.asarray(gt_boxes, np.float64)[g]
            x0, x1, y0, y1 = x - w, x + 2 * w, y - h, y + 2 * h
            dx = np.maximum(0, x0 - dets[..., 0]) + np.maximum(0, dets[..., 0] - x1)
            dy = np.maximum(0, y0 - dets[..., 1]) + np.maximum(0, dets[..., 1] - y1)
            d2 = dx**2 + dy**2
        e = d2 / var / (areas[g] + eps) / 2
        if lab.any():
            e = e[:, lab]
        out[:, g] = np.exp(-e).sum(1) / e.shape[1]
    return out


def oks(pred, gt, visibility, area: float, sigmas) -> float:
    """OKS of one prediction ``(K, 2)`` against one ground truth ``(K, 2)``."""
    return float(oks_matrix(np.asarray(pred)[None], np.asarray(gt)[None], np.asarray(visibility)[None],
                            [area], sigmas)[0, 0])


def _evaluate_image(det_kp, det_scores, gt_kp, gt_vis, gt_areas, gt_boxes, sigmas, thresholds, max_dets):
    """pycocotools ``evaluateImg`` for one (image, category), area range "all"."""
    gt_ignore = (np.asarray(gt_vis) > 0).sum(1) == 0 if len(gt_kp) else np.zeros(0, bool)
    g_order = np.argsort(gt_ignore, kind="mergesort")
    d_order = np.argsort(-np.asarray(det_scores), kind="mergesort")[:max_dets]
    ious = oks_matrix(np.asarray(det_kp)[d_order] if len(det_kp) else np.zeros((0, len(sigmas), 2)),
                      np.asarray(gt_kp)[g_order], np.asarray(gt_vis)[g_order], np.asarray(gt_areas)[g_order],
                      sigmas, None if gt_boxes is None else np.asarray(gt_boxes)[g_order]) \
        if len(gt_kp) else np.zeros((len(d_order), 0))
    gi = gt_ignore[g_order]
    t_n, d_n, g_n = len(thresholds), len(d_order), len(g_order)
    dtm = np.zeros((t_n, d_n), bool)
    dt_ig = np.zeros((t_n, d_n), bool)
    gtm = np.zeros((t_n, g_n), bool)
    for ti, t in enumerate(thresholds):
        for di in range(d_n):
            best, m = min(t, 1 - 1e-10), -1
            for gj in range(g_n):
                if gtm[ti, gj]:
                    continue
                if m > -1 and not gi[m] and gi[gj]:
                    break
                if ious[di, gj] < best:
                    continue
                best, m = ious[di, gj], gj
            if m == -1:
                continue
            dt_ig[ti, di] = gi[m]
            dtm[ti, di] = True
            gtm[ti, m] = True
    return np.asarray(det_scores, np.float64)[d_order], dtm, dt_ig, int((~gi).sum())


def _take(seq, sel: np.ndarray, tail: tuple[int, ...]) -> np.ndarray:
    """Rows of a (possibly ragged: per-category K differs) sequence where ``sel`` → stacked array."""
    rows = [np.asarray(seq[i], np.float64) for i in np.flatnonzero(sel)]
    if not rows:
        return np.zeros((0, *tail))
    if any(r.shape != tail for r in rows):
        raise UserError(f"oks_ap: entries of one category must have shape {tail}, got "
                        f"{sorted({r.shape for r in rows})}")
    return np.stack(rows)


def oks_ap(detections: Sequence[dict], ground_truths: Sequence[dict], sigmas, max_dets: int = 20,
           thresholds: Sequence[float] | None = None) -> dict[str, float]:
    """COCO keypoint AP over images, averaged over categories present in the ground truth.

    ``detections[i]`` / ``ground_truths[i]`` describe image ``i``:

    * detection dict: ``keypoints (D, K, 2)``, ``scores (D,)``, optional ``category_ids (D,)``
    * ground-truth dict: ``keypoints (G, K, 2)``, ``visibility (G, K)`` (COCO 0/1/2), ``areas (G,)``,
      optional ``category_ids (G,)`` and ``boxes (G, 4)`` (needed only for GTs with no labelled
      keypoint).

    ``sigmas``: one ``(K,)`` array for a single category, or ``{category_id: (K_c,)}``; keypoint
    arrays of a category must have that category's K. Returns ``AP``, ``AP50``, ``AP75``, ``AR``
    (in [0, 1]; NaN if no category has a ground truth) and ``per_category`` AP. Per-image keypoint
    entries may be lists of per-instance arrays when categories have different K.
    """
    if len(detections) != len(ground_truths):
        raise UserError(f"oks_ap: {len(detections)} detection entries vs {len(ground_truths)} images")
    thr = np.linspace(0.5, 0.95, 10) if thresholds is None else np.asarray(thresholds, np.float64)
    rec_thr = np.linspace(0.0, 1.0, 101)
    sig_map = sigmas if isinstance(sigmas, dict) else None
    cats = set()
    for gt in ground_truths:
        cats.update(np.asarray(gt.get("category_ids", np.zeros(len(gt["keypoints"]), int))).tolist())
    precision = {}
    recall = {}
    for cat in sorted(cats):
        sig = np.asarray(sig_map[cat] if sig_map is not None else sigmas, np.float64)
        scores, matched, ignored, n_gt = [], [], [], 0
        for det, gt in zip(detections, ground_truths):
            gc = np.asarray(gt.get("category_ids", np.zeros(len(gt["keypoints"]), int)))
            dc = np.asarray(det.get("category_ids", np.zeros(len(det["keypoints"]), int)))
            gsel, dsel = gc == cat, dc == cat
            k = len(sig)
            boxes = gt.get("boxes")
            s, dtm, dig, npig = _evaluate_image(
                _take(det["keypoints"], dsel, (k, 2)),
                np.asarray(det["scores"], np.float64).reshape(-1)[dsel],
                _take(gt["keypoints"], gsel, (k, 2)), _take(gt["visibility"], gsel, (k,)),
                np.asarray(gt["areas"], np.float64).reshape(-1)[gsel],
                None if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)[gsel],
                sig, thr, max_dets)
            scores.append(s)
            matched.append(dtm)
            ignored.append(dig)
            n_gt += npig
        if n_gt == 0:
            continue
        s = np.concatenate(scores)
        order = np.argsort(-s, kind="mergesort")
        dtm = np.concatenate(matched, 1)[:, order]
        dig = np.concatenate(ignored, 1)[:, order]
        tps = np.cumsum(dtm & ~dig, 1).astype(np.float64)
        fps = np.cumsum(~dtm & ~dig, 1).astype(np.float64)
        prec = np.zeros((len(thr), len(rec_thr)))
        rec = np.zeros(len(thr))
        for ti in range(len(thr)):
            tp, fp = tps[ti], fps[ti]
            rc = tp / n_gt
            pr = tp / (fp + tp + np.spacing(1))
            rec[ti] = rc[-1] if len(rc) else 0.0
            pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
            inds = np.searchsorted(rc, rec_thr, side="left")
            q = np.zeros(len(rec_thr))
            valid = inds < len(pr)
            q[valid] = pr[inds[valid]]
            prec[ti] = q
        precision[cat], recall[cat] = prec, rec
    if not precision:
        nan = float("nan")
        return {"AP": nan, "AP50": nan, "AP75": nan, "AR": nan, "per_category": {}}
    p = np.stack(list(precision.values()))  # (C, T, R)
    r = np.stack(list(recall.values()))
    i50 = int(np.argmin(np.abs(thr - 0.5)))
    i75 = int(np.argmin(np.abs(thr - 0.75)))
    return {"AP": float(p.mean()), "AP50": float(p[:, i50].mean()), "AP75": float(p[:, i75].mean()),
            "AR": float(r.mean()), "per_category": {int(c): float(v.mean()) for c, v in precision.items()}}


def keypoint_recall(pred_points, pred_scores, gt_points,
                    max_distance: float | None = None) -> tuple[int, int]:
    """AdaAnchor appendix recall for one keypoint type in one image → ``(matched, n_gt)``.

    ``pred_points (M, 2)``, ``pred_scores (M,)``, ``gt_points (N, 2)``. Sum the pairs over images and
    types and divide for the dataset recall.
    """
    p = np.asarray(pred_points, np.float64).reshape(-1, 2)
    g = np.asarray(gt_points, np.float64).reshape(-1, 2)
    s = np.asarray(pred_scores, np.float64).reshape(-1)
    if len(s) != len(p):
        raise UserError(f"keypoint_recall: {len(p)} points but {len(s)} scores")
    free = np.ones(len(g), bool)
    q = 0
    for i in np.argsort(-s, kind="mergesort"):
        if not free.any():
            break
        d = np.linalg.norm(g - p[i], axis=1)
        d[~free] = np.inf
        j = int(np.argmin(d))
        if max_distance is not None and d[j] > max_distance:
            continue
        free[j] = False
        q += 1
    return q, len(g)
