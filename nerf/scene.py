"""Synthetic scenes in the NeRF-synthetic (Blender) layout, rendered by open3d ray casting.

``make_scene(source, out_dir, views=100, res=100)`` writes::

    out_dir/transforms_{train,val,test}.json   camera_angle_x + frames (file_path, transform_matrix)
    out_dir/{train,val,test}/r_<i>.png          RGBA, transparent background (composite on white)
    out_dir/mesh_gt.ply                         ground-truth surface for geometry metrics
    out_dir/scene.json                          scene box, source, camera radius (geo-rs extension)

Shading is Lambertian with a fixed key light and a fill light in world space (so colours are
view-independent), per-part albedo, 2×2 super-sampling for anti-aliased edges and alpha.

Built-in scenes are unions of primitives with analytic signed distances, so their ground-truth
surface is the exact union (marching cubes of the analytic SDF on a fine grid), free of the hidden
internal faces that a plain concatenation of parts would put into the metrics:

* ``lego`` — a colourful Lego-like model: base plate with studs, a block, an upright cylinder, a
  slanted arm, a lying cylinder, a thin fin (0.05 thick) and an open box (a concavity).
* ``sphere`` and ``torus`` — simple single-part scenes.

Any mesh file readable by trimesh also works; its connected components get palette colours unless
the file has its own face colours.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from geo_rs import UserError
from geo_rs.atomic import write_bytes, write_json
from geo_rs.checks import choice, count, finite_number, positive_finite
from geo_rs.config import check_memory

from .cameras import focal_from_angle, orbit_cameras, sphere_directions
from .normalize import Similarity

__all__ = [
    "Part",
    "BUILTIN_SCENES",
    "builtin_scene_names",
    "builtin_parts",
    "parts_sdf",
    "parts_mesh",
    "union_surface",
    "load_scene_mesh",
    "render_views",
    "make_scene",
    "make_capture",
    "similarity_from_args",
    "cast",
]

PALETTE = np.array(
    [
        [0.85, 0.15, 0.12],
        [0.98, 0.78, 0.10],
        [0.15, 0.40, 0.85],
        [0.20, 0.62, 0.25],
        [0.95, 0.50, 0.10],
        [0.55, 0.25, 0.70],
        [0.10, 0.70, 0.75],
        [0.90, 0.90, 0.88],
    ]
)
KEY_LIGHT = np.array([0.45, 0.30, 1.0]) / np.linalg.norm([0.45, 0.30, 1.0])
FILL_LIGHT = np.array([-0.5, -0.6, -0.35]) / np.linalg.norm([-0.5, -0.6, -0.35])


@dataclass
class Part:
    """One primitive: ``kind`` in box | cylinder | sphere | torus, placed by a rigid transform.

    ``size``: box full extents (3,); cylinder (radius, height) along local z; sphere (radius,);
    torus (major, minor) in the local xy plane.
    """

    kind: str
    size: tuple[float, ...]
    transform: np.ndarray
    color: tuple[float, float, float]

    def mesh(self) -> trimesh.Trimesh:
        if self.kind == "box":
            m = trimesh.creation.box(extents=self.size)
        elif self.kind == "cylinder":
            m = trimesh.creation.cylinder(radius=self.size[0], height=self.size[1], sections=48)
        elif self.kind == "sphere":
            m = trimesh.creation.icosphere(subdivisions=4, radius=self.size[0])
        elif self.kind == "torus":
            m = trimesh.creation.torus(self.size[0], self.size[1], major_sections=64, minor_sections=32)
        else:
            raise UserError(f"unknown part kind {self.kind!r} (box, cylinder, sphere, torus)")
        m.apply_transform(self.transform)
        m.visual.face_colors = np.tile(
            np.append(np.asarray(self.color) * 255, 255).astype(np.uint8), (len(m.faces), 1)
        )
        return m

    def sdf(self, points):
        """Exact signed distance (N,), **positive inside** (geo-rs convention); numpy or torch in,
        same kind out (evaluated in torch, float32 — fast on a loaded CPU)."""
        import torch

        as_numpy = isinstance(points, np.ndarray)
        pts = torch.as_tensor(points, dtype=torch.float32)
        inv = torch.as_tensor(np.linalg.inv(self.transform), dtype=torch.float32)
        q = pts @ inv[:3, :3].T + inv[:3, 3]
        if self.kind in ("box", "cylinder"):
            if self.kind == "box":
                d = q.abs() - 0.5 * torch.tensor(self.size, dtype=torch.float32)
            else:
                d = torch.stack([q[:, :2].norm(dim=1) - self.size[0], q[:, 2].abs() - 0.5 * self.size[1]], 1)
            out = d.clamp_min(0).norm(dim=1) + d.amax(1).clamp_max(0)
        elif self.kind == "sphere":
            out = q.norm(dim=1) - self.size[0]
        elif self.kind == "torus":
            out = torch.stack([q[:, :2].norm(dim=1) - self.size[0], q[:, 2]], 1).norm(dim=1) - self.size[1]
        else:
            raise UserError(f"unknown part kind {self.kind!r} (box, cylinder, sphere, torus)")
        return (-out).numpy() if as_numpy else -out


def _tf(x: float = 0, y: float = 0, z: float = 0, rot_axis=None, angle_deg: float = 0.0) -> np.ndarray:
    t = np.eye(4)
    if rot_axis is not None:
        t = trimesh.transformations.rotation_matrix(math.radians(angle_deg), rot_axis)
    t[:3, 3] = (x, y, z)
    return t


def _lego_parts() -> list[Part]:
    top = -0.30  # plate top
    red, yellow, blue, green, orange, purple, cyan, white = (
        tuple(c) for c in PALETTE[[0, 1, 2, 3, 4, 5, 6, 7]]
    )
    parts = [Part("box", (1.40, 1.00, 0.10), _tf(0, 0, top - 0.05), green)]
    for k, x in enumerate((-0.55, -0.40, -0.25, -0.10)):  # studs along the front edge
        parts.append(Part("cylinder", (0.05, 0.05), _tf(x, -0.40, top + 0.025), (white, yellow)[k % 2]))
    parts += [
        Part("box", (0.35, 0.35, 0.45), _tf(-0.40, 0.20, top + 0.225), yellow),  # block
        Part("box", (0.50, 0.05, 0.30), _tf(-0.40, 0.20, top + 0.45 + 0.15), blue),  # thin fin
        Part("cylinder", (0.15, 0.55), _tf(0.35, 0.20, top + 0.275), red),  # upright cylinder
        Part("box", (0.55, 0.10, 0.10), _tf(0.45, 0.05, top + 0.62, (0, 1, 0), -25), purple),  # slanted arm
        Part("cylinder", (0.08, 0.50), _tf(-0.30, -0.22, top + 0.08, (0, 1, 0), 90), cyan),  # lying cylinder
    ]
    # Open box (a concavity): floor + four walls 0.05 thick.
    cx, cy, w, d, h, t = 0.30, -0.25, 0.45, 0.35, 0.25, 0.05
    parts += [
        Part("box", (w, d, t), _tf(cx, cy, top + t / 2), orange),
        Part("box", (w, t, h), _tf(cx, cy - d / 2 + t / 2, top + h / 2), orange),
        Part("box", (w, t, h), _tf(cx, cy + d / 2 - t / 2, top + h / 2), orange),
        Part("box", (t, d, h), _tf(cx - w / 2 + t / 2, cy, top + h / 2), orange),
        Part("box", (t, d, h), _tf(cx + w / 2 - t / 2, cy, top + h / 2), orange),
    ]
    return parts


BUILTIN_SCENES = {
    "lego": _lego_parts,
    "sphere": lambda: [Part("sphere", (0.6,), _tf(), tuple(PALETTE[2]))],
    "torus": lambda: [Part("torus", (0.55, 0.2), _tf(0, 0, 0, (1, 0, 0), 30), tuple(PALETTE[4]))],
}


def builtin_scene_names() -> list[str]:
    """Names accepted as SOURCE by :func:`make_scene` besides mesh files."""
    return sorted(BUILTIN_SCENES)


def builtin_parts(name: str) -> list[Part]:
    if name not in BUILTIN_SCENES:
        raise UserError(f"unknown built-in scene {name!r}; choose one of {', '.join(builtin_scene_names())}")
    return BUILTIN_SCENES[name]()


def parts_sdf(parts: list[Part], points: np.ndarray) -> np.ndarray:
    """Signed distance of the union (positive inside): the max over parts (exact outside, a lower
    bound on the true distance inside where parts overlap — the zero set is exact either way)."""
    out = parts[0].sdf(points)
    for p in parts[1:]:
        out = np.maximum(out, p.sdf(points)) if isinstance(out, np.ndarray) else out.maximum(p.sdf(points))
    return out


def parts_mesh(parts: list[Part]) -> trimesh.Trimesh:
    """Coloured render mesh: the concatenation of the parts (overlaps are fine for ray casting)."""
    return trimesh.util.concatenate([p.mesh() for p in parts])


def union_surface(parts: list[Part], res: int = 128) -> trimesh.Trimesh:
    """Ground-truth surface of the union: marching cubes of the analytic SDF (``res`` along the
    longest axis)."""
    from skimage.measure import marching_cubes

    lo, hi = parts_mesh(parts).bounds
    pad = 0.05 * float((hi - lo).max())
    lo, hi = lo - pad, hi + pad
    step = float((hi - lo).max()) / (res - 1)
    axes = [np.arange(lo[i], hi[i] + 0.5 * step, step) for i in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    vol = parts_sdf(parts, pts).reshape(len(axes[0]), len(axes[1]), len(axes[2]))
    verts, faces, _, _ = marching_cubes(vol, 0.0, spacing=(step, step, step))
    # skimage orients faces for "inside = higher values" so normals already point outward here.
    mesh = trimesh.Trimesh(verts + lo, faces, process=True)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def load_scene_mesh(source: str | Path, gt_res: int = 128) -> tuple[trimesh.Trimesh, trimesh.Trimesh]:
    """(render mesh with face colours, ground-truth surface) for a built-in name or a mesh file.

    ``gt_res``: marching-cubes resolution of a built-in scene's ground truth (longest axis).
    """
    src = str(source)
    if src in BUILTIN_SCENES:
        parts = builtin_parts(src)
        return parts_mesh(parts), union_surface(parts, gt_res)
    path = Path(src)
    if not path.exists():
        raise UserError(
            f"scene source {src!r} is neither a mesh file nor a built-in scene "
            f"({', '.join(builtin_scene_names())})"
        )
    try:
        loaded = trimesh.load(path, force="mesh")
    except Exception as exc:  # trimesh raises many types for unreadable files
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise UserError(f"{path}: cannot read mesh: {reason}") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise UserError(f"{path}: no triangles found")
    if not np.isfinite(loaded.vertices).all():
        raise UserError(f"{path}: mesh has non-finite (NaN/inf) vertex coordinates")
    if float((loaded.bounds[1] - loaded.bounds[0]).max()) <= 0:
        raise UserError(f"{path}: mesh has zero extent (all vertices at one point)")
    mesh = loaded
    has_colors = mesh.visual.kind == "face" or mesh.visual.kind == "vertex"
    if not has_colors:
        comps = mesh.split(only_watertight=False)
        for k, c in enumerate(comps):
            c.visual.face_colors = np.append(PALETTE[k % len(PALETTE)] * 255, 255).astype(np.uint8)
        mesh = trimesh.util.concatenate(comps) if len(comps) > 1 else comps[0]
    return mesh, trimesh.Trimesh(mesh.vertices.copy(), mesh.faces.copy(), process=False)


def _raycaster(mesh: trimesh.Trimesh):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)),
    )
    return scene


def cast(mesh_or_scene, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
    """open3d ray casting: ``t_hit`` (inf on miss), ``primitive_ids``, ``primitive_normals`` (N, …)."""
    import open3d as o3d

    scene = _raycaster(mesh_or_scene) if isinstance(mesh_or_scene, trimesh.Trimesh) else mesh_or_scene
    rays = o3d.core.Tensor(np.concatenate([origins, dirs], -1).astype(np.float32))
    ans = scene.cast_rays(rays)
    return {k: ans[k].numpy() for k in ("t_hit", "primitive_ids", "primitive_normals")}


def shade(mesh: trimesh.Trimesh, hit: dict[str, np.ndarray], dirs: np.ndarray) -> np.ndarray:
    """Lambertian RGB (N, 3) for hits (miss rows are garbage; mask them with ``isfinite(t_hit)``)."""
    ok = np.isfinite(hit["t_hit"])
    ids = np.where(ok, hit["primitive_ids"], 0).astype(np.int64)
    albedo = np.asarray(mesh.visual.face_colors, dtype=np.float64)[ids, :3] / 255.0
    n = hit["primitive_normals"].astype(np.float64)
    n = np.where((np.sum(n * dirs, -1) > 0)[:, None], -n, n)  # face the viewer (two-sided)
    light = 0.30 + 0.60 * np.clip(n @ KEY_LIGHT, 0, None) + 0.25 * np.clip(n @ FILL_LIGHT, 0, None)
    return np.clip(albedo * light[:, None], 0, 1)


def render_views(
    mesh: trimesh.Trimesh, c2ws: np.ndarray, res: int, camera_angle_x: float | None = None,
    supersample: int = 2, height: int | None = None, intrinsics=None, distortion=None,
) -> tuple[np.ndarray, np.ndarray]:
    """RGBA images (n, H, W, 4) in [0, 1] (straight alpha) and depth (n, H, W) (inf = miss).

    ``res`` is the width W; ``height`` defaults to it. The camera is ``intrinsics`` ``(fx, fy, cx, cy)``
    (pixels) with optional OpenCV ``distortion`` (k1, k2, p1, p2, k3), or a centred pinhole of
    horizontal field of view ``camera_angle_x``. Rays come from :func:`nerf.cameras.pixel_rays` (the
    loader's convention), ``supersample``² per pixel. Depth is the distance along each pixel's central ray.
    """
    import torch

    from .cameras import pixel_rays

    width, height = res, height or res
    if intrinsics is None:
        focal = focal_from_angle(width, camera_angle_x)
        intrinsics = (focal, focal, 0.5 * width, 0.5 * height)
    k = torch.tensor(intrinsics, dtype=torch.float64)
    dist = None if distortion is None else torch.tensor(distortion, dtype=torch.float64)
    scene = _raycaster(mesh)
    ss = supersample
    rgba, depth = [], []
    for c2w in c2ws:
        pose = torch.tensor(c2w, dtype=torch.float64)
        o, d = (t.reshape(-1, 3).numpy() for t in pixel_rays(pose, height * ss, width * ss, k * ss,
                                                             distortion=dist))
        hit = cast(scene, o, d)
        ok = np.isfinite(hit["t_hit"])
        col = shade(mesh, hit, d) * ok[:, None]
        col = col.reshape(height, ss, width, ss, 3).sum((1, 3))
        cnt = ok.reshape(height, ss, width, ss).sum((1, 3)).astype(np.float64)
        rgb = np.where(cnt[..., None] > 0, col / np.maximum(cnt, 1)[..., None], 1.0)
        rgba.append(np.concatenate([rgb, (cnt / ss**2)[..., None]], -1))
        o, d = (t.reshape(-1, 3).numpy() for t in pixel_rays(pose, height, width, k, distortion=dist))
        depth.append(cast(scene, o, d)["t_hit"].reshape(height, width))
    return np.stack(rgba), np.stack(depth)


def _write_split(out: Path, split: str, c2ws: np.ndarray, rgba: np.ndarray, angle: float) -> None:
    from PIL import Image

    (out / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (c2w, img) in enumerate(zip(c2ws, rgba)):
        buf = io.BytesIO()
        Image.fromarray(np.round(img * 255).astype(np.uint8), "RGBA").save(buf, format="PNG")
        write_bytes(out / split / f"r_{i}.png", buf.getvalue())
        frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.0, "transform_matrix": c2w.tolist()})
    write_json(out / f"transforms_{split}.json", {"camera_angle_x": angle, "frames": frames}, indent=1)


def make_scene(
    source: str | Path,
    out_dir: str | Path,
    views: int = 100,
    res: int = 100,
    val_views: int = 10,
    test_views: int = 20,
    camera_angle_x: float = 0.6911112070083618,
    radius: float | None = None,
    hemisphere: bool = False,
    seed: int = 0,
    gt_res: int = 128,
) -> Path:
    """Render ``source`` (built-in name or mesh file) into a Blender-layout scene folder.

    The object is left where it is; cameras sit on a sphere around the bounding-box centre at
    ``radius`` (default: so the bounding sphere fills ~90 % of the field of view). Training views
    are a Fibonacci lattice (even coverage), val/test views are seeded random directions.

    Example:
        >>> make_scene("sphere", "/tmp/sphere", views=4, res=32, val_views=1, test_views=1)  # doctest: +SKIP
    """
    views, val_views, test_views = count("views", views), count("val_views", val_views, 0), \
        count("test_views", test_views)  # an empty test split would train with nothing to evaluate
    res, seed, gt_res = count("res", res, 8, 4096), count("seed", seed, 0), count("gt_res", gt_res, 8, 1024)
    angle = finite_number("camera_angle_x", camera_angle_x, "radians")
    if not 0 < angle < math.pi:
        raise UserError(f"camera_angle_x must lie in (0, π) radians, got {camera_angle_x!r}")
    if radius is not None:
        positive_finite("radius", radius, "world units")
    # one view at a time: the 2×2 super-sampled rays (float32) and the float64 shading of the hits
    check_memory(res * res * 4 * 100.0, f"res {res} (one {2 * res}×{2 * res} super-sampled view)")
    mesh, gt = load_scene_mesh(source, gt_res)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = mesh.bounds
    centre = 0.5 * (lo + hi)
    half_diag = 0.5 * float(np.linalg.norm(hi - lo))
    if radius is None:
        radius = half_diag / math.sin(0.5 * camera_angle_x * 0.9)
    splits = {
        "train": sphere_directions(views, "fibonacci", hemisphere=hemisphere),
        "val": sphere_directions(val_views, "random", seed=seed + 1, hemisphere=hemisphere),
        "test": sphere_directions(test_views, "random", seed=seed + 2, hemisphere=hemisphere),
    }
    for split, dirs in splits.items():
        c2ws = orbit_cameras(dirs, radius, centre)
        rgba, _ = (
            render_views(mesh, c2ws, res, camera_angle_x) if len(c2ws) else (np.zeros((0, res, res, 4)), None)
        )
        _write_split(out, split, c2ws, rgba, camera_angle_x)
    write_bytes(out / "mesh_gt.ply", gt.export(file_type="ply"))
    pad = 0.08 * float((hi - lo).max())
    info = {
        "source": str(source),
        "bounds": [(lo - pad).tolist(), (hi + pad).tolist()],
        "gt_mesh": "mesh_gt.ply",
        "camera_radius": radius,
        "resolution": res,
    }
    write_json(out / "scene.json", info, indent=1)
    return out


def similarity_from_args(values) -> Similarity:
    """``(scale, rx, ry, rz, tx, ty, tz)`` → :class:`~nerf.normalize.Similarity`: rotations in degrees
    about x, then y, then z (extrinsic), then scale, then translation."""
    from scipy.spatial.transform import Rotation

    vals = [finite_number(f"capture transform value {i + 1}", v) for i, v in enumerate(values)]
    if len(vals) != 7:
        raise UserError(f"capture transform needs 7 numbers (scale rx ry rz tx ty tz), got {len(vals)}")
    positive_finite("capture transform scale", vals[0])
    return Similarity(vals[0], Rotation.from_euler("xyz", vals[1:4], degrees=True).as_matrix(), vals[4:7])


def make_capture(
    source: str | Path,
    out_dir: str | Path,
    fmt: str = "transforms",
    views: int = 64,
    width: int = 100,
    height: int | None = None,
    cx: float | None = None,
    cy: float | None = None,
    camera_angle_x: float = 0.6911112070083618,
    distortion=None,
    transform: Similarity | None = None,
    hemisphere: bool = False,
    gt_res: int = 128,
    points: int = 2000,
) -> Path:
    """Render ``source`` as a user's capture: ``fmt`` = ``transforms`` (transforms.json) or ``colmap``
    (text model), no split (the loader makes one), any image size, principal point ``(cx, cy)``
    (pixels; default the centre) and OpenCV ``distortion`` (k1, k2, p1, p2), with the similarity
    ``transform`` applied to the whole world (poses, ground-truth mesh, sparse points) first.

    Cameras: a Fibonacci sphere around the object at the distance where its bounding sphere fills 90 %
    of the narrowest half-field of view (the principal point being off-centre). Returns the path to
    train on (``transforms.json`` or the COLMAP folder).

    Example:
        >>> make_capture("torus", "/tmp/cap", "colmap", views=8, width=40, cx=22.0)  # doctest: +SKIP
    """
    from .capture_write import write_capture

    choice("format", fmt, ("transforms", "colmap"))
    views, width = count("views", views, 2), count("width", width, 8, 4096)
    height = count("height", height, 8, 4096) if height is not None else width
    cx = 0.5 * width if cx is None else finite_number("cx", cx, "pixels")
    cy = 0.5 * height if cy is None else finite_number("cy", cy, "pixels")
    if not (0 < cx < width and 0 < cy < height):
        raise UserError(f"principal point ({cx}, {cy}) must lie inside the {width}x{height} image")
    angle = finite_number("camera_angle_x", camera_angle_x, "radians")
    if not 0 < angle < math.pi:
        raise UserError(f"camera_angle_x must lie in (0, π) radians, got {camera_angle_x!r}")
    check_memory(width * height * 4 * 100.0, f"a {width}x{height} view (super-sampled)")
    focal = focal_from_angle(width, angle)
    transform = transform or Similarity()
    mesh, gt = load_scene_mesh(source, gt_res)
    lo, hi = mesh.bounds
    half = math.atan(min(cx, width - cx, cy, height - cy) / focal)
    radius = 0.5 * float(np.linalg.norm(hi - lo)) / math.sin(0.9 * half)
    c2ws = orbit_cameras(sphere_directions(views, "fibonacci", hemisphere=hemisphere), radius,
                         0.5 * (lo + hi))
    intrinsics = (focal, focal, cx, cy)
    dist = None if distortion is None else [float(v) for v in distortion] + [0.0]
    rgba, _ = render_views(mesh, c2ws, width, height=height, intrinsics=intrinsics, distortion=dist)
    gt_capture = gt.copy()
    gt_capture.vertices = transform.apply(gt.vertices)
    return write_capture(out_dir, fmt, transform.apply_c2w(c2ws), rgba, intrinsics, distortion, gt_capture,
                         transform, n_points=points if fmt == "colmap" else 0)
