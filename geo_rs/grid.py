"""A voxel grid that carries its own placement in the world.

Index convention (the whole toolkit uses it): ``values[i, j, k]`` is the voxel whose **centre** is
the world point ``origin + voxel_size * (i, j, k)``; the axes are (x, y, z) in that order. Voxels
are cubes (one ``voxel_size``). Sampling is trilinear between voxel centres, so the sampled domain
is ``bounds = (origin, origin + voxel_size * (shape - 1))``. Outside it ``sample`` returns NaN by
default — never a number: 0 would read as "on the surface" for an SDF — or raises with
``outside="raise"``, or returns a ``fill`` value the caller chose.
"""
from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_write
from .checks import choice, count, positive_finite
from .errors import UserError

__all__ = ["VoxelGrid"]


def _as_vec3(v, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = v.detach() if torch.is_tensor(v) else torch.from_numpy(np.array(v, dtype=np.float64))
    if t.shape != (3,):
        raise UserError(f"{name} must have 3 entries (x, y, z); got shape {tuple(t.shape)}")
    t = t.to(dtype=dtype, device=device)
    if not torch.isfinite(t).all():
        raise UserError(f"{name} must be finite; got {t.tolist()}")
    return t


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


@dataclass
class VoxelGrid:
    """Values on a regular grid of cubic voxels placed in the world.

    Attributes:
        values: (X, Y, Z) tensor (any float dtype, any device).
        origin: (3,) world position of the centre of voxel (0, 0, 0); stored as a tensor with
            ``values``' floating dtype and device.
        voxel_size: voxel edge length in world units (> 0).

    Example:
        >>> g = VoxelGrid(torch.arange(8.).reshape(2, 2, 2), origin=(0, 0, 0), voxel_size=1.0)
        >>> g.sample(torch.tensor([[0.5, 0.5, 0.5], [5.0, 0.0, 0.0]])).tolist()   # outside: NaN
        [3.5, nan]
    """

    values: torch.Tensor
    origin: torch.Tensor
    voxel_size: float

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.values):
            self.values = torch.as_tensor(np.asarray(self.values))
        if self.values.ndim != 3:
            raise UserError(f"VoxelGrid values must have shape (X, Y, Z); got {tuple(self.values.shape)}")
        if not self.values.is_floating_point():
            self.values = self.values.to(torch.get_default_dtype())
        self.voxel_size = positive_finite("voxel_size", self.voxel_size, "world units")
        self.origin = _as_vec3(self.origin, "origin", self.values.dtype, self.values.device)

    # ----------------------------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min_xyz, max_xyz): world positions of the first and last voxel centres, each (3,)."""
        extent = torch.tensor(self.shape, dtype=self.origin.dtype, device=self.origin.device) - 1
        return self.origin.clone(), self.origin + self.voxel_size * extent

    def centers(self) -> torch.Tensor:
        """World coordinates of all voxel centres, (X, Y, Z, 3), in ``values``' dtype/device."""
        axes = [self.origin[a] + self.voxel_size * torch.arange(n, dtype=self.origin.dtype,
                                                                 device=self.origin.device)
                for a, n in enumerate(self.shape)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    def world_to_index(self, points: torch.Tensor) -> torch.Tensor:
        """Continuous voxel indices (N, 3) of world points (N, 3): centre of voxel i ↦ i."""
        return (points - self.origin.to(points)) / self.voxel_size

    # ----------------------------------------------------------------------------------- sampling
    def sample(self, points: torch.Tensor, fill: float = float("nan"), outside: str = "fill") -> torch.Tensor:
        """Trilinear interpolation at world ``points`` (..., 3) → (...,).

        A point outside ``bounds`` (more than 1e-4 voxel beyond the outer voxel centres), or a NaN
        point, has no value: with ``outside="fill"`` (default) it gets ``fill``, NaN unless the caller
        chooses a sentinel (never 0 by default: for an SDF 0 means "on the surface"); with
        ``outside="raise"`` any such point raises :class:`UserError` with their count and the first.

        Differentiable w.r.t. ``values`` and ``points``. Points are moved to the grid's device.
        """
        points = torch.as_tensor(points)
        if points.shape[-1:] != (3,):
            raise UserError(f"points must have shape (..., 3); got {tuple(points.shape)}")
        choice("outside", outside, ("fill", "raise"))
        if min(self.shape) < 2:
            raise UserError(f"trilinear sampling needs ≥ 2 voxels per axis; grid shape {self.shape}")
        lead = points.shape[:-1]
        pts = points.reshape(-1, 3).to(device=self.values.device, dtype=self.values.dtype)
        idx = self.world_to_index(pts)
        size = torch.tensor(self.shape, dtype=idx.dtype, device=idx.device)
        tol = 1e-4  # voxels: points on the boundary must not fall outside through rounding
        inside = ((idx >= -tol) & (idx <= size - 1 + tol)).all(dim=-1)
        if outside == "raise" and not bool(inside.all()):
            first = pts[~inside][0].tolist()
            lo, hi = (b.tolist() for b in self.bounds)
            raise UserError(f"{int((~inside).sum())} of {len(pts)} points lie outside the grid "
                            f"(first {first}; the grid spans {lo} .. {hi})")
        # grid_sample with align_corners=True maps -1/+1 to the first/last voxel centre; its input
        # is (N, C, D, H, W) = (1, 1, X, Y, Z) and its coordinates are ordered (W, H, D) = (k, j, i).
        norm = (2 * idx / (size - 1) - 1).flip(-1)
        out = F.grid_sample(self.values[None, None], norm.view(1, 1, 1, -1, 3), mode="bilinear",
                            padding_mode="border", align_corners=True).view(-1)
        out = torch.where(inside, out, torch.full_like(out, float(fill)))
        return out.reshape(lead)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def around(cls, bounds_min: Sequence[float] | torch.Tensor, bounds_max: Sequence[float] | torch.Tensor,
               res: int, padding_voxels: int = 2, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> VoxelGrid:
        """A zero grid whose voxel centres cover the box [bounds_min, bounds_max] plus a margin.

        ``res`` voxels span the longest side *including* ``padding_voxels`` on each side; the
        other axes get as many voxels as they need (≤ res) and the box is centred in the grid.

        Example:
            >>> g = VoxelGrid.around((-1, -1, -0.5), (1, 1, 0.5), res=24, padding_voxels=2)
            >>> g.shape, round(g.voxel_size, 4)
            ((24, 24, 15), 0.1053)
        """
        lo = _as_vec3(bounds_min, "bounds_min", torch.float64, torch.device("cpu"))
        hi = _as_vec3(bounds_max, "bounds_max", torch.float64, torch.device("cpu"))
        res = count("res", res, minimum=2)
        padding_voxels = count("padding_voxels", padding_voxels, minimum=0)
        if (hi < lo).any():
            raise UserError(f"bounds_max {hi.tolist()} is below bounds_min {lo.tolist()}")
        inner = int(res) - 1 - 2 * int(padding_voxels)
        if inner < 1:
            raise UserError(f"res={res} leaves no voxels inside padding_voxels={padding_voxels} on each side")
        extent = hi - lo
        longest = float(extent.max())
        if longest <= 0:
            raise UserError(f"the box {lo.tolist()}..{hi.tolist()} is empty (zero size on every axis)")
        h = longest / inner
        counts = [min(int(res), int(math.ceil(float(e) / h - 1e-9)) + 1 + 2 * int(padding_voxels))
                  for e in extent]
        centre = (lo + hi) / 2
        origin = centre - h * (torch.tensor(counts, dtype=torch.float64) - 1) / 2
        values = torch.zeros(counts, dtype=dtype, device=device)
        return cls(values, origin, h)

    def with_values(self, values: torch.Tensor) -> VoxelGrid:
        """Same placement, new (X, Y, Z) values (shape must match)."""
        if tuple(values.shape) != self.shape:
            raise UserError(f"values shape {tuple(values.shape)} does not match grid shape {self.shape}")
        return VoxelGrid(values, self.origin.to(values.device), self.voxel_size)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> VoxelGrid:
        """Copy on another device and/or dtype (``values`` and ``origin`` move together)."""
        values = self.values.to(device=device, dtype=dtype)
        return VoxelGrid(values, self.origin.to(device=values.device), self.voxel_size)

    # ------------------------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write ``values``, ``origin`` and ``voxel_size`` to an ``.npz`` file; returns its path."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        arrays = dict(values=self.values.detach().cpu().numpy(),
                      origin=self.origin.detach().cpu().double().numpy(),
                      voxel_size=np.float64(self.voxel_size))
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> VoxelGrid:
        """Read a grid written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"grid file not found: {path}")
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"cannot read voxel grid {path}: {_one_line(exc)}") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise UserError(f"{path} is not a VoxelGrid .npz (no values/origin/voxel_size arrays)")
        with data:
            missing = [k for k in ("values", "origin", "voxel_size") if k not in data.files]
            if missing:
                raise UserError(f"{path} is not a VoxelGrid .npz: missing {', '.join(missing)}")
            try:
                values, origin, vs = data["values"], data["origin"], data["voxel_size"]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise UserError(f"cannot read voxel grid {path}: {_one_line(exc)}") from None
        if values.dtype.kind not in "biuf" or vs.size != 1:
            raise UserError(f"{path}: values must be a numeric array and voxel_size one number; got "
                            f"{values.dtype} values and voxel_size of shape {vs.shape}")
        return cls(torch.from_numpy(np.asarray(values)).to(device), origin, vs.item())

    def __repr__(self) -> str:
        o = ", ".join(f"{v:.4g}" for v in self.origin.tolist())
        return (f"VoxelGrid(shape={self.shape}, origin=({o}), voxel_size={self.voxel_size:.4g}, "
                f"dtype={self.values.dtype}, device={self.values.device})")
