"""Volume rendering of a :class:`~nerf.field.RadianceField` with nerfacc, on a background colour
(white by default; one colour per ray for random-background training).

CPU (and default): the dense path — every ray gets ``n`` uniformly spaced samples (``step`` apart,
one random offset per ray when ``stratified``) inside the scene box, densities are turned into
weights by ``nerfacc.render_weight_from_density`` on the (n_rays, n_samples) layout and colours
are only evaluated where a sample's weight matters (> ``weight_eps``), as nerfacc's estimator does.

CUDA: ``OccGridEstimator`` (packed samples, empty-space skipping) + ``nerfacc.rendering``; pass an
``estimator`` made by :func:`make_estimator`. It needs nerfacc's CUDA extension
(:func:`nerfacc_cuda_available`); without it the trainer renders with the dense path on the GPU and
says so. ``scripts/gpu_check.sh`` runs this path; the CPU-only CI cannot.
"""

from __future__ import annotations

import math

import nerfacc
import torch

from .cameras import ray_box_intersect

__all__ = ["render_rays", "render_image", "make_estimator", "nerfacc_cuda_available"]


def _dense_samples(origins, dirs, bmin, bmax, step, stratified, generator):
    t_near, t_far, hit = ray_box_intersect(origins, dirs, bmin, bmax)
    length = torch.where(hit, t_far - t_near, torch.zeros_like(t_far))
    n = max(1, int(math.ceil(float(length.max()) / step)))
    if stratified:  # draw on the generator's device (CPU) so runs are reproducible on any device
        gdev = generator.device if generator is not None else origins.device
        offset = torch.rand(origins.shape[0], 1, generator=generator, device=gdev).to(origins.device)
    else:
        offset = torch.full((origins.shape[0], 1), 0.5, device=origins.device)
    k = torch.arange(n, device=origins.device, dtype=origins.dtype)[None]
    t_mid = t_near[:, None] + step * (k + offset)
    valid = hit[:, None] & (t_mid < t_far[:, None])
    return t_mid - 0.5 * step, t_mid + 0.5 * step, valid


def render_rays(
    field,
    grid: torch.Tensor,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    bounds,
    step: float,
    stratified: bool = False,
    generator: torch.Generator | None = None,
    background: float | torch.Tensor = 1.0,
    weight_eps: float = 1e-4,
    estimator=None,
) -> dict[str, torch.Tensor]:
    """Render rays (N, 3) through ``field`` whose per-step grid is ``grid`` (= ``field.prepare()``).

    ``background``: a grey level, an (3,) colour or an (N, 3) colour per ray (random backgrounds).
    Returns ``rgb`` (N, 3) composited on ``background``, ``depth`` (N,) expected distance along the
    (unit) ray of the visible surface (normalised by opacity; 0 where empty), ``opacity`` (N,).
    """
    bmin = torch.as_tensor(bounds[0], dtype=origins.dtype, device=origins.device)
    bmax = torch.as_tensor(bounds[1], dtype=origins.dtype, device=origins.device)
    if estimator is not None:
        return _render_estimator(
            field, grid, origins, dirs, bmin, bmax, step, stratified, background, estimator
        )
    t_starts, t_ends, valid = _dense_samples(origins, dirs, bmin, bmax, step, stratified, generator)
    t_mid = 0.5 * (t_starts + t_ends)
    n_rays, n_samples = t_mid.shape
    sigmas = torch.zeros(n_rays, n_samples, device=origins.device, dtype=origins.dtype)
    pts = origins[:, None] + dirs[:, None] * t_mid[..., None]
    sigmas = sigmas.masked_scatter(valid, field.density(grid, pts[valid]))
    weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigmas)
    use = weights.detach() > weight_eps
    ray_id = torch.arange(n_rays, device=origins.device)[:, None].expand(n_rays, n_samples)[use]
    colors = torch.zeros(n_rays, n_samples, 3, device=origins.device, dtype=origins.dtype)
    colors = colors.index_put((use.nonzero(as_tuple=True)), field.rgb(pts[use], dirs[ray_id]))
    rgb = nerfacc.accumulate_along_rays(weights, colors)
    opacity = nerfacc.accumulate_along_rays(weights, None)[:, 0]
    depth = nerfacc.accumulate_along_rays(weights, t_mid[..., None])[:, 0]
    return {
        "rgb": rgb + _background(background, origins) * (1 - opacity[:, None]),
        "depth": depth / opacity.clamp_min(1e-6),
        "opacity": opacity,
    }


