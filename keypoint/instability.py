"""Location Instability Strategy (LIS, KLPNet §3.3.4): who owns the keypoints in an overlap?

All keypoints sit on one class-agnostic heatmap, so when objects overlap, the peaks inside the
intersection of their boxes cannot be attributed by position alone. Our reading of the paper
(Fig. 5 and §3.3.4), made concrete:

1. **Node roles.** A detected node inside exactly one (margin-enlarged) object box is a *fixed* node
   of that object; a node inside several boxes is *debatable* (the paper's white nodes). The paper
   states the problem for same-class overlaps (different classes would get separate per-category
   heatmaps there); with one heatmap for all classes we treat every multi-box node as debatable and
   let the category-conditioned scores below settle both cases.
2. **Feature cue** ("keypoints of targets with the same label share similar features"): the link
   predictor's identification head gives, for node *j* proposed to object *o*, log-probabilities
   over *o*'s keypoint slots plus one "not this object" class: ``logp[j, o, :]``.
3. **Fixed nodes first.** Each object's fixed nodes are matched to its slots (Hungarian on
   ``−logp``); a fitted similarity transform from the category's mean shape (the *template*,
   generalised Procrustes over the training annotations) to those matched nodes predicts where the
   object's remaining slots should be.
4. **Geometric cue** ("the inferred node's distance to certain fixed nodes should not change greatly
   among targets of the same category"): a debatable node assigned to slot *k* of object *o* pays
   ``geo_weight·‖p_j − T_o(t_k)‖² / (2 (geo_sigma·s_o)²)`` with ``s_o`` the object's box size.
   A node's *outlier* option costs ``outlier_cost`` — for debatable nodes at most
   ``max_o −log p(not this object)``, the identification head's evidence that it is foreign to all.
5. **Count constraint** ("the number of total nodes should equal the predefined number of each
   category"): one global assignment — debatable nodes × free (object, slot) pairs plus an
   *outlier* option per node — solved exactly with ``scipy.optimize.linear_sum_assignment``. A
   debatable node ends as an *inferred* node of one object or as an *outlier*; each slot takes at
   most one node, so no object exceeds its keypoint count and links to rejected nodes are dropped.

6. **Feedback into CKLM** (Fig. 2: LIS "provides CKLM with feedback to rectify keypoint
   localization"; :func:`relocalise_missing`): after the assignment, each object's fitted template
   predicts where its *empty* slots should be; the slot is re-localised at the strongest CKLM
   heatmap response within ``radius``·(box size) of that prediction (sub-cell by the offset map),
   if it reaches ``min_score`` — a weaker response than a node needs (``peak_threshold``), so a
   keypoint whose peak was too faint, suppressed by a neighbour or claimed by nobody comes back.
   Cells next to an already assigned keypoint are not reused. This acts on CKLM's outputs at
   inference; it does not change CKLM's weights (the paper gives no training signal for it).

Without LIS (the ablation baseline, :func:`group_nodes_naive`): every object takes the top-``K_c``
nodes by heatmap score inside its box — debatable nodes may be claimed by several objects — and
matches them to slots by the feature cue only.

Example::

    >>> import numpy as np
    >>> from keypoint.instability import fit_similarity
    >>> src = np.array([[0., 0], [1, 0], [0, 1]]); dst = 2 * src @ np.array([[0, 1], [-1, 0]]) + 3
    >>> A, t = fit_similarity(src, dst); np.allclose(src @ A.T + t, dst)
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from geo_rs.errors import UserError

__all__ = [
    "Grouping",
    "boxes_membership",
    "fit_similarity",
    "fit_templates",
    "group_nodes_lis",
    "group_nodes_naive",
    "relocalise_missing",
]

_BIG = 1e6  # cost of a forbidden pairing (node outside the object's box / invalid slot)


@dataclass
class Grouping:
    """Result of assigning M detected nodes to O objects.

    ``node_index[o]`` (K_o,) index into the nodes, −1 where slot k of object o got no node;
    ``role`` (M,) str: ``fixed`` / ``inferred`` (debatable node given to one object) / ``outlier``
    (debatable or surplus node given to none) / ``shared`` (naive grouping: claimed by several
    objects) / ``unused`` (inside no box, or not selected).
    """

    node_index: list[np.ndarray]
    role: np.ndarray
    debatable: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def keypoints(self, node_xy: np.ndarray) -> list[np.ndarray]:
        """Per object (K_o, 2) positions, NaN for empty slots."""
        out = []
        for idx in self.node_index:
            kp = np.full((len(idx), 2), np.nan)
            ok = idx >= 0
            kp[ok] = node_xy[idx[ok]]
            out.append(kp)
        return out


# -------------------------------------------------------------------------------------- geometry
def fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (scale·rotation, no reflection) + translation mapping src → dst.

    Umeyama (1991). ``src``, ``dst`` (M, 2), M ≥ 2. Returns ``A`` (2, 2) and ``t`` (2,) with
    ``dst ≈ src @ A.T + t``.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise UserError(f"fit_similarity needs two (M>=2, 2) arrays, got {src.shape} and {dst.shape}")
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    var = (s0**2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sv) @ sign) / var if var > 0 else 1.0
    a = scale * rot
    return a, md - a @ ms


def fit_templates(shapes_per_category: list[list[np.ndarray]], iterations: int = 5
                  ) -> list[np.ndarray | None]:
    """Mean shape per category by generalised Procrustes (similarity) analysis.

    ``shapes_per_category[c]`` is a list of (K_c, 2) keypoint arrays (fully labelled instances).
    Returns per category a (K_c, 2) template with zero mean and unit RMS radius, or None when the
    category has no instance.
    """
    out: list[np.ndarray | None] = []
    for shapes in shapes_per_category:
        shapes = [np.asarray(s, np.float64) for s in shapes if np.all(np.isfinite(s))]
        if not shapes:
            out.append(None)
            continue
        def _norm(x):
            x = x - x.mean(0)
            return x / max(np.sqrt((x**2).sum(1).mean()), 1e-9)
        mean = _norm(shapes[0])
        for _ in range(iterations):
            aligned = []
            for s in shapes:
                a, t = fit_similarity(s, mean)
                aligned.append(s @ a.T + t)
            mean = _norm(np.mean(aligned, 0))
        out.append(mean)
    return out


def boxes_membership(node_xy: np.ndarray, boxes_xywh: np.ndarray, margin: float = 0.1,
                     min_margin_px: float = 2.0) -> np.ndarray:
    """(M, O) bool: node inside box enlarged by ``margin``·max(w, h) (≥ ``min_margin_px``) per side.

    The margin matters because keypoints are often the object's extreme points, i.e. on the box edge.
    """
    node_xy = np.asarray(node_xy, np.float64).reshape(-1, 2)
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    m = np.maximum(margin * np.maximum(b[:, 2], b[:, 3]), min_margin_px)
    x0, y0 = b[:, 0] - m, b[:, 1] - m
    x1, y1 = b[:, 0] + b[:, 2] + m, b[:, 1] + b[:, 3] + m
    x, y = node_xy[:, 0:1], node_xy[:, 1:2]
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _check_inputs(node_xy, node_score, boxes, logp, num_keypoints):
    node_xy = np.asarray(node_xy, np.float64).reshape(-1, 2)
    node_score = np.asarray(node_score, np.float64).reshape(-1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    logp = np.asarray(logp, np.float64)
    m, o = len(node_xy), len(boxes)
    if node_score.shape != (m,):
        raise UserError(f"grouping: node_score must be ({m},), got {node_score.shape}")
    if len(num_keypoints) != o:
        raise UserError(f"grouping: num_keypoints has {len(num_keypoints)} entries for {o} boxes")
    kmax = max(num_keypoints, default=0)
    if logp.shape[:2] != (m, o) or (o and logp.shape[2] < kmax + 1):
        raise UserError(f"grouping: logp must be (M={m}, O={o}, >= K_max+1={kmax + 1}), got {logp.shape}")
    return node_xy, node_score, boxes, logp


def _match(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian on a (rows, cols) cost; drops pairs at the forbidden cost."""
    if cost.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < _BIG / 2
    return r[ok], c[ok]


