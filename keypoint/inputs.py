"""Command-line inputs shared by the keypoint sub-commands: images, ``--box`` values."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from geo_rs.errors import UserError

__all__ = ["check_box_in_image", "parse_box", "read_image"]


def read_image(path: str | Path) -> np.ndarray:
    """An image file as float RGB in [0, 1], (H, W, 3); one clear error if missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError):
        raise UserError(f"{path}: not a readable image") from None


def parse_box(text: str) -> np.ndarray:
    """``"x,y,w,h"`` → (4,) floats with finite values and w, h > 0."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--box must be four numbers x,y,w,h; got '{text}'") from None
    if len(vals) != 4 or not np.isfinite(vals).all() or vals[2] <= 0 or vals[3] <= 0:
        raise UserError(f"--box must be x,y,w,h (finite, w, h > 0); got '{text}'")
    return np.asarray(vals)


def check_box_in_image(box: np.ndarray, width: int, height: int, text: str | None = None) -> None:
    """A box must overlap the image (pixel j spans [j − ½, j + ½)); else one UserError line."""
    x, y, w, h = (float(v) for v in box)
    if x + w <= -0.5 or y + h <= -0.5 or x >= width - 0.5 or y >= height - 0.5:
        shown = text if text is not None else ",".join(f"{v:g}" for v in box)
        raise UserError(f"--box {shown} lies outside the {width}x{height} image "
                        f"(x from -0.5 to {width - 0.5:g}, y from -0.5 to {height - 0.5:g})")
