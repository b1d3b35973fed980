"""Median-smoothing certification of a box detector (``geo-rs box verify --certifier median-smoothing``).

The smoothed detector returns, per corner coordinate, the median of the detector's output under
Gaussian noise N(0, σ²I) on the image (:class:`geo_rs.MedianSmooth`). For an L2 radius r its
certificate gives per-corner intervals that hold for every image within ‖δ‖₂ ≤ r with probability
≥ 1 − α over the noise — **jointly** for the four corners here (``joint=True``: α/8 per side and
corner), so a box statement fails with probability ≤ α. The intervals go through
:func:`geo_rs.iou_bounds` like IBP / CROWN box bounds do; the image counts as certified (stable) when
the IoU lower bound is ≥ the threshold.

Threat models. The bound methods certify the detector itself on the L∞-type sets of the study; RS
certifies the *smoothed* detector on an L2 ball. To put RS in the same table we certify the smallest L2
ball that **contains** each set (sound, possibly loose): with d = C·H·W pixels,

* noise (‖δ‖∞ ≤ ε) and brightness (one offset |b| ≤ ε): r = ε·√d;
* contrast (c·x, |c − 1| ≤ ε): r = ε·‖x‖₂ (per image);

clamping to [0, 1] never moves a pixel farther from the clean one, so the clamped sets lie in the same
balls. An extra pseudo-perturbation ``l2`` certifies the given L2 radii ε as they are; the largest L∞
ball inside the L2 ball of radius ε has radius ε/√d (the report prints both).

One unit per image: n noisy forward passes, sorted once, certify every (perturbation, ε) from the
same samples (each certificate holds with probability ≥ 1 − α on its own). Coordinates whose bound
needs an order statistic outside 1…n are ±inf: that image is not certified for that ε (``abstain``).
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from geo_rs import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["L2", "RS_METHOD", "l2_radius", "rs_records"]

RS_METHOD = "median-smoothing"
L2 = "l2"


def l2_radius(perturbation: str, eps: float, image: torch.Tensor) -> float:
    """Radius of the smallest L2 ball (around the clean image) containing the perturbation set."""
    d = image.numel()
    if perturbation in ("noise", "brightness"):
        return float(eps) * math.sqrt(d)
    if perturbation == "contrast":
        return float(eps) * float(image.double().norm())
    if perturbation == L2:
        return float(eps)
    raise UserError(f"unknown perturbation {perturbation!r} for {RS_METHOD}")


def _iou_entries(lo, hi, gt64, extensions: list[str], threshold: float) -> dict:
    from geo_rs import iou_bounds

    out = {}
    for ext in extensions:
        t1 = time.perf_counter()
        res = iou_bounds(lo, hi, gt64, ext)
        entry = {"lower": float(res.lower[0]), "upper": float(res.upper[0]),
                 "stable": bool(float(res.lower[0]) >= threshold), "time": time.perf_counter() - t1}
        if res.lower_box is not None:
            entry["lower_box"] = res.lower_box[0].tolist()
            entry["upper_box"] = res.upper_box[0].tolist()
        out[ext] = entry
    return out


def rs_records(model: nn.Module, image: torch.Tensor, gt: torch.Tensor, grid: dict[str, list[float]],
               config, seed: int) -> list[dict]:
    """All (perturbation, ε) records of one image for :data:`RS_METHOD`.

    ``grid`` maps perturbation (noise | brightness | contrast | l2) to its ε values; ``config`` is the
    :class:`keypoint.box.verify.VerifyConfig` (σ, n, α, batch size, extensions, threshold); ``seed``
    the unit's seed (noise stream). Each record: ``perturbation, eps, method, l2_radius, box_lower,
    box_upper, median_box, abstain, time_box`` (seconds of the n forward passes and the certificate)
    and one ``{lower, upper, stable, time}`` entry per IoU extension. An abstaining record has box
    bounds ±inf (as ``null`` in JSON), IoU bounds [0, 1] and is never stable.
    """
    from geo_rs import MedianSmooth
    from geo_rs.median_smoothing import certify_from_samples

    smooth = MedianSmooth(model, config.sigma)
    t0 = time.perf_counter()
    samples = smooth.sample(image[None], config.n, batch_size=config.rs_batch_size, generator=int(seed),
                            progress=False)
    if samples.shape[-1] != 4:
        raise UserError(f"the detector must output 4 numbers per image for {RS_METHOD}, "
                        f"got {samples.shape[-1]}")
    t_sample = time.perf_counter() - t0
    gt64 = gt.double().reshape(1, 4)
    records = []
    for perturbation, values in grid.items():
        for eps in values:
            t1 = time.perf_counter()
            radius = l2_radius(perturbation, eps, image)
            cert = certify_from_samples(samples, radius, config.sigma, config.alpha, joint=True)
            head = {"perturbation": perturbation, "eps": float(eps), "method": RS_METHOD,
                    "l2_radius": radius, "median_box": cert.median[0].tolist()}
            lo, hi = cert.lower, cert.upper
            abstain = not bool(cert.certified.all())
            if abstain:
                entries = {ext: {"lower": 0.0, "upper": 1.0, "stable": False, "time": 0.0}
                           for ext in config.extensions}
            else:
                entries = _iou_entries(lo, hi, gt64, config.extensions, config.threshold)
            records.append({**head, "box_lower": [None if math.isinf(v) else v for v in lo[0].tolist()],
                            "box_upper": [None if math.isinf(v) else v for v in hi[0].tolist()],
                            "abstain": abstain, "time_box": t_sample + time.perf_counter() - t1, **entries})
    return records