# -------------------------------------------------------------------------------------- grouping
def group_nodes_naive(node_xy, node_score, boxes, logp, num_keypoints: list[int], margin: float = 0.1
                      ) -> Grouping:
    """Baseline without LIS: per object, the top-K_c scored nodes in its box, slots by feature cue.

    Args:
        node_xy (M, 2), node_score (M,): detected nodes (image pixels, heatmap score).
        boxes (O, 4): object boxes xywh; num_keypoints: K of each object's category.
        logp (M, O, ≥K_max+1): log-probabilities for node j proposed to object o: columns 0..K_o−1
            are o's keypoint slots, column K_o is "not this object", later columns are ignored.
    """
    node_xy, node_score, boxes, logp = _check_inputs(node_xy, node_score, boxes, logp, num_keypoints)
    member = boxes_membership(node_xy, boxes, margin)
    claims = np.zeros(len(node_xy), int)
    node_index = []
    for o, k in enumerate(num_keypoints):
        cand = np.flatnonzero(member[:, o])
        cand = cand[np.argsort(-node_score[cand], kind="stable")][:k]
        idx = np.full(k, -1)
        r, c = _match(-logp[cand, o, :k])
        idx[c] = cand[r]
        claims[idx[idx >= 0]] += 1
        node_index.append(idx)
    role = np.where(claims > 1, "shared", np.where(claims == 1, "fixed", "unused")).astype(object)
    return Grouping(node_index=node_index, role=role, debatable=member.sum(1) > 1)


