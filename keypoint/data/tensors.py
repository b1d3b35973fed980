"""Stack every top-down crop of a dataset and its codec targets into tensors (the data are static:
encode once, index batches afterwards)."""
from __future__ import annotations

import torch

from geo_rs.errors import UserError

from ..codecs import Codec, encode_batch
from .dataset import KeypointCropDataset

__all__ = ["materialize"]


def materialize(dataset: KeypointCropDataset, codec: Codec) -> dict[str, torch.Tensor]:
    """All items of ``dataset`` stacked: ``image (M, 3, S, S)``, ``keypoints (M, 1, C, 2)``,
    ``visibility (M, 1, C)``, ``crop_to_image (M, 2, 3)``, ``box (M, 4)``, ``area (M,)``,
    ``category_id (M,)``, ``sample_index (M,)`` and ``targets`` (``codec.encode`` of each, stacked)."""
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise UserError("dataset has no annotated instance to train on")
    out = {"image": torch.stack([it["image"] for it in items]),
           "keypoints": torch.stack([it["keypoints"] for it in items]),
           "visibility": torch.stack([it["visibility"] for it in items]),
           "crop_to_image": torch.stack([it["crop_to_image"] for it in items]),
           "box": torch.stack([it["box"] for it in items]),
           "area": torch.tensor([it["area"] for it in items]),
           "category_id": torch.tensor([it["category_id"] for it in items]),
           "sample_index": torch.tensor([it["index"][0] for it in items])}
    out["targets"] = encode_batch(codec, out["keypoints"], out["visibility"])
    return out
