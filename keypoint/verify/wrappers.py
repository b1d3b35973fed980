"""Thin module wrappers that turn a detector into the heatmap network the verifier bounds.

They live apart from the verifier's stages so that every stage (reachable sets, float32 margins, the
API) can recognise them without importing one another.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FlatHeatmaps", "HeatmapsOf"]


class HeatmapsOf(nn.Module):
    """The ``"heatmaps"`` output of a keypoint model that returns a dict (our KeypointModels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["heatmaps"]


class FlatHeatmaps(nn.Module):
    """``model(x).flatten(1)`` for models that are not an ``nn.Sequential``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).flatten(1)
