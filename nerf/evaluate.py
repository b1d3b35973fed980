"""Image metrics, test-view renders, depth maps, SDF cuts and mesh extraction with metrics."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

import geo_rs
from geo_rs import UserError
from geo_rs.atomic import write_bytes

from .render import render_image

__all__ = [
    "fill_cavities",
    "psnr",
    "ssim",
    "render_test_views",
    "extract_and_score",
    "save_png",
    "save_compare",
    "depth_range",
    "depth_to_rgb",
]

DEPTH_CMAP = "turbo"


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1]."""
    mse = torch.mean((pred.clamp(0, 1) - target) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * float(np.log10(mse))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Structural similarity (scikit-image, Gaussian window as in the NeRF papers) of (H, W, 3) images."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            pred.clamp(0, 1).cpu().numpy(),
            target.cpu().numpy(),
            channel_axis=-1,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def save_png(path: str | Path, img: np.ndarray) -> None:
    """An (H, W, 3) image in [0, 1] as an 8-bit PNG, written atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def depth_range(depth: np.ndarray, opacity: np.ndarray) -> tuple[float, float]:
    """(min, max) depth over the pixels that hit something (opacity > ½); (0, 1) if none."""
    mask = opacity > 0.5
    if not mask.any():
        return 0.0, 1.0
    vals = depth[mask]
    return float(vals.min()), float(vals.max())


def depth_to_rgb(
    depth: np.ndarray, opacity: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Colour-mapped depth (turbo, ``lo`` → blue, ``hi`` → red), white where the ray hit nothing
    (opacity < ½). ``lo``/``hi`` default to :func:`depth_range`."""
    import matplotlib

    if lo is None or hi is None:
        lo, hi = depth_range(depth, opacity)
    norm = np.clip((depth - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = matplotlib.colormaps[DEPTH_CMAP](norm)[..., :3]
    return np.where((opacity > 0.5)[..., None], rgb, 1.0)


def save_compare(path: str | Path, gt: np.ndarray, render: np.ndarray, depth: np.ndarray,
                 opacity: np.ndarray, view_psnr: float | None = None, title: str | None = None) -> None:
    """Ground truth | render | depth side by side, labelled, with the depth colour bar (world units).

    Each panel is drawn at least 320 px wide with nearest-neighbour pixels, so a 100×100 test view
    can be judged pixel by pixel.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    lo, hi = depth_range(depth, opacity)
    h, w = gt.shape[:2]
    panel = 3.2 * max(1.0, w / h)  # inches at 100 dpi: ≥ 320 px a panel
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel + 1.2, panel * h / w + 0.9), dpi=100,
                             constrained_layout=True)
    render_title = "render" if view_psnr is None else f"render (PSNR {view_psnr:.2f} dB)"
    panels = ((gt, "ground truth"), (render, render_title),
              (depth_to_rgb(depth, opacity, lo, hi), "depth (white: no surface)"))
    for ax, (img, label) in zip(axes, panels):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), DEPTH_CMAP), ax=axes[2], fraction=0.046, pad=0.02)
    bar.set_label("depth along the ray (world units)")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def render_test_views(
    field, views, bounds, step: float, out_dir: Path | None = None, n_views: int | None = None, estimator=None
) -> dict:
    """Render test views (each with its own intrinsics and distortion, on ``views.background``); return
    mean PSNR/SSIM and per-view PSNR (over the pixels a mask keeps, if any). With ``out_dir``, write per view
    ``r_<i>.png`` (render), ``r_<i>_depth.png`` and a labelled side-by-side ``r_<i>_compare.png``
    (ground truth | render | depth with its colour bar)."""
    n = len(views) if n_views is None else min(n_views, len(views))
    psnrs, ssims = [], []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        dist = views.distortion[i] if views.distortion is not None else None
        out = render_image(
            field, views.c2w[i], views.height, views.width, views.intrinsics[i], bounds, step,
            estimator=estimator, background=torch.tensor(views.background), distortion=dist,
        )
        rgb, gt = out["rgb"].cpu(), views.images[i]
        if views.valid is not None:  # masked-out pixels: excluded from PSNR, perfect agreement in SSIM
            keep = views.valid[i]
            psnrs.append(psnr(rgb[keep], gt[keep]))
            ssims.append(ssim(rgb, torch.where(keep[..., None], gt, rgb.clamp(0, 1))))
        else:
            psnrs.append(psnr(rgb, gt))
            ssims.append(ssim(rgb, gt))
        if out_dir is not None:
            depth, opacity = out["depth"].cpu().numpy(), out["opacity"].cpu().numpy()
            save_png(out_dir / f"r_{i}.png", rgb.numpy())
            save_png(out_dir / f"r_{i}_depth.png", depth_to_rgb(depth, opacity))
            save_compare(out_dir / f"r_{i}_compare.png", gt.numpy(), rgb.numpy(), depth, opacity,
                         psnrs[-1], title=f"test view {i}")
    return {
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "psnr_per_view": psnrs,
        "n_views": n,
    }


def fill_cavities(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Make enclosed outside regions inside: every connected component of ``values <= 0`` (6-connected)
    that does not reach the grid border is a cavity no camera can see into (a solid's never-observed
    interior), so its values are replaced by their absolute value. Returns (values, cavity voxels).

    Example:
        >>> v = torch.ones(5, 5, 5); v[0] = v[-1] = v[:, 0] = v[:, -1] = v[..., 0] = v[..., -1] = -1
        >>> v[2, 2, 2] = -0.5                     # a one-voxel hole inside a solid
        >>> fill_cavities(v)[1]
        1
    """
    from scipy import ndimage

    neg = (values <= 0).cpu().numpy()
    labels, _ = ndimage.label(neg)
    border = np.unique(
        np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[..., [0, -1]].ravel()])
    )
    cavity = neg & ~np.isin(labels, border)
    if not cavity.any():
        return values, 0
    mask = torch.from_numpy(cavity).to(values.device)
    return torch.where(mask, values.abs(), values), int(cavity.sum())


def extract_and_score(
    field,
    out_dir: Path,
    gt_mesh_path: Path | None,
    title: str = "",
    n_points: int = 100_000,
    fill: bool = True,
    to_capture=None,
) -> dict:
    """Marching cubes of the field's level grid (weak SDF for the smoothed model) → ``mesh.ply``;
    ``sdf_slices.png`` axis cuts; mesh metrics against the ground truth when given. With ``fill``
    (default) enclosed cavities are filled first (:func:`fill_cavities`) — for both models.

    Returns a dict with ``outputs`` (files written, relative to ``out_dir``) and ``not_produced``
    (output → reason), e.g. ``{"mesh.ply": "no surface at level 0.0: ..."}``; a mesh left over from an
    earlier run in ``out_dir`` is removed when none is produced.

    ``to_capture``: the training → capture similarity (:class:`nerf.normalize.Similarity`) of a
    normalised capture. Then ``mesh_capture.ply`` (the mesh in the capture's coordinates) is written
    too, and the metrics compare it with ``gt_mesh_path``, which is in capture coordinates.
    """
    import trimesh

    grid = field.level_voxelgrid()
    report: dict = {"outputs": [], "not_produced": {}}
    if fill:
        values, n_filled = fill_cavities(grid.values)
        grid = geo_rs.VoxelGrid(values, grid.origin, grid.voxel_size)
        report["cavity_voxels_filled"] = n_filled
    out_dir.mkdir(parents=True, exist_ok=True)
    geo_rs.plot_sdf_slices(grid, out_dir / "sdf_slices.png", title=title or None)
    report["outputs"].append("sdf_slices.png")
    try:
        mesh = geo_rs.extract_mesh(grid, 0.0)
    except UserError as exc:  # no zero crossing at all (an empty field early in training), NaN values
        (out_dir / "mesh.ply").unlink(missing_ok=True)  # never leave a stale mesh from an earlier run
        report["mesh_error"] = str(exc)
        report["not_produced"]["mesh.ply"] = str(exc)
        report["not_produced"]["mesh_metrics"] = "no mesh"
        return report
    geo_rs.export_mesh(mesh, out_dir / "mesh.ply")
    report["outputs"].append("mesh.ply")
    report["mesh"] = str(out_dir / "mesh.ply")
    report["mesh_faces"] = int(len(mesh.faces))
    if to_capture is not None:
        mesh = trimesh.Trimesh(to_capture.apply(mesh.vertices), mesh.faces, process=False)
        geo_rs.export_mesh(mesh, out_dir / "mesh_capture.ply")
        report["outputs"].append("mesh_capture.ply")
        report["mesh_capture"] = str(out_dir / "mesh_capture.ply")
    if gt_mesh_path is not None and Path(gt_mesh_path).exists():
        gt = trimesh.load(gt_mesh_path, force="mesh")
        metrics = geo_rs.mesh_metrics(mesh, gt, n_points=n_points)
        diag = float(np.linalg.norm(gt.bounds[1] - gt.bounds[0]))
        report["mesh_metrics"] = {k: float(v) for k, v in metrics.items() if np.isscalar(v)}
        report["gt_bbox_diagonal"] = diag
        report["chamfer_l1_over_diag"] = float(metrics["chamfer_l1"]) / diag
    else:
        report["not_produced"]["mesh_metrics"] = (
            "no ground-truth mesh for this scene (no gt_mesh in scene.json, no mesh_gt.ply)")
    return report
