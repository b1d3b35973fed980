"""Torch datasets over :class:`~keypoint.data.synth.KeypointData`: per-instance crops and whole images.

* :class:`KeypointLayout` — category-specific channel layout: every (category, keypoint) pair gets
  one global channel (``offsets[category_id] + k``); ``num_channels`` = total keypoints of all
  categories (25 for the synthetic set). Models predict all channels; only the instance's own
  category's channels carry weight, the others have visibility 0.
* :class:`KeypointCropDataset` (top-down, single instance per item): crops the instance's box,
  enlarged by ``padding`` and made square, resized to ``input_size``. Item dict:

  ========================  =======================  ==========================================
  ``image``                 ``(3, S, S) float32``    crop in ``[0, 1]``
  ``keypoints``             ``(1, C, 2) float32``    crop pixels (NaN→0 where visibility 0)
  ``visibility``            ``(1, C) int64``         COCO 0/1/2 (0 on other categories' channels)
  ``category_id``           ``int``
  ``crop_to_image``         ``(2, 3) float32``       affine: image_xy = A @ [u, v, 1]
  ``box``                   ``(4,) float32``         instance box in image pixels (xywh)
  ``area``                  ``float``                instance area in image pixels²
  ``index``                 ``(int, int)``           (sample index, annotation index)
  ========================  =======================  ==========================================

* :class:`KeypointImageDataset` (bottom-up, whole image): ``image (3, H, W)``, ``keypoints
  (N_max, C, 2)``, ``visibility (N_max, C)`` padded with visibility 0 up to ``max_instances``,
  ``category_ids (N_max,)`` (0 = padding), ``boxes (N_max, 4)``, ``areas (N_max,)``.

The 1-instance leading axis keeps every item in the codec convention ``encode(keypoints (N, K, 2),
visible (N, K))``. Crop coordinates use the toolkit convention (pixel centres at integers):
``x = left + (u + 0.5) * s`` with ``s = side / S`` (left = the crop's left edge).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import map_coordinates
from torch.utils.data import Dataset

from geo_rs.errors import UserError

from .synth import Category, KeypointData


@dataclass(frozen=True)
class KeypointLayout:
    """Global channel per (category, keypoint). Build with :meth:`from_categories`."""

    categories: tuple[Category, ...]

    @classmethod
    def from_categories(cls, categories) -> KeypointLayout:
        cats = tuple(categories)
        if len({c.id for c in cats}) != len(cats):
            raise UserError(f"duplicate category ids in {[c.id for c in cats]}")
        return cls(cats)

    @property
    def offsets(self) -> dict[int, int]:
        out, acc = {}, 0
        for c in self.categories:
            out[c.id] = acc
            acc += c.num_keypoints
        return out

    @property
    def num_channels(self) -> int:
        return sum(c.num_keypoints for c in self.categories)

    def channels(self, category_id: int) -> np.ndarray:
        """Global channel indices of a category's keypoints, ``(K_c,)``."""
        for c in self.categories:
            if c.id == category_id:
                return self.offsets[category_id] + np.arange(c.num_keypoints)
        raise UserError(f"category_id {category_id} is not in the layout {[c.id for c in self.categories]}")

    @property
    def sigmas(self) -> np.ndarray:
        """Per-channel OKS sigmas ``(C,)``."""
        return np.concatenate([np.asarray(c.sigmas, np.float64) for c in self.categories])

    def skeleton(self, category_id: int) -> list[tuple[int, int]]:
        """A category's skeleton in global channel indices."""
        off = self.offsets[category_id]
        cat = next(c for c in self.categories if c.id == category_id)
        return [(off + a, off + b) for a, b in cat.skeleton]

    def to_dict(self) -> dict:
        return {"categories": [{"id": c.id, "name": c.name, "keypoints": list(c.keypoint_names),
                                "skeleton": [list(p) for p in c.skeleton], "sigmas": list(c.sigmas)}
                               for c in self.categories]}

    @classmethod
    def from_dict(cls, d: dict) -> KeypointLayout:
        cats = tuple(Category(int(c["id"]), c["name"], tuple(c["keypoints"]),
                              tuple(tuple(p) for p in c["skeleton"]), tuple(c["sigmas"]))
                     for c in d["categories"])
        return cls(cats)


