"""Evaluate trained top-down keypoint models (checkpoints: :mod:`keypoint.checkpoints`).

* :func:`crop_predictions(...)` → per-keypoint predictions, errors and masks (:class:`CropPredictions`);
* :func:`evaluate_model(model, data, layout, input_size, padding)` → metrics dict on top-down crops
  (ground-truth boxes) of every annotated instance:

  - ``pck@0.05``, ``pck@0.1``, ``pck@0.2`` (normalised by the box's longer side), ``nme``
    (same normaliser), over labelled keypoints;
  - ``vis_error``, ``vis_score``, ``inv_error``, ``inv_score`` (AdaAnchor Table 1; errors in crop
    pixels, i.e. at the network's input resolution), plus ``occluded_error`` (hidden, inside the
    image) and ``truncated_error`` (outside the image);
  - ``oks_ap`` (AP, AP50, AP75, AR; each instance's score = mean of its keypoint scores; sigmas per
    category from the data), in image coordinates;
  - ``has_scores`` — False for direct regression (its scores are meaningless, reported as N/A).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.dataset import KeypointCropDataset, KeypointLayout
from .data.synth import KeypointData
from .data.tensors import materialize
from .metrics import nme, oks_ap, pck, visibility_split


@torch.no_grad()
def predict_crops(model, images: torch.Tensor, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched ``model.predict`` on ``images (M, 3, S, S)`` → keypoints ``(M, C, 2)``, scores ``(M, C)``."""
    device = next(model.parameters()).device
    kps, scores = [], []
    for i in range(0, len(images), batch_size):
        k, s = model.predict(images[i:i + batch_size].to(device))
        kps.append(k.cpu())
        scores.append(s.cpu())
    return torch.cat(kps), torch.cat(scores)


@dataclass
class CropPredictions:
    """Per-keypoint predictions of a model on every instance crop of a dataset (M crops, C channels).

    ``pred`` / ``gt (M, C, 2)`` crop pixels; ``score``, ``vis`` (COCO 0/1/2), ``inside`` (ground truth
    inside the image) ``(M, C)``; ``side (M,)`` the box's longer side in crop pixels; ``affine
    (M, 2, 3)`` crop → image; ``sample_index``, ``category_id (M,)``.
    """

    pred: np.ndarray
    score: np.ndarray
    gt: np.ndarray
    vis: np.ndarray
    inside: np.ndarray
    side: np.ndarray
    affine: np.ndarray
    sample_index: np.ndarray
    category_id: np.ndarray

    @property
    def error(self) -> np.ndarray:
        """(M, C) Euclidean error in crop pixels."""
        return np.linalg.norm(self.pred - self.gt, axis=-1)


def crop_predictions(model, data: KeypointData, layout: KeypointLayout, input_size: int,
                     padding: float = 1.25) -> CropPredictions:
    """Run ``model`` on the ground-truth-box crop of every annotated instance of ``data``."""
    ds = KeypointCropDataset(data, input_size, padding, layout)
    m = materialize(ds, model.codec)
    pred, score = predict_crops(model, m["image"])
    gt = m["keypoints"][:, 0].numpy().astype(np.float64)
    affine = m["crop_to_image"].numpy().astype(np.float64)
    box = m["box"].numpy()
    img_xy = np.einsum("mij,mkj->mki", affine[:, :, :2], gt) + affine[:, None, :, 2]
    sizes = np.array([data.samples[i].image.shape[:2] for i in m["sample_index"].numpy()])  # (M, 2) h, w
    inside = ((img_xy[..., 0] >= -0.5) & (img_xy[..., 0] < sizes[:, None, 1] - 0.5)
              & (img_xy[..., 1] >= -0.5) & (img_xy[..., 1] < sizes[:, None, 0] - 0.5))
    return CropPredictions(pred=pred.numpy().astype(np.float64), score=score.numpy().astype(np.float64),
                           gt=gt, vis=m["visibility"][:, 0].numpy(), inside=inside,
                           side=np.maximum(box[:, 2], box[:, 3]) / affine[:, 0, 0], affine=affine,
                           sample_index=m["sample_index"].numpy(), category_id=m["category_id"].numpy())


def evaluate_model(model, data: KeypointData, layout: KeypointLayout, input_size: int,
                   padding: float = 1.25) -> dict:
    """Metrics of ``model`` on ground-truth-box crops of ``data`` (see module docstring)."""
    cp = crop_predictions(model, data, layout, input_size, padding)
    p, s, gt, vis, side = cp.pred, cp.score, cp.gt, cp.vis, cp.side
    out: dict = {"instances": int(len(p)), "has_scores": bool(model.codec.has_scores)}
    for a in (0.05, 0.1, 0.2):
        out[f"pck@{a}"] = pck(p, gt, vis, side, a)
    out["nme"] = nme(p, gt, vis, side)
    out.update(visibility_split(p, s, gt, vis))
    # Split invisible keypoints into occluded (inside the image) and truncated (outside it).
    err = cp.error
    for name, sel in (("occluded", (vis == 1) & cp.inside), ("truncated", (vis == 1) & ~cp.inside)):
        out[f"{name}_error"] = float(err[sel].mean()) if sel.any() else float("nan")
        out[f"n_{name}"] = int(sel.sum())
    if not model.codec.has_scores:
        out["vis_score"] = out["inv_score"] = float("nan")
    out["oks_ap"] = _oks_ap_topdown(cp, data, layout)
    out["per_category"] = {}
    for c in layout.categories:
        sel = cp.category_id == c.id
        if sel.any():
            out["per_category"][c.name] = {"instances": int(sel.sum()),
                                           "pck@0.1": pck(p[sel], gt[sel], vis[sel], side[sel], 0.1),
                                           **visibility_split(p[sel], s[sel], gt[sel], vis[sel])}
    return out


def _oks_ap_topdown(cp: CropPredictions, data: KeypointData, layout: KeypointLayout) -> dict:
    """COCO keypoint AP with one detection per ground-truth box (top-down with GT boxes)."""
    s = cp.score
    pred_img = np.einsum("mij,mkj->mki", cp.affine[:, :, :2], cp.pred) + cp.affine[:, None, :, 2]
    dets = {i: {"keypoints": [], "scores": [], "category_ids": []} for i in range(len(data.samples))}
    for j, (si, cid) in enumerate(zip(cp.sample_index, cp.category_id)):
        ch = layout.channels(int(cid))
        dets[int(si)]["keypoints"].append(pred_img[j, ch])
        dets[int(si)]["scores"].append(float(s[j, ch].mean()))
        dets[int(si)]["category_ids"].append(int(cid))
    det_list, gt_list = [], []
    sigmas = {c.id: np.asarray(c.sigmas) for c in layout.categories}
    for i, sample in enumerate(data.samples):
        d = dets[i]
        det_list.append({"keypoints": d["keypoints"], "scores": np.asarray(d["scores"]),
                         "category_ids": np.asarray(d["category_ids"], int)})
        anns = sample.annotations
        gt_list.append({"keypoints": [np.nan_to_num(a.keypoints) for a in anns],
                        "visibility": [a.visibility for a in anns], "areas": np.array([a.area for a in anns]),
                        "boxes": np.array([a.box for a in anns]).reshape(-1, 4),
                        "category_ids": np.array([a.category_id for a in anns], int)})
    res = oks_ap(det_list, gt_list, sigmas)
    return {k: v for k, v in res.items() if k != "per_category"}
