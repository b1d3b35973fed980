"""KLPNet heads: category-implicit keypoint heatmaps with cross-stage coarse-to-fine supervision
(KLPNet §3.2, "CKLM"), and a small CenterNet-style object detector standing in for DPAD (§3.1).

Category-implicit keypoints
    Every keypoint of every object, whatever its category and index, goes on ONE heatmap channel
    (class-agnostic), plus a 2-channel offset map ``(O_x, O_y)`` for sub-cell precision. Loss (paper
    eq. 1): binary cross-entropy on the heatmap + Smooth-L1 on offsets near keypoints.

Coarse-to-fine targets
    Stage ``s`` of ``S`` is supervised with a Gaussian kernel of size ``K_s`` taken from the tail of
    ``(7, 5, 3)``: 1 stage → (3,), 2 → (5, 3), 3 → (7, 5, 3); the LAST stage always has the finest
    kernel so the decoded precision does not depend on the stage count. A "kernel of size K" is read as
    in MSPN / OpenCV: a K×K window with ``σ_K = 0.3·((K−1)/2 − 1) + 0.8`` (``cv2.getGaussianKernel``'s
    default; σ = 1.4, 1.1, 0.8 heatmap cells for K = 7, 5, 3), centred on the sub-cell keypoint
    position and zero outside the window; overlapping keypoints take the max. ``sigma_scale``
    multiplies σ (the window grows with it).

Cross-stage aggregation (eqs. 2–3, Fig. 4)
    Each stage is a two-level encoder–decoder. At every level the stage's encoder feature is
    concatenated with the previous stage's decoder feature at that level and passed through a 1×1
    "transmission" conv ``T`` (eq. 2); decoder levels fuse the up-sampled coarse level with the fine
    level the same way (eq. 3). The next stage's input is ``T(C(input, decoder_0))``.

Coordinates: toolkit convention (pixel centres at integers); map cell ``j`` ↔ image
``(j + 0.5)·stride − 0.5`` (:func:`keypoint.codecs.to_map` / ``from_map``).

Example::

    >>> import torch
    >>> targets = coarse_to_fine_targets(torch.tensor([[[10.0, 12.0]]]), torch.ones(1, 1),
    ...                                  map_size=(16, 16), stride=4, kernels=(7, 5, 3))
    >>> [t.shape for t in targets["heatmaps"]], targets["offsets"].shape
    ([torch.Size([16, 16]), torch.Size([16, 16]), torch.Size([16, 16])], torch.Size([2, 16, 16]))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geo_rs.errors import UserError

from .backbone import conv_bn_relu

PAPER_KERNELS = (7, 5, 3)

__all__ = [
    "CKLM",
    "PAPER_KERNELS",
    "CentreDetectorHead",
    "coarse_to_fine_targets",
    "detector_targets",
    "find_peaks",
    "gaussian_window_heatmap",
    "gaussian_window_heatmap_naive",
    "kernel_sigma",
    "stage_kernels",
]


def stage_kernels(num_stages: int, kernels: tuple[int, ...] = PAPER_KERNELS) -> tuple[int, ...]:
    """Kernel sizes of ``num_stages`` stages: the last ``num_stages`` of ``kernels`` (coarse → fine)."""
    if not 1 <= num_stages <= len(kernels):
        raise UserError(f"num_stages must be in 1..{len(kernels)} for kernels {list(kernels)}, "
                        f"got {num_stages}")
    return tuple(kernels[len(kernels) - num_stages:])


def kernel_sigma(kernel: int) -> float:
    """σ of an odd K×K Gaussian kernel, OpenCV convention: ``0.3·((K−1)/2 − 1) + 0.8``."""
    if kernel < 1 or kernel % 2 == 0:
        raise UserError(f"Gaussian kernel size must be a positive odd integer, got {kernel}")
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def gaussian_window_heatmap(centres: Tensor, weights: Tensor, size: tuple[int, int], kernel: int,
                            sigma_scale: float = 1.0) -> Tensor:
    """Class-agnostic heatmap: max over points of a windowed Gaussian.

    Args:
        centres: (P, 2) map-cell positions (x, y).
        weights: (P,) 1 for points to draw, 0 to skip.
        size: (w, h) of the map.
        kernel: odd window size K (cells); σ = ``kernel_sigma(K)·sigma_scale``, window half-width
            ``round((K−1)/2·sigma_scale)`` around the nearest cell.
    Returns:
        (h, w) float32 in [0, 1].
    """
    w, h = size
    sigma = kernel_sigma(kernel) * sigma_scale
    half = int(round((kernel - 1) / 2 * sigma_scale))
    out = torch.zeros(h, w, dtype=torch.float32, device=centres.device)
    keep = weights > 0
    if not bool(keep.any()):
        return out
    c = centres[keep].float()
    xs = torch.arange(w, dtype=torch.float32, device=c.device)
    ys = torch.arange(h, dtype=torch.float32, device=c.device)
    dx = xs[None, :] - c[:, 0:1]  # (P, w)
    dy = ys[None, :] - c[:, 1:2]  # (P, h)
    inx = (xs[None, :] - torch.round(c[:, 0:1])).abs() <= half
    iny = (ys[None, :] - torch.round(c[:, 1:2])).abs() <= half
    gx = torch.exp(-dx**2 / (2 * sigma**2)) * inx
    gy = torch.exp(-dy**2 / (2 * sigma**2)) * iny
    return (gy[:, :, None] * gx[:, None, :]).amax(0)


def gaussian_window_heatmap_naive(centres: Tensor, weights: Tensor, size: tuple[int, int], kernel: int,
                                  sigma_scale: float = 1.0) -> Tensor:
    """Reference loop version of :func:`gaussian_window_heatmap` (for tests)."""
    w, h = size
    sigma = kernel_sigma(kernel) * sigma_scale
    half = int(round((kernel - 1) / 2 * sigma_scale))
    out = torch.zeros(h, w)
    for (cx, cy), wt in zip(centres.tolist(), weights.tolist()):
        if wt <= 0:
            continue
        for y in range(h):
            for x in range(w):
                if abs(x - round(cx)) <= half and abs(y - round(cy)) <= half:
                    g = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
                    out[y, x] = max(out[y, x].item(), g)
    return out


def _offset_targets(centres: Tensor, weights: Tensor, size: tuple[int, int], radius: float
                    ) -> tuple[Tensor, Tensor]:
    """Offsets from each cell to its nearest drawn point, within ``radius`` cells: (2, h, w), mask (h, w)."""
    w, h = size
    keep = weights > 0
    off = torch.zeros(2, h, w)
    mask = torch.zeros(h, w)
    if not bool(keep.any()):
        return off, mask
    c = centres[keep].float()
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    d = torch.stack([c[:, 0, None, None] - xs, c[:, 1, None, None] - ys], 1)  # (P, 2, h, w)
    dist = d.norm(dim=1)  # (P, h, w)
    nearest = dist.argmin(0)
    best = torch.gather(d, 0, nearest[None, None].expand(1, 2, h, w))[0]
    mask = (dist.min(0).values <= radius).float()
    return best * mask, mask


def coarse_to_fine_targets(keypoints: Tensor, weights: Tensor, map_size: tuple[int, int], stride: float,
                           kernels: tuple[int, ...] = PAPER_KERNELS, sigma_scale: float = 1.0,
                           offset_radius: float = 1.5) -> dict[str, Tensor | list[Tensor]]:
    """Training targets of one image for a multi-stage category-implicit head.

    Args:
        keypoints: (N, K, 2) image pixels of all instances (any categories: they all share one map).
        weights: (N, K) 1 for keypoints to put on the heatmap (labelled, inside the image), else 0.
        map_size: (w, h) of the heatmap; stride: image pixels per cell.
        kernels: one odd kernel size per stage (coarse → fine).
    Returns:
        ``heatmaps``: list of (h, w), one per stage; ``offsets`` (2, h, w) in cells;
        ``offset_mask`` (h, w).
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2 or weights.shape != keypoints.shape[:2]:
        raise UserError(f"targets need keypoints (N, K, 2) and weights (N, K); got "
                        f"{tuple(keypoints.shape)} and {tuple(weights.shape)}")
    pts = (keypoints.reshape(-1, 2).float() + 0.5) / stride - 0.5
    wts = weights.reshape(-1).float() * torch.isfinite(pts).all(-1).float()
    pts = torch.nan_to_num(pts)
    heatmaps = [gaussian_window_heatmap(pts, wts, map_size, k, sigma_scale) for k in kernels]
    off, mask = _offset_targets(pts, wts, map_size, offset_radius)
    return {"heatmaps": heatmaps, "offsets": off, "offset_mask": mask}


