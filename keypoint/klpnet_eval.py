"""Evaluate and draw KLPNet (whole images, all instances; :mod:`keypoint.models.klpnet`).

Metrics (:func:`evaluate_klpnet`), each with and without the Location Instability Strategy:

* ``pck`` — PCK@α (box-normalised, :func:`keypoint.metrics.pck`) of each object's keypoints, with
  keypoint identities from the model, over labelled keypoints inside the image of *every* object
  ("ours": occluded and truncated objects included); ``pck_vis`` / ``pck_inv`` split by visibility;
  ``pck_oracle_id`` with the identities matched to the ground truth (the paper's "OracleId");
* ``pck_paper`` / ``pck_paper_oracle_id`` — the paper's protocol (Pascal3D+, §4.1): the same PCK on
  the *non-truncated, non-occluded* objects only (every keypoint inside the image, none hidden);
* ``missing_rate`` — labelled keypoints for which the object's slot stayed empty; ``wrong_rate`` —
  found but farther than α·size from the ground truth (so ``pck = 1 − missing − wrong``);
* ``link_auc`` / ``link_ap`` — over every pair of nodes in each object's final graph; a pair is
  positive iff both nodes match (within α·box size, Hungarian) ground-truth keypoints of that object
  that the category's skeleton links; ``edge_recall`` / ``edge_precision`` of the thresholded links
  against the skeleton edges whose both ends are labelled in the image;
* ``gt_link_auc`` / ``gt_link_ap`` — the link predictor alone on each object's ground-truth
  keypoints (every non-skeleton pair a negative);
* ``debatable_nodes`` and ``debatable_correct`` — nodes in several boxes and the fraction attributed
  to the right object (or rejected when they match no object).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from geo_rs.errors import UserError

from .data.synth import KeypointData
from .draw import draw_note, save_figure
from .links import average_precision, object_adjacency, roc_auc
from .metrics import pck
from .models.klpnet import ImagePrediction, KLPNet

__all__ = ["draw_klpnet_prediction", "evaluate_klpnet", "gt_node_link_metrics", "objects_of",
           "predict_dataset", "predict_image_klpnet"]


def objects_of(sample) -> list[dict]:
    return [{"category_id": int(a.category_id), "keypoints": np.asarray(a.keypoints, np.float64),
             "visibility": np.asarray(a.visibility), "box": np.asarray(a.box, np.float64)}
            for a in sample.annotations]



# ---------------------------------------------------------------------------------------- evaluate
def _match_nodes_to_gt(pred_xy: np.ndarray, gt_xy: np.ndarray, gt_ok: np.ndarray, thr: float) -> np.ndarray:
    """Hungarian match of points (P, 2) to usable GT keypoints within ``thr`` → (P,) GT slot or −1."""
    out = np.full(len(pred_xy), -1)
    cols = np.flatnonzero(gt_ok)
    if len(pred_xy) == 0 or len(cols) == 0:
        return out
    d = np.linalg.norm(pred_xy[:, None] - gt_xy[None, cols], axis=-1)
    d = np.where(np.isfinite(d), d, 1e9)
    r, c = linear_sum_assignment(d)
    ok = d[r, c] <= thr
    out[r[ok]] = cols[c[ok]]
    return out


@torch.no_grad()
def evaluate_klpnet(model: KLPNet, data: KeypointData, alpha: float = 0.1, lis: bool = True,
                    use_gt_boxes: bool = True, batch_size: int = 16,
                    predictions: list[ImagePrediction] | None = None, feedback: bool | None = False
                    ) -> dict[str, float]:
    """Metrics of the module docstring on ``data`` (ground-truth boxes, as the paper's PCK protocol;
    ``feedback``: the LIS feedback into CKLM, None = the model's option)."""
    device = next(model.parameters()).device
    model.eval()
    if predictions is None:
        predictions = predict_dataset(model, data, lis=lis, use_gt_boxes=use_gt_boxes, batch_size=batch_size,
                                      feedback=feedback)
    h, w = data.samples[0].image.shape[:2] if data.samples else (0, 0)
    kmax = model.kmax
    rows_pred, rows_oracle, rows_gt, rows_mask, rows_vis, norms = [], [], [], [], [], []
    rows_found, rows_clean = [], []
    link_scores, link_labels = [], []
    n_gt_edges = n_found_edges = n_pred_edges = n_true_pred_edges = 0
    n_deb = n_deb_ok = n_moved = 0
    for sample, pred in zip(data.samples, predictions):
        gts = [o for o in objects_of(sample) if o["category_id"] in model.cat_index]
        if use_gt_boxes:
            pairs = list(zip(gts, pred.objects))
        else:  # detector boxes: match each GT to the same-category detection of highest IoU
            pairs = _pair_detections(gts, pred.objects)
        for gt, po in pairs:
            kp_gt = gt["keypoints"]
            k = len(kp_gt)
            inside = (kp_gt[:, 0] >= -0.5) & (kp_gt[:, 0] < w - 0.5) & (kp_gt[:, 1] >= -0.5) \
                & (kp_gt[:, 1] < h - 0.5)
            usable = (gt["visibility"] > 0) & inside & np.isfinite(kp_gt).all(1)
            size = float(max(gt["box"][2], gt["box"][3], 1.0))
            thr = alpha * size
            pk = np.full((kmax, 2), 1e9)
            ok_ = np.zeros(kmax, bool)
            gk = np.zeros((kmax, 2))
            vis = np.zeros(kmax, int)
            gk[:k] = np.nan_to_num(kp_gt)
            ok_[:k] = usable
            vis[:k] = gt["visibility"]
            oracle = np.full((kmax, 2), 1e9)
            found_row = np.zeros(kmax, bool)
            if po is not None and po.relocalised is not None:
                n_moved += int(po.relocalised.sum())
            if po is not None:
                found = np.isfinite(po.keypoints).all(1)
                found_row[:k] = found
                pk[:k][found] = po.keypoints[found]
                # OracleId: the object's found points matched to its GT keypoints by distance
                pts = po.keypoints[found]
                m = _match_nodes_to_gt(pts, kp_gt, usable, np.inf)
                for p_i, g_i in enumerate(m):
                    if g_i >= 0:
                        oracle[g_i] = pts[p_i]
                # links over the object's final graph
                slots = np.flatnonzero(found)
                match = _match_nodes_to_gt(po.keypoints[slots], kp_gt, usable, thr)
                skel = {tuple(sorted(e)) for e in model.skeletons[model.cat_index[gt["category_id"]]]}
                for a in range(len(slots)):
                    for b in range(a + 1, len(slots)):
                        ga, gb = match[a], match[b]
                        label = ga >= 0 and gb >= 0 and tuple(sorted((int(ga), int(gb)))) in skel
                        link_scores.append(po.link_prob[slots[a], slots[b]])
                        link_labels.append(int(label))
                        if po.link_prob[slots[a], slots[b]] > float(model.config["link_threshold"]):
                            n_pred_edges += 1
                            n_true_pred_edges += int(label)
                gt_edges = [e for e in skel if usable[e[0]] and usable[e[1]]]
                n_gt_edges += len(gt_edges)
                pos_of = {int(g): slots[i] for i, g in enumerate(match) if g >= 0}
                for a, b in gt_edges:
                    if a in pos_of and b in pos_of:
                        p = po.link_prob[pos_of[a], pos_of[b]]
                        n_found_edges += int(p > float(model.config["link_threshold"]))
            else:
                n_gt_edges += sum(1 for a, b in model.skeletons[model.cat_index[gt["category_id"]]]
                                  if usable[a] and usable[b])
            rows_pred.append(pk)
            rows_oracle.append(oracle)
            rows_gt.append(gk)
            rows_mask.append(ok_)
            rows_vis.append(vis)
            rows_found.append(found_row)
            # the paper's PCK protocol keeps non-truncated, non-occluded objects only
            rows_clean.append(bool(inside.all() and (gt["visibility"] == 2).all()))
            norms.append(size)
        n_deb_i, ok_i = _debatable_accuracy(pred, gts, alpha, use_gt_boxes)
        n_deb += n_deb_i
        n_deb_ok += ok_i
    if not rows_pred:
        raise UserError("evaluation data has no annotated object of a known category")
    P, O, G = np.array(rows_pred), np.array(rows_oracle), np.array(rows_gt)
    M, V, N = np.array(rows_mask), np.array(rows_vis), np.array(norms)
    F, C = np.array(rows_found), np.array(rows_clean)
    far = np.linalg.norm(P - G, axis=-1) > alpha * N[:, None]
    res = {
        "objects": int(len(P)),
        "pck": pck(P, G, M, N, alpha),
        "missing_rate": float((M & ~F).sum() / max(M.sum(), 1)),
        "wrong_rate": float((M & F & far).sum() / max(M.sum(), 1)),
        "relocalised": int(n_moved),
        "paper_objects": int(C.sum()),
        "pck_paper": pck(P[C], G[C], M[C], N[C], alpha) if C.any() else float("nan"),
        "pck_paper_oracle_id": pck(O[C], G[C], M[C], N[C], alpha) if C.any() else float("nan"),
        "pck_vis": pck(P, G, M & (V == 2), N, alpha) if (M & (V == 2)).any() else float("nan"),
        "pck_inv": pck(P, G, M & (V == 1), N, alpha) if (M & (V == 1)).any() else float("nan"),
        "pck_oracle_id": pck(O, G, M, N, alpha),
        "link_auc": roc_auc(link_scores, link_labels) if link_scores else float("nan"),
        "link_ap": average_precision(link_scores, link_labels) if link_scores else float("nan"),
        "link_pairs": len(link_scores),
        "edge_recall": n_found_edges / max(n_gt_edges, 1),
        "edge_precision": n_true_pred_edges / n_pred_edges if n_pred_edges else float("nan"),
        "debatable_nodes": int(n_deb),
        "debatable_correct": n_deb_ok / n_deb if n_deb else float("nan"),
    }
    res.update(gt_node_link_metrics(model, data, batch_size=batch_size, device=device))
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in res.items()}