def group_nodes_lis(node_xy, node_score, boxes, logp, num_keypoints: list[int],
                    templates: list[np.ndarray | None] | None = None, margin: float = 0.1,
                    geo_weight: float = 1.0, geo_sigma: float = 0.1, outlier_cost: float = 3.0,
                    use_outlier_class: bool = True) -> Grouping:
    """Location Instability Strategy (see module docstring).

    Args: as :func:`group_nodes_naive`, plus
        templates: per object (!) the (K_o, 2) category template, or None (no geometric cue).
        geo_weight, geo_sigma: weight and scale (fraction of the box size) of the geometric cue.
        outlier_cost: cost of declaring a node an outlier (nats; compare with −log p).
        use_outlier_class: for debatable nodes, the outlier option costs
            ``min(outlier_cost, max_o −log p(not this object | j, o))`` — the learned evidence that the
            node belongs to none of the boxes it lies in. Fixed nodes always pay ``outlier_cost``.
    """
    node_xy, node_score, boxes, logp = _check_inputs(node_xy, node_score, boxes, logp, num_keypoints)
    m, n_obj = len(node_xy), len(boxes)
    member = boxes_membership(node_xy, boxes, margin)
    n_member = member.sum(1)
    fixed = n_member == 1
    debatable = n_member > 1
    role = np.full(m, "unused", dtype=object)
    node_index = [np.full(k, -1) for k in num_keypoints]
    predicted: list[np.ndarray | None] = [None] * n_obj
    scale = np.maximum(boxes[:, 2], boxes[:, 3]).clip(min=1.0)

    # 3. fixed nodes → slots (with an outlier option), then the template fit
    for o, k in enumerate(num_keypoints):
        cand = np.flatnonzero(fixed & member[:, o])
        if len(cand) == 0:
            continue
        cost = np.full((len(cand), k + len(cand)), _BIG)
        cost[:, :k] = -logp[cand, o, :k]
        # fixed nodes lie in no other box: only a poor slot match (spurious peak) makes them outliers
        cost[np.arange(len(cand)), k + np.arange(len(cand))] = outlier_cost
        r, c = _match(cost)
        is_slot = c < k
        node_index[o][c[is_slot]] = cand[r[is_slot]]
        role[cand] = "outlier"
        role[cand[r[is_slot]]] = "fixed"
        tpl = None if templates is None else templates[o]
        got = np.flatnonzero(node_index[o] >= 0)
        if tpl is not None and len(got) >= 2:
            a, t = fit_similarity(tpl[got], node_xy[node_index[o][got]])
            predicted[o] = tpl @ a.T + t

    # 4–5. debatable nodes × free (object, slot) columns + one outlier column per node
    deb = np.flatnonzero(debatable)
    if len(deb):
        cols = [(o, s) for o, k in enumerate(num_keypoints) for s in range(k) if node_index[o][s] < 0]
        cost = np.full((len(deb), len(cols) + len(deb)), _BIG)
        for ci, (o, s) in enumerate(cols):
            rows = np.flatnonzero(member[deb, o])
            if len(rows) == 0:
                continue
            j = deb[rows]
            c = -logp[j, o, s]
            if predicted[o] is not None and geo_weight > 0:
                d2 = ((node_xy[j] - predicted[o][s]) ** 2).sum(1)
                c = c + geo_weight * d2 / (2 * (geo_sigma * scale[o]) ** 2)
            cost[rows, ci] = c
        out_cost = np.full(len(deb), outlier_cost, np.float64)
        if use_outlier_class:
            # p(foreign to every object it lies in) ≈ min_o p_out(j, o): cost −log of that, capped
            foreign = np.array([max(-logp[j, o, num_keypoints[o]] for o in np.flatnonzero(member[j]))
                                for j in deb])
            out_cost = np.minimum(out_cost, foreign)
        cost[np.arange(len(deb)), len(cols) + np.arange(len(deb))] = out_cost
        r, c = _match(cost)
        role[deb] = "outlier"
        for ri, ci in zip(r, c):
            if ci < len(cols):
                o, s = cols[ci]
                node_index[o][s] = deb[ri]
                role[deb[ri]] = "inferred"
    return Grouping(node_index=node_index, role=role, debatable=debatable)


