"""Median smoothing of a top-down keypoint detector: certified per-keypoint boxes in image pixels.

The certified function is the whole pipeline from an **image** to keypoint coordinates in that image's
pixels: crop (bilinear, the instance's box enlarged by the checkpoint's padding, :class:`CropKeypoints`)
→ network → decode (heatmap argmax + offset, or regression) → back to image pixels. Noise N(0, σ²I) is
added to the image, so ε is an L2 radius on the image (pixel intensities in [0, 1]). The crop box is
part of the input specification (from the annotations, the protocol of ``geo-rs keypoint eval``), not
perturbed.

:func:`certify_instance` draws the n noisy copies once and certifies every ε from the same samples
(:func:`geo_rs.median_smoothing.certify_from_samples`), **jointly** over the instance's 2K coordinates
(α split over them by a union bound): with probability ≥ 1 − α every keypoint of the smoothed detector
lies in its box for every image within ‖δ‖₂ ≤ ε — the statement a pose bound needs. A coordinate whose
bound needs an order statistic outside 1…n is ±inf (stored as null): that keypoint is not certified.

Dataset runs (``geo-rs keypoint certify-rs``) go through :mod:`geo_rs.parallel`: one unit per instance,
seeded from (seed, unit id), so results do not depend on workers or partition, stored per unit (resume).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geo_rs.errors import UserError

__all__ = ["CropKeypoints", "InstanceInput", "certify_instance", "instance_inputs", "within_radius"]


class CropKeypoints(nn.Module):
    """images ``(B, 3, H, W)`` → keypoints ``(B, 2K)`` (x₀, y₀, x₁, …) in image pixels for one instance.

    Args:
        model: a top-down keypoint model (``model.decode(model(crops))`` → ``(B, C, 2)`` crop pixels).
        affine: ``(2, 3)`` crop → image affine (:func:`keypoint.data.dataset.crop_affine`).
        image_size: ``(H, W)`` of the images it will see.
        input_size: crop side S.
        channels: ``(K,)`` the instance's category's channels.
        offset: ``(x0, y0)`` when the images are a window ``[y0:, x0:]`` of the full image (keypoints are
            still returned in full-image pixels).
    """

    def __init__(
        self,
        model: nn.Module,
        affine: np.ndarray,
        image_size: tuple[int, int],
        input_size: int,
        channels: np.ndarray,
        offset: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__()
        self.model = model
        h, w = image_size
        v, u = np.mgrid[0:input_size, 0:input_size].astype(np.float64)
        x = affine[0, 0] * u + affine[0, 1] * v + affine[0, 2] - offset[0]
        y = affine[1, 0] * u + affine[1, 1] * v + affine[1, 2] - offset[1]
        # align_corners=True: -1 and 1 are the centres of the first and last pixels (centres at integers)
        grid = np.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], -1)
        self.register_buffer("grid", torch.from_numpy(grid).float()[None])
        self.register_buffer("lin", torch.from_numpy(affine[:, :2].T.copy()).float())
        self.register_buffer("shift", torch.from_numpy(affine[:, 2].copy()).float())
        self.channels = torch.as_tensor(np.asarray(channels), dtype=torch.long)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        crops = nn.functional.grid_sample(
            images,
            self.grid.expand(len(images), -1, -1, -1),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        kp, _ = self.model.decode(self.model(crops))
        kp = kp[:, self.channels].float() @ self.lin + self.shift
        return kp.reshape(len(images), -1)


def support_window(affine: np.ndarray, input_size: int, height: int, width: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the image pixels the bilinear crop reads (the rest cannot change the output)."""
    v, u = np.array([[0, 0, input_size - 1, input_size - 1], [0, input_size - 1, 0, input_size - 1]], float)
    x = affine[0, 0] * u + affine[0, 1] * v + affine[0, 2]
    y = affine[1, 0] * u + affine[1, 1] * v + affine[1, 2]
    x0, x1 = int(np.clip(np.floor(x.min()), 0, width - 1)), int(np.clip(np.floor(x.max()) + 2, 1, width))
    y0, y1 = int(np.clip(np.floor(y.min()), 0, height - 1)), int(np.clip(np.floor(y.max()) + 2, 1, height))
    return y0, max(y1, y0 + 1), x0, max(x1, x0 + 1)


@dataclass(frozen=True)
class InstanceInput:
    """One annotated instance: image ``(3, H, W)``, crop affine, channels, GT keypoints and visibility."""

    image_index: int
    image_id: int
    annotation: int
    category_id: int
    image: torch.Tensor
    affine: np.ndarray
    channels: np.ndarray
    keypoints: np.ndarray  # (K, 2) ground truth, image pixels (NaN where unlabelled)
    visibility: np.ndarray  # (K,)

    @property
    def unit_id(self) -> str:
        return f"img{self.image_id:06d}_a{self.annotation}"

    def fingerprint_parts(self) -> tuple:
        """What changes a unit's result (for :func:`geo_rs.parallel.fingerprint`)."""
        return self.image, self.affine, self.keypoints, self.channels


