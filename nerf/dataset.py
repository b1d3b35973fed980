"""Loader for the NeRF-synthetic (Blender) layout.

``root/transforms_{split}.json`` holds ``camera_angle_x`` (horizontal field of view, radians) and
``frames``, each with ``file_path`` (relative to ``root``, usually without extension, e.g.
``./train/r_0``) and a 4×4 camera-to-world ``transform_matrix`` (OpenGL axes: camera looks down −z,
y up). Images are RGBA PNGs composited on the background (white by default: ``rgb·a + (1 − a)``).
:class:`Views` is shared by every layout (see :mod:`nerf.capture` for transforms.json and COLMAP):
per-view intrinsics ``(fx, fy, cx, cy)``, optional distortion, alpha and loss masks.

Optional geo-rs extension ``root/scene.json``: ``bounds`` (scene box) and ``gt_mesh`` (file name of
the ground-truth surface). Without it the box defaults to [−1.5, 1.5]³, which holds the original
Blender scenes.

Every problem with the files raises :class:`geo_rs.UserError` naming the file and frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geo_rs import UserError
from geo_rs.checks import count, finite_number, json_object

from .cameras import focal_from_angle

__all__ = ["Views", "SceneInfo", "load_blender", "load_scene_info", "DEFAULT_BOUNDS", "background_rgb",
           "stack_views", "check_pose", "load_mask", "read_frame"]

DEFAULT_BOUNDS = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))


@dataclass
class Views:
    """Posed images of one split.

    Attributes:
        images: (N, H, W, 3) float32 in [0, 1], composited on ``background`` where the image has alpha.
        c2w: (N, 4, 4) float32 camera-to-world (OpenGL axes).
        intrinsics: (N, 4) float32 ``(fx, fy, cx, cy)`` in pixels, per view.
        height, width: image size (the same for every view of a split).
        names: the frames' ``file_path`` entries.
        distortion: (N, 5) OpenCV ``(k1, k2, p1, p2, k3)`` per view, or None (a pinhole capture).
        alpha: (N, H, W) coverage in [0, 1] when the images had an alpha channel, else None
            (needed to train on random backgrounds).
        valid: (N, H, W) bool, False where a mask excludes the pixel from training and metrics, or None.
        background: the colour ``images`` are composited on: ``(r, g, b)`` in [0, 1].
    """

    images: torch.Tensor
    c2w: torch.Tensor
    intrinsics: torch.Tensor
    height: int
    width: int
    names: list[str]
    distortion: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def focal(self) -> float:
        """fx of the first view (the focal length of a Blender-layout split, where all views share it)."""
        return float(self.intrinsics[0, 0])

    def subset(self, index: list[int]) -> Views:
        """The views at ``index`` (a train/test split of one capture)."""
        def pick(t):
            return None if t is None else t[index]

        return Views(self.images[index], self.c2w[index], self.intrinsics[index], self.height, self.width,
                     [self.names[i] for i in index], pick(self.distortion), pick(self.alpha),
                     pick(self.valid), self.background)

    def transformed(self, sim) -> Views:
        """The same views with camera poses mapped by a similarity ``sim``
        (:class:`nerf.normalize.Similarity`)."""
        c2w = torch.as_tensor(sim.apply_c2w(self.c2w.double().numpy()), dtype=torch.float32)
        return Views(self.images, c2w, self.intrinsics, self.height, self.width, self.names, self.distortion,
                     self.alpha, self.valid, self.background)


@dataclass
class SceneInfo:
    """Scene box (min, max) and, when known, the ground-truth mesh path."""

    bounds: tuple[tuple[float, ...], tuple[float, ...]]
    gt_mesh: Path | None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return json_object(path)


# A camera-to-world rotation R must satisfy RᵀR = I and det R = +1. Blender writes them to ~1e-7;
# 1e-3 accepts any float32 round trip and refuses scaled, sheared, mirrored or all-zero matrices.
RIGID_TOL = 1e-3


def _check_rigid(rot: np.ndarray, where: str) -> None:
    """Refuse a pose whose 3×3 part is not a rotation: rays from it would be silently wrong."""
    err = float(np.abs(rot.T @ rot - np.eye(3)).max())
    det = float(np.linalg.det(rot))
    if err > RIGID_TOL or det <= 0:
        raise UserError(
            f"{where}: transform_matrix is not a rigid camera pose (its 3x3 part must be a rotation: "
            f"max |RᵀR − I| = {err:.3g}, det = {det:.3g}); degenerate, scaled or mirrored poses are refused"
        )


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".bmp", ".tif", ".tiff", ".webp")


def _image_path(root: Path, file_path: str) -> Path:
    p = root / file_path
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return p
    return p.with_name(p.name + ".png")


def _load_image(path: Path, where: str) -> np.ndarray:
    """(H, W, 4) float32 RGBA in [0, 1]; an image without alpha gets alpha = 1 everywhere."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"{where}: image not found: {path}")
    try:
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{where}: cannot read image {path}: {exc}") from exc
    if not has_alpha:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), np.nan, np.float32)], -1)  # NaN: no alpha
    return arr