def crop_affine(box_xywh: np.ndarray, input_size: int, padding: float = 1.25) -> np.ndarray:
    """``(2, 3)`` affine mapping crop pixel ``(u, v)`` to image pixel ``(x, y)`` for a square crop."""
    x, y, w, h = (float(v) for v in box_xywh)
    side = max(w, h, 1.0) * padding
    cx, cy = x + w / 2, y + h / 2
    s = side / input_size
    left, top = cx - side / 2, cy - side / 2
    # Crop pixel u spans [u - 0.5, u + 0.5) and the crop's left edge (u = -0.5) sits at x = left.
    return np.array([[s, 0, left + 0.5 * s], [0, s, top + 0.5 * s]], np.float64)


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``points (..., 2)`` → ``affine[:, :2] @ p + affine[:, 2]``."""
    return points @ affine[:, :2].T + affine[:, 2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(affine[:, :2])
    return np.concatenate([lin, -(lin @ affine[:, 2])[:, None]], 1)


def warp_crop(image: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Bilinear crop ``(size, size, 3)`` of ``image (H, W, 3)``; zeros outside the image."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = affine[0, 0] * u + affine[0, 1] * v + affine[0, 2]
    y = affine[1, 0] * u + affine[1, 1] * v + affine[1, 2]
    out = np.stack([map_coordinates(image[..., ch], [y, x], order=1, mode="constant", cval=0.0)
                    for ch in range(image.shape[2])], -1)
    return out.astype(np.float32)


class KeypointCropDataset(Dataset):
    """Top-down crops, one item per annotated instance (see module docstring for the item dict)."""

    def __init__(self, data: KeypointData, input_size: int = 64, padding: float = 1.25,
                 layout: KeypointLayout | None = None, min_labelled: int = 1):
        if input_size < 8:
            raise UserError(f"input_size must be >= 8, got {input_size}")
        self.data = data
        self.input_size = int(input_size)
        self.padding = float(padding)
        self.layout = layout or KeypointLayout.from_categories(data.categories)
        self.items = [(i, j) for i, s in enumerate(data.samples) for j, a in enumerate(s.annotations)
                      if a.num_keypoints >= min_labelled and a.box[2] > 0 and a.box[3] > 0]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        i, j = self.items[idx]
        sample = self.data.samples[i]
        ann = sample.annotations[j]
        affine = crop_affine(ann.box, self.input_size, self.padding)
        crop = warp_crop(sample.image, affine, self.input_size)
        c = self.layout.num_channels
        kp = np.zeros((1, c, 2), np.float32)
        vis = np.zeros((1, c), np.int64)
        ch = self.layout.channels(ann.category_id)
        local = apply_affine(np.nan_to_num(ann.keypoints.astype(np.float64)), invert_affine(affine))
        kp[0, ch] = local
        vis[0, ch] = ann.visibility
        return {"image": torch.from_numpy(crop).permute(2, 0, 1).contiguous(),
                "keypoints": torch.from_numpy(kp), "visibility": torch.from_numpy(vis),
                "category_id": int(ann.category_id),
                "crop_to_image": torch.from_numpy(affine.astype(np.float32)),
                "box": torch.from_numpy(np.asarray(ann.box, np.float32)), "area": float(ann.area),
                "index": (i, j)}


class KeypointImageDataset(Dataset):
    """Whole images with all instances padded to ``max_instances`` (see module docstring)."""

    def __init__(self, data: KeypointData, max_instances: int = 8, layout: KeypointLayout | None = None):
        self.data = data
        self.max_instances = int(max_instances)
        self.layout = layout or KeypointLayout.from_categories(data.categories)

    def __len__(self) -> int:
        return len(self.data.samples)

    def __getitem__(self, idx: int) -> dict:
        s = self.data.samples[idx]
        n, c = self.max_instances, self.layout.num_channels
        kp = np.zeros((n, c, 2), np.float32)
        vis = np.zeros((n, c), np.int64)
        cats = np.zeros(n, np.int64)
        boxes = np.zeros((n, 4), np.float32)
        areas = np.zeros(n, np.float32)
        if len(s.annotations) > n:
            raise UserError(f"image {s.image_id} has {len(s.annotations)} instances > max_instances={n}")
        for j, a in enumerate(s.annotations):
            ch = self.layout.channels(a.category_id)
            kp[j, ch] = np.nan_to_num(a.keypoints)
            vis[j, ch] = a.visibility
            cats[j], boxes[j], areas[j] = a.category_id, a.box, a.area
        return {"image": torch.from_numpy(s.image).permute(2, 0, 1).contiguous(),
                "keypoints": torch.from_numpy(kp), "visibility": torch.from_numpy(vis),
                "category_ids": torch.from_numpy(cats), "boxes": torch.from_numpy(boxes),
                "areas": torch.from_numpy(areas), "index": idx}
