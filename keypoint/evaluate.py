"""Evaluate trained keypoint models and load checkpoints safely.

* :func:`load_checkpoint(path)` → ``(model, checkpoint dict)``. Fails with one clear
  :class:`UserError` if the file is missing / not a geo-rs keypoint checkpoint, if the recorded
  codec differs from the codec the recorded model config builds (e.g. edited stride or input size),
  or if the weights do not fit the model.
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

from pathlib import Path

import numpy as np
import torch

from geo_rs.errors import UserError

from .codecs import codec_from_dict
from .data.dataset import KeypointCropDataset, KeypointLayout
from .data.synth import KeypointData
from .metrics import nme, oks_ap, pck, visibility_split
from .models.registry import build_model
from .train import CHECKPOINT_FORMAT, materialize


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model stored in a checkpoint; see module docstring for the checks."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 — any unpickling failure means "not a checkpoint"
        raise UserError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a geo-rs keypoint checkpoint (format "
                        f"{ck.get('format') if isinstance(ck, dict) else type(ck).__name__!r}, "
                        f"expected {CHECKPOINT_FORMAT!r})")
    for key in ("model_config", "codec", "layout", "state_dict", "input_size"):
        if key not in ck:
            raise UserError(f"{path}: checkpoint lacks '{key}'")
    layout = KeypointLayout.from_dict(ck["layout"])
    model = build_model(ck["model_config"], num_keypoints=layout.num_channels,
                        input_size=int(ck["input_size"]))
    recorded = codec_from_dict(ck["codec"])
    if recorded != model.codec:
        raise UserError(f"{path}: codec mismatch — checkpoint recorded {recorded.to_dict()} but its model "
                        f"config builds {model.codec.to_dict()}")
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        kind = ck["model_config"].get("type")
        raise UserError(f"{path}: weights do not fit the model '{kind}' ({first})") from None
    model.to(map_location).eval()
    return model, ck


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


def evaluate_model(model, data: KeypointData, layout: KeypointLayout, input_size: int,
                   padding: float = 1.25) -> dict:
    """Metrics of ``model`` on ground-truth-box crops of ``data`` (see module docstring)."""
    ds = KeypointCropDataset(data, input_size, padding, layout)
    m = materialize(ds, model.codec)
    pred, score = predict_crops(model, m["image"])
    gt = m["keypoints"][:, 0].numpy().astype(np.float64)  # (M, C, 2) crop pixels
    vis = m["visibility"][:, 0].numpy()
    p, s = pred.numpy().astype(np.float64), score.numpy().astype(np.float64)
    affine = m["crop_to_image"].numpy().astype(np.float64)  # (M, 2, 3)
    box = m["box"].numpy()
    side = np.maximum(box[:, 2], box[:, 3]) / affine[:, 0, 0]  # box's longer side in crop pixels
    out: dict = {"instances": int(len(p)), "has_scores": bool(model.codec.has_scores)}
    for a in (0.05, 0.1, 0.2):
        out[f"pck@{a}"] = pck(p, gt, vis, side, a)
    out["nme"] = nme(p, gt, vis, side)
    out.update(visibility_split(p, s, gt, vis))
    # Split invisible keypoints into occluded (inside the image) and truncated (outside it).
    img_xy = np.einsum("mij,mkj->mki", affine[:, :, :2], gt) + affine[:, None, :, 2]
    sizes = np.array([data.samples[i].image.shape[:2] for i in m["sample_index"].numpy()])  # (M, 2) h, w
    inside = ((img_xy[..., 0] >= -0.5) & (img_xy[..., 0] < sizes[:, None, 1] - 0.5)
              & (img_xy[..., 1] >= -0.5) & (img_xy[..., 1] < sizes[:, None, 0] - 0.5))
    err = np.linalg.norm(p - gt, axis=-1)
    for name, sel in (("occluded", (vis == 1) & inside), ("truncated", (vis == 1) & ~inside)):
        out[f"{name}_error"] = float(err[sel].mean()) if sel.any() else float("nan")
        out[f"n_{name}"] = int(sel.sum())
    if not model.codec.has_scores:
        out["vis_score"] = out["inv_score"] = float("nan")
    out["oks_ap"] = _oks_ap_topdown(p, s, affine, m, data, layout)
    out["per_category"] = {}
    cats = m["category_id"].numpy()
    for c in layout.categories:
        sel = cats == c.id
        if sel.any():
            out["per_category"][c.name] = {"instances": int(sel.sum()),
                                           "pck@0.1": pck(p[sel], gt[sel], vis[sel], side[sel], 0.1),
                                           **visibility_split(p[sel], s[sel], gt[sel], vis[sel])}
    return out


def _oks_ap_topdown(p, s, affine, m, data: KeypointData, layout: KeypointLayout) -> dict:
    """COCO keypoint AP with one detection per ground-truth box (top-down with GT boxes)."""
    pred_img = np.einsum("mij,mkj->mki", affine[:, :, :2], p) + affine[:, None, :, 2]
    dets = {i: {"keypoints": [], "scores": [], "category_ids": []} for i in range(len(data.samples))}
    for j, (si, cid) in enumerate(zip(m["sample_index"].numpy(), m["category_id"].numpy())):
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