def _pair_detections(gts: list[dict], objects) -> list[tuple[dict, Any]]:
    def iou(a, b):
        x0, y0 = max(a[0], b[0]), max(a[1], b[1])
        x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
        inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9)
    used, out = set(), []
    for g in gts:
        best, bi = 0.5, None
        for i, o in enumerate(objects):
            if i not in used and o.category_id == g["category_id"] and iou(g["box"], o.box) > best:
                best, bi = iou(g["box"], o.box), i
        if bi is not None:
            used.add(bi)
        out.append((g, objects[bi] if bi is not None else None))
    return out


def _debatable_accuracy(pred: ImagePrediction, gts: list[dict], alpha: float, use_gt_boxes: bool
                        ) -> tuple[int, int]:
    """(#debatable nodes, #attributed to the right object or correctly rejected); GT boxes only."""
    if not use_gt_boxes or len(pred.nodes) == 0 or not gts:
        return 0, 0
    from .instability import boxes_membership

    member = boxes_membership(pred.nodes, np.array([g["box"] for g in gts]))
    deb = np.flatnonzero(member.sum(1) > 1)
    ok = 0
    for j in deb:
        # the true owner: the object with a labelled keypoint nearest the node, within α·size
        best, owner = np.inf, -1
        for o, g in enumerate(gts):
            d = np.linalg.norm(np.nan_to_num(g["keypoints"], nan=1e9) - pred.nodes[j], axis=1)
            d[g["visibility"] == 0] = np.inf
            size = max(g["box"][2], g["box"][3], 1.0)
            if d.min() <= alpha * size and d.min() < best:
                best, owner = d.min(), o
        claimed = {o for o, ob in enumerate(pred.objects) if j in set(_node_ids(pred, o))}
        ok += int(claimed == ({owner} if owner >= 0 else set()))
    return len(deb), ok