# -------------------------------------------------------------------------------------- feedback
def relocalise_missing(heat: np.ndarray, offsets: np.ndarray, stride: int, keypoints: list[np.ndarray],
                       scores: list[np.ndarray], templates: list[np.ndarray | None], boxes: np.ndarray,
                       radius: float = 0.12, min_score: float = 0.05
                       ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """LIS feedback into CKLM: fill each object's empty slots from the heatmap (module docstring, 6).

    Args:
        heat: (h, w) keypoint probabilities; offsets: (2, h, w) sub-cell offsets (map cells).
        stride: image pixels per map cell (cell j ↔ pixel (j + 0.5)·stride − 0.5).
        keypoints / scores: per object (K_o, 2) image pixels (NaN = empty slot) and (K_o,).
        templates: per object the (K_o, 2) category template, or None (no prediction: unchanged).
        boxes: (O, 4) xywh; radius: search radius as a fraction of the box's longer side.
        min_score: weakest heatmap value accepted.
    Returns:
        New ``keypoints``, ``scores`` and per object a (K_o,) bool mask of the re-localised slots.
    """
    h, w = heat.shape
    kp = [np.array(k, np.float64, copy=True) for k in keypoints]
    sc = [np.array(v, np.float64, copy=True) for v in scores]
    moved = [np.zeros(len(k), bool) for k in kp]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    taken = [(p + 0.5) / stride - 0.5 for k in kp for p in k if np.isfinite(p).all()]

    def free(cell_xy: np.ndarray) -> np.ndarray:
        ok = np.ones(len(cell_xy), bool)
        for t in taken:
            ok &= np.abs(cell_xy - t).max(1) > 1.0  # not the 3×3 neighbourhood of a used keypoint
        return ok

    for o, (pts, tpl) in enumerate(zip(kp, templates)):
        got = np.flatnonzero(np.isfinite(pts).all(1))
        if tpl is None or len(got) < 2 or len(got) == len(pts):
            continue
        a, t = fit_similarity(tpl[got], pts[got])
        expected = tpl @ a.T + t
        r_cells = max(radius * max(float(boxes[o, 2]), float(boxes[o, 3])) / stride, 1.0)
        for slot in np.flatnonzero(~np.isfinite(pts).all(1)):
            u = (expected[slot] + 0.5) / stride - 0.5
            near = (xs - u[0]) ** 2 + (ys - u[1]) ** 2 <= r_cells**2
            cy, cx = np.nonzero(near)
            if len(cx) == 0:
                continue
            cells = np.stack([cx, cy], 1).astype(np.float64)
            keep = free(cells)
            if not keep.any():
                continue
            cx, cy = cx[keep], cy[keep]
            best = int(np.argmax(heat[cy, cx]))
            value = float(heat[cy[best], cx[best]])
            if value < min_score:
                continue
            cell = np.array([cx[best], cy[best]], np.float64)
            xy = (cell + offsets[:, cy[best], cx[best]] + 0.5) * stride - 0.5
            pts[slot], sc[o][slot], moved[o][slot] = xy, value, True
            taken.append(cell)
    return kp, sc, moved