def find_peaks(heat: Tensor, threshold: float = 0.1, max_peaks: int = 64) -> tuple[Tensor, Tensor]:
    """Local maxima (3×3) of a probability map (h, w) above ``threshold``.

    Returns ``cells`` (P, 2) long (x, y) and ``scores`` (P,), highest first, P ≤ max_peaks.
    """
    h = heat[None, None]
    is_max = (F.max_pool2d(h, 3, 1, 1) == h)[0, 0] & (heat >= threshold)
    ys, xs = torch.nonzero(is_max, as_tuple=True)
    scores = heat[ys, xs]
    order = scores.argsort(descending=True)[:max_peaks]
    return torch.stack([xs[order], ys[order]], 1), scores[order]


# -------------------------------------------------------------------------------------------- CKLM
class _Stage(nn.Module):
    """One CKLM stage: two-level encoder–decoder with 1×1 transmission layers (see module doc)."""

    def __init__(self, in_ch: int, ch: int, aggregate: bool):
        super().__init__()
        self.enc0 = nn.Sequential(conv_bn_relu(in_ch, ch), conv_bn_relu(ch, ch))
        self.enc1 = nn.Sequential(conv_bn_relu(ch, ch, stride=2), conv_bn_relu(ch, ch))
        self.aggregate = aggregate
        if aggregate:  # eq. 2: f_fine = T(C(f_coarse, f_prev_out)) at both levels
            self.t_agg0 = nn.Conv2d(2 * ch, ch, 1)
            self.t_agg1 = nn.Conv2d(2 * ch, ch, 1)
        self.t_dec0 = nn.Conv2d(2 * ch, ch, 1)  # eq. 3: T(C(f_down, f_up))
        self.dec0 = conv_bn_relu(ch, ch)
        self.head = nn.Conv2d(ch, 3, 1)  # heatmap logit, offset x, offset y
        nn.init.constant_(self.head.bias[:1], -4.0)  # start near the (sparse) background prior

    def forward(self, x: Tensor, prev: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        e0 = self.enc0(x)
        if self.aggregate and prev is not None:
            e0 = self.t_agg0(torch.cat([e0, prev[0]], 1))
        e1 = self.enc1(e0)
        if self.aggregate and prev is not None:
            e1 = self.t_agg1(torch.cat([e1, prev[1]], 1))
        up = F.interpolate(e1, size=e0.shape[-2:], mode="nearest")
        d0 = self.dec0(self.t_dec0(torch.cat([e0, up], 1)))
        return self.head(d0), (d0, e1)


class CKLM(nn.Module):
    """Cross-stage Keypoint Localization Module: ``num_stages`` stages on backbone features.

    ``forward(features (B, C, h, w))`` → dict with ``heatmaps`` list of (B, 1, h, w) logits (one per
    stage), ``offsets`` list of (B, 2, h, w), and ``node_features`` (B, ch, h, w) — the last stage's
    decoder features, sampled at keypoints for the link predictor.
    """

    def __init__(self, in_channels: int, channels: int = 32, num_stages: int = 3):
        super().__init__()
        if num_stages < 1:
            raise UserError(f"CKLM needs num_stages >= 1, got {num_stages}")
        self.stem = nn.Conv2d(in_channels, channels, 1)
        self.stages = nn.ModuleList(_Stage(channels, channels, aggregate=i > 0) for i in range(num_stages))
        self.transmit = nn.ModuleList(nn.Conv2d(2 * channels, channels, 1) for _ in range(num_stages - 1))
        self.channels = channels

    def forward(self, features: Tensor) -> dict[str, Tensor | list[Tensor]]:
        x = self.stem(features)
        prev = None
        heatmaps, offsets = [], []
        for i, stage in enumerate(self.stages):
            out, prev = stage(x, prev)
            heatmaps.append(out[:, :1])
            offsets.append(out[:, 1:])
            if i < len(self.transmit):
                x = self.transmit[i](torch.cat([x, prev[0]], 1))
        return {"heatmaps": heatmaps, "offsets": offsets, "node_features": prev[0]}


# ---------------------------------------------------------------------------------------- detector
class CentreDetectorHead(nn.Module):
    """CenterNet-style boxes: per-category centre heatmap + box size (cells, log scale).

    Stands in for DPAD (paper §3.1, a PANet detector): it only has to supply category + box so that
    keypoints can be grouped and ``geo-rs keypoint predict`` works on a bare image.
    """

    def __init__(self, in_channels: int, num_categories: int, channels: int = 32):
        super().__init__()
        self.body = conv_bn_relu(in_channels, channels)
        self.centre = nn.Conv2d(channels, num_categories, 1)
        self.size = nn.Conv2d(channels, 2, 1)
        nn.init.constant_(self.centre.bias, -4.0)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        y = self.body(features)
        return {"centre": self.centre(y), "log_size": self.size(y)}


def detector_targets(boxes: Tensor, category_index: Tensor, num_categories: int, map_size: tuple[int, int],
                     stride: float) -> dict[str, Tensor]:
    """Targets for :class:`CentreDetectorHead` of one image.

    ``boxes`` (N, 4) xywh image pixels, ``category_index`` (N,) 0-based (−1 = padding). Returns
    ``centre`` (C, h, w) Gaussian peaks (σ = box size / 12, at least 0.8 cells), ``log_size`` (2, h, w)
    and ``size_mask`` (h, w) set at each box's centre cell.
    """
    w, h = map_size
    centre = torch.zeros(num_categories, h, w)
    log_size = torch.zeros(2, h, w)
    mask = torch.zeros(h, w)
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    for box, c in zip(boxes.tolist(), category_index.tolist()):
        if c < 0 or box[2] <= 0 or box[3] <= 0:
            continue
        cx = (box[0] + box[2] / 2 + 0.5) / stride - 0.5
        cy = (box[1] + box[3] / 2 + 0.5) / stride - 0.5
        bw, bh = box[2] / stride, box[3] / stride
        sigma = max(0.8, min(bw, bh) / 12)
        g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        centre[c] = torch.maximum(centre[c], g)
        ix, iy = int(round(cx)), int(round(cy))
        if 0 <= ix < w and 0 <= iy < h:
            centre[c, iy, ix] = 1.0
            log_size[:, iy, ix] = torch.tensor([math.log(bw), math.log(bh)])
            mask[iy, ix] = 1.0
    return {"centre": centre, "log_size": log_size, "size_mask": mask}


def focal_heatmap_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet penalty-reduced focal loss, normalised by the number of peaks (target == 1)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.ge(0.999).float()
    pos_loss = -torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = -torch.log(1 - p) * p**alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1.0)