def load_mask(path: Path, where: str, shape: tuple[int, int]) -> np.ndarray:
    """A loss mask (nerfstudio / COLMAP convention): (H, W) bool, False (pixel value 0) = ignore."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"{where}: mask not found: {path}")
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L")) > 0
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{where}: cannot read mask {path}: {exc}") from exc
    if mask.shape != shape:
        raise UserError(f"{where}: mask {path} is {mask.shape[1]}x{mask.shape[0]}, the image "
                        f"{shape[1]}x{shape[0]}")
    return mask


BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def background_rgb(background: str) -> tuple[float, float, float]:
    """The fixed colour of a ``background`` setting (``random`` is evaluated on white)."""
    return BACKGROUNDS.get(background, (1.0, 1.0, 1.0))


def stack_views(images: list[np.ndarray], mats: list[np.ndarray], intr: list[list[float]], names: list[str],
                dists: list[list[float]] | None, masks: list[np.ndarray] | None, background: str,
                half_res: bool, where: str) -> Views:
    """Assemble loaded frames into :class:`Views`: composite on the background, optionally halve.

    ``images``: RGBA (H, W, 4) arrays whose alpha is NaN where the file had none.
    """
    rgba = torch.from_numpy(np.stack(images))
    has_alpha = not bool(torch.isnan(rgba[..., 3]).any())
    alpha = rgba[..., 3] if has_alpha else torch.ones(rgba.shape[:3])
    bg = torch.tensor(background_rgb(background))
    rgb = rgba[..., :3] * alpha[..., None] + bg * (1 - alpha[..., None])  # straight alpha → composite
    valid = torch.from_numpy(np.stack(masks)) if masks else None
    k = torch.tensor(intr, dtype=torch.float64)
    height, width = rgb.shape[1:3]
    if half_res:
        if height < 2 or width < 2:
            raise UserError(f"{where}: images of {width}x{height} are too small for half_res")
        def pool(t):
            return torch.nn.functional.avg_pool2d(t.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).contiguous()
        # average premultiplied colour and coverage, then composite again: exact for the 2×2 area
        pre = pool(torch.cat([rgba[..., :3] * alpha[..., None], alpha[..., None]], -1))
        alpha = pre[..., 3]
        rgb = pre[..., :3] + bg * (1 - alpha[..., None])
        if valid is not None:
            valid = pool(valid[..., None].float())[..., 0] >= 1.0  # a half-res pixel is valid if all 4 were
        h2, w2 = height // 2, width // 2
        k = k * torch.tensor([w2 / width, h2 / height, w2 / width, h2 / height], dtype=torch.float64)
        height, width = h2, w2
    dist = torch.tensor(dists, dtype=torch.float32) if dists is not None else None
    if dist is not None and not bool(dist.abs().amax() > 0):
        dist = None
    return Views(rgb.float(), torch.tensor(np.stack(mats), dtype=torch.float32), k.float(), height, width,
                 names, dist, alpha.float() if has_alpha else None, valid, background_rgb(background))


def check_pose(mat, where: str) -> np.ndarray:
    """A 4×4 rigid camera-to-world matrix, or one ``UserError`` line naming ``where``."""
    try:
        mat = np.asarray(mat, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: transform_matrix is not a numeric 4x4 matrix") from exc
    if mat.shape != (4, 4):
        raise UserError(f"{where}: transform_matrix must be 4x4, got shape {list(mat.shape)}")
    if not np.isfinite(mat).all():
        raise UserError(f"{where}: transform_matrix has non-finite entries")
    if not np.allclose(mat[3], [0, 0, 0, 1], atol=1e-4):
        raise UserError(f"{where}: transform_matrix last row must be [0, 0, 0, 1], got {mat[3].tolist()}")
    _check_rigid(mat[:3, :3], where)
    return mat


def check_size(images: list[np.ndarray], img: np.ndarray, where: str) -> None:
    if images and img.shape[:2] != images[0].shape[:2]:
        raise UserError(
            f"{where}: image size {img.shape[1]}x{img.shape[0]} differs from the first frame's "
            f"{images[0].shape[1]}x{images[0].shape[0]} (one image size per capture)"
        )


def read_frame(root: Path, path: Path, i: int, fr, images: list) -> tuple[str, np.ndarray, np.ndarray]:
    """Frame ``i`` of a transforms file: checked entries, its pose and RGBA image (same size as
    ``images`` so far). Returns ``(where, c2w, image)``; ``where`` names the file and frame for errors."""
    where = f"{path}: frame {i}"
    if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
        raise UserError(f"{where}: needs 'file_path' and 'transform_matrix'")
    if not isinstance(fr["file_path"], str) or not fr["file_path"]:
        raise UserError(f"{where}: file_path must be a non-empty string, got {fr['file_path']!r}")
    where = f"{path}: frame {i} ({fr['file_path']!r})"
    mat = check_pose(fr["transform_matrix"], where)
    img = _load_image(_image_path(root, fr["file_path"]), where)
    check_size(images, img, where)
    return where, mat, img


def load_blender(
    root: str | Path, split: str = "train", half_res: bool = False, max_views: int | None = None,
    background: str = "white",
) -> Views:
    """Load one split of a Blender-layout scene.

    Args:
        root: folder holding ``transforms_{split}.json``.
        split: train | val | test.
        half_res: halve width and height (2×2 area average of the premultiplied colours) and intrinsics.
        max_views: keep the first ``max_views`` frames only.
        background: white | black | random — the colour RGBA images are composited on (random:
            white here; the trainer draws random colours per ray from ``Views.alpha``).

    Example:
        >>> views = load_blender("runs/scene_lego", "test")   # doctest: +SKIP
        >>> views.images.shape                                  # doctest: +SKIP
        torch.Size([20, 100, 100, 3])
    """
    if not isinstance(half_res, bool):
        raise UserError(f"half_res must be true or false, got {half_res!r}")
    root = Path(root)
    path = root / f"transforms_{split}.json"
    meta = _read_json(path)
    if "camera_angle_x" not in meta:
        raise UserError(f"{path}: missing field 'camera_angle_x'")
    angle = finite_number(f"{path}: camera_angle_x", meta["camera_angle_x"], "radians")
    if not (0 < angle < math.pi):
        raise UserError(f"{path}: camera_angle_x must lie in (0, π) radians, got {angle}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: field 'frames' must be a non-empty list")
    if max_views is not None:
        frames = frames[: count("max_views", max_views)]
    images, mats, names = [], [], []
    for i, fr in enumerate(frames):
        _, mat, img = read_frame(root, path, i, fr, images)
        images.append(img)
        mats.append(mat)
        names.append(str(fr["file_path"]))
    height, width = images[0].shape[:2]
    focal = focal_from_angle(width, angle)
    intr = [[focal, focal, 0.5 * width, 0.5 * height]] * len(images)
    return stack_views(images, mats, intr, names, None, None, background, half_res, str(path))


def load_scene_info(root: str | Path) -> SceneInfo:
    """Scene box and ground-truth mesh from ``scene.json`` (defaults when absent)."""
    root = Path(root)
    path = root / "scene.json"
    if not path.exists():
        gt = root / "mesh_gt.ply"
        return SceneInfo(DEFAULT_BOUNDS, gt if gt.exists() else None)
    info = _read_json(path)
    try:
        b = np.asarray(info.get("bounds", DEFAULT_BOUNDS), dtype=np.float64)
    except (TypeError, ValueError):
        b = np.zeros(0)
    if b.shape != (2, 3) or not np.isfinite(b).all() or not np.all(b[1] > b[0]):
        raise UserError(f"{path}: 'bounds' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min, "
                        f"got {info.get('bounds')!r}")
    gt = info.get("gt_mesh")
    if gt is not None and not isinstance(gt, str):
        raise UserError(f"{path}: 'gt_mesh' must be a file name, got {gt!r}")
    gt_path = (root / gt) if gt else None
    if gt_path is not None and not gt_path.exists():
        raise UserError(f"{path}: gt_mesh {gt_path} not found")
    return SceneInfo((tuple(b[0].tolist()), tuple(b[1].tolist())), gt_path)
