"""The paper's MNIST-canvas box regressor (IBP-IoU paper, §4.1; FIELD-NOTES "box verification").

A plain Conv/ReLU/MaxPool/Linear stack so every bound-propagation method (IBP, CROWN-IBP, CROWN,
alpha-CROWN) supports it. Input ``(B, 1, 90, 90)`` in [0, 1], output ``(B, 4)`` = (x1, y1, x2, y2)
in pixels of the 90x90 canvas.

Example::

    >>> import torch
    >>> from keypoint.box.model import MnistBoxCNN
    >>> MnistBoxCNN()(torch.zeros(2, 1, 90, 90)).shape
    torch.Size([2, 4])
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from geo_rs import UserError
from geo_rs.atomic import torch_save, write_json
from geo_rs.checks import json_object
from geo_rs.max_pool import FastMaxPool2d

CANVAS = 90  # the paper's canvas side (pixels)


class MnistBoxCNN(nn.Module):
    """Conv(1->16,3,p1)-ReLU-MaxPool2-Conv(16->16,3,p1)-ReLU-MaxPool2-Flatten-Linear(7744->256)-ReLU-
    Linear(256->4); about 2.0 M parameters.

    ``forward(x)``: ``x`` of shape ``(B, 1, 90, 90)`` -> boxes ``(B, 4)`` as (x1, y1, x2, y2).
    """

    arch = "MnistBoxCNN-v1"

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            FastMaxPool2d(2),  # branch-free at inference: RS samples run as fast as clean images
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            FastMaxPool2d(2),  # branch-free at inference: RS samples run as fast as clean images
            nn.Flatten(),
            nn.Linear(16 * 22 * 22, 256),
            nn.ReLU(),
            nn.Linear(256, 4),
        )
        with torch.no_grad():  # start at the mean box of the canvas (pixels): faster, steadier training
            mid = (CANVAS - 28) / 2
            self.net[-1].bias.copy_(torch.tensor([mid, mid, mid + 28, mid + 28]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------- weights + metadata
ARCHITECTURES: dict[str, type[nn.Module]] = {MnistBoxCNN.arch: MnistBoxCNN}


def metadata_path(weights: str | Path) -> Path:
    """The metadata JSON stored beside a weights file: ``model.pt`` -> ``model.json``."""
    return Path(weights).with_suffix(".json")


def save_detector(model: nn.Module, path: str | Path, **info) -> Path:
    """Save ``model``'s state dict to ``path`` and ``{arch, n_params, input_shape, output, **info}`` to
    the JSON beside it. ``model`` must be one of :data:`ARCHITECTURES`. Returns the weights path."""
    arch = getattr(model, "arch", None)
    if arch not in ARCHITECTURES:
        raise UserError(f"save_detector: unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save(path, model.state_dict())
    meta = {
        "arch": arch,
        "n_params": sum(p.numel() for p in model.parameters()),
        "input_shape": [1, CANVAS, CANVAS],
        "output": "box (x1, y1, x2, y2) in input pixels",
        **info,
    }
    write_json(metadata_path(path), meta, indent=1)
    return path


def load_detector(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load weights saved by :func:`save_detector`; checks the metadata's architecture and that the
    state dict matches it exactly. Returns ``(model in eval mode, metadata)``."""
    path = Path(path)
    meta_file = metadata_path(path)
    if path.is_dir():
        raise UserError(f"{path}: expected a weights file, got a folder")
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    if not meta_file.is_file():
        raise UserError(f"{meta_file}: metadata file not found (expected beside the weights)")
    meta = json_object(meta_file, expected="with an 'arch' field")
    arch = meta.get("arch")
    if arch not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise UserError(f"{meta_file}: field 'arch' is {arch!r}; known architectures: {known}")
    model = ARCHITECTURES[arch]()
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip, pickle or EOF errors of a corrupt or truncated file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: not a readable PyTorch weights file, corrupt or truncated "
                        f"({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
        raise UserError(f"{path}: weights do not match architecture {arch}: {detail[:200]}") from None
    return model.eval(), meta
