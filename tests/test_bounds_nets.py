"""Tiny networks shared by the bounds / MILP tests (trained in-test in about a second), plus a check
that the trained one really learned its task (so tightness tests run on a meaningful model)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 12


def blob_images(n: int, generator: torch.Generator, side: int = SIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark canvases (exact 0 background) with one bright square (some pixels exactly 1) and its box
    ``(x1, y1, x2, y2) / side`` — a miniature of the MNIST-canvas box task."""
    x = torch.zeros(n, 1, side, side)
    boxes = torch.zeros(n, 4)
    for i in range(n):
        w, h = torch.randint(3, 7, (2,), generator=generator).tolist()
        x0 = int(torch.randint(0, side - w + 1, (1,), generator=generator))
        y0 = int(torch.randint(0, side - h + 1, (1,), generator=generator))
        patch = 0.5 + 0.5 * torch.rand(h, w, generator=generator)
        patch[0, 0] = 1.0
        x[i, 0, y0 : y0 + h, x0 : x0 + w] = patch
        boxes[i] = torch.tensor([x0, y0, x0 + w, y0 + h], dtype=torch.float32) / side
    return x, boxes


@functools.cache
def trained_cnn() -> nn.Sequential:
    """Conv-ReLU-MaxPool-Conv-ReLU-Flatten-Linear-ReLU-Linear, 12x12 -> 4 box coordinates."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    )
    x, y = blob_images(512, g)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(120):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.mse_loss(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@functools.cache
def random_bn_cnn() -> nn.Sequential:
    """Random conv net with BatchNorm (eval, non-trivial running stats) and AvgPool (ConvTranspose and
    Upsample are covered by the layer zoo in test_bounds_api)."""
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )
    bn = net[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


class WrappedMLP(nn.Module):
    """A non-Sequential model wrapping one (the MnistBoxCNN pattern), Flatten first."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(SIDE * SIDE, 20),
            nn.ReLU(),
            nn.Linear(20, 10),
            nn.ReLU(),
            nn.Linear(10, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@functools.cache
def wrapped_mlp() -> WrappedMLP:
    return WrappedMLP().eval()


def sample_images(n: int = 2, seed: int = 5) -> torch.Tensor:
    return blob_images(n, torch.Generator().manual_seed(seed))[0]


def test_trained_cnn_learned_the_task():
    net = trained_cnn()
    x, y = blob_images(256, torch.Generator().manual_seed(9))
    with torch.no_grad():
        mse = nn.functional.mse_loss(net(x), y).item()
    baseline = nn.functional.mse_loss(y.mean(0, keepdim=True).expand_as(y), y).item()
    assert mse < 0.5 * baseline, (mse, baseline)