def _node_ids(pred: ImagePrediction, o: int) -> list[int]:
    ob = pred.objects[o]
    ids = []
    for kp in ob.keypoints:
        if np.isfinite(kp).all():
            d = np.linalg.norm(pred.nodes - kp, axis=1)
            ids.append(int(d.argmin()))
    return ids


@torch.no_grad()
def gt_node_link_metrics(model: KLPNet, data: KeypointData, batch_size: int = 16,
                         device: torch.device | None = None) -> dict[str, float]:
    """The link predictor alone: graphs from ground-truth keypoints (no jitter), all same-object pairs."""
    device = device or next(model.parameters()).device
    scores, labels = [], []
    samples = data.samples
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        imgs = torch.stack([torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1) for s in chunk])
        out = model(imgs.float().to(device))
        objs = [[o for o in objects_of(s) if o["category_id"] in model.cat_index] for s in chunk]
        g = model.training_graph(out, objs, jitter=False, include_foreign=False)
        if g is None:
            continue
        z = model.gae(g["x"], object_adjacency(g["gid"], g["xy_norm"]), g["cat"]).z
        gid = g["gid"].cpu().numpy()
        pos = {tuple(e) for e in g["pos"].cpu().tolist()}
        iu, ju = np.triu_indices(len(gid), 1)
        same = gid[iu] == gid[ju]
        iu, ju = iu[same], ju[same]
        s = (z[iu] * z[ju]).sum(-1).cpu().numpy()
        scores.extend(s.tolist())
        labels.extend(int((a, b) in pos) for a, b in zip(iu.tolist(), ju.tolist()))
    if not scores:
        return {"gt_link_auc": float("nan"), "gt_link_ap": float("nan")}
    return {"gt_link_auc": roc_auc(scores, labels), "gt_link_ap": average_precision(scores, labels)}


