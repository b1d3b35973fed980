"""AdaAnchor (Adaptive Anchor for robust keypoint localisation, paper §3).

Every feature-map cell is a candidate anchor. Heads (per keypoint channel k):

* ``confidence (B, K, h, w)`` — logits of c (CofHead, eq. 6);
* ``anchor_offsets (B, K, 2, h, w)`` — (δx, δy) in map cells (RegHead, eq. 7): coarse estimate
  ``cell + δ``;
* ``local_offsets (B, K, 2, h, w)`` — local refinement map (eq. 12), sampled *bilinearly at the
  coarse estimate*: refined = coarse + local(coarse). Supervised densely within ``local_radius``
  cells of each ground truth (its own L1 loss).

Training (:func:`select_anchors`): for every labelled target p* each candidate gets
``s = c · r`` ("mul", eq. 9) or ``(c + r) / 2`` ("add") with ``r = exp(−‖p − p*‖² / 2σ²)`` (eq. 8,
σ = ``score_sigma`` = 4 **input pixels**; p = the candidate's refined estimate; c and r are
detached — selection is not differentiated); the top-k (k = 20) candidates are positive anchors
(eq. 11). ``selection: fixed`` is the paper's FixAnchor: the k cells nearest to p*. Loss = sigmoid
focal loss on c over all candidates (positives = selected anchors, normalised by their count)
+ λ·L1 between the coarse estimates of the selected anchors and p* + L1 on the local map.

Inference: the candidate with maximum confidence (single) or all candidates with c ≥ γ, merged
(multiple, :meth:`keypoint.codecs.AnchorCodec.decode_multi`).

Config (``model:`` section) — the ablation switches::

    type: adaanchor
    fusion: mul | add          # eq. 9 vs addition
    selection: adaptive | fixed  # fixed = FixAnchor
    top_k: 20                  # 1 = "w/o multiple anchors"
    local_refinement: true     # false = "w/o local refinement"
    score_sigma: 4.0           # input pixels
    local_radius: 2.0          # map cells
    reg_weight: 1.0            # λ
    focal_alpha: 0.25, focal_gamma: 2.0
    width, stride, context_levels, blocks   # backbone

Example::

    >>> import torch
    >>> m = build_adaanchor({"type": "adaanchor", "width": 8}, num_keypoints=3, input_size=64)
    >>> kp, score = m.predict(torch.zeros(1, 3, 64, 64)); kp.shape, score.shape
    (torch.Size([1, 3, 2]), torch.Size([1, 3]))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geo_rs.errors import UserError

from ..codecs import AnchorCodec
from .base import BACKBONE_DEFAULTS, KeypointModel, backbone_from, parse_options

ADAANCHOR_DEFAULTS = {**BACKBONE_DEFAULTS, "fusion": "mul", "selection": "adaptive", "top_k": 20,
                      "local_refinement": True, "score_sigma": 4.0, "local_radius": 2.0, "reg_weight": 1.0,
                      "local_weight": 1.0, "focal_alpha": 0.25, "focal_gamma": 2.0, "prior": 0.01}


def anchor_scores(confidence: torch.Tensor, points: torch.Tensor, targets: torch.Tensor, stride: float,
                  sigma: float, fusion: str = "mul") -> torch.Tensor:
    """Candidate scores s (eq. 8–9).

    ``confidence (B, K, h, w)`` probabilities c; ``points (B, K, 2, h, w)`` each candidate's
    estimate in map cells; ``targets (B, N, K, 2)`` ground truth in map cells → ``(B, N, K, h, w)``.
    Distances are converted to input pixels with ``stride`` before the Gaussian of width ``sigma``.
    """
    d2 = ((points[:, None] - targets[..., None, None]) ** 2).sum(3) * stride**2  # (B, N, K, h, w)
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
    ``index (B, N, K, k)`` flat cell indices and ``positive (B, K, h*w)`` bool (union over targets).
    Unlabelled targets select nothing.
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


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float,
                       gamma: float) -> torch.Tensor:
    """Summed binary focal loss (Lin et al. 2017)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.sum()


