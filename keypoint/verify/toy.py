"""A toy heatmap task and detector for tests and quick studies: grey noise images (16x16) with a red
and a green 3x3 square; keypoint k is the centre of square k; a plain ``nn.Sequential`` detector with
8x8 heatmaps (stride 2) that every reachable level, ``exact`` included, can handle.

Example::

    >>> net = train_toy(steps=5)
    >>> x, kp = toy_images(3, torch.Generator().manual_seed(1))
    >>> net(x).shape, kp.shape
    (torch.Size([3, 2, 8, 8]), torch.Size([3, 2, 2]))
"""

from __future__ import annotations

import torch
from torch import nn

SIZE, K = 16, 2
S = SIZE


def toy_images(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (n, 3, 16, 16), keypoints (n, 2, 2) input pixels (u, v))``."""
    x = 0.3 + 0.2 * torch.rand(n, 3, SIZE, SIZE, generator=gen)
    kp = torch.randint(2, SIZE - 2, (n, K, 2), generator=gen)
    for i in range(n):
        for k in range(K):
            u, v = kp[i, k]
            x[i, k, v - 1 : v + 2, u - 1 : u + 2] = 0.95
    return x, kp


def toy_targets(kp: torch.Tensor, sigma: float = 0.8) -> torch.Tensor:
    """Gaussian heatmaps ``(n, 2, 8, 8)`` centred on the keypoints (heatmap cell j ↔ input 2j + 0.5)."""
    hm = torch.arange(SIZE // 2).float()
    c = (kp.float() + 0.5) / 2 - 0.5
    gx = torch.exp(-((hm[None, None, None, :] - c[..., 0, None, None]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((hm[None, None, :, None] - c[..., 1, None, None]) ** 2) / (2 * sigma**2))
    return gx * gy


def train_toy(steps: int = 250, seed: int = 0, gen: torch.Generator | None = None) -> nn.Sequential:
    """The toy detector trained for ``steps`` Adam steps on batches of 32 (one torch thread; seconds);
    training images come from ``gen`` (default: a generator seeded with ``seed``)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed) if gen is None else gen
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, 1, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, K, 3, 1, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    n1 = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            x, kp = toy_images(32, gen)
            loss = ((net(x) - toy_targets(kp)) ** 2).sum((-1, -2)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(n1)
    return net.eval()
