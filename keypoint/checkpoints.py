"""Top-down keypoint checkpoints (``last.pt`` of heatmap / regression / AdaAnchor runs).

Written by :func:`keypoint.fit.fit` for :func:`keypoint.train.train`: a ``torch.save`` dict with
``format`` = :data:`CHECKPOINT_FORMAT`, ``config`` (the run's config), ``identity`` (what a resumed
run must match), ``model_config``, ``codec`` (``codec.to_dict()``), ``layout``, ``input_size``,
``padding``, ``state_dict``, ``optimizer``, ``step``, ``steps_per_epoch``, ``epochs``, ``history``,
``train_seconds``.

:func:`load_checkpoint(path)` → ``(model in eval mode, checkpoint dict)``; one :class:`UserError`
line if the file is missing or not a keypoint checkpoint, if the recorded codec differs from what
the recorded model config builds (e.g. an edited stride or input size), or if the weights do not fit.
"""
from __future__ import annotations

from pathlib import Path

import torch

from geo_rs.errors import UserError

from .codecs import codec_from_dict
from .data.dataset import KeypointLayout
from .models.registry import build_model

CHECKPOINT_FORMAT = "geo-rs-keypoint/2"
KLPNET_FORMAT = "geo-rs-klpnet/2"

__all__ = ["CHECKPOINT_FORMAT", "KLPNET_FORMAT", "checkpoint_format", "load_checkpoint", "read_torch_file"]


def read_torch_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A ``torch.save``-d dict; one UserError line for a missing or unreadable file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: expected a checkpoint file, got a folder")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise UserError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    if not isinstance(ck, dict):
        raise UserError(f"{path}: not a geo-rs keypoint checkpoint (holds a {type(ck).__name__})")
    return ck


def checkpoint_format(path: str | Path) -> str | None:
    """The ``format`` tag of a checkpoint file (None if it has none); UserError if unreadable."""
    return read_torch_file(path).get("format")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model stored in a top-down checkpoint; see the module docstring for the checks."""
    path = Path(path)
    ck = read_torch_file(path, map_location)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a geo-rs keypoint checkpoint (format {ck.get('format')!r}, "
                        f"expected {CHECKPOINT_FORMAT!r})")
    for key in ("model_config", "codec", "layout", "state_dict", "input_size"):
        if key not in ck:
            raise UserError(f"{path}: checkpoint lacks '{key}'")
    layout = KeypointLayout.from_dict(ck["layout"])
    model = build_model(ck["model_config"], num_keypoints=layout.num_channels,
                        input_size=int(ck["input_size"]))
    recorded = codec_from_dict(ck["codec"])
    if recorded != model.codec:
        raise UserError(f"{path}: codec mismatch — checkpoint recorded {recorded.to_dict()} but its model "
                        f"config builds {model.codec.to_dict()}")
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        kind = ck["model_config"].get("type")
        raise UserError(f"{path}: weights do not fit the model '{kind}' ({first})") from None
    model.to(map_location).eval()
    return model, ck
