"""Write rendered views as a user's capture would come: a ``transforms.json`` or a COLMAP text model.

Used by ``geo-rs nerf make-scene --format transforms|colmap`` to make captures whose truth we know
(camera model, poses, a similarity applied to the world, the ground-truth mesh): the loaders of
:mod:`nerf.capture` are tested on them end to end.

* ``transforms.json`` (instant-ngp / nerfstudio): ``fl_x fl_y cx cy w h k1 k2 p1 p2``,
  ``camera_model: OPENCV``, ``aabb_scale: 1``, frames ``images/r_000.png`` (RGBA) with OpenGL
  camera-to-world ``transform_matrix``.
* COLMAP: ``images/r_000.png`` (RGB on white, as photos have no alpha), ``sparse/0/cameras.txt``
  (one OPENCV camera), ``images.txt`` (world-to-camera quaternion + translation, OpenCV axes) and
  ``points3D.txt`` (points on the ground-truth surface, as SfM would triangulate them).

Both get ``mesh_gt.ply`` (the ground truth in the capture's coordinates) and ``capture_truth.json``
(the similarity applied to the world and the camera model, for tests and benches to undo).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from geo_rs.atomic import write_bytes, write_json, write_text

from .normalize import Similarity

__all__ = ["write_capture", "c2w_to_colmap"]


def _png(img: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


def c2w_to_colmap(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenGL camera-to-world (4, 4) → COLMAP's world-to-camera quaternion (qw, qx, qy, qz) and t."""
    from scipy.spatial.transform import Rotation

    cv = np.array(c2w, dtype=np.float64)
    cv[:3, 1:3] *= -1  # OpenGL → OpenCV camera axes
    r = cv[:3, :3].T
    t = -r @ cv[:3, 3]
    x, y, z, w = Rotation.from_matrix(r).as_quat()
    return np.array([w, x, y, z]), t


def write_capture(out: str | Path, fmt: str, c2ws: np.ndarray, rgba: np.ndarray, intrinsics, distortion,
                  gt_mesh, transform: Similarity, n_points: int = 2000, seed: int = 0) -> Path:
    """Write ``rgba`` (n, H, W, 4) views seen from ``c2ws`` (capture coordinates) in ``fmt``.

    ``intrinsics``: ``(fx, fy, cx, cy)``; ``distortion``: ``(k1, k2, p1, p2)`` or None; ``gt_mesh``: the
    ground truth in capture coordinates; ``transform``: the similarity that was applied to the world
    (recorded in ``capture_truth.json``). Returns the path to train on (file or folder).
    """
    out = Path(out)
    height, width = rgba.shape[1:3]
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    k1, k2, p1, p2 = (float(v) for v in (distortion if distortion is not None else (0, 0, 0, 0)))
    names = [f"r_{i:03d}.png" for i in range(len(c2ws))]
    white = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    for name, img, rgb in zip(names, rgba, white):
        write_bytes(out / "images" / name, _png(img, "RGBA") if fmt == "transforms" else _png(rgb, "RGB"))
    write_bytes(out / "mesh_gt.ply", gt_mesh.export(file_type="ply"))
    write_json(out / "capture_truth.json", {"capture_transform": transform.to_dict(), "format": fmt,
                                            "intrinsics": [fx, fy, cx, cy], "distortion": [k1, k2, p1, p2],
                                            "size": [width, height]}, indent=1)
    if fmt == "transforms":
        meta = {"camera_model": "OPENCV", "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": width, "h": height,
                "k1": k1, "k2": k2, "p1": p1, "p2": p2, "aabb_scale": 1,
                "frames": [{"file_path": f"images/{n}", "transform_matrix": c.tolist()} for n,
                           c in zip(names, c2ws)]}
        write_json(out / "transforms.json", meta, indent=1)
        return out / "transforms.json"
    sparse = out / "sparse" / "0"
    write_text(sparse / "cameras.txt", "# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
                                       f"1 OPENCV {width} {height} {fx!r} {fy!r} {cx!r} {cy!r} {k1!r} "
                                       f"{k2!r} {p1!r} {p2!r}\n")
    lines = ["# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, (name, c2w) in enumerate(zip(names, c2ws), 1):
        q, t = c2w_to_colmap(c2w)
        lines += [" ".join([str(i), *(repr(float(v)) for v in (*q, *t)), "1", name]), ""]
    write_text(sparse / "images.txt", "\n".join(lines) + "\n")
    pts = gt_mesh.sample(n_points, seed=seed) if n_points else np.zeros((0, 3))
    rows = [f"{i} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} 128 128 128 "
            f"0.5" for i, p in enumerate(np.asarray(pts), 1)]
    write_text(sparse / "points3D.txt", "# POINT3D_ID, X, Y, Z, R, G, B, ERROR, "
                                        "TRACK[]\n" + "\n".join(rows) + "\n")
    return out
