"""AdaAnchor (Adaptive Anchor for robust keypoint localisation, paper §3).

Every feature-map cell is a candidate anchor. Heads (per keypoint channel k):

* ``confidence (B, K, h, w)`` — logits of c (CofHead, eq. 6);
* ``anchor_offsets (B, K, 2, h, w)`` — (δx, δy) in map cells (RegHead, eq. 7): coarse estimate
  ``cell + δ``;
* ``local_offsets (B, K, 2, h, w)`` — local refinement map (eq. 12), sampled *bilinearly at the
  coarse estimate*: refined = coarse + local(coarse). Supervised densely within ``local_radius``
  cells of each ground truth (its own L1 loss).

Training (:func:`select_anchors`): for every labelled target p* each candidate gets
``s = c · r`` ("mul", eq. 9) or ``(c + r) / 2`` ("add") with ``r = exp(−‖p − p*‖² / 2σ²)`` (eq. 8;
p = the candidate's refined estimate, or its coarse one with ``score_from: coarse``; c and r are
detached — selection is not differentiated); the top-k candidates are positive anchors (eq. 11).
``selection: fixed`` is the paper's FixAnchor: the k cells nearest to p*. ``warmup_epochs`` selects
as FixAnchor for that many epochs first. k, σ and the local radius are in map cells, by default
scaled to the map with the paper's proportions (:mod:`keypoint.models.options`).

Loss: focal loss on c over all candidates of the *labelled* channels (CenterNet's form: no α by
default; positives = selected anchors; normalised by their count; channels without a labelled
target in the crop — other categories' keypoints — get no loss, as in the heatmap baseline)
+ λ·L1 between the coarse estimates of the selected anchors and p* + L1 on the local map.

Inference: the candidate with maximum confidence (single) or all candidates with c ≥ γ, merged
(multiple, :meth:`keypoint.codecs.AnchorCodec.decode_multi`).

Why the map-relative defaults matter: on a 16×16 map with σ = 1 cell, a 2-cell refinement radius and
k = 20 (7.8 % of the candidates, against the paper's 0.65 %) dozens of candidates look "accurate"
(r > 0.9), s degenerates to the network's own confidence and the selection feeds on itself — the
chosen anchors stop following the target. :func:`anchor_report` measures that (anchor–target
correlation within each keypoint channel, anchor distance); the trainer logs it every epoch.

Example::

    >>> import torch
    >>> m = build_adaanchor({"type": "adaanchor", "width": 8}, num_keypoints=3, input_size=64)
    >>> kp, score = m.predict(torch.zeros(1, 3, 64, 64)); kp.shape, score.shape, m.top_k
    (torch.Size([1, 3, 2]), torch.Size([1, 3]), 2)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geo_rs.errors import UserError

from ..codecs import AnchorCodec
from .base import KeypointModel, backbone_from, parse_options
from .options import AdaAnchorOptions


def anchor_scores(confidence: torch.Tensor, points: torch.Tensor, targets: torch.Tensor, sigma: float,
                  fusion: str = "mul") -> torch.Tensor:
    """Candidate scores s (eq. 8–9).

    ``confidence (B, K, h, w)`` probabilities c; ``points (B, K, 2, h, w)`` each candidate's
    estimate in map cells; ``targets (B, N, K, 2)`` ground truth in map cells; ``sigma`` in map cells
    → ``(B, N, K, h, w)``.
    """
    d2 = ((points[:, None] - targets[..., None, None]) ** 2).sum(3)  # (B, N, K, h, w)
    r = torch.exp(-d2 / (2 * sigma**2))
    c = confidence[:, None]
    if fusion == "mul":
        return c * r
    if fusion == "add":
        return (c + r) / 2
    raise UserError(f"adaanchor fusion must be 'mul' or 'add', got '{fusion}'")


def select_anchors(scores: torch.Tensor, weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k candidates per target (eq. 10–11).

    ``scores (B, N, K, h, w)``, ``weights (B, N, K)`` (> 0 = labelled target) →
    ``index (B, N, K, k)`` flat cell indices (best first) and ``positive (B, K, h*w)`` bool (union
    over targets). Unlabelled targets select nothing.
    """
    b, n, kk, h, w = scores.shape
    k = min(int(k), h * w)
    idx = scores.reshape(b, n, kk, h * w).topk(k, dim=-1).indices
    pos = torch.zeros(b, n, kk, h * w, dtype=torch.bool, device=scores.device)
    pos.scatter_(-1, idx, True)
    pos &= (weights > 0)[..., None]
    return idx, pos.any(1)