@torch.no_grad()
def predict_dataset(model: KLPNet, data: KeypointData, lis: bool = True, use_gt_boxes: bool = True,
                    batch_size: int = 16, feedback: bool | None = None) -> list[ImagePrediction]:
    """:meth:`KLPNet.infer` over a dataset (ground-truth boxes/categories or the model's detector)."""
    device = next(model.parameters()).device
    preds: list[ImagePrediction] = []
    for i in range(0, len(data.samples), batch_size):
        chunk = data.samples[i:i + batch_size]
        imgs = torch.stack([torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1) for s in chunk])
        imgs = imgs.float().to(device)
        if use_gt_boxes:
            objs = [[o for o in objects_of(s) if o["category_id"] in model.cat_index] for s in chunk]
            boxes = [np.array([o["box"] for o in ob]).reshape(-1, 4) for ob in objs]
            cats = [[o["category_id"] for o in ob] for ob in objs]
            preds.extend(model.infer(imgs, boxes, cats, lis=lis, feedback=feedback))
        else:
            preds.extend(model.infer(imgs, None, None, lis=lis, feedback=feedback))
    return preds


# ------------------------------------------------------------------------------------------- draw
def draw_klpnet_prediction(image: np.ndarray, pred: ImagePrediction, path: str | Path,
                           categories=None, show_heatmap: bool = True) -> Path:
    """PNG of the image with each object's box, keypoints and predicted links (+ the heatmap).

    ``image`` (H, W, 3) in [0, 1]. Outlier nodes (rejected by LIS) are drawn as red crosses.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {c.id: c.name for c in (categories or [])}
    ncol = 2 if show_heatmap else 1
    fig, axes = plt.subplots(1, ncol, figsize=(4.2 * ncol, 4.2))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ax.imshow(np.clip(image, 0, 1))
    colours = plt.cm.tab10(np.arange(10))
    for i, ob in enumerate(pred.objects):
        c = colours[i % 10]
        x, y, w, h = ob.box
        ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, ec=c, lw=1, ls="--"))
        ax.text(x, y - 1, f"{names.get(ob.category_id, ob.category_id)}", color=c, fontsize=7)
        for a, b in ob.edges:
            ax.plot([ob.keypoints[a, 0], ob.keypoints[b, 0]], [ob.keypoints[a, 1], ob.keypoints[b, 1]], "-",
                    color=c, lw=1.5)
        ok = np.isfinite(ob.keypoints).all(1)
        ax.plot(ob.keypoints[ok, 0], ob.keypoints[ok, 1], "o", color=c, ms=3.5, mec="k", mew=0.5)
    out = pred.roles == "outlier" if len(pred.roles) else np.zeros(0, bool)
    if out.any():
        ax.plot(pred.nodes[out, 0], pred.nodes[out, 1], "x", color="red", ms=6, mew=1.5)
    if not pred.objects:
        draw_note(ax, "no objects")
    ax.set_axis_off()
    ax.set_title("keypoints + links")
    if show_heatmap:
        axes[1].imshow(pred.heatmap, cmap="magma", vmin=0, vmax=1)
        axes[1].set_title("category-implicit heatmap")
        axes[1].set_axis_off()
    return save_figure(fig, path)


def predict_image_klpnet(model: KLPNet, image: np.ndarray, out_png: str | Path, lis: bool = True,
                         boxes: np.ndarray | None = None, category_ids: list[int] | None = None
                         ) -> ImagePrediction:
    """Keypoints and links of one image, drawn to ``out_png`` (``geo-rs keypoint predict``).

    ``image`` (H, W, 3) float in [0, 1] (H, W divisible by the backbone divisor); objects from the
    model's detector unless ``boxes`` (O, 4) xywh and ``category_ids`` are given. When there is no
    object, the drawing says "no objects".
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"image must be (H, W, 3), got {img.shape}")
    div = model.backbone.divisor
    if img.shape[0] % div or img.shape[1] % div:
        raise UserError(f"image is {img.shape[1]}x{img.shape[0]}; this KLPNet needs sides divisible by {div}")
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    if boxes is not None:
        pred = model.infer(t, [np.asarray(boxes, np.float64)], [list(category_ids or [])], lis=lis)[0]
    else:
        pred = model.infer(t, None, None, lis=lis)[0]
    draw_klpnet_prediction(img, pred, out_png, model.categories)
    return pred
