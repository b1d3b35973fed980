"""Seeded synthetic images of known 3D objects seen by a pinhole camera, with ground-truth pose and keypoints.

Two objects (one per image):

* ``runway`` (category 1, planar): a runway-like strip of ``runway_length × runway_width`` (metres) on the
  ground plane z = 0, x along the runway from its threshold, y to the left of an approaching aircraft.
  Six keypoints (the names of :mod:`keypoint.data.synth`'s runway): far_left, far_right, near_right,
  near_left, far_centre, near_centre. The camera is on an approach path: glide slope, distance to the
  threshold, lateral offset, aim point, roll — all drawn from :class:`PosedConfig` ranges. Sky above the
  horizon, textured grass below, a grey runway with a centre line and threshold bars.
* ``cuboid`` (category 2, non-planar): a box ``cuboid_size`` (x, y, z, metres) standing on z = 0, eight
  corner keypoints, faces in fixed distinct colours (so corners can be told apart), seen from a random
  azimuth/elevation; hidden corners are labelled ``v = 1``.

Conventions follow :mod:`keypoint.data.synth` / :mod:`keypoint.data.coco`: pixel centres at integers in
memory (COCO JSON adds 0.5), visibility 2/1/0, boxes ``[x, y, w, h]`` of the silhouette. Cameras follow
OpenCV (:mod:`geo_rs.pose`): ``Y = R X + t``, pixels ``K·Y/Y_z`` in the **in-memory** convention (pixel
centres at integers), so ``geo_rs.project_points(points_3d, (R, t), K)`` reproduces the keypoints exactly.

Files written by :func:`save_posed` (``directory/``)::

    annotations.json   # COCO keypoint JSON (keypoint.data.coco.to_coco_dict)
    cameras.json       # {"convention", "categories": [{id, name, keypoints, points_3d, units}],
                       #  "cameras": [{image_id, file_name, category_id, K, R, t}]}
    images/000000.png ...

Sample ``i`` depends only on ``(seed, i)`` (prefix-stable), like :func:`keypoint.data.synth.generate_dataset`.

Example::

    >>> from keypoint.data.posed import PosedConfig, generate_posed
    >>> data = generate_posed(2, seed=0, config=PosedConfig(image_size=64, objects=("runway",)))
    >>> data.cameras[0].K.shape, data.samples[0].annotations[0].keypoints.shape
    ((3, 3), (6, 2))
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geo_rs.atomic import write_bytes, write_json
from geo_rs.errors import UserError

from .coco import load_coco, to_coco_dict
from .synth import _SS, Annotation, Category, KeypointData, Sample, _poly_mask, _texture

__all__ = [
    "CAMERA_CONVENTION",
    "POSED_CATEGORIES",
    "Camera",
    "PosedConfig",
    "PosedData",
    "generate_posed",
    "load_posed",
    "object_points",
    "save_posed",
]

CAMERA_CONVENTION = "opencv: Y = R X + t, pixels = K Y / Y_z, pixel centres at integers (COCO JSON adds 0.5)"

POSED_CATEGORIES: tuple[Category, ...] = (
    Category(
        1,
        "runway",
        ("far_left", "far_right", "near_right", "near_left", "far_centre", "near_centre"),
        ((0, 4), (4, 1), (1, 2), (2, 5), (5, 3), (3, 0), (4, 5)),
        (0.08,) * 6,
    ),
    Category(
        2,
        "cuboid",
        tuple(f"corner_{i}" for i in range(8)),
        ((0, 1), (1, 3), (3, 2), (2, 0), (4, 5), (5, 7), (7, 6), (6, 4), (0, 4), (1, 5), (2, 6), (3, 7)),
        (0.08,) * 8,
    ),
)
_CATEGORY_ID = {"runway": 1, "cuboid": 2}


@dataclass
class PosedConfig:
    """Generator settings (angles in degrees, lengths in metres)."""

    image_size: int = 128
    fov_deg: float = 40.0  # horizontal and vertical field of view (square pixels, principal point centred)
    objects: tuple[str, ...] = ("runway", "cuboid")
    runway_length: float = 300.0
    runway_width: float = 45.0
    glide_slope_deg: tuple[float, float] = (3.0, 12.0)
    threshold_distance: tuple[float, float] = (120.0, 260.0)  # camera to runway threshold, along the path
    lateral_offset: tuple[float, float] = (-20.0, 20.0)
    aim_fraction: tuple[float, float] = (0.2, 0.5)  # aim point along the runway, fraction of its length
    roll_deg: float = 8.0
    cuboid_size: tuple[float, float, float] = (2.0, 1.2, 0.8)
    cuboid_distance: tuple[float, float] = (5.0, 8.0)
    cuboid_elevation_deg: tuple[float, float] = (15.0, 60.0)
    aim_jitter_deg: float = 4.0  # look-at direction noise, both objects
    margin: float = 4.0  # keypoints at least this many pixels inside the image
    noise: float = 0.02

    def validate(self) -> PosedConfig:
        if self.image_size < 32:
            raise UserError(f"PosedConfig.image_size must be >= 32, got {self.image_size}")
        if not 5.0 <= self.fov_deg <= 120.0:
            raise UserError(f"PosedConfig.fov_deg must be in [5, 120], got {self.fov_deg}")
        bad = [o for o in self.objects if o not in _CATEGORY_ID]
        if bad or not self.objects:
            raise UserError(
                f"PosedConfig.objects must be a non-empty subset of {sorted(_CATEGORY_ID)}, got "
                f"{list(self.objects)}"
            )
        for name in (
            "glide_slope_deg",
            "threshold_distance",
            "lateral_offset",
            "aim_fraction",
            "cuboid_distance",
            "cuboid_elevation_deg",
        ):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise UserError(f"PosedConfig.{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if min(self.runway_length, self.runway_width, *self.cuboid_size) <= 0:
            raise UserError("PosedConfig runway and cuboid sizes must be > 0")
        if not (0 < self.glide_slope_deg[0] and self.glide_slope_deg[1] < 80):
            raise UserError(f"PosedConfig.glide_slope_deg must lie in (0, 80), got {self.glide_slope_deg}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PosedConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(
                f"unknown posed config field(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}).validate()

    def intrinsics(self) -> np.ndarray:
        f = (self.image_size / 2) / np.tan(np.deg2rad(self.fov_deg) / 2)
        c = (self.image_size - 1) / 2
        return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


@dataclass
class Camera:
    """Ground truth of one image: intrinsics K (3, 3), pose R (3, 3), t (3,), and the object seen."""

    image_id: int
    file_name: str
    category_id: int
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def to_dict(self) -> dict:
        return {
            "image_id": self.image_id,
            "file_name": self.file_name,
            "category_id": self.category_id,
            "K": self.K.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
        }


@dataclass
class PosedData:
    """Samples (images + COCO-style annotations), their cameras and the 3D keypoints per category."""

    samples: list[Sample]
    cameras: list[Camera]
    config: PosedConfig = field(default_factory=PosedConfig)

    def __len__(self) -> int:
        return len(self.samples)

    def keypoint_data(self) -> KeypointData:
        return KeypointData(samples=self.samples, categories=POSED_CATEGORIES)


def object_points(name: str, config: PosedConfig | None = None) -> np.ndarray:
    """3D keypoints (K, 3) of ``"runway"`` or ``"cuboid"`` in metres, in the order of POSED_CATEGORIES."""
    cfg = config or PosedConfig()
    if name == "runway":
        L, half = cfg.runway_length, cfg.runway_width / 2
        return np.array(
            [[L, half, 0], [L, -half, 0], [0, -half, 0], [0, half, 0], [L, 0, 0], [0, 0, 0]], float
        )
    if name == "cuboid":
        a, b, c = (s / 2 for s in cfg.cuboid_size)
        return np.array([[x, y, z] for x in (-a, a) for y in (-b, b) for z in (0.0, 2 * c)], float)
    raise UserError(f"unknown posed object {name!r}; known: runway, cuboid")


# ------------------------------------------------------------------------------------------- cameras
def _look_at(centre: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """Rotation (rows: camera x right, y down, z forward, in world coordinates) looking at target."""
    fwd = target - centre
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, fwd])


def _jitter(rng: np.random.Generator, direction: np.ndarray, degrees: float) -> np.ndarray:
    return direction + np.tan(np.deg2rad(degrees)) * np.linalg.norm(direction) * rng.uniform(-1, 1, 3)


def _runway_camera(rng: np.random.Generator, cfg: PosedConfig) -> tuple[np.ndarray, np.ndarray]:
    glide = np.deg2rad(rng.uniform(*cfg.glide_slope_deg))
    dist = rng.uniform(*cfg.threshold_distance)
    centre = np.array([-dist * np.cos(glide), rng.uniform(*cfg.lateral_offset), dist * np.sin(glide)])
    aim = np.array([rng.uniform(*cfg.aim_fraction) * cfg.runway_length, 0.0, 0.0])
    target = centre + _jitter(rng, aim - centre, cfg.aim_jitter_deg)
    R = _look_at(centre, target, np.deg2rad(rng.uniform(-cfg.roll_deg, cfg.roll_deg)))
    return R, -R @ centre


def _cuboid_camera(rng: np.random.Generator, cfg: PosedConfig) -> tuple[np.ndarray, np.ndarray]:
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = np.deg2rad(rng.uniform(*cfg.cuboid_elevation_deg))
    dist = rng.uniform(*cfg.cuboid_distance)
    look = np.array([0.0, 0.0, cfg.cuboid_size[2] / 2])
    centre = look + dist * np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    )
    target = centre + _jitter(rng, look - centre, cfg.aim_jitter_deg)
    R = _look_at(centre, target, np.deg2rad(rng.uniform(-cfg.roll_deg, cfg.roll_deg)))
    return R, -R @ centre


def _project(
    points: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    cam = points @ R.T + t
    uvw = cam @ K.T
    return uvw[:, :2] / uvw[:, 2:3], cam[:, 2]


def _inside(uv: np.ndarray, depth: np.ndarray, size: int, margin: float) -> bool:
    return bool((depth > 0).all() and (uv >= margin).all() and (uv <= size - 1 - margin).all())


# ----------------------------------------------------------------------------------------- rendering
def _ground_and_sky(
    rng: np.random.Generator, K: np.ndarray, R: np.ndarray, hi: tuple[int, int]
) -> np.ndarray:
    """Hi-res RGB: sky where the viewing ray rises, textured grass where it hits the ground."""
    ys, xs = np.mgrid[0 : hi[0], 0 : hi[1]]
    pix = np.stack([(xs - (_SS - 1) / 2) / _SS, (ys - (_SS - 1) / 2) / _SS, np.ones_like(xs, float)], -1)
    rays = pix @ np.linalg.inv(K).T @ R  # camera rays in world coordinates (Rᵀ K⁻¹ p, row form)
    ground = rays[..., 2] < 0
    sky_top, sky_low = np.array([0.35, 0.55, 0.9]), np.array([0.75, 0.85, 0.95])
    tilt = np.clip(rays[..., 2] / (np.linalg.norm(rays, axis=-1) + 1e-12) * 4, 0, 1)[..., None]
    rgb = sky_low * (1 - tilt) + sky_top * tilt
    grass = _texture(rng, hi, np.array([0.25, 0.45, 0.18]) * rng.uniform(0.8, 1.2))
    rgb[ground] = grass[ground]
    return rgb


def _project_polygon(poly3: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    uv, _ = _project(poly3, K, R, t)
    return uv


def _render_runway(rng, cfg: PosedConfig, K, R, t) -> tuple[np.ndarray, np.ndarray]:
    size = cfg.image_size
    hi = (size * _SS, size * _SS)
    rgb = _ground_and_sky(rng, K, R, hi)
    L, half = cfg.runway_length, cfg.runway_width / 2
    strip = np.array([[0, half, 0], [L, half, 0], [L, -half, 0], [0, -half, 0]], float)
    body = _poly_mask(hi, _project_polygon(strip, K, R, t))
    tarmac = _texture(rng, hi, np.array([0.35, 0.35, 0.37]) * rng.uniform(0.8, 1.2))
    rgb[body] = tarmac[body]
    white = np.array([0.92, 0.92, 0.9])
    line = np.array([[0.06 * L, 0.6, 0], [0.94 * L, 0.6, 0], [0.94 * L, -0.6, 0], [0.06 * L, -0.6, 0]], float)
    rgb[_poly_mask(hi, _project_polygon(line, K, R, t))] = white
    for y0 in np.linspace(-0.8 * half, 0.8 * half, 6):  # threshold bars at the near end
        bar = np.array(
            [
                [0.01 * L, y0 + 1.5, 0],
                [0.05 * L, y0 + 1.5, 0],
                [0.05 * L, y0 - 1.5, 0],
                [0.01 * L, y0 - 1.5, 0],
            ],
            float,
        )
        rgb[_poly_mask(hi, _project_polygon(bar, K, R, t))] = white
    return rgb, body


_FACES = (
    (0, 1, 3, 2),
    (4, 6, 7, 5),
    (0, 4, 5, 1),
    (2, 3, 7, 6),
    (0, 2, 6, 4),
    (1, 5, 7, 3),
)  # −x..+x? see below
_FACE_COLOURS = np.array(
    [
        [0.85, 0.2, 0.2],
        [0.2, 0.75, 0.25],
        [0.2, 0.35, 0.85],
        [0.9, 0.8, 0.2],
        [0.75, 0.3, 0.8],
        [0.2, 0.8, 0.8],
    ]
)


def _render_cuboid(
    rng, cfg: PosedConfig, K, R, t, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = cfg.image_size
    hi = (size * _SS, size * _SS)
    yy, xx = np.mgrid[0 : hi[0], 0 : hi[1]] / (hi[0] - 1)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(ang) * xx + np.sin(ang) * yy
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-9)
    c0, c1 = rng.random(3) * 0.6 + 0.2, rng.random(3) * 0.6 + 0.2
    rgb = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    centre = -R.T @ t
    mask = np.zeros(hi, bool)
    visible = np.zeros(len(points), bool)
    faces = []
    for f, idx in enumerate(_FACES):
        quad = points[list(idx)]
        normal = np.cross(quad[1] - quad[0], quad[3] - quad[0])
        mid = quad.mean(0)
        if np.dot(normal, mid - points.mean(0)) < 0:
            normal = -normal  # outward
        if np.dot(normal, centre - mid) > 0:  # faces the camera: visible (convex object)
            depth = float((R @ mid + t)[2])
            faces.append((depth, f, idx))
            visible[list(idx)] = True
    for _, f, idx in sorted(faces, reverse=True):  # far faces first
        m = _poly_mask(hi, _project_polygon(points[list(idx)], K, R, t))
        shade = _texture(rng, hi, _FACE_COLOURS[f] * rng.uniform(0.85, 1.1))
        rgb[m] = shade[m]
        mask |= m
    return rgb, mask, visible


# ------------------------------------------------------------------------------------------ sampling
def _sample(rng: np.random.Generator, cfg: PosedConfig, image_id: int) -> tuple[Sample, Camera]:
    name = cfg.objects[int(rng.integers(len(cfg.objects)))]
    points = object_points(name, cfg)
    K = cfg.intrinsics()
    for _ in range(1000):
        R, t = _runway_camera(rng, cfg) if name == "runway" else _cuboid_camera(rng, cfg)
        uv, depth = _project(points, K, R, t)
        if _inside(uv, depth, cfg.image_size, cfg.margin):
            break
    else:
        raise UserError(
            f"posed config: no {name} view keeps every keypoint in the image in 1000 tries; "
            "widen fov_deg or change the distance ranges"
        )
    if name == "runway":
        hi_rgb, mask = _render_runway(rng, cfg, K, R, t)
        visibility = np.full(len(points), 2, np.int64)
    else:
        hi_rgb, mask, visible = _render_cuboid(rng, cfg, K, R, t, points)
        visibility = np.where(visible, 2, 1).astype(np.int64)
    size = cfg.image_size
    rgb = hi_rgb.reshape(size, _SS, size, _SS, 3).mean((1, 3))
    rgb = np.clip(rgb + rng.normal(0, cfg.noise, rgb.shape), 0, 1).astype(np.float32)
    ys, xs = np.nonzero(mask)
    x0, x1 = xs.min() / _SS - 0.5, (xs.max() + 1) / _SS - 0.5
    y0, y1 = ys.min() / _SS - 0.5, (ys.max() + 1) / _SS - 0.5
    ann = Annotation(
        category_id=_CATEGORY_ID[name],
        keypoints=uv.astype(np.float32),
        visibility=visibility,
        box=np.array([x0, y0, x1 - x0, y1 - y0], np.float32),
        area=float(mask.sum()) / _SS**2,
    )
    file_name = f"{image_id:06d}.png"
    sample = Sample(image=rgb, annotations=[ann], image_id=image_id, file_name=file_name)
    return sample, Camera(image_id, file_name, _CATEGORY_ID[name], K, R, t)


def generate_posed(
    n: int, seed: int = 0, config: PosedConfig | None = None, progress: bool = False
) -> PosedData:
    """``n`` posed images; image ``i`` is drawn from ``np.random.default_rng([seed, i])`` (prefix-stable)."""
    if n < 0:
        raise UserError(f"number of images must be >= 0, got {n}")
    cfg = (config or PosedConfig()).validate()
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="posed images", unit="img")
    pairs = [_sample(np.random.default_rng([seed, i]), cfg, i) for i in it]
    return PosedData([s for s, _ in pairs], [c for _, c in pairs], cfg)


# -------------------------------------------------------------------------------------------------- I/O
def save_posed(data: PosedData, directory: str | Path) -> Path:
    """Write images, ``annotations.json`` (COCO) and ``cameras.json`` atomically; returns the folder."""
    from PIL import Image

    directory = Path(directory)
    for s in data.samples:
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.round(s.image * 255), 0, 255).astype(np.uint8)).save(buf, format="PNG")
        write_bytes(directory / "images" / s.file_name, buf.getvalue())
    write_json(directory / "annotations.json", to_coco_dict(data.keypoint_data()))
    cats = [
        {
            "id": c.id,
            "name": c.name,
            "keypoints": list(c.keypoint_names),
            "points_3d": object_points(c.name, data.config).tolist(),
            "units": "m",
        }
        for c in POSED_CATEGORIES
    ]
    write_json(
        directory / "cameras.json",
        {
            "convention": CAMERA_CONVENTION,
            "config": data.config.to_dict(),
            "categories": cats,
            "cameras": [c.to_dict() for c in data.cameras],
        },
    )
    return directory


def load_posed(directory: str | Path, load_images: bool = True) -> tuple[KeypointData, list[Camera], dict]:
    """Read a folder written by :func:`save_posed`: (keypoint data, cameras in image order, {category id:
    3D keypoints (K, 3)})."""
    directory = Path(directory)
    data = load_coco(directory / "annotations.json", load_images=load_images)
    path = directory / "cameras.json"
    if not path.is_file():
        raise UserError(f"cameras file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    points = {}
    for i, cat in enumerate(doc.get("categories", [])):
        arr = np.asarray(cat.get("points_3d", []), float)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise UserError(f"{path}: categories[{i}].points_3d must be a (K, 3) list, got shape {arr.shape}")
        points[int(cat["id"])] = arr
    cameras = []
    for i, cam in enumerate(doc.get("cameras", [])):
        try:
            K, R, t = (np.asarray(cam[k], float) for k in ("K", "R", "t"))
            entry = Camera(int(cam["image_id"]), str(cam["file_name"]), int(cam["category_id"]), K, R, t)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: cameras[{i}] is malformed ({exc})") from None
        if K.shape != (3, 3) or R.shape != (3, 3) or t.shape != (3,):
            raise UserError(
                f"{path}: cameras[{i}] needs K (3, 3), R (3, 3), t (3,); got {K.shape}, {R.shape}, {t.shape}"
            )
        cameras.append(entry)
    by_id = {c.image_id: c for c in cameras}
    missing = [s.image_id for s in data.samples if s.image_id not in by_id]
    if missing:
        raise UserError(f"{path}: no camera for image id(s) {missing[:5]}")
    return data, [by_id[s.image_id] for s in data.samples], points