def fixed_anchor_scores(targets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """FixAnchor: score = −distance from the cell centre to the target → ``(B, N, K, h, w)``."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, device=targets.device, dtype=targets.dtype),
                            torch.arange(w, device=targets.device, dtype=targets.dtype), indexing="ij")
    return -((xs - targets[..., 0, None, None]) ** 2 + (ys - targets[..., 1, None, None]) ** 2)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
               alpha: float | None = None, gamma: float = 2.0) -> torch.Tensor:
    """Summed binary focal loss over entries where ``mask`` is true (all when None).

    ``alpha=None`` is CenterNet's form with binary targets (Zhou et al. 2019, eq. 1 with β-term 1):
    ``−(1 − p)^γ log p`` on positives, ``−p^γ log(1 − p)`` on negatives; a number weighs positives
    by α and negatives by 1 − α (RetinaNet, Lin et al. 2017).
    """
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    if mask is not None:
        loss = loss * mask.to(loss.dtype)
    return loss.sum()


def focal_loss_naive(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                     alpha: float | None = None, gamma: float = 2.0) -> float:
    """Reference loop of :func:`focal_loss` straight from the formulas (for tests)."""
    total = 0.0
    for z, y, m in zip(logits.flatten().tolist(), target.flatten().tolist(),
                       (mask.flatten().tolist() if mask is not None else [1] * logits.numel())):
        if not m:
            continue
        p = 1 / (1 + math.exp(-z))
        if y == 1:
            term = -((1 - p) ** gamma) * math.log(p) * (alpha if alpha is not None else 1.0)
        else:
            term = -(p**gamma) * math.log(1 - p) * ((1 - alpha) if alpha is not None else 1.0)
        total += term
    return total


def _cells(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``(2, h*w)`` cell-centre coordinates (x, y) in map cells."""
    ys, xs = torch.meshgrid(torch.arange(h, device=like.device, dtype=like.dtype),
                            torch.arange(w, device=like.device, dtype=like.dtype), indexing="ij")
    return torch.stack([xs, ys]).reshape(2, h * w)


class AdaAnchorModel(KeypointModel):
    def __init__(self, cfg: dict, num_keypoints: int, input_size: int):
        super().__init__()
        opts: AdaAnchorOptions = parse_options(cfg, AdaAnchorOptions, "adaanchor")
        self.config = opts.to_dict()
        self.opts = opts
        self.num_keypoints = num_keypoints
        self.backbone = backbone_from(opts)
        c = self.backbone.out_channels
        self.stride = self.backbone.stride
        side = input_size // self.stride
        self.top_k = opts.resolved_top_k(side, side)
        self.score_sigma = opts.resolved_sigma(side)
        self.confidence_head = nn.Conv2d(c, num_keypoints, 1)
        nn.init.constant_(self.confidence_head.bias, -math.log((1 - opts.prior) / opts.prior))
        self.offset_head = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(inplace=True),
                                         nn.Conv2d(c, 2 * num_keypoints, 1))
        self.local_head = nn.Conv2d(c, 2 * num_keypoints, 1) if opts.local_refinement else None
        self.codec = AnchorCodec(input_size, side, opts.resolved_local_radius(side))
        self.epoch = math.inf  # outside training: no warm-up

    def set_progress(self, epoch: float) -> None:
        self.epoch = float(epoch)

    @property
    def fixed_selection(self) -> bool:
        """FixAnchor selection now (``selection: fixed``, or still inside the warm-up)."""
        return self.opts.selection == "fixed" or self.epoch < self.opts.warmup_epochs

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(images)
        b, _, h, w = f.shape
        out = {"confidence": self.confidence_head(f),
               "anchor_offsets": self.offset_head(f).view(b, self.num_keypoints, 2, h, w)}
        if self.local_head is not None:
            out["local_offsets"] = self.local_head(f).view(b, self.num_keypoints, 2, h, w)
        return out

    @torch.no_grad()
    def candidate_scores(self, outputs: dict, points: torch.Tensor,
                         fixed: bool | None = None) -> torch.Tensor:
        """Selection scores ``(B, N, K, h, w)`` of every candidate for targets ``points (B, N, K, 2)``."""
        conf = outputs["confidence"]
        if self.fixed_selection if fixed is None else fixed:
            return fixed_anchor_scores(points, tuple(conf.shape[-2:]))
        detached = {k: v.detach() for k, v in outputs.items()}
        if self.opts.score_from == "coarse":
            detached.pop("local_offsets", None)
        pts = self.codec.predicted_points(detached)
        return anchor_scores(torch.sigmoid(conf.detach()), pts, points, self.score_sigma, self.opts.fusion)

    def loss(self, outputs, targets):
        o = self.opts
        conf = outputs["confidence"]
        b, kk, h, w = conf.shape
        gt, gw = targets["points"], targets["point_weights"]  # (B, N, K, 2), (B, N, K)
        idx, pos = select_anchors(self.candidate_scores(outputs, gt), gw, self.top_k)
        labelled = (gw > 0).any(1)  # (B, K): channels with a target in this crop
        focal = focal_loss(conf.reshape(b, kk, -1), pos.float(), labelled[..., None],
                           o.focal_alpha, o.focal_gamma) / pos.sum().clamp_min(1)
        # Regression: the coarse estimate (cell + δ) of every selected anchor should hit its target.
        n, k_sel = gt.shape[1], idx.shape[-1]
        coarse = outputs["anchor_offsets"].reshape(b, kk, 2, h * w) + _cells(h, w, conf)
        coarse = coarse[:, None].expand(b, n, kk, 2, h * w)
        chosen = coarse.gather(-1, idx[:, :, :, None, :].expand(b, n, kk, 2, k_sel))  # (B, N, K, 2, k)
        err = (chosen - gt[..., None]).abs().sum(3)  # (B, N, K, k)
        wsel = (gw > 0).float()[..., None].expand_as(err)
        reg = (err * wsel).sum() / wsel.sum().clamp_min(1)
        total = focal + float(o.reg_weight) * reg
        parts = {"focal": focal.item(), "anchor_reg": reg.item()}
        if self.local_head is not None:
            lw = targets["offset_weights"][:, :, None]
            diff = (outputs["local_offsets"] - targets["offsets"]).abs() * lw
            local = diff.sum() / (2 * lw.sum()).clamp_min(1)
            total = total + float(o.local_weight) * local
            parts["local"] = local.item()
        return total, parts


