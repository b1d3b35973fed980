"""A small CNN backbone shared by every keypoint head (configurable width and output stride).

``Backbone(in_channels=3, width=32, stride=4, context_levels=2, blocks=1)`` maps images
``(B, 3, H, W)`` to features ``(B, out_channels, H / stride, W / stride)``.

Layout: a 3x3 stem, then ``log2(stride) + context_levels`` stride-2 stages (conv, plus ``blocks``
residual blocks from stride 4 on; channels ``width · min(2^level, 4)``), then a top-down path
(nearest upsampling + 1x1 lateral, FPN-style) back to the output stride. The extra
``context_levels`` give the heads an image-wide receptive field, which regressing occluded or
truncated keypoints from far anchors needs.
``stride`` must be a power of two in {1, 2, 4, 8, 16}; H and W must be divisible by
``stride · 2^context_levels``.

Example::

    >>> import torch
    >>> net = Backbone(width=16, stride=4)
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 64, 16, 16])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geo_rs.errors import UserError


def conv_bn_relu(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, channels),
                                  nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Backbone(nn.Module):
    """Encoder to stride ``stride · 2^context_levels``, top-down decoder back to ``stride``."""

    def __init__(self, in_channels: int = 3, width: int = 32, stride: int = 4, context_levels: int = 2,
                 blocks: int = 1, out_channels: int | None = None):
        super().__init__()
        if stride not in (1, 2, 4, 8, 16):
            raise UserError(f"backbone stride must be one of 1, 2, 4, 8, 16; got {stride}")
        if width < 4 or context_levels < 0 or blocks < 0:
            raise UserError(f"backbone needs width >= 4, context_levels >= 0, blocks >= 0; got "
                            f"{width}, {context_levels}, {blocks}")
        self.stride = stride
        self.out_level = int(math.log2(stride))
        self.levels = self.out_level + context_levels
        self.divisor = stride * 2**context_levels
        chans = [width * min(2**lv, 4) for lv in range(self.levels + 1)]
        self.stem = conv_bn_relu(in_channels, chans[0])
        # Residual blocks only from stride 4 on: at stride 2 they would dominate the cost on CPU.
        self.down = nn.ModuleList(
            nn.Sequential(conv_bn_relu(chans[lv], chans[lv + 1], stride=2),
                          *[ResidualBlock(chans[lv + 1]) for _ in range(blocks if lv >= 1 else 0)])
            for lv in range(self.levels))
        top = chans[self.out_level]
        self.lateral = nn.ModuleList(nn.Conv2d(chans[lv], top, 1)
                                     for lv in range(self.out_level, self.levels + 1))
        self.out_channels = out_channels or max(top, width * 2)
        self.head = conv_bn_relu(top, self.out_channels)
        # One parameter-free nearest ×2 upsampling per top-down step (no state_dict entries: checkpoints
        # are unchanged). The forward's divisibility check makes every step exactly ×2, so this is
        # bit-identical to ``F.interpolate(y, size=feats[lv].shape[-2:])``; unlike that form (ONNX Resize
        # with a runtime size), an integer-scale nn.Upsample is one the bound engine rewrites exactly
        # (``geo_rs.bounds.lirpa_model.rewrite_upsample``), so keypoint verify can bound the detector.
        self.upsample = nn.ModuleList(nn.Upsample(scale_factor=2, mode="nearest")
                                      for _ in range(self.out_level, self.levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise UserError(f"backbone input must be (B, C, H, W) with H, W divisible by {self.divisor}; "
                            f"got {tuple(x.shape)}")
        feats = [self.stem(x)]
        for stage in self.down:
            feats.append(stage(feats[-1]))
        y = self.lateral[-1](feats[-1])
        for lv in range(self.levels - 1, self.out_level - 1, -1):
            up = self.upsample[lv - self.out_level](y)
            y = up + self.lateral[lv - self.out_level](feats[lv])
        return self.head(y)
