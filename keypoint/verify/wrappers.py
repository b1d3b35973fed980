"""Thin module wrappers that turn a detector into the heatmap network the verifier bounds.

They live apart from the verifier's stages so that every stage (reachable sets, float32 margins, the
API) can recognise them without importing one another.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["FlatHeatmaps", "HeatmapsOf", "in_dtype"]


def in_dtype(model: nn.Module, images: list[Tensor], dtype: torch.dtype) -> tuple[nn.Module, list[Tensor]]:
    """The deployment a certificate covers: ``model`` and ``images`` as they are for float32, else an
    eval-mode copy of the model and the images in ``dtype`` (the caller's model is left untouched)."""
    if dtype == torch.float32:
        return model, images
    return copy.deepcopy(model).to(dtype).eval(), [x.to(dtype) for x in images]


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