def nerfacc_cuda_available() -> tuple[bool, str]:
    """Whether nerfacc's CUDA extension (needed by ``OccGridEstimator``) loads, and why not.

    nerfacc 0.5.3 ships no binary for our torch: the first call builds it with the CUDA toolkit
    (``nvcc`` and ``ninja``; a few minutes once, cached in torch's extension folder).
    """
    try:
        from nerfacc.cuda._backend import _C
    except Exception as exc:  # a failed build raises whatever the compiler run raised
        return False, " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    if _C is None:
        return False, "nerfacc found no CUDA toolkit (nvcc) to build its extension"
    return True, ""


def make_estimator(bounds, resolution: int = 128, device: torch.device | str | None = None):
    """nerfacc ``OccGridEstimator`` over the scene box. Its sampling needs CUDA (nerfacc 0.5.3), so the
    trainer only builds one on a CUDA device; ``device=None`` picks CUDA when present, else the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    aabb = torch.tensor([*bounds[0], *bounds[1]], dtype=torch.float32, device=device)
    return nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=resolution, levels=1).to(device)


def update_estimator(estimator, field, grid: torch.Tensor, step_index: int, step: float) -> None:
    """Refresh the estimator's occupancy from the current density (every 16 steps, nerfacc default)."""

    def occ_eval_fn(x):
        return field.density(grid.detach(), x) * step

    estimator.update_every_n_steps(step=step_index, occ_eval_fn=occ_eval_fn, occ_thre=1e-2)


def _render_estimator(field, grid, origins, dirs, bmin, bmax, step, stratified, background, estimator):
    t_min, t_max, _ = ray_box_intersect(origins, dirs, bmin, bmax)

    def sigma_fn(t_starts, t_ends, ray_indices):
        x = origins[ray_indices] + dirs[ray_indices] * (0.5 * (t_starts + t_ends))[:, None]
        return field.density(grid, x)

    def rgb_sigma_fn(t_starts, t_ends, ray_indices):
        x = origins[ray_indices] + dirs[ray_indices] * (0.5 * (t_starts + t_ends))[:, None]
        return field.rgb(x, dirs[ray_indices]), field.density(grid, x)

    ray_indices, t_starts, t_ends = estimator.sampling(
        origins,
        dirs,
        sigma_fn=sigma_fn,
        t_min=t_min,
        t_max=torch.maximum(t_max, t_min),
        render_step_size=step,
        stratified=stratified,
    )
    rgb, opacity, depth, _ = nerfacc.rendering(
        t_starts, t_ends, ray_indices, n_rays=origins.shape[0], rgb_sigma_fn=rgb_sigma_fn
    )
    rgb = rgb + _background(background, origins) * (1 - opacity)
    opacity = opacity[:, 0]
    return {"rgb": rgb, "depth": depth[:, 0], "opacity": opacity}  # nerfacc already normalises depth


def _background(background, origins: torch.Tensor) -> torch.Tensor:
    """(1, 1), (1, 3) or (N, 3) colour behind the rays."""
    bg = torch.as_tensor(background, dtype=origins.dtype, device=origins.device)
    return bg.reshape(1, 1) if bg.dim() == 0 else bg.reshape(-1, 3)


@torch.no_grad()
def render_image(
    field,
    c2w: torch.Tensor,
    height: int,
    width: int,
    intrinsics,
    bounds,
    step: float,
    chunk: int = 4096,
    background: float | torch.Tensor = 1.0,
    estimator=None,
    distortion: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Render one full image: ``rgb`` (H, W, 3), ``depth`` (H, W), ``opacity`` (H, W).

    ``intrinsics``: a focal length in pixels or ``(fx, fy, cx, cy)``; ``distortion``: OpenCV
    ``(k1, k2, p1, p2, k3)`` or None (see :func:`nerf.cameras.pixel_rays`).
    """
    from .cameras import pixel_rays

    dev = next(field.parameters()).device
    o, d = pixel_rays(c2w.to(dev), height, width, intrinsics, distortion=distortion)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    grid = field.prepare()
    outs = [
        render_rays(
            field,
            grid,
            o[i : i + chunk],
            d[i : i + chunk],
            bounds,
            step,
            background=background,
            estimator=estimator,
        )
        for i in range(0, o.shape[0], chunk)
    ]
    return {k: torch.cat([x[k] for x in outs]).reshape(height, width, *outs[0][k].shape[1:]) for k in outs[0]}
