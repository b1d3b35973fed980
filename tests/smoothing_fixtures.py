"""A tiny classifier and points near its decision boundaries, shared by the smoothing-job tests.

``smoothing_fixtures:tiny_model`` is importable by worker processes (the tests folder is on the
import path of pytest and of the processes it spawns). Votes split under noise, so results are
sensitive to every noise sample.
"""
import numpy as np
import torch
from torch import nn

X = np.array([[0.1, 0.0], [0.0, 0.05], [0.3, 0.3], [1.5, 0.0], [0.0, 1.2], [-0.6, -0.6], [0.02, -0.01],
              [0.8, 0.1]], dtype=np.float32)
Y = np.array([0, 1, 2, 0, 1, 2, 0, 0], dtype=np.int64)
FACTORY = "smoothing_fixtures:tiny_model"


def tiny_model() -> nn.Module:
    """(B, 2) → 3 logits: three half-planes through the origin."""
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.bias.zero_()
    return model