class AdaAnchorModel(KeypointModel):
    def __init__(self, cfg: dict, num_keypoints: int, input_size: int):
        super().__init__()
        opts = parse_options(cfg, ADAANCHOR_DEFAULTS, "adaanchor")
        if opts["fusion"] not in ("mul", "add"):
            raise UserError(f"adaanchor fusion must be 'mul' or 'add', got '{opts['fusion']}'")
        if opts["selection"] not in ("adaptive", "fixed"):
            raise UserError(f"adaanchor selection must be 'adaptive' or 'fixed', got '{opts['selection']}'")
        if int(opts["top_k"]) < 1:
            raise UserError(f"adaanchor top_k must be >= 1, got {opts['top_k']}")
        self.config = {"type": "adaanchor", **opts}
        self.opts = opts
        self.num_keypoints = num_keypoints
        self.backbone = backbone_from(opts)
        c = self.backbone.out_channels
        self.stride = self.backbone.stride
        self.confidence_head = nn.Conv2d(c, num_keypoints, 1)
        nn.init.constant_(self.confidence_head.bias, -math.log((1 - opts["prior"]) / opts["prior"]))
        self.offset_head = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(inplace=True),
                                         nn.Conv2d(c, 2 * num_keypoints, 1))
        self.local_head = nn.Conv2d(c, 2 * num_keypoints, 1) if opts["local_refinement"] else None
        self.codec = AnchorCodec(input_size, input_size // self.stride,
                                 float(opts["local_radius"]) if opts["local_refinement"] else 0.0)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(images)
        b, _, h, w = f.shape
        out = {"confidence": self.confidence_head(f),
               "anchor_offsets": self.offset_head(f).view(b, self.num_keypoints, 2, h, w)}
        if self.local_head is not None:
            out["local_offsets"] = self.local_head(f).view(b, self.num_keypoints, 2, h, w)
        return out

    def loss(self, outputs, targets):
        o = self.opts
        conf = outputs["confidence"]
        b, kk, h, w = conf.shape
        gt, gw = targets["points"], targets["point_weights"]  # (B, N, K, 2), (B, N, K)
        with torch.no_grad():
            if o["selection"] == "fixed":
                s = fixed_anchor_scores(gt, (h, w))
            else:
                pts = self.codec.predicted_points({k: v.detach() for k, v in outputs.items()})
                s = anchor_scores(torch.sigmoid(conf.detach()), pts, gt, self.stride, float(o["score_sigma"]),
                                  o["fusion"])
            idx, pos = select_anchors(s, gw, int(o["top_k"]))
        focal = sigmoid_focal_loss(conf.reshape(b, kk, -1), pos.float(), float(o["focal_alpha"]),
                                   float(o["focal_gamma"])) / pos.sum().clamp_min(1)
        # Regression: the coarse estimate (cell + δ) of every selected anchor should hit its target.
        n, k_sel = gt.shape[1], idx.shape[-1]
        ys, xs = torch.meshgrid(torch.arange(h, device=conf.device, dtype=conf.dtype),
                                torch.arange(w, device=conf.device, dtype=conf.dtype), indexing="ij")
        cells = torch.stack([xs, ys]).reshape(2, h * w)
        coarse = outputs["anchor_offsets"].reshape(b, kk, 2, h * w) + cells
        coarse = coarse[:, None].expand(b, n, kk, 2, h * w)
        chosen = coarse.gather(-1, idx[:, :, :, None, :].expand(b, n, kk, 2, k_sel))  # (B, N, K, 2, k)
        err = (chosen - gt[..., None]).abs().sum(3)  # (B, N, K, k)
        wsel = (gw > 0).float()[..., None].expand_as(err)
        reg = (err * wsel).sum() / wsel.sum().clamp_min(1)
        total = focal + float(o["reg_weight"]) * reg
        parts = {"focal": focal.item(), "anchor_reg": reg.item()}
        if self.local_head is not None:
            lw = targets["offset_weights"][:, :, None]
            diff = (outputs["local_offsets"] - targets["offsets"]).abs() * lw
            local = diff.sum() / (2 * lw.sum()).clamp_min(1)
            total = total + float(o["local_weight"]) * local
            parts["local"] = local.item()
        return total, parts


def build_adaanchor(cfg: dict, *, num_keypoints: int, input_size: int) -> AdaAnchorModel:
    return AdaAnchorModel(cfg, num_keypoints, input_size)
