"""Users' own captures: instant-ngp / nerfstudio ``transforms.json`` and COLMAP text models.

:func:`load_capture` reads any of the three layouts ``geo-rs nerf train`` accepts as ``data``:

* **Blender (NeRF-synthetic)** — a folder with ``transforms_{train,val,test}.json`` (:func:`load_blender`);
  kept in its own coordinates (``normalize: auto`` = none) with ``scene.json``'s box.
* **transforms.json** (instant-ngp / nerfstudio) — one file (or the folder holding it): ``fl_x, fl_y,
  cx, cy, w, h`` (or ``camera_angle_x`` / ``camera_angle_y``), OpenCV distortion ``k1 k2 k3 p1 p2``,
  each of which a frame may override; ``frames[i].file_path`` relative to the file, with its
  extension (``.png`` is tried when it has none); ``transform_matrix`` camera-to-world in OpenGL
  axes; optional ``aabb_scale``; nerfstudio's per-frame ``mask_path`` (0 = ignore the pixel) and
  split lists ``train_filenames`` / ``test_filenames``. Fisheye and equirectangular cameras are refused.
* **COLMAP text model** — a project folder with ``sparse/0/`` (or ``sparse/``, or the folder itself)
  holding ``cameras.txt`` and ``images.txt`` (``points3D.txt`` optional), images in ``images/`` (or
  the folder itself) and optional loss masks in ``masks/NAME.png``. Camera models SIMPLE_PINHOLE,
  PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV (and FULL_OPENCV without its rational terms). Poses are
  world-to-camera in OpenCV axes; they are turned into OpenGL camera-to-world.

Without a split in the capture, every ``test_every``-th frame (sorted by file name, starting with the
first) is a test view and the others train — the LLFF / mip-NeRF 360 convention.

Then the scene is normalised (:mod:`nerf.normalize`): ``normalize: auto`` uses COLMAP's sparse points
when there are any, else the cameras. A ``mesh_gt.ply`` next to the capture (capture coordinates) is
the ground truth for mesh metrics (a geo-rs extension, written by ``geo-rs nerf make-scene --format``).

Every problem with the files is one :class:`geo_rs.UserError` naming the file, line or frame and key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geo_rs import UserError
from geo_rs.checks import count

from .dataset import (
    DEFAULT_BOUNDS,
    Views,
    _load_image,
    _read_json,
    check_size,
    load_blender,
    load_mask,
    load_scene_info,
    read_frame,
    stack_views,
)
from .normalize import Normalization, Similarity, estimate_normalization

__all__ = ["Capture", "capture_format", "load_capture", "load_transforms_json", "load_colmap", "read_colmap",
           "split_indices"]


@dataclass
class Capture:
    """A capture ready to train on, in the training frame.

    Attributes:
        train, test: the views of each split (poses already normalised).
        bounds: the training box (min, max), training frame.
        gt_mesh: ground-truth mesh file, in *capture* coordinates, or None.
        normalization: capture → training frame (identity for the Blender layout).
        format: ``blender``, ``transforms.json`` or ``colmap``.
        source: the file or folder read.
        split: how train/test were chosen.
    """

    train: Views
    test: Views
    bounds: tuple
    gt_mesh: Path | None
    normalization: Normalization
    format: str
    source: Path
    split: str

    def report(self) -> dict:
        return {"format": self.format, "source": str(self.source), "split": self.split,
                "train_views": len(self.train), "test_views": len(self.test),
                "image_size": [self.train.width,
                               self.train.height], "normalization": self.normalization.to_dict()}


def capture_format(data: str | Path) -> tuple[str, Path]:
    """(format, path) of a data argument; ``UserError`` when it is none of the layouts."""
    p = Path(data)
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "transforms.json", p
        raise UserError(f"data {p}: expected a folder or a transforms.json file")
    if not p.is_dir():
        raise UserError(f"data {p}: not found")
    if (p / "transforms_train.json").is_file():
        return "blender", p
    if (p / "transforms.json").is_file():
        return "transforms.json", p / "transforms.json"
    model = _colmap_model_dir(p)
    if model is not None:
        return "colmap", p
    raise UserError(f"data {p}: no transforms_train.json (Blender layout), transforms.json (instant-ngp / "
                    "nerfstudio) or COLMAP text model (cameras.txt + images.txt in ., sparse/0 or sparse)")


# -- transforms.json ---------------------------------------------------------------------------------
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y",
                  "k1", "k2", "k3", "p1", "p2", "camera_model")
PERSPECTIVE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


def _number(where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def _frame_camera(meta: dict, frame: dict, size: tuple[int, int], where: str) -> tuple[list, list]:
    """``(fx, fy, cx, cy)`` and ``(k1, k2, p1, p2, k3)`` of one frame: its own keys over the file's."""
    cam = {k: meta[k] for k in INTRINSIC_KEYS if k in meta}
    cam.update({k: frame[k] for k in INTRINSIC_KEYS if k in frame})
    model = cam.get("camera_model", "OPENCV")
    if model not in PERSPECTIVE_MODELS:
        raise UserError(f"{where}: camera_model {model!r} is not supported (perspective models only: "
                        f"{', '.join(PERSPECTIVE_MODELS)}); undistort the images first")
    height, width = size
    for key, actual in (("w", width), ("h", height)):
        if key in cam and int(_number(where, key, cam[key])) != actual:
            raise UserError(f"{where}: {key} = {cam[key]} but the image is {width}x{height}")
    if "fl_x" in cam:
        fx = _number(where, "fl_x", cam["fl_x"])
    elif "camera_angle_x" in cam:
        ax = _number(where, "camera_angle_x", cam["camera_angle_x"])
        if not 0 < ax < math.pi:
            raise UserError(f"{where}: camera_angle_x must lie in (0, π) radians, got {ax}")
        fx = 0.5 * width / math.tan(0.5 * ax)
    else:
        raise UserError(f"{where}: no focal length (fl_x or camera_angle_x)")
    if "fl_y" in cam:
        fy = _number(where, "fl_y", cam["fl_y"])
    elif "camera_angle_y" in cam:
        fy = 0.5 * height / math.tan(0.5 * _number(where, "camera_angle_y", cam["camera_angle_y"]))
    else:
        fy = fx
    cx = _number(where, "cx", cam["cx"]) if "cx" in cam else 0.5 * width
    cy = _number(where, "cy", cam["cy"]) if "cy" in cam else 0.5 * height
    if not (fx > 0 and fy > 0):
        raise UserError(f"{where}: focal lengths must be positive, got fl_x {fx}, fl_y {fy}")
    dist = [_number(where, k, cam.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2", "k3")]
    return [fx, fy, cx, cy], dist


def load_transforms_json(path: str | Path, background: str = "white", half_res: bool = False,
                         test_every: int = 8) -> tuple[Views, list[int], list[int], str, float]:
    """All frames of an instant-ngp / nerfstudio ``transforms.json`` and the train/test indices.

    Returns ``(views, train_idx, test_idx, split_description, aabb_scale)``; poses in capture coordinates.
    """
    path = Path(path)
    meta = _read_json(path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: field 'frames' must be a non-empty list")
    aabb = _number(str(path), "aabb_scale", meta.get("aabb_scale", 1))
    if aabb <= 0:
        raise UserError(f"{path}: aabb_scale must be > 0, got {aabb}")
    root = path.parent
    images, mats, intr, dists, masks, names = [], [], [], [], [], []
    for i, fr in enumerate(frames):
        where, mat, img = read_frame(root, path, i, fr, images)
        mats.append(mat)
        k, d = _frame_camera(meta, fr, img.shape[:2], where)
        if "mask_path" in fr:
            if not isinstance(fr["mask_path"], str):
                raise UserError(f"{where}: mask_path must be a string, got {fr['mask_path']!r}")
            masks.append(load_mask(root / fr["mask_path"], where, img.shape[:2]))
        elif masks:
            raise UserError(f"{where}: no mask_path while earlier frames have one (all or none)")
        images.append(img)
        intr.append(k)
        dists.append(d)
        names.append(fr["file_path"])
    if masks and len(masks) != len(images):
        raise UserError(f"{path}: frame 0 has no mask_path while later frames have one (all or none)")
    views = stack_views(images, mats, intr, names, dists, masks, background, half_res, str(path))
    train, test, how = _split_from_lists(meta, names, path)
    if train is None:
        train, test, how = split_indices(names, test_every)
    return views, train, test, how, aabb


def _split_from_lists(meta: dict, names: list[str], path: Path):
    """nerfstudio's ``train_filenames`` / ``test_filenames`` (``val_filenames`` counts as test)."""
    if "train_filenames" not in meta:
        return None, None, None

    def norm(p):
        return str(Path(p)) if isinstance(p, str) else p

    index = {norm(n): i for i, n in enumerate(names)}
    lists = {}
    for key in ("train_filenames", "test_filenames", "val_filenames"):
        entries = meta.get(key, [])
        if not isinstance(entries, list):
            raise UserError(f"{path}: {key} must be a list of file paths")
        missing = [e for e in entries if norm(e) not in index]
        if missing:
            raise UserError(f"{path}: {key} names {missing[0]!r}, which is no frame's file_path")
        lists[key] = [index[norm(e)] for e in entries]
    test = lists["test_filenames"] or lists["val_filenames"]
    if not lists["train_filenames"] or not test:
        raise UserError(f"{path}: train_filenames and test_filenames (or val_filenames) must both be "
                        f"non-empty")
    return lists["train_filenames"], test, "train_filenames / test_filenames of the capture"


def split_indices(names: list[str], test_every: int = 8) -> tuple[list[int], list[int], str]:
    """Deterministic split: sort by name; every ``test_every``-th (0, k, 2k, …) is a test view."""
    count("test_every", test_every, minimum=2)
    if len(names) < 2:
        raise UserError(f"a capture needs at least 2 frames to split into train and test, got {len(names)}")
    order = sorted(range(len(names)), key=lambda i: names[i])
    test = [order[j] for j in range(0, len(order), test_every)]
    train = [order[j] for j in range(len(order)) if j % test_every]
    return train, test, f"every {test_every}th frame by file name is a test view (no split in the capture)"


# -- COLMAP ------------------------------------------------------------------------------------------
# model → (number of parameters, how to turn them into fx, fy, cx, cy, k1, k2, p1, p2, k3)
COLMAP_MODELS = {
    "SIMPLE_PINHOLE": (3, lambda p: [p[0], p[0], p[1], p[2], 0, 0, 0, 0, 0]),
    "PINHOLE": (4, lambda p: [p[0], p[1], p[2], p[3], 0, 0, 0, 0, 0]),
    "SIMPLE_RADIAL": (4, lambda p: [p[0], p[0], p[1], p[2], p[3], 0, 0, 0, 0]),
    "RADIAL": (5, lambda p: [p[0], p[0], p[1], p[2], p[3], p[4], 0, 0, 0]),
    "OPENCV": (8, lambda p: [*p[:8], 0]),
    "FULL_OPENCV": (12, lambda p: [*p[:8], p[8]]),  # k4..k6 (rational terms) must be 0
}


def _colmap_model_dir(root: Path) -> Path | None:
    for d in (root, root / "sparse" / "0", root / "sparse", root / "colmap" / "sparse" / "0"):
        if (d / "cameras.txt").is_file() and (d / "images.txt").is_file():
            return d
        if (d / "cameras.bin").is_file():
            raise UserError(f"{d}: COLMAP binary model; convert it to text first: colmap model_converter "
                            f"--input_path {d} --output_path {d} --output_type TXT")
    return None


def _data_lines(path: Path):
    """(line number, text) of every line, comments blanked (images.txt pairs need the empty lines)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    for n, line in enumerate(path.read_text().splitlines(), 1):
        yield n, "" if line.lstrip().startswith("#") else line.strip()


def _floats(where: str, tokens: list[str]) -> list[float]:
    try:
        vals = [float(t) for t in tokens]
    except ValueError:
        raise UserError(f"{where}: expected numbers, got {' '.join(tokens)!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise UserError(f"{where}: non-finite number in {' '.join(tokens)!r}")
    return vals


def _read_cameras(path: Path) -> dict[int, tuple[int, int, list[float]]]:
    cams = {}
    for n, line in _data_lines(path):
        if not line:
            continue
        tok, where = line.split(), f"{path}: line {n}"
        if len(tok) < 4 or tok[1] not in COLMAP_MODELS:
            model = tok[1] if len(tok) > 1 else "?"
            raise UserError(f"{where}: camera model {model!r} is not supported (perspective models: "
                            f"{', '.join(COLMAP_MODELS)}); undistort with colmap image_undistorter first")
        n_params, convert = COLMAP_MODELS[tok[1]]
        vals = _floats(where, tok[2:])
        if len(vals) != 2 + n_params:
            raise UserError(f"{where}: {tok[1]} needs {n_params} parameters, got {len(vals) - 2}")
        if tok[1] == "FULL_OPENCV" and any(vals[2 + 9:]):
            raise UserError(f"{where}: FULL_OPENCV rational terms k4..k6 are not supported (must be 0)")
        cams[int(tok[0])] = (int(vals[0]), int(vals[1]), convert(vals[2:]))
    if not cams:
        raise UserError(f"{path}: no cameras")
    return cams


def _qvec_to_rotation(q: list[float]) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _read_images(path: Path, cams: dict) -> list[tuple[str, int, np.ndarray]]:
    """(name, camera id, OpenGL camera-to-world) of every image. Lines come in pairs: the pose, then
    the 2-D points (possibly an empty line)."""
    out, expect_points = [], False
    for n, line in _data_lines(path):
        if expect_points:
            expect_points = False
            continue
        if not line:
            continue
        tok, where = line.split(), f"{path}: line {n}"
        if len(tok) < 10:
            raise UserError(f"{where}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, got {line!r}")
        vals = _floats(where, tok[1:9])
        if not np.linalg.norm(vals[:4]) > 0:
            raise UserError(f"{where}: zero quaternion")
        cam = int(tok[8]) if tok[8].isdigit() else -1
        if cam not in cams:
            raise UserError(f"{where}: CAMERA_ID {tok[8]} is not in cameras.txt")
        r = _qvec_to_rotation(vals[:4])  # world → camera, OpenCV axes
        c2w = np.eye(4)
        c2w[:3, :3] = r.T
        c2w[:3, 3] = -r.T @ np.asarray(vals[4:7])
        c2w[:3, 1:3] *= -1  # OpenCV (y down, z forward) → OpenGL (y up, looks down −z)
        out.append((" ".join(tok[9:]), cam, c2w))
        expect_points = True
    if not out:
        raise UserError(f"{path}: no images")
    return out


def _read_points(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    pts = []
    for n, line in _data_lines(path):
        if line:
            tok = line.split()
            pts.append(_floats(f"{path}: line {n}", tok[1:4]))
    return np.asarray(pts, dtype=np.float64).reshape(-1, 3) if pts else None


def read_colmap(root: str | Path) -> tuple[Path, dict, list, np.ndarray | None]:
    """(model folder, cameras, images, sparse points or None) of a COLMAP text model under ``root``."""
    root = Path(root)
    model = _colmap_model_dir(root)
    if model is None:
        raise UserError(f"{root}: no COLMAP text model (cameras.txt + images.txt in ., sparse/0 or sparse)")
    cams = _read_cameras(model / "cameras.txt")
    return model, cams, _read_images(model / "images.txt", cams), _read_points(model / "points3D.txt")


def load_colmap(root: str | Path, background: str = "white", half_res: bool = False,
                test_every: int = 8) -> tuple[Views, list[int], list[int], str, np.ndarray | None]:
    """All images of a COLMAP project, its split and its sparse points (capture coordinates)."""
    root = Path(root)
    model, cams, entries, points = read_colmap(root)
    image_dir = next((d for d in (root / "images", model.parent.parent / "images", root)
                      if (d / entries[0][0]).is_file()), root / "images")
    mask_dir = root / "masks"
    images, mats, intr, dists, masks, names = [], [], [], [], [], []
    for name, cam, c2w in sorted(entries, key=lambda e: e[0]):
        where = f"{model / 'images.txt'}: image {name!r}"
        img = _load_image(image_dir / name, where)
        check_size(images, img, where)
        width, height, params = cams[cam]
        if (width, height) != (img.shape[1], img.shape[0]):
            raise UserError(f"{where}: camera {cam} is {width}x{height} in cameras.txt but the image is "
                            f"{img.shape[1]}x{img.shape[0]}")
        if mask_dir.is_dir():
            mask_file = next((p for p in (mask_dir / f"{name}.png", mask_dir / name) if p.is_file()),
                             mask_dir / f"{name}.png")
            masks.append(load_mask(mask_file, where, img.shape[:2]))
        images.append(img)
        mats.append(c2w)
        intr.append(params[:4])
        dists.append(params[4:])
        names.append(name)
    views = stack_views(images, mats, intr, names, dists, masks, background, half_res, str(model))
    train, test, how = split_indices(names, test_every)
    return views, train, test, how, points


# -- one entry point ---------------------------------------------------------------------------------
def _blender_capture(root: Path, background: str, half_res: bool, normalize: str, bounds) -> Capture:
    if normalize not in ("auto", "none"):
        raise UserError(f"normalize: {normalize!r} is for captures (transforms.json, COLMAP); a "
                        f"Blender-layout "
                        f"scene ({root}) is used in its own coordinates (normalize: none)")
    info = load_scene_info(root)
    train = load_blender(root, "train", half_res, background=background)
    test = load_blender(root, "test", half_res, background=background)
    box = tuple(tuple(map(float, b)) for b in (bounds or info.bounds))
    norm = Normalization(Similarity(), box, "none",
                         ["Blender layout: own coordinates, box from "
                          "scene.json" if info.bounds != DEFAULT_BOUNDS
                          else "Blender layout: own coordinates, default box [-1.5, 1.5]^3"])
    return Capture(train, test, box, info.gt_mesh, norm, "blender", root, "transforms_train / "
                                                                          "transforms_test")


def load_capture(data: str | Path, background: str = "white", half_res: bool = False, normalize: str = "auto",
                 test_every: int = 8, bounds=None) -> Capture:
    """Read a Blender-layout scene, a ``transforms.json`` or a COLMAP text model; split; normalise.

    Args:
        data: the folder or file (see the module docstring for what is recognised).
        background: white | black | random (images with alpha are composited on it; random: on white,
            the trainer draws a colour per ray).
        half_res: halve the images and intrinsics.
        normalize: auto | none | cameras | points (auto: none for the Blender layout, points when COLMAP
            has sparse points, else cameras).
        test_every: split of a capture without one.
        bounds: training box override (training frame), else the normalisation's box.

    Example:
        >>> cap = load_capture("my_capture/transforms.json")          # doctest: +SKIP
        >>> cap.normalization.transform.scale, cap.bounds              # doctest: +SKIP
    """
    fmt, path = capture_format(data)
    if fmt == "blender":
        return _blender_capture(path, background, half_res, normalize, bounds)
    if fmt == "colmap":
        views, train, test, how, points = load_colmap(path, background, half_res, test_every)
        aabb = 1.0
    else:
        views, train, test, how, aabb = load_transforms_json(path, background, half_res, test_every)
        points = None
    method = normalize
    if method == "auto":
        method = "points" if points is not None and len(points) >= 8 else "cameras"
    if method == "none":
        box = bounds or DEFAULT_BOUNDS
        norm = Normalization(Similarity(), tuple(tuple(map(float, b)) for b in box), "none",
                             ["capture coordinates used as they are"])
    else:
        norm = estimate_normalization(views.c2w.double().numpy(), views.intrinsics.double().numpy(),
                                      views.height, views.width, method, points, aabb)
        if bounds is not None:
            norm.bounds = tuple(tuple(map(float, b)) for b in bounds)
            norm.notes.append("box from the config's bounds")
    views = views.transformed(norm.transform)
    gt = path.parent / "mesh_gt.ply" if path.is_file() else path / "mesh_gt.ply"
    return Capture(views.subset(train), views.subset(test), norm.bounds, gt if gt.is_file() else None, norm,
                   fmt,
                   path, how)
