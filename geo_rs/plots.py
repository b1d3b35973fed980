"""Figures: axis cuts of a (weak) SDF grid with the zero level drawn, like the paper's Figure 3."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .atomic import write_bytes
from .checks import count
from .grid import VoxelGrid

__all__ = ["plot_sdf_slices"]


def plot_sdf_slices(grid: VoxelGrid, path: str | Path, title: str | None = None, level: float = 0.0,
                    index: tuple[int, int, int] | None = None) -> Path:
    """Save three axis cuts (x = c, y = c, z = c through the centre, or ``index``) of ``grid``.

    Colours: diverging map symmetric about ``level`` (red inside / positive, blue outside); the
    ``level`` contour is drawn in black. Axes are in world units. Returns the written path (PNG).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    vol = grid.values.detach().cpu().double().numpy()
    X, Y, Z = vol.shape
    ci, cj, ck = index if index is not None else (X // 2, Y // 2, Z // 2)
    for name, i, n in zip("xyz", (ci, cj, ck), vol.shape):
        count(f"index ({name})", i, minimum=0, maximum=n - 1)
    o = grid.origin.detach().cpu().double().numpy()
    h = grid.voxel_size
    ax_vals = [o[a] + h * np.arange(n) for a, n in enumerate(vol.shape)]
    names = "xyz"
    cuts = [  # (2-D array indexed [u, v], u-axis, v-axis, label)
        (vol[ci, :, :], 1, 2, f"x = {ax_vals[0][ci]:.3g}"),
        (vol[:, cj, :], 0, 2, f"y = {ax_vals[1][cj]:.3g}"),
        (vol[:, :, ck], 0, 1, f"z = {ax_vals[2][ck]:.3g}"),
    ]
    finite = vol[np.isfinite(vol)]
    vmax = float(np.max(np.abs(finite - level))) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), constrained_layout=True)
    for ax, (sl, ua, va, label) in zip(axes, cuts):
        u, v = ax_vals[ua], ax_vals[va]
        extent = (u[0] - h / 2, u[-1] + h / 2, v[0] - h / 2, v[-1] + h / 2)
        im = ax.imshow(sl.T, origin="lower", extent=extent, cmap="RdBu_r", vmin=level - vmax,
                       vmax=level + vmax, interpolation="nearest")
        if sl.min() < level < sl.max():
            ax.contour(u, v, sl.T, levels=[level], colors="k", linewidths=1.2)
        ax.set_title(f"cut {label}")
        ax.set_xlabel(f"{names[ua]} (world)")
        ax.set_ylabel(f"{names[va]} (world)")
        ax.set_aspect("equal")
    fig.colorbar(im, ax=axes, shrink=0.8, label=f"value (black: level {level:g}; > level = inside)")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return write_bytes(path, buf.getvalue())