def instance_inputs(data, layout, input_size: int, padding: float) -> list[InstanceInput]:
    """Every instance with a box of positive size and ≥ 1 labelled keypoint, in dataset order."""
    from .data.dataset import crop_affine

    out = []
    for i, s in enumerate(data.samples):
        image = (
            torch.from_numpy(np.ascontiguousarray(s.image, dtype=np.float32)).permute(2, 0, 1).contiguous()
        )
        for j, a in enumerate(s.annotations):
            if a.num_keypoints < 1 or a.box[2] <= 0 or a.box[3] <= 0:
                continue
            out.append(
                InstanceInput(
                    i,
                    int(s.image_id),
                    j,
                    int(a.category_id),
                    image,
                    crop_affine(a.box, input_size, padding),
                    layout.channels(a.category_id),
                    np.asarray(a.keypoints, np.float64),
                    np.asarray(a.visibility),
                )
            )
    if not out:
        raise UserError("no annotated instance (box > 0, >= 1 labelled keypoint) in the data")
    return out


def within_radius(lower: np.ndarray, upper: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Largest distance (px) from ``truth`` to any point of the box ``[lower, upper]`` per keypoint
    (``(K, 2)`` each; inf where the box is unbounded, NaN where truth is NaN)."""
    far = np.maximum(np.abs(lower - truth), np.abs(upper - truth))
    return np.sqrt((far**2).sum(-1))


def _nullable(a: np.ndarray) -> list:
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in np.asarray(a, np.float64)]


def certify_instance(
    model: nn.Module,
    inst: InstanceInput,
    input_size: int,
    eps: list[float],
    sigma: float,
    n: int,
    alpha: float,
    batch_size: int,
    seed: int,
) -> dict:
    """Median-smoothing certificates of one instance for every ε (JSON-ready dict).

    Returns ``{"median": (K, 2), "eps": {str(ε): {"lower", "upper": (K, 2) with null for ±inf,
    "distance": (K,) farthest box point from the truth}}, "seconds_sampling", "forward_passes"}``.
    """
    from geo_rs import MedianSmooth
    from geo_rs.median_smoothing import certify_from_samples

    # Noise only on the pixels the crop reads: the same smoothed function (the others cannot change f),
    # and a ball of radius ε on the image projects into a ball of radius ≤ ε on the window.
    y0, y1, x0, x1 = support_window(inst.affine, input_size, *inst.image.shape[1:])
    window = inst.image[:, y0:y1, x0:x1].contiguous()
    f = CropKeypoints(model, inst.affine, (y1 - y0, x1 - x0), input_size, inst.channels, (x0, y0)).eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        samples = MedianSmooth(f, sigma).sample(
            window[None], n, batch_size=batch_size, generator=int(seed), progress=False
        )
    out = {"seconds_sampling": time.perf_counter() - t0, "forward_passes": n, "eps": {}}
    k = len(inst.channels)
    for e in eps:
        cert = certify_from_samples(samples, float(e), sigma, alpha, joint=True)
        lo, hi = cert.lower[0].numpy().reshape(k, 2), cert.upper[0].numpy().reshape(k, 2)
        out["median"] = cert.median[0].numpy().reshape(k, 2).tolist()
        dist = within_radius(lo, hi, inst.keypoints)
        out["eps"][repr(float(e))] = {
            "lower": _nullable(lo),
            "upper": _nullable(hi),
            "distance": [None if not math.isfinite(d) else float(d) for d in dist],
        }
    return out


# ------------------------------------------------------------------------ execution-layer hooks
def load_model_state(checkpoint_bytes: bytes, settings: dict) -> dict:
    """Per-worker state: the checkpoint's model (one torch thread per worker) and the run settings."""
    from .checkpoints import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        path.write_bytes(checkpoint_bytes)
        model, ck = load_checkpoint(path)
    return {"model": model, "input_size": int(ck["input_size"]), **settings}


def certify_unit(state: dict, unit) -> dict:
    """Unit of ``geo-rs keypoint certify-rs``: payload = :class:`InstanceInput`."""
    inst: InstanceInput = unit.payload
    return certify_instance(
        state["model"],
        inst,
        state["input_size"],
        state["eps"],
        state["sigma"],
        state["n"],
        state["alpha"],
        state["batch_size"],
        unit.seed,
    )
