"""Seeded synthetic images of rigid multi-class objects with keypoints, skeletons, boxes and visibility.

Interface (stable — other modules and helpers build on it)
----------------------------------------------------------
Coordinates are pixels, x right / y down, **pixel centres at integers** (pixel ``j`` covers
``[j - 0.5, j + 0.5)``). Keypoints may lie outside the image (truncation); their location is still
labelled.

Visibility follows COCO: ``2`` = labelled and visible, ``1`` = labelled but not visible (hidden by
an occluder / another object, or outside the image), ``0`` = not labelled (never produced by the
generator, but allowed in imported COCO files).

* :data:`CATEGORIES` — the four categories (ids 1..4): ``monitor`` (4 keypoints, quadrilateral),
  ``chair`` (5, side-view polygon of bars), ``runway`` (6, trapezoid with centreline ends),
  ``star`` (10, five tips and five inner corners). Each is a :class:`Category` with 0-based
  ``skeleton`` pairs and per-keypoint OKS ``sigmas`` (0.08; 0.10 for the thin chair, whose
  silhouette area is small for its extent — COCO's body-part sigmas span 0.025–0.107).
* :class:`SynthConfig` — image size, objects per image, occlusion / truncation / overlap rates
  (a :class:`geo_rs.config.Schema`: typed, unknown keys refused); :data:`PRESETS` — ``coco-like``.
* :func:`generate_sample(seed_or_rng, config, image_id)` → :class:`Sample` with ``image``
  ``(H, W, 3) float32`` in ``[0, 1]`` and ``annotations`` (list of :class:`Annotation`:
  ``category_id``, ``keypoints (K, 2) float32``, ``visibility (K,) int64``, ``box (4,)`` COCO
  ``[x, y, w, h]`` in continuous coordinates, ``area`` in pixels).
* :func:`generate_dataset(n, seed, config)` → :class:`KeypointData` (samples + categories);
  sample ``i`` depends only on ``(seed, i)``, so any prefix is reproducible.
* COCO keypoint JSON export / import lives in :mod:`keypoint.data.coco`
  (:func:`~keypoint.data.coco.save_coco`, :func:`~keypoint.data.coco.load_coco`).

Example::

    >>> from keypoint.data.synth import generate_dataset, SynthConfig
    >>> data = generate_dataset(4, seed=0, config=SynthConfig(image_size=96))
    >>> s = data.samples[0]; s.image.shape, s.annotations[0].keypoints.shape[1]
    ((96, 96, 3), 2)

Boxes are the extent of the object's full silhouette (not reduced by occluders) clipped to the
image, as COCO boxes clip at the border: so truncated keypoints lie outside their box.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import StrictFloat, StrictInt, model_validator

from geo_rs.config import Schema, setting, validate_config
from geo_rs.errors import UserError

# ----------------------------------------------------------------------------------------------
# Categories: templates in a unit object frame (x right, y down, extent about [-1, 1]).


@dataclass(frozen=True)
class Category:
    """One object category: keypoint names, 0-based skeleton pairs, per-keypoint OKS sigmas."""

    id: int
    name: str
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)


def _star_template() -> np.ndarray:
    angles_tip = -np.pi / 2 + np.arange(5) * 2 * np.pi / 5
    angles_in = angles_tip + np.pi / 5
    tips = np.stack([np.cos(angles_tip), np.sin(angles_tip)], 1)
    inner = 0.42 * np.stack([np.cos(angles_in), np.sin(angles_in)], 1)
    return np.concatenate([tips, inner]).astype(np.float64)


_TEMPLATES: dict[str, np.ndarray] = {
    "monitor": np.array([[-1.0, -0.65], [1.0, -0.65], [1.0, 0.65], [-1.0, 0.65]]),
    "chair": np.array([[-0.5, -1.0], [-0.5, 0.1], [0.6, 0.1], [0.6, 1.0], [-0.5, 1.0]]),
    "runway": np.array([[-0.3, -1.0], [0.3, -1.0], [0.8, 1.0], [-0.8, 1.0], [0.0, -1.0], [0.0, 1.0]]),
    "star": _star_template(),
    "airstrip": np.array([[-0.3, -1.0], [0.3, -1.0], [0.8, 1.0], [-0.8, 1.0], [0.0, -1.0], [0.0, 1.0],
                          [-0.55, 0.0], [0.55, 0.0]]),
}

CATEGORIES: tuple[Category, ...] = (
    Category(1, "monitor", ("top_left", "top_right", "bottom_right", "bottom_left"),
             ((0, 1), (1, 2), (2, 3), (3, 0)), (0.08,) * 4),
    Category(2, "chair", ("back_top", "seat_rear", "seat_front", "front_foot", "rear_foot"),
             ((0, 1), (1, 2), (2, 3), (1, 4)), (0.10,) * 5),
    Category(3, "runway", ("far_left", "far_right", "near_right", "near_left", "far_centre", "near_centre"),
             ((0, 4), (4, 1), (1, 2), (2, 5), (5, 3), (3, 0), (4, 5)), (0.08,) * 6),
    Category(4, "star", tuple(f"tip_{i}" for i in range(5)) + tuple(f"inner_{i}" for i in range(5)),
             ((0, 5), (5, 1), (1, 6), (6, 2), (2, 7), (7, 3), (3, 8), (8, 4), (4, 9), (9, 0)),
             (0.08,) * 10),
)

# Extra categories: generated only when a SynthConfig asks for their id (``category_ids=(5,)``); not
# part of the default layout, so models and datasets built on CATEGORIES are unchanged.
# ``airstrip`` (8 keypoints): the runway trapezoid plus the ends of a mid-length cross bar — the
# verification detector's category (configs/keypoint/verify_heatmap.yaml).
AIRSTRIP = Category(5, "airstrip", ("far_left", "far_right", "near_right", "near_left", "far_centre",
                                    "near_centre", "mid_left", "mid_right"),
                    ((0, 4), (4, 1), (1, 7), (7, 2), (2, 5), (5, 3), (3, 6), (6, 0), (4, 5), (6, 7)),
                    (0.08,) * 8)
EXTRA_CATEGORIES: tuple[Category, ...] = (AIRSTRIP,)
ALL_CATEGORIES: tuple[Category, ...] = CATEGORIES + EXTRA_CATEGORIES


def category_by_id(categories: tuple[Category, ...] | list[Category], category_id: int) -> Category:
    """The category with ``id == category_id``; :class:`UserError` if absent."""
    for c in categories:
        if c.id == category_id:
            return c
    raise UserError(f"unknown category_id {category_id}; known ids: {[c.id for c in categories]}")


# ----------------------------------------------------------------------------------------------
# Samples


@dataclass
class Annotation:
    """One object instance. ``keypoints (K, 2)`` float32 pixels, ``visibility (K,)`` COCO 0/1/2."""

    category_id: int
    keypoints: np.ndarray
    visibility: np.ndarray
    box: np.ndarray  # (4,) [x, y, w, h], continuous coordinates (pixel j spans [j-0.5, j+0.5))
    area: float

    @property
    def num_keypoints(self) -> int:
        """Number of labelled keypoints (COCO's ``num_keypoints``)."""
        return int((self.visibility > 0).sum())


@dataclass
class Sample:
    """One image: ``image (H, W, 3) float32 in [0, 1]`` and its annotations."""

    image: np.ndarray
    annotations: list[Annotation]
    image_id: int = 0
    file_name: str = ""


@dataclass
class KeypointData:
    """A list of samples plus the categories they use (what COCO JSON holds)."""

    samples: list[Sample]
    categories: tuple[Category, ...] = CATEGORIES

    def __len__(self) -> int:
        return len(self.samples)


class SynthConfig(Schema):
    """Generator settings (the ``data.synth`` section of a keypoint config). Rates are probabilities
    per instance unless stated.

    ``occlusion_rate`` is the chance an instance gets occluders placed over its keypoints;
    ``truncation_rate`` the chance its centre is pushed near the border; ``same_class_overlap_rate``
    the chance the next instance copies the category of the previous one and overlaps it.
    ``label_outside: false`` and large ``occluder_size`` make a COCO-like set: COCO labels no keypoint
    outside the image, and its occluders (people, furniture) hide much of the shape around a keypoint
    (see :data:`PRESETS`).
    """

    image_size: int = setting(128, "image side", "pixels", ge=16, le=4096)
    min_objects: int = setting(1, "fewest objects per image", "objects", ge=1)
    max_objects: int = setting(3, "most objects per image", "objects", ge=1, le=64)
    min_scale: float = setting(0.14, "smallest object half-extent", "fraction of the image side", gt=0, le=1)
    max_scale: float = setting(0.30, "largest object half-extent", "fraction of the image side", gt=0, le=1)
    max_rotation_deg: float = setting(25.0, "largest in-plane rotation (small enough that the 5-fold star "
                                      "stays unambiguous)", "degrees", ge=0, le=180)
    occlusion_rate: float = setting(0.5, "chance an instance gets occluders", "probability", ge=0, le=1)
    occluders_per_instance: int = setting(2, "most occluders per occluded instance", "occluders", ge=1, le=16)
    occluder_size: list[StrictFloat | StrictInt] = setting(
        [0.2, 0.45], "range of an occluder's half-size", "fraction of the object's half-extent", strict=False)
    occluder_spread: float = setting(0.15, "σ of an occluder's offset from the keypoint it covers",
                                     "fraction of the object's half-extent", ge=0)
    truncation_rate: float = setting(0.2, "chance an instance is pushed across the border", "probability",
                                     ge=0, le=1)
    same_class_overlap_rate: float = setting(0.3, "chance the next instance overlaps the previous one with "
                                             "the same category", "probability", ge=0, le=1)
    label_outside: bool = setting(True, "label keypoints outside the image (visibility 1); false: "
                                  "visibility 0, as COCO")
    num_distractors: list[StrictInt] = setting([1, 4], "range of keypoint-free shapes under the objects",
                                               "shapes", strict=False)
    category_ids: list[StrictInt] = setting([1, 2, 3, 4],
                                            "categories drawn (CATEGORIES ids; 5: airstrip)", strict=False)
    noise: float = setting(0.03, "σ of the pixel noise", "intensity (0..1)", ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.min_objects > self.max_objects:
            raise ValueError(f"needs min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if self.min_scale > self.max_scale:
            raise ValueError(f"needs min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        for name, lo in (("occluder_size", 0.0), ("num_distractors", 0)):
            v = getattr(self, name)
            if len(v) != 2 or not lo <= v[0] <= v[1] or (name == "occluder_size" and v[0] <= 0):
                raise ValueError(f"{name} must be a range [low, high] with {lo} < low <= high, got {v}")
        known = {c.id for c in ALL_CATEGORIES}
        bad = [c for c in self.category_ids if c not in known]
        if bad or not self.category_ids:
            raise ValueError(f"category_ids must be a non-empty subset of {sorted(known)}, "
                             f"got {list(self.category_ids)}")
        return self

    def validate(self) -> SynthConfig:
        """Re-check every field (after in-place edits); one :class:`UserError` naming the problem."""
        return validate_config(type(self), self.model_dump(), "synth config")

    @classmethod
    def from_dict(cls, d: dict) -> SynthConfig:
        """Validated config from a mapping; unknown keys and bad values are one :class:`UserError`."""
        if not isinstance(d, dict):
            raise UserError(f"synth config must be a mapping, got {type(d).__name__}")
        return validate_config(cls, d, "synth config")


PRESETS: dict[str, dict] = {
    # COCO labels no keypoint outside the image, and its occluders hide more of the shape around a
    # keypoint than the default set's small blobs.
    "coco-like": {"label_outside": False, "occluder_size": [0.45, 0.8], "occluder_spread": 0.1,
                  "occluders_per_instance": 2},
}


# ----------------------------------------------------------------------------------------------
# Rendering helpers (supersampled 2x, then box-averaged: anti-aliased edges give sub-pixel cues)

_SS = 2  # supersampling factor


@dataclass
class _Canvas:
    rgb: np.ndarray  # (S*H, S*W, 3) float64
    order: np.ndarray  # (S*H, S*W) int: draw index of the last thing painted there (-1 background)
    counter: int = 0
    extra: dict = field(default_factory=dict)

    def paint(self, mask: np.ndarray, colour: np.ndarray) -> int:
        self.counter += 1
        self.rgb[mask] = colour[mask] if colour.ndim == 3 else colour
        self.order[mask] = self.counter
        return self.counter


def _poly_mask(shape: tuple[int, int], xy: np.ndarray) -> np.ndarray:
    """Boolean hi-res mask of a polygon given in low-res pixel coordinates ``(P, 2)``."""
    hx = xy[:, 0] * _SS + (_SS - 1) / 2.0  # low-res pixel centre x -> hi-res pixel centre
    hy = xy[:, 1] * _SS + (_SS - 1) / 2.0
    from skimage.draw import polygon as raster_polygon  # here, not at import: `geo-rs --help` stays light

    rr, cc = raster_polygon(hy, hx, shape=shape)
    m = np.zeros(shape, bool)
    m[rr, cc] = True
    return m


def _bar(p: np.ndarray, q: np.ndarray, half_width: float) -> np.ndarray:
    """Quadrilateral of a thick segment p→q."""
    d = q - p
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * half_width
    return np.stack([p + n, q + n, q - n, p - n])


def _ellipse_poly(centre: np.ndarray, rx: float, ry: float, angle: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + centre


def _texture(rng: np.random.Generator, shape: tuple[int, int], base: np.ndarray) -> np.ndarray:
    """A (h, w, 3) fill: flat, stripes or blotchy noise around a base colour."""
    h, w = shape
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(base, (h, w, 3)).copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == 1:
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(4, 12) * _SS
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    else:
        coarse = rng.random((h // 8 + 2, w // 8 + 2))
        wave = np.kron(coarse, np.ones((8, 8)))[:h, :w]
    other = rng.random(3)
    amount = rng.uniform(0.15, 0.4)
    return base * (1 - amount * wave[..., None]) + other * amount * wave[..., None]


def _object_parts(name: str, kp: np.ndarray, scale: float) -> list[np.ndarray]:
    """Polygons (low-res pixel coordinates) that make up one object, drawn in order."""
    if name == "monitor":
        stand_top = (kp[2] + kp[3]) / 2
        down = (kp[3] - kp[0]) * 0.35
        stand = _bar(stand_top, stand_top + down, 0.08 * scale)
        screen_inset = kp + (kp.mean(0) - kp) * 0.12
        return [stand, kp, screen_inset]
    if name == "chair":
        hw = 0.12 * scale
        return [_bar(kp[a], kp[b], hw) for a, b in ((0, 1), (1, 2), (2, 3), (1, 4))]
    if name == "runway":
        return [kp[:4], _bar(kp[4] + (kp[5] - kp[4]) * 0.1, kp[5] - (kp[5] - kp[4]) * 0.1, 0.03 * scale)]
    if name == "airstrip":
        centre_line = _bar(kp[4] + (kp[5] - kp[4]) * 0.1, kp[5] - (kp[5] - kp[4]) * 0.1, 0.03 * scale)
        return [kp[:4], centre_line, _bar(kp[6], kp[7], 0.05 * scale)]
    if name == "star":
        ring = np.stack([kp[i // 2] if i % 2 == 0 else kp[5 + i // 2] for i in range(10)])
        return [ring]
    raise AssertionError(name)


def _pose(rng: np.random.Generator, cfg: SynthConfig, centre: np.ndarray, scale: float) -> np.ndarray:
    """A 2x3 similarity-ish map (rotation, mild anisotropy/shear) from template to pixels."""
    angle = np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    c, s = np.cos(angle), np.sin(angle)
    aniso = np.diag([rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)])
    shear = np.array([[1.0, rng.uniform(-0.15, 0.15)], [0.0, 1.0]])
    lin = scale * np.array([[c, -s], [s, c]]) @ shear @ aniso
    return np.concatenate([lin, centre[:, None]], 1)


def generate_sample(seed: int | np.random.Generator, config: SynthConfig | None = None,
                    image_id: int = 0) -> Sample:
    """Render one image with its annotations. Deterministic given ``seed`` (int or Generator)."""
    cfg = (config or SynthConfig()).validate()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    size = cfg.image_size
    hi = (size * _SS, size * _SS)

    # Background: a linear gradient between two colours plus fine noise.
    yy, xx = np.mgrid[0:hi[0], 0:hi[1]] / (hi[0] - 1)
    ang = rng.uniform(0, 2 * np.pi)
    t = (np.cos(ang) * xx + np.sin(ang) * yy)
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    c0, c1 = rng.random(3), rng.random(3)
    canvas = _Canvas(rgb=c0 * (1 - t[..., None]) + c1 * t[..., None], order=-np.ones(hi, np.int64))

    # Distractors: shapes without keypoints, under the objects.
    for _ in range(rng.integers(cfg.num_distractors[0], cfg.num_distractors[1] + 1)):
        centre = rng.uniform(0, size, 2)
        r = rng.uniform(0.05, 0.18) * size
        if rng.random() < 0.5:
            poly = _ellipse_poly(centre, r, r * rng.uniform(0.4, 1), rng.uniform(0, np.pi))
        else:
            n = rng.integers(3, 7)
            a = np.sort(rng.uniform(0, 2 * np.pi, n))
            poly = centre + r * np.stack([np.cos(a), np.sin(a)], 1) * rng.uniform(0.5, 1, (n, 1))
        m = _poly_mask(hi, poly)
        canvas.paint(m, _texture(rng, hi, rng.random(3)))

    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    instances: list[tuple[Category, np.ndarray, int, np.ndarray]] = []  # cat, kp, last draw idx, mask
    prev: tuple[Category, np.ndarray, float] | None = None
    for _ in range(n_obj):
        scale = rng.uniform(cfg.min_scale, cfg.max_scale) * size
        if prev is not None and rng.random() < cfg.same_class_overlap_rate:
            cat = prev[0]
            offset = rng.uniform(0.35, 0.8) * prev[2] * np.array([rng.choice([-1, 1]), rng.choice([-1, 1])])
            centre = prev[1] + offset * rng.random(2)
            scale = prev[2] * rng.uniform(0.8, 1.2)
        else:
            cat = category_by_id(ALL_CATEGORIES, int(rng.choice(cfg.category_ids)))
            if rng.random() < cfg.truncation_rate:
                # Centre within ~half an object of the border: part of it leaves the image.
                side = rng.integers(4)
                along = rng.uniform(0.2, 0.8) * size
                depth = rng.uniform(-0.3, 0.4) * scale
                centre = [np.array([depth, along]), np.array([size - 1 - depth, along]),
                          np.array([along, depth]), np.array([along, size - 1 - depth])][side]
            else:
                centre = rng.uniform(0.2 * size, 0.8 * size, 2)
        pose = _pose(rng, cfg, np.asarray(centre, float), scale)
        template = _TEMPLATES[cat.name]
        kp = template @ pose[:, :2].T + pose[:, 2]
        base = rng.random(3)
        full_mask = np.zeros(hi, bool)
        draw_idx = -1
        for j, part in enumerate(_object_parts(cat.name, kp, scale)):
            m = _poly_mask(hi, part)
            full_mask |= m
            colour = _texture(rng, hi, base if j != 2 else base * 0.4)  # monitor screen is darker
            draw_idx = canvas.paint(m, colour)
        instances.append((cat, kp, draw_idx, full_mask))
        prev = (cat, np.asarray(centre, float), scale)

        # Occluders on top of this instance (later instances may cover them again).
        if rng.random() < cfg.occlusion_rate:
            for _ in range(rng.integers(1, cfg.occluders_per_instance + 1)):
                target = kp[rng.integers(len(kp))]
                c = target + rng.normal(0, cfg.occluder_spread * scale, 2)
                rx, ry = rng.uniform(cfg.occluder_size[0], cfg.occluder_size[1], 2) * scale
                if rng.random() < 0.5:
                    poly = _ellipse_poly(c, rx, ry, rng.uniform(0, np.pi))
                else:
                    poly = np.array([[c[0] - rx, c[1] - ry], [c[0] + rx, c[1] - ry],
                                     [c[0] + rx, c[1] + ry], [c[0] - rx, c[1] + ry]])
                canvas.paint(_poly_mask(hi, poly), _texture(rng, hi, rng.random(3)))

    rgb = canvas.rgb.reshape(size, _SS, size, _SS, 3).mean((1, 3))
    rgb = np.clip(rgb + rng.normal(0, cfg.noise, rgb.shape), 0, 1).astype(np.float32)

    annotations = []
    for cat, kp, last_idx, mask in instances:
        inside = (kp[:, 0] >= -0.5) & (kp[:, 0] < size - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] < size - 0.5)
        vis = np.where(inside | cfg.label_outside, 1, 0).astype(np.int64)
        for k in np.flatnonzero(inside):
            # Occluded iff whatever was painted last at the keypoint's pixel came after this object.
            hx = int(np.clip(round(kp[k, 0] * _SS + (_SS - 1) / 2), 0, hi[1] - 1))
            hy = int(np.clip(round(kp[k, 1] * _SS + (_SS - 1) / 2), 0, hi[0] - 1))
            vis[k] = 1 if canvas.order[hy, hx] > last_idx else 2
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue  # completely outside the image: not an annotation
        x0, x1 = xs.min() / _SS - 0.5, (xs.max() + 1) / _SS - 0.5
        y0, y1 = ys.min() / _SS - 0.5, (ys.max() + 1) / _SS - 0.5
        annotations.append(Annotation(
            category_id=cat.id, keypoints=kp.astype(np.float32), visibility=vis,
            box=np.array([x0, y0, x1 - x0, y1 - y0], np.float32), area=float(mask.sum()) / _SS**2))
    return Sample(image=rgb, annotations=annotations, image_id=image_id, file_name=f"{image_id:06d}.png")


def generate_dataset(n: int, seed: int = 0, config: SynthConfig | None = None,
                     progress: bool = False) -> KeypointData:
    """``n`` samples; sample ``i`` is ``generate_sample(SeedSequence([seed, i]))`` (prefix-stable)."""
    if n < 0:
        raise UserError(f"number of images must be >= 0, got {n}")
    cfg = (config or SynthConfig()).validate()
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synth images", unit="img")
    samples = [generate_sample(np.random.default_rng([seed, i]), cfg, image_id=i) for i in it]
    return KeypointData(samples=samples, categories=CATEGORIES)