def build_adaanchor(cfg: dict, *, num_keypoints: int, input_size: int) -> AdaAnchorModel:
    return AdaAnchorModel(cfg, num_keypoints, input_size)


# ------------------------------------------------------------------------------------ diagnostics
def within_channel_correlation(anchor: np.ndarray, target: np.ndarray, channel: np.ndarray,
                               min_count: int = 3) -> float:
    """Pearson correlation of ``anchor`` and ``target`` (1-D) after removing each channel's mean.

    Pooling raw coordinates over channels would call a collapsed model (one fixed cell per channel)
    "correlated", because channels differ in their mean position; within a channel a fixed anchor
    has no variance and scores 0. Channels with fewer than ``min_count`` samples are left out.
    """
    a_parts, t_parts = [], []
    for ch in np.unique(channel):
        sel = channel == ch
        if sel.sum() >= min_count:
            a_parts.append(anchor[sel] - anchor[sel].mean())
            t_parts.append(target[sel] - target[sel].mean())
    if not a_parts:
        return float("nan")
    a, t = np.concatenate(a_parts), np.concatenate(t_parts)
    den = math.sqrt(float((a**2).sum() * (t**2).sum()))
    return float((a * t).sum() / den) if den > 0 else 0.0


@torch.no_grad()
def anchor_report(model: AdaAnchorModel, images: torch.Tensor, points: torch.Tensor,
                  visibility: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Where the anchors sit relative to their targets, for one instance per crop.

    ``images (M, 3, S, S)``, ``points (M, K, 2)`` targets in map cells, ``visibility (M, K)`` COCO
    0/1/2. Two anchors per labelled (crop, channel): the *inference* anchor (argmax confidence) and
    the *training* anchor (the best-scored candidate of the current selection rule). For each kind:

    * ``{kind}_corr_x`` / ``{kind}_corr_y`` — :func:`within_channel_correlation` of anchor and target
      over labelled targets inside the map (outside it no cell can follow the target, and a few far
      targets would dominate a Pearson correlation);
    * ``{kind}_dist_vis`` / ``{kind}_dist_occ`` / ``{kind}_dist_out`` — mean distance (map cells) to
      visible targets, hidden targets inside the map, and targets outside it;
    * ``{kind}_distinct`` — distinct anchor cells per channel over the labelled crops (mean fraction;
      near 0 = one cell for every instance).
    """
    was = model.training
    model.eval()
    try:
        rows = {"infer": [], "train": []}
        for i in range(0, len(images), batch_size):
            out = model(images[i:i + batch_size])
            conf = out["confidence"]
            b, k, h, w = conf.shape
            rows["infer"].append(conf.reshape(b, k, -1).argmax(-1).cpu())
            s = model.candidate_scores(out, points[i:i + batch_size, None])
            rows["train"].append(s.reshape(b, k, -1).argmax(-1).cpu())
    finally:
        model.train(was)
    vis = visibility.cpu().numpy()
    m_idx, ch = np.nonzero(vis > 0)
    tgt = points.cpu().numpy()[m_idx, ch]  # (L, 2)
    v = vis[m_idx, ch]
    inside = (tgt > -0.5).all(1) & (tgt[:, 0] < w - 0.5) & (tgt[:, 1] < h - 0.5)
    res: dict[str, float] = {}

    def mean(x: np.ndarray, sel: np.ndarray) -> float:
        return float(x[sel].mean()) if sel.any() else float("nan")

    for kind, parts in rows.items():
        flat = torch.cat(parts).numpy()[m_idx, ch]
        cell = np.stack([flat % w, flat // w], -1).astype(np.float64)
        dist = np.linalg.norm(cell - tgt, axis=-1)
        res[f"{kind}_corr_x"] = within_channel_correlation(cell[inside, 0], tgt[inside, 0], ch[inside])
        res[f"{kind}_corr_y"] = within_channel_correlation(cell[inside, 1], tgt[inside, 1], ch[inside])
        res[f"{kind}_dist_vis"] = mean(dist, v == 2)
        res[f"{kind}_dist_occ"] = mean(dist, (v == 1) & inside)
        res[f"{kind}_dist_out"] = mean(dist, ~inside)
        distinct = [len(np.unique(flat[ch == c])) / max((ch == c).sum(), 1) for c in np.unique(ch)]
        res[f"{kind}_distinct"] = float(np.mean(distinct))
    res["labelled"] = int(len(m_idx))
    return res
