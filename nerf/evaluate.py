"""Image metrics, test-view renders, depth maps, SDF cuts and mesh extraction with metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import geo_rs

from .render import render_image

__all__ = [
    "fill_cavities",
    "psnr",
    "ssim",
    "render_test_views",
    "extract_and_score",
    "save_png",
    "depth_to_rgb",
]


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
    from PIL import Image

    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)


def depth_to_rgb(
    depth: np.ndarray, opacity: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Colour-mapped depth (turbo), white where the ray hit nothing (opacity < ½)."""
    import matplotlib

    mask = opacity > 0.5
    if lo is None or hi is None:
        vals = depth[mask] if mask.any() else np.array([0.0, 1.0])
        lo, hi = float(vals.min()), float(vals.max())
    norm = np.clip((depth - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = matplotlib.colormaps["turbo"](norm)[..., :3]
    return np.where(mask[..., None], rgb, 1.0)


def render_test_views(
    field, views, bounds, step: float, out_dir: Path | None = None, n_views: int | None = None, estimator=None
) -> dict:
    """Render test views; return mean PSNR/SSIM and per-view PSNR. With ``out_dir``, write per view
    ``r_<i>.png`` (render), ``r_<i>_depth.png`` and a side-by-side ``r_<i>_compare.png``
    (GT | render | depth)."""
    n = len(views) if n_views is None else min(n_views, len(views))
    psnrs, ssims = [], []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        out = render_image(
            field, views.c2w[i], views.height, views.width, views.focal, bounds, step, estimator=estimator
        )
        rgb, gt = out["rgb"].cpu(), views.images[i]
        psnrs.append(psnr(rgb, gt))
        ssims.append(ssim(rgb, gt))
        if out_dir is not None:
            depth = depth_to_rgb(out["depth"].cpu().numpy(), out["opacity"].cpu().numpy())
            save_png(out_dir / f"r_{i}.png", rgb.numpy())
            save_png(out_dir / f"r_{i}_depth.png", depth)
            save_png(out_dir / f"r_{i}_compare.png", np.concatenate([gt.numpy(), rgb.numpy(), depth], 1))
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
) -> dict:
    """Marching cubes of the field's level grid (weak SDF for the smoothed model) → ``mesh.ply``;
    ``sdf_slices.png`` axis cuts; mesh metrics against the ground truth when given. With ``fill``
    (default) enclosed cavities are filled first (:func:`fill_cavities`) — for both models."""
    import trimesh

    grid = field.level_voxelgrid()
    report: dict = {}
    if fill:
        values, n_filled = fill_cavities(grid.values)
        grid = geo_rs.VoxelGrid(values, grid.origin, grid.voxel_size)
        report["cavity_voxels_filled"] = n_filled
    out_dir.mkdir(parents=True, exist_ok=True)
    geo_rs.plot_sdf_slices(grid, out_dir / "sdf_slices.png", title=title or None)
    try:
        mesh = geo_rs.extract_mesh(grid, 0.0)
    except Exception as exc:  # e.g. no zero crossing at all: an empty field early in training
        report["mesh_error"] = f"{type(exc).__name__}: {exc}"
        return report
    mesh.export(out_dir / "mesh.ply")
    report["mesh"] = str(out_dir / "mesh.ply")
    report["mesh_faces"] = int(len(mesh.faces))
    if gt_mesh_path is not None and Path(gt_mesh_path).exists():
        gt = trimesh.load(gt_mesh_path, force="mesh")
        metrics = geo_rs.mesh_metrics(mesh, gt, n_points=n_points)
        diag = float(np.linalg.norm(gt.bounds[1] - gt.bounds[0]))
        report["mesh_metrics"] = {k: float(v) for k, v in metrics.items() if np.isscalar(v)}
        report["gt_bbox_diagonal"] = diag
        report["chamfer_l1_over_diag"] = float(metrics["chamfer_l1"]) / diag
    return report
