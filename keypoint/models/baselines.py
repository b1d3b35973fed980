"""Baselines with pre-defined anchors (AdaAnchor paper, Table 1):

* :class:`HeatmapAnchorModel` — heatmap-anchor: per-keypoint Gaussian heatmap (the anchor is the
  heatmap argmax, i.e. a cell *near the target*) plus a local offset map read at that cell
  (:class:`~keypoint.codecs.HeatmapOffsetCodec`). Loss: weighted MSE on heatmaps (summed over
  pixels, averaged over labelled channels) + L1 on offsets within ``offset_radius`` cells.
  Score = heatmap peak value.
* :class:`RegressionAnchorModel` — regression-anchor: global regression of all coordinates from
  the image centre (:class:`~keypoint.codecs.RegressionCodec`), L1 loss; no confidence score.

Config (``model:`` section): ``type: heatmap | regression`` plus backbone options ``width``,
``stride``, ``context_levels``, ``blocks``; heatmap: ``sigma`` (map cells), ``offset_radius``,
``offset_weight``; regression: ``hidden``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..codecs import HeatmapOffsetCodec, RegressionCodec
from .base import KeypointModel, backbone_from, parse_options
from .options import HeatmapOptions, RegressionOptions


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean L1 over entries with weight > 0 (``weight`` broadcastable to ``pred``)."""
    w = weight.expand_as(pred)
    return ((pred - target).abs() * w).sum() / w.sum().clamp_min(1.0)


class HeatmapAnchorModel(KeypointModel):
    def __init__(self, cfg: dict, num_keypoints: int, input_size: int):
        super().__init__()
        opts = parse_options(cfg, HeatmapOptions, "heatmap")
        self.config = opts.to_dict()
        self.num_keypoints = num_keypoints
        self.backbone = backbone_from(opts)
        c = self.backbone.out_channels
        self.heatmap_head = nn.Conv2d(c, num_keypoints, 1)
        self.offset_head = nn.Conv2d(c, 2 * num_keypoints, 1)
        self.codec = HeatmapOffsetCodec(input_size, input_size // self.backbone.stride, opts.sigma,
                                        opts.offset_radius)
        self.offset_weight = float(opts.offset_weight)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(images)
        b, _, h, w = f.shape
        return {"heatmaps": self.heatmap_head(f),
                "offsets": self.offset_head(f).view(b, self.num_keypoints, 2, h, w)}

    def loss(self, outputs, targets):
        w = targets["heatmap_weights"]  # (B, K)
        se = ((outputs["heatmaps"] - targets["heatmaps"]) ** 2).sum((-1, -2))
        hm = (se * w).sum() / w.sum().clamp_min(1.0)
        off = weighted_l1(outputs["offsets"], targets["offsets"], targets["offset_weights"][:, :, None])
        total = hm + self.offset_weight * off
        return total, {"heatmap": hm.item(), "offset": off.item()}


class RegressionAnchorModel(KeypointModel):
    def __init__(self, cfg: dict, num_keypoints: int, input_size: int):
        super().__init__()
        opts = parse_options(cfg, RegressionOptions, "regression")
        self.config = opts.to_dict()
        self.num_keypoints = num_keypoints
        self.backbone = backbone_from(opts)
        side = input_size // self.backbone.stride
        self.squeeze = nn.Conv2d(self.backbone.out_channels, 16, 1)
        hidden = int(opts.hidden)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(16 * side * side, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * num_keypoints))
        self.codec = RegressionCodec(input_size)

    def forward(self, images):
        flat = self.mlp(torch.relu(self.squeeze(self.backbone(images))))
        return {"coords": flat.view(-1, self.num_keypoints, 2)}

    def loss(self, outputs, targets):
        l1 = weighted_l1(outputs["coords"], targets["coords"], targets["coord_weights"][..., None])
        return l1, {"coords": l1.item()}


def build_heatmap_anchor(cfg: dict, *, num_keypoints: int, input_size: int) -> HeatmapAnchorModel:
    return HeatmapAnchorModel(cfg, num_keypoints, input_size)


def build_regression_anchor(cfg: dict, *, num_keypoints: int, input_size: int) -> RegressionAnchorModel:
    return RegressionAnchorModel(cfg, num_keypoints, input_size)
