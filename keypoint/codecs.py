"""Keypoint codecs: ground truth → training targets, network outputs → keypoints and scores.

Convention (every codec)::

    targets = codec.encode(keypoints, visible)   # keypoints (N, K, 2) input pixels, visible (N, K)
    keypoints, scores = codec.decode(outputs)    # outputs: dict of (B, ...) tensors (or one tensor)
                                                 # -> keypoints (B, K, 2) input pixels, scores (B, K)

* Coordinates are input-image pixels with **pixel centres at integers**. A map of size ``(h, w)``
  over an input of size ``(H, W)`` has stride ``t = W / w``; input ``x`` ↔ map ``x_h = (x + 0.5) / t
  - 0.5`` (so map cell ``j`` is centred on input ``(j + 0.5) t - 0.5``).
* ``visible`` is a supervision mask: ``> 0`` = labelled (COCO visibility 1 *and* 2 are trained —
  occluded keypoints keep their labelled location), ``0`` = ignore. ``N`` instances share the maps
  of one image (heatmaps take the per-pixel maximum; offsets the nearest instance).
* ``encode`` accepts numpy or torch and returns a dict of float32 tensors *without* batch axis;
  stack them for a batch (:func:`encode_batch`). ``decode`` takes a batch (or unbatched maps).
* ``codec.to_dict()`` / :func:`codec_from_dict` serialise the codec into checkpoints.

Codecs: :class:`HeatmapCodec` (Gaussian heatmap, sub-pixel decoding by a parabola fit of the
log-heatmap, exact for a Gaussian peak), :class:`RegressionCodec` (anchor = image centre, targets =
offsets normalised by the image size), :class:`OffsetCodec` (dense offset maps around each keypoint,
decoded at given anchors by bilinear sampling), :class:`HeatmapOffsetCodec` (heatmap-anchor:
argmax cell + offset at that cell), :class:`AnchorCodec` (AdaAnchor: confidence + anchor offset +
local refinement maps; the anchor *assignment* is done in the model's loss, from predictions).

Example::

    >>> import torch
    >>> c = HeatmapCodec(input_size=64, heatmap_size=16, sigma=2.0)
    >>> kp = torch.tensor([[[20.3, 31.7]]]); t = c.encode(kp, torch.ones(1, 1))
    >>> out, score = c.decode(t["heatmaps"][None]); bool((out - kp).abs().max() < 0.05)
    True
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geo_rs.errors import UserError

Tensor = torch.Tensor


def _pair(v: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """``(W, H)`` from an int or a 2-sequence."""
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(x) for x in v)
    if len(v) != 2 or min(v) <= 0:
        raise UserError(f"{name} must be a positive int or (width, height), got {v}")
    return v  # type: ignore[return-value]


def _as_inputs(keypoints: Any, visible: Any) -> tuple[Tensor, Tensor]:
    kp = torch.as_tensor(np.asarray(keypoints) if not torch.is_tensor(keypoints) else keypoints,
                         dtype=torch.float32)
    vis = torch.as_tensor(np.asarray(visible) if not torch.is_tensor(visible) else visible,
                          dtype=torch.float32)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise UserError(f"keypoints must have shape (N, K, 2), got {tuple(kp.shape)}")
    if vis.shape != kp.shape[:2]:
        raise UserError(f"visible must have shape {tuple(kp.shape[:2])} (N, K), got {tuple(vis.shape)}")
    labelled = (vis > 0) & torch.isfinite(kp).all(-1)
    return torch.nan_to_num(kp), labelled.float()


def to_map(xy: Tensor, input_size: tuple[int, int], map_size: tuple[int, int]) -> Tensor:
    """Input pixels → map cells (pixel-centre convention on both sides)."""
    stride = torch.tensor([input_size[0] / map_size[0], input_size[1] / map_size[1]], dtype=xy.dtype,
                          device=xy.device)
    return (xy + 0.5) / stride - 0.5


def from_map(xy: Tensor, input_size: tuple[int, int], map_size: tuple[int, int]) -> Tensor:
    """Map cells → input pixels (inverse of :func:`to_map`)."""
    stride = torch.tensor([input_size[0] / map_size[0], input_size[1] / map_size[1]], dtype=xy.dtype,
                          device=xy.device)
    return (xy + 0.5) * stride - 0.5


def bilinear_sample(maps: Tensor, points: Tensor) -> Tensor:
    """Sample ``maps (B, K, D, h, w)`` at ``points (B, K, 2)`` (map cells, x, y) → ``(B, K, D)``.

    Bilinear, zero outside the map, differentiable in both arguments.
    """
    b, k, d, h, w = maps.shape
    gx = (points[..., 0] + 0.5) / w * 2 - 1  # align_corners=False: cell j centre ↔ (j + .5)/w*2-1
    gy = (points[..., 1] + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], -1).reshape(b * k, 1, 1, 2)
    out = F.grid_sample(maps.reshape(b * k, d, h, w), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.reshape(b, k, d)


def gaussian_maps(centres: Tensor, weights: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """Per-keypoint max over instances of ``exp(-d²/2σ²)``.

    ``centres (N, K, 2)`` in map cells, ``weights (N, K)`` → ``(K, h, w)``.
    """
    w, h = size
    ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
    cx = centres[..., 0, None, None]
    cy = centres[..., 1, None, None]
    g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) * weights[..., None, None]
    return g.amax(0) if g.shape[0] else torch.zeros(centres.shape[1], h, w)


def _within(centres: Tensor, size: tuple[int, int], margin: float) -> Tensor:
    w, h = size
    return ((centres[..., 0] > -0.5 - margin) & (centres[..., 0] < w - 0.5 + margin)
            & (centres[..., 1] > -0.5 - margin) & (centres[..., 1] < h - 0.5 + margin))


def _outputs(outputs: Tensor | dict, key: str) -> Tensor:
    if torch.is_tensor(outputs):
        return outputs
    if key not in outputs:
        raise UserError(f"decode: outputs lack '{key}' (have {sorted(outputs)})")
    return outputs[key]


class Codec:
    """Base: ``encode``, ``decode``, ``to_dict``; ``has_scores`` says whether scores mean anything."""

    type_name = "base"
    has_scores = True

    def encode(self, keypoints, visible) -> dict[str, Tensor]:
        raise NotImplementedError

    def decode(self, outputs) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return isinstance(other, Codec) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


def encode_batch(codec: Codec, keypoints: Tensor, visible: Tensor) -> dict[str, Tensor]:
    """Encode ``keypoints (B, N, K, 2)``, ``visible (B, N, K)`` image by image and stack."""
    per = [codec.encode(keypoints[i], visible[i]) for i in range(keypoints.shape[0])]
    return {k: torch.stack([p[k] for p in per]) for k in per[0]}


class HeatmapCodec(Codec):
    """Gaussian heatmap (σ in map cells), sub-pixel decoding.

    ``encode`` → ``heatmaps (K, h, w)``, ``heatmap_weights (K,)`` (0 if unlabelled or the Gaussian
    lies entirely outside the map, i.e. the keypoint is more than 3σ beyond the border).
    ``decode(outputs["heatmaps"] (B, K, h, w))`` → argmax, then a parabola fit of the log-heatmap
    along x and y (exact for a Gaussian peak) → ``(B, K, 2)`` input pixels; score = peak value.
    """

    type_name = "heatmap"

    def __init__(self, input_size=64, heatmap_size=16, sigma: float = 2.0):
        self.input_size = _pair(input_size, "input_size")
        self.heatmap_size = _pair(heatmap_size, "heatmap_size")
        if not sigma > 0:
            raise UserError(f"heatmap sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def encode(self, keypoints, visible) -> dict[str, Tensor]:
        kp, lab = _as_inputs(keypoints, visible)
        c = to_map(kp, self.input_size, self.heatmap_size)
        lab = lab * _within(c, self.heatmap_size, 3 * self.sigma).float()
        maps = gaussian_maps(c, lab, self.heatmap_size, self.sigma)
        return {"heatmaps": maps, "heatmap_weights": lab.amax(0) if lab.shape[0] else lab.sum(0)}

    def decode(self, outputs) -> tuple[Tensor, Tensor]:
        hm = _outputs(outputs, "heatmaps")
        squeeze = hm.ndim == 3
        if squeeze:
            hm = hm[None]
        b, k, h, w = hm.shape
        flat = hm.reshape(b, k, -1)
        score, idx = flat.max(-1)
        ix, iy = (idx % w), (idx // w)
        xy = torch.stack([ix, iy], -1).to(hm.dtype)
        xy = xy + subpixel_offsets(hm, ix, iy)
        out = from_map(xy, self.input_size, self.heatmap_size)
        return (out[0], score[0]) if squeeze else (out, score)

    def decode_multi(self, heatmaps: Tensor, threshold: float = 0.1, kernel: int = 3,
                     max_per_channel: int = 30) -> list[tuple[Tensor, Tensor]]:
        """Several peaks per channel of one image ``(K, h, w)``: local maxima (``kernel`` window)
        with value ≥ ``threshold``, sub-pixel refined → per channel ``(points (M, 2), scores (M,))``."""
        if heatmaps.ndim != 3:
            raise UserError(f"decode_multi expects heatmaps (K, h, w), got {tuple(heatmaps.shape)}")
        k, h, w = heatmaps.shape
        peak = F.max_pool2d(heatmaps[None], kernel, 1, kernel // 2)[0] == heatmaps
        out = []
        for ch in range(k):
            m = peak[ch] & (heatmaps[ch] >= threshold)
            iy, ix = torch.nonzero(m, as_tuple=True)
            s = heatmaps[ch, iy, ix]
            order = torch.argsort(s, descending=True)[:max_per_channel]
            iy, ix, s = iy[order], ix[order], s[order]
            xy = torch.stack([ix, iy], -1).to(heatmaps.dtype)
            off = subpixel_offsets(heatmaps[ch][None, None].expand(1, len(ix), h, w), ix[None], iy[None])[0]
            out.append((from_map(xy + off, self.input_size, self.heatmap_size), s))
        return out

    def to_dict(self) -> dict:
        return {"type": self.type_name, "input_size": list(self.input_size),
                "heatmap_size": list(self.heatmap_size), "sigma": self.sigma}


def subpixel_offsets(hm: Tensor, ix: Tensor, iy: Tensor, eps: float = 1e-10) -> Tensor:
    """Parabola-fit offsets of ``log(hm)`` around integer peaks ``(ix, iy) (B, K)`` → ``(B, K, 2)``.

    For a Gaussian ``exp(-(x - μ)²/2σ²)`` the log is a parabola, so the fit recovers μ exactly.
    At the border or where the fit is not concave the offset is 0; it is clamped to ±0.5 cell.
    """
    b, k, h, w = hm.shape
    flat = hm.reshape(b, k, -1).clamp_min(eps).log()

    def at(x, y):
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        v = flat.gather(-1, (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(-1)).squeeze(-1)
        return v, inside

    c, _ = at(ix, iy)
    offs = []
    for dx, dy in ((1, 0), (0, 1)):
        lo, ok_lo = at(ix - dx, iy - dy)
        hi, ok_hi = at(ix + dx, iy + dy)
        den = lo - 2 * c + hi
        ok = ok_lo & ok_hi & (den < -1e-12)
        safe = torch.where(ok, den, torch.ones_like(den))
        o = torch.where(ok, 0.5 * (lo - hi) / safe, torch.zeros_like(den))
        offs.append(o.clamp(-0.5, 0.5))
    return torch.stack(offs, -1)


class RegressionCodec(Codec):
    """Global regression with the image centre as anchor (one instance per image).

    ``encode`` → ``coords (K, 2)`` = (keypoint − centre) / (W, H), ``coord_weights (K,)``.
    ``decode(outputs["coords"] (B, K, 2))`` → keypoints; scores are all 1 (``has_scores`` False:
    direct regression has no confidence — the AdaAnchor paper reports "N/A").
    """

    type_name = "regression"
    has_scores = False

    def __init__(self, input_size=64):
        self.input_size = _pair(input_size, "input_size")

    @property
    def centre(self) -> Tensor:
        return torch.tensor([(self.input_size[0] - 1) / 2, (self.input_size[1] - 1) / 2])

    def encode(self, keypoints, visible) -> dict[str, Tensor]:
        kp, lab = _as_inputs(keypoints, visible)
        if kp.shape[0] != 1:
            raise UserError(f"RegressionCodec encodes exactly one instance per image, got N={kp.shape[0]}")
        scale = torch.tensor(self.input_size, dtype=torch.float32)
        return {"coords": (kp[0] - self.centre) / scale * lab[0, :, None], "coord_weights": lab[0]}

    def decode(self, outputs) -> tuple[Tensor, Tensor]:
        coords = _outputs(outputs, "coords")
        scale = torch.tensor(self.input_size, dtype=coords.dtype, device=coords.device)
        kp = coords * scale + self.centre.to(coords)
        return kp, torch.ones(kp.shape[:-1], dtype=coords.dtype, device=coords.device)

    def to_dict(self) -> dict:
        return {"type": self.type_name, "input_size": list(self.input_size)}


class OffsetCodec(Codec):
    """Dense offset maps: every cell within ``radius`` (cells) of a keypoint regresses the vector
    to it, in map cells. ``encode`` → ``offsets (K, 2, h, w)``, ``offset_weights (K, h, w)`` (nearest
    instance wins). ``decode(outputs, anchors)`` samples the offsets bilinearly at ``anchors
    (B, K, 2)`` (map cells) and returns ``anchors + offset`` in input pixels, scores 1.
    """

    type_name = "offset"
    has_scores = False

    def __init__(self, input_size=64, heatmap_size=16, radius: float = 2.0):
        self.input_size = _pair(input_size, "input_size")
        self.heatmap_size = _pair(heatmap_size, "heatmap_size")
        if not radius > 0:
            raise UserError(f"offset radius must be > 0, got {radius}")
        self.radius = float(radius)

    def encode(self, keypoints, visible) -> dict[str, Tensor]:
        kp, lab = _as_inputs(keypoints, visible)
        c = to_map(kp, self.input_size, self.heatmap_size)  # (N, K, 2)
        w, h = self.heatmap_size
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        dx = c[..., 0, None, None] - xs  # (N, K, h, w)
        dy = c[..., 1, None, None] - ys
        d2 = dx**2 + dy**2
        d2 = torch.where(lab[..., None, None] > 0, d2, torch.full_like(d2, math.inf))
        k = kp.shape[1]
        if kp.shape[0] == 0:
            return {"offsets": torch.zeros(k, 2, h, w), "offset_weights": torch.zeros(k, h, w)}
        best, arg = d2.min(0)  # (K, h, w)
        odx = dx.gather(0, arg[None])[0]
        ody = dy.gather(0, arg[None])[0]
        weight = (best <= self.radius**2).float()
        return {"offsets": torch.stack([odx, ody], 1) * weight[:, None], "offset_weights": weight}

    def decode(self, outputs, anchors: Tensor | None = None) -> tuple[Tensor, Tensor]:
        off = _outputs(outputs, "offsets")
        if anchors is None:
            raise UserError("OffsetCodec.decode needs anchors (B, K, 2) in map cells")
        xy = anchors + bilinear_sample(off, anchors)
        return from_map(xy, self.input_size, self.heatmap_size), torch.ones(xy.shape[:-1], dtype=xy.dtype)

    def to_dict(self) -> dict:
        return {"type": self.type_name, "input_size": list(self.input_size),
                "heatmap_size": list(self.heatmap_size), "radius": self.radius}


class HeatmapOffsetCodec(Codec):
    """Heatmap-anchor (PersonLab-style): Gaussian heatmap picks the anchor cell, the offset map at
    that cell gives the sub-cell location. Targets = :class:`HeatmapCodec` ∪ :class:`OffsetCodec`.
    ``decode(outputs {"heatmaps", "offsets"})`` → argmax cell + its offset; score = peak value.
    """

    type_name = "heatmap_offset"

    def __init__(self, input_size=64, heatmap_size=16, sigma: float = 2.0, radius: float = 2.0):
        self.heatmap = HeatmapCodec(input_size, heatmap_size, sigma)
        self.offset = OffsetCodec(input_size, heatmap_size, radius)
        self.input_size, self.heatmap_size = self.heatmap.input_size, self.heatmap.heatmap_size

    def encode(self, keypoints, visible) -> dict[str, Tensor]:
        return {**self.heatmap.encode(keypoints, visible), **self.offset.encode(keypoints, visible)}

    def decode(self, outputs) -> tuple[Tensor, Tensor]:
        hm, off = _outputs(outputs, "heatmaps"), _outputs(outputs, "offsets")
        b, k, h, w = hm.shape
        score, idx = hm.reshape(b, k, -1).max(-1)
        anchor = torch.stack([idx % w, idx // w], -1).to(hm.dtype)
        xy = anchor + off.reshape(b, k, 2, h * w).gather(-1, idx[:, :, None, None].expand(b, k, 2, 1))[..., 0]
        return from_map(xy, self.input_size, self.heatmap_size), score

    def to_dict(self) -> dict:
        return {"type": self.type_name, "input_size": list(self.input_size),
                "heatmap_size": list(self.heatmap_size), "sigma": self.heatmap.sigma,
                "radius": self.offset.radius}


class AnchorCodec(Codec):
    """AdaAnchor targets and decoding (candidates = map cells; offsets in map cells).

    ``encode`` → ``points (N, K, 2)`` ground truth in map cells, ``point_weights (N, K)``; plus, when
    ``local_radius > 0``, the local refinement targets ``offsets (K, 2, h, w)`` / ``offset_weights``
    of :class:`OffsetCodec`. Which candidates become positive anchors depends on the predictions,
    so the assignment lives in :func:`keypoint.models.adaanchor.select_anchors`.

    ``decode(outputs)`` with ``confidence (B, K, h, w)`` (logits), ``anchor_offsets (B, K, 2, h, w)``
    and optional ``local_offsets (B, K, 2, h, w)``: anchor = argmax confidence cell, coarse = anchor
    + anchor offset, refined = coarse + local offset sampled bilinearly at coarse; score = sigmoid of
    the max logit. :meth:`decode_multi` keeps every candidate with confidence ≥ γ and merges
    candidates whose predicted points fall within ``merge_radius`` cells (highest confidence wins).
    """

    type_name = "anchor"

    def __init__(self, input_size=64, heatmap_size=16, local_radius: float = 2.0):
        self.input_size = _pair(input_size, "input_size")
        self.heatmap_size = _pair(heatmap_size, "heatmap_size")
        self.local_radius = float(local_radius)
        self.offset = OffsetCodec(input_size, heatmap_size, local_radius) if local_radius > 0 else None

    def encode(self, keypoints, visible) -> dict[str, Tensor]:
        kp, lab = _as_inputs(keypoints, visible)
        out = {"points": to_map(kp, self.input_size, self.heatmap_size), "point_weights": lab}
        if self.offset is not None:
            out.update(self.offset.encode(keypoints, visible))
        return out

    def predicted_points(self, outputs: dict) -> Tensor:
        """Per-candidate predictions ``(B, K, 2, h, w)`` in map cells: cell + anchor offset (+ local)."""
        off = outputs["anchor_offsets"]
        b, k, _, h, w = off.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=off.device, dtype=off.dtype),
                                torch.arange(w, device=off.device, dtype=off.dtype), indexing="ij")
        coarse = torch.stack([xs, ys])[None, None] + off
        local = outputs.get("local_offsets")
        if local is None:
            return coarse
        pts = coarse.permute(0, 3, 4, 1, 2).reshape(b, h * w, k, 2)  # (B, hw, K, 2)
        pts = pts.permute(0, 2, 1, 3)  # (B, K, hw, 2)
        sampled = _bilinear_many(local, pts)  # (B, K, hw, 2)
        refined = pts + sampled
        return refined.permute(0, 1, 3, 2).reshape(b, k, 2, h, w)

    def decode(self, outputs) -> tuple[Tensor, Tensor]:
        conf = _outputs(outputs, "confidence")
        b, k, h, w = conf.shape
        score, idx = conf.reshape(b, k, -1).max(-1)
        anchor = torch.stack([idx % w, idx // w], -1).to(conf.dtype)
        off = outputs["anchor_offsets"].reshape(b, k, 2, h * w)
        coarse = anchor + off.gather(-1, idx[:, :, None, None].expand(b, k, 2, 1))[..., 0]
        local = outputs.get("local_offsets")
        xy = coarse if local is None else coarse + bilinear_sample(local, coarse)
        return from_map(xy, self.input_size, self.heatmap_size), torch.sigmoid(score)

    def decode_multi(self, outputs: dict, threshold: float = 0.1, merge_radius: float = 2.0,
                     max_per_channel: int = 30) -> list[tuple[Tensor, Tensor]]:
        """One image (batch of 1): per channel ``(points (M, 2) input px, scores (M,))``."""
        conf = torch.sigmoid(_outputs(outputs, "confidence"))
        if conf.ndim != 4 or conf.shape[0] != 1:
            raise UserError(f"decode_multi expects confidence (1, K, h, w), got {tuple(conf.shape)}")
        pts = self.predicted_points(outputs)[0]  # (K, 2, h, w)
        k = conf.shape[1]
        out = []
        for ch in range(k):
            c = conf[0, ch].reshape(-1)
            p = pts[ch].reshape(2, -1).T
            keep = torch.nonzero(c >= threshold).flatten()
            keep = keep[torch.argsort(c[keep], descending=True)]
            chosen: list[int] = []
            for i in keep.tolist():
                if all(float(((p[i] - p[j]) ** 2).sum()) > merge_radius**2 for j in chosen):
                    chosen.append(i)
                    if len(chosen) >= max_per_channel:
                        break
            idx = torch.tensor(chosen, dtype=torch.long)
            out.append((from_map(p[idx], self.input_size, self.heatmap_size), c[idx]))
        return out

    def to_dict(self) -> dict:
        return {"type": self.type_name, "input_size": list(self.input_size),
                "heatmap_size": list(self.heatmap_size), "local_radius": self.local_radius}


def _bilinear_many(maps: Tensor, points: Tensor) -> Tensor:
    """Sample ``maps (B, K, D, h, w)`` at ``points (B, K, P, 2)`` map cells → ``(B, K, P, D)``."""
    b, k, d, h, w = maps.shape
    p = points.shape[2]
    gx = (points[..., 0] + 0.5) / w * 2 - 1
    gy = (points[..., 1] + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], -1).reshape(b * k, 1, p, 2)
    out = F.grid_sample(maps.reshape(b * k, d, h, w), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # (BK, D, 1, P)
    return out.reshape(b, k, d, p).permute(0, 1, 3, 2)


CODECS: dict[str, type[Codec]] = {c.type_name: c for c in (HeatmapCodec, RegressionCodec, OffsetCodec,
                                                           HeatmapOffsetCodec, AnchorCodec)}


def codec_from_dict(d: dict) -> Codec:
    """Rebuild a codec from :meth:`Codec.to_dict` output; :class:`UserError` on unknown type/fields."""
    if not isinstance(d, dict) or "type" not in d:
        raise UserError(f"codec description must be a dict with a 'type', got {d!r}")
    kind = d["type"]
    if kind not in CODECS:
        raise UserError(f"unknown codec type '{kind}'; known: {sorted(CODECS)}")
    kwargs = {k: v for k, v in d.items() if k != "type"}
    try:
        return CODECS[kind](**kwargs)
    except TypeError as exc:
        raise UserError(f"codec '{kind}': bad fields {sorted(kwargs)} ({exc})") from None
