"""Small base classifiers for randomized-smoothing demos (``--model-factory geo_rs.smooth_models:NAME``).

Example:
    >>> import torch
    >>> mnist_cnn()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from torch import nn

__all__ = ["mnist_cnn"]


def mnist_cnn(num_classes: int = 10) -> nn.Module:
    """A ~110 k-parameter CNN for (B, 1, 28, 28) inputs in [0, 1] → logits (B, num_classes).

    Conv(1→16, 5, stride 2) - ReLU - Conv(16→32, 3, stride 2) - ReLU - Linear(1568→64) - ReLU -
    Linear(64→num_classes): about 0.4 M multiply-adds per input, so a CPU core certifies a digit at
    n = 10⁴ in about a second.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(),   # 16×14×14
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),  # 32×7×7
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )
