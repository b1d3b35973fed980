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

import json
from pathlib import Path

import torch
from torch import nn

from geo_rs import UserError

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
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
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
    torch.save(model.state_dict(), path)
    meta = {
        "arch": arch,
        "n_params": sum(p.numel() for p in model.parameters()),
        "input_shape": [1, CANVAS, CANVAS],
        "output": "box (x1, y1, x2, y2) in input pixels",
        **info,
    }
    metadata_path(path).write_text(json.dumps(meta, indent=1))
    return path


def load_detector(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load weights saved by :func:`save_detector`; checks the metadata's architecture and that the
    state dict matches it exactly. Returns ``(model in eval mode, metadata)``."""
    path = Path(path)
    meta_file = metadata_path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    if not meta_file.is_file():
        raise UserError(f"{meta_file}: metadata file not found (expected beside the weights)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{meta_file}: not valid JSON ({exc})") from None
    arch = meta.get("arch")
    if arch not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise UserError(f"{meta_file}: field 'arch' is {arch!r}; known architectures: {known}")
    model = ARCHITECTURES[arch]()
    state = torch.load(path, map_location=map_location, weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not match architecture {arch}: {first}") from None
    return model.eval(), meta
