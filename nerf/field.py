"""Density fields on voxel grids: the randomized-smoothing (weak-SDF) field and the plain baseline.

Smoothed field (the paper's Fig. 2), per training step on the whole grid::

    f   = sigmoid(θ)            (or clip(θ, 0, 1): ``f_activation="relu"``)   occupancy in [0, 1]
    f̂   = gaussian_blur3d(f, σ_vox)                                            smoothed occupancy
    s   = σ_world · Φ⁻¹(f̂)       = geo_rs.weak_sdf(f, σ_vox, voxel)           weak SDF, world units

then at every ray sample x, with s(x) trilinearly interpolated from the grid::

    G(x) = sigmoid(α · s(x) / σ_world)                 occupancy, α the eccentricity (scheduled 4 → 24)
    g(x) = (κ / voxel) · [log(1 + ε) − log(1 + ε − G)] density (per world unit)

``g`` is the log-like activation of the paper: 0 at G = 0, κ·log 2 /voxel at the surface (G = ½),
diverging like −log(1 − G) as G → 1 and capped by ε at κ·log((1 + ε)/ε)/voxel (13.8 κ/voxel for
ε = 1e-6: a voxel of solid interior is opaque to 1 − 10⁻⁶). Interpolating s and activating per
sample (post-activation) keeps surfaces sharper than the voxels.

Plain baseline (DVGO-like density grid, same resolution and colour model)::

    g(x) = softplus(θ(x) + b) / voxel,   b = log(expm1(−log(1 − α₀)/step_voxels)) so that a sample
                                          interval starts with opacity α₀ (DVGO's ``alpha_init``).

Grid layout: ``values[..., i, j, k]`` is the voxel centred at ``origin + voxel · (i, j, k)``
(axes x, y, z) — the geo-rs ``VoxelGrid`` convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import geo_rs
from geo_rs import UserError
from geo_rs.checks import choice, count

__all__ = [
    "GridSpec",
    "sample_grid",
    "log_density",
    "SmoothedDensity",
    "PlainDensity",
    "SHColor",
    "RadianceField",
    "sh_basis",
]


@dataclass
class GridSpec:
    """Voxel-centre lattice covering a box: ``shape`` (X, Y, Z), ``origin`` (3,), ``voxel`` size."""

    origin: tuple[float, float, float]
    voxel: float
    shape: tuple[int, int, int]

    @classmethod
    def from_bounds(cls, bmin, bmax, res: int) -> GridSpec:
        """``res`` voxel centres along the longest box axis, the same spacing on the others."""
        count("res", res, minimum=2)
        bmin = [float(v) for v in bmin]
        ext = [float(b) - a for a, b in zip(bmin, bmax)]
        if len(ext) != 3 or not all(math.isfinite(e) and e > 0 for e in ext):
            raise UserError(f"the grid box needs max > min on 3 finite axes, got {bmin} .. {list(bmax)}")
        voxel = max(ext) / (res - 1)
        shape = tuple(int(math.ceil(e / voxel - 1e-6)) + 1 for e in ext)
        return cls(tuple(bmin), voxel, shape)  # type: ignore[arg-type]

    @property
    def bmax(self) -> tuple[float, ...]:
        return tuple(o + self.voxel * (n - 1) for o, n in zip(self.origin, self.shape))

    def centres(self, device=None) -> torch.Tensor:
        """World coordinates of all voxel centres, (X, Y, Z, 3)."""
        axes = [
            torch.arange(n, device=device, dtype=torch.float32) * self.voxel + o
            for o, n in zip(self.origin, self.shape)
        ]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def sample_grid(values: torch.Tensor, spec: GridSpec, points: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of a (C, X, Y, Z) grid at world ``points`` (N, 3) → (N, C).

    Points outside the lattice take the border value (callers only sample inside the scene box).
    """
    origin = torch.tensor(spec.origin, device=points.device, dtype=points.dtype)
    size = torch.tensor([n - 1 for n in spec.shape], device=points.device, dtype=points.dtype)
    norm = 2 * (points - origin) / (spec.voxel * size) - 1
    # grid_sample wants (x, y, z) ↔ (W, H, D): our tensor is (C, D=X, H=Y, W=Z), so flip the order.
    grid = norm.flip(-1).view(1, -1, 1, 1, 3)
    out = F.grid_sample(values[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(values.shape[0], -1).T


def sample_grid_naive(values: torch.Tensor, spec: GridSpec, points: torch.Tensor) -> torch.Tensor:
    """Slow obvious trilinear reference for :func:`sample_grid` (8 corner lookups)."""
    idx = (points - torch.tensor(spec.origin, dtype=points.dtype)) / spec.voxel
    hi = torch.tensor(spec.shape, dtype=points.dtype) - 1
    idx = torch.minimum(idx.clamp_min(0), hi)
    i0 = idx.floor().long()
    i0 = torch.minimum(i0, (hi - 1).clamp_min(0).long())
    w = idx - i0
    out = torch.zeros(points.shape[0], values.shape[0], dtype=values.dtype)
    for corner in range(8):
        o = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        ii = torch.minimum(i0 + o, hi.long())
        wt = torch.prod(torch.where(o.bool(), w, 1 - w), dim=1)
        out += wt[:, None] * values[:, ii[:, 0], ii[:, 1], ii[:, 2]].T
    return out


def log_density(occ: torch.Tensor, scale: float, eps: float) -> torch.Tensor:
    """κ·[log(1 + ε) − log(1 + ε − G)]: 0 at G = 0, diverging (capped by ε) as G → 1."""
    # (1 − G) + ε keeps 1 − G exact near G = 1 (Sterbenz), so the cap is accurate in float32.
    return scale * (math.log1p(eps) - torch.log((1 - occ) + eps))


def _resample(values: torch.Tensor, old: GridSpec, new: GridSpec) -> torch.Tensor:
    pts = new.centres(values.device).reshape(-1, 3)
    return sample_grid(values, old, pts).T.reshape(values.shape[0], *new.shape).contiguous()


class SmoothedDensity(nn.Module):
    """θ grid → weak SDF grid → per-sample occupancy G and density (see module docstring).

    ``sigma_world`` is the σ used for rendering and training (world units; fixed across resolutions, so
    coarse-to-fine changes σ in voxels; the trainer's σ schedule lowers it from ``sigma_start_vox`` to
    the final σ). ``sigma_final`` is the σ of the certificate: :meth:`level_grid` (the mesh) and
    :meth:`RadianceField.clearance` always use the weak SDF at ``sigma_final``, whatever σ training is at.
    """

    def __init__(
        self,
        spec: GridSpec,
        sigma_world: float,
        theta_init: float = -3.0,
        f_activation: str = "sigmoid",
        density_scale: float = 1.0,
        eps: float = 1e-6,
        alpha: float = 4.0,
        sigma_final: float | None = None,
    ):
        super().__init__()
        choice("f_activation", f_activation, ("sigmoid", "relu"))
        self.spec = spec
        self.sigma_world = float(sigma_world)
        self.sigma_final = float(sigma_world if sigma_final is None else sigma_final)
        self.f_activation = f_activation
        self.density_scale = float(density_scale)
        self.eps = float(eps)
        self.alpha = float(alpha)
        init = theta_init if f_activation == "sigmoid" else 1 / (1 + math.exp(-theta_init))
        self.theta = nn.Parameter(torch.full(spec.shape, float(init)))

    def occupancy_grid(self) -> torch.Tensor:
        """f ∈ [0, 1], (X, Y, Z)."""
        return torch.sigmoid(self.theta) if self.f_activation == "sigmoid" else self.theta.clamp(0, 1)

    def sdf_grid(self, sigma_world: float | None = None) -> torch.Tensor:
        """Weak SDF s (X, Y, Z), world units, positive inside: σ·Φ⁻¹(blur(f)) at ``sigma_world``
        (default: the training σ)."""
        sigma = self.sigma_world if sigma_world is None else float(sigma_world)
        return geo_rs.weak_sdf(self.occupancy_grid(), sigma / self.spec.voxel, self.spec.voxel, check=False)

    def prepare(self) -> torch.Tensor:
        """Per-step grid to interpolate: s with a leading channel, (1, X, Y, Z)."""
        return self.sdf_grid()[None]

    def occupancy(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.alpha * s / self.sigma_world)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Density at ``points`` (N, 3) (recomputes the grid: use prepare/density in loops)."""
        return self.density(self.prepare(), points)

    def density(self, grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        s = sample_grid(grid, self.spec, points)[:, 0]
        return log_density(self.occupancy(s), self.density_scale / self.spec.voxel, self.eps)

    def level_grid(self) -> torch.Tensor:
        """Field whose zero level is the surface (positive inside): the weak SDF at the final σ."""
        return self.sdf_grid(self.sigma_final)

    def upsample(self, spec: GridSpec) -> None:
        with torch.no_grad():
            self.theta = nn.Parameter(_resample(self.theta.data[None], self.spec, spec)[0])
        self.spec = spec


class PlainDensity(nn.Module):
    """DVGO-like density grid without smoothing: g = softplus(θ(x) + b) / voxel."""

    def __init__(
        self, spec: GridSpec, alpha_init: float = 1e-4, step_voxels: float = 0.5, mesh_opacity: float = 0.3
    ):
        super().__init__()
        self.spec = spec
        self.mesh_opacity = float(mesh_opacity)
        self.shift = math.log(math.expm1(-math.log1p(-alpha_init) / step_voxels))
        self.theta = nn.Parameter(torch.zeros(spec.shape))

    def prepare(self) -> torch.Tensor:
        return self.theta[None]

    def density(self, grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return F.softplus(sample_grid(grid, self.spec, points)[:, 0] + self.shift) / self.spec.voxel

    def level_grid(self) -> torch.Tensor:
        """Per-voxel opacity minus ``mesh_opacity`` (positive inside): the usual density-threshold
        surface of voxel NeRFs (one voxel length of field is that opaque). Not an SDF. The default
        0.3 is a choice: a plain grid spreads a surface over a few semi-transparent voxels, so ½ can
        find no surface at all."""
        return -torch.expm1(-F.softplus(self.theta + self.shift)) - self.mesh_opacity

    def upsample(self, spec: GridSpec) -> None:
        with torch.no_grad():
            self.theta = nn.Parameter(_resample(self.theta.data[None], self.spec, spec)[0])
        self.spec = spec


_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics up to ``degree`` ≤ 2 of unit ``dirs`` (N, 3) → (N, (degree+1)²)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _SH_C0)]
    if degree >= 1:
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        out += [
            _SH_C2[0] * x * y,
            _SH_C2[1] * y * z,
            _SH_C2[2] * (2 * z * z - x * x - y * y),
            _SH_C2[3] * x * z,
            _SH_C2[4] * (x * x - y * y),
        ]
    return torch.stack(out, -1)


class SHColor(nn.Module):
    """Colour grid of spherical-harmonic coefficients: rgb = sigmoid(Σₖ c_k(x) Y_k(d))."""

    def __init__(self, spec: GridSpec, degree: int = 0):
        super().__init__()
        count("sh_degree", degree, minimum=0, maximum=2)
        self.spec, self.degree = spec, degree
        self.features = nn.Parameter(torch.zeros(3 * (degree + 1) ** 2, *spec.shape))

    def forward(self, points: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        k = (self.degree + 1) ** 2
        coef = sample_grid(self.features, self.spec, points).view(-1, 3, k)
        return torch.sigmoid((coef * sh_basis(dirs, self.degree)[:, None, :]).sum(-1))

    def upsample(self, spec: GridSpec) -> None:
        with torch.no_grad():
            self.features = nn.Parameter(_resample(self.features.data, self.spec, spec))
        self.spec = spec


class RadianceField(nn.Module):
    """Geometry (``SmoothedDensity`` or ``PlainDensity``) plus an ``SHColor`` grid over one box.

    ``capture_to_field`` (a :class:`nerf.normalize.Similarity`, identity unless set by the trainer or
    :func:`nerf.load_field`) maps the capture's own coordinates to the field's (training) frame.
    """

    def __init__(self, geometry: nn.Module, color: SHColor):
        super().__init__()
        self.geometry, self.color = geometry, color
        self.capture_to_field = None
        self._certified_cache: tuple | None = None

    @property
    def spec(self) -> GridSpec:
        return self.geometry.spec

    def prepare(self) -> torch.Tensor:
        return self.geometry.prepare()

    def density(self, grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.geometry.density(grid, points)

    def rgb(self, points: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        return self.color(points, dirs)

    def upsample(self, geo_spec: GridSpec, color_spec: GridSpec) -> None:
        self.geometry.upsample(geo_spec)
        self.color.upsample(color_spec)

    # -- certified clearance, for planners ------------------------------------------------------
    def certified_sdf_grid(self) -> geo_rs.VoxelGrid:
        """``geo_rs.VoxelGrid`` of the weak SDF at the final σ (positive inside, world units of the
        field's frame), without cavity filling: what :meth:`clearance` certifies. Cached until θ changes."""
        geo = self.geometry
        if not isinstance(geo, SmoothedDensity):
            raise UserError("clearance needs the smoothed model: a plain density grid has no certified SDF "
                            "(train with model: smoothed)")
        key = (id(geo.theta), geo.theta._version, geo.sigma_final, geo.spec.shape)
        if self._certified_cache is None or self._certified_cache[0] != key:
            with torch.no_grad():
                values = geo.sdf_grid(geo.sigma_final).detach().cpu().double()  # float64 queries
            origin = torch.tensor(geo.spec.origin, dtype=torch.float64)
            self._certified_cache = (key, geo_rs.VoxelGrid(values, origin, geo.spec.voxel))
        return self._certified_cache[1]

    def clearance(self, points: torch.Tensor, capture_frame: bool = False) -> torch.Tensor:
        """Certified clearance of (N, 3) points → (N,): the signed distance to the **smoothed surface**.

        What is guaranteed, for c = clearance(x):

        * c > 0: x is outside the smoothed shape and so is the whole open ball B(x, c): no point of
          the surface is closer than c (free space for a planner);
        * c < 0: x is inside, and B(x, |c|) is inside too; c = 0: nothing is certified at x;
        * NaN: x is non-finite or outside the grid box (``spec.origin`` … ``spec.bmax``): the field
          says nothing there — never a value that could be read as a distance.

        The *smoothed shape* is {f̂ > ½}, f̂ = the occupancy grid f (voxels as boxes, empty beyond the
        grid) blurred by a Gaussian of the **final** σ (``geometry.sigma_final``, world units) — the
        shape whose zero level ``mesh.ply`` is — not the true object: smoothing rounds corners and
        erases parts thinner than ~1.35σ, so a thin real obstacle may be absent from it. Soundness:
        the weak SDF takes the truncated kernel's missing mass and rounding into account
        (:func:`geo_rs.blur_slack`), and the value at x comes from the nearest voxel centre with the
        distance to it subtracted (:func:`geo_rs.certified_sdf_at`), so no interpolation is trusted.
        |c| saturates at :func:`geo_rs.weak_sdf_max_radius` (≈ 3.7–4.4 σ): farther clearance is not
        certified by a kernel of that reach. Lengths are in the field's frame, or with
        ``capture_frame=True`` points and result are in the capture's own coordinates (the
        normalisation of ``report.json`` undone).
        """
        from geo_rs.checks import tensor_shape

        pts = torch.as_tensor(points, dtype=torch.float64)
        tensor_shape("points", pts, ("N", 3))
        scale = 1.0
        if capture_frame and self.capture_to_field is not None:
            pts = torch.as_tensor(self.capture_to_field.apply(pts.numpy()))
            scale = self.capture_to_field.scale
        grid = self.certified_sdf_grid()
        spec = self.geometry.spec
        lo = torch.tensor(spec.origin, dtype=torch.float64)
        hi = torch.tensor(spec.bmax, dtype=torch.float64)
        inside_box = torch.isfinite(pts).all(-1) & (pts >= lo).all(-1) & (pts <= hi).all(-1)
        c = -geo_rs.certified_sdf_at(grid, pts)
        return torch.where(inside_box, c / scale, torch.full_like(c, float("nan")))

    def max_clearance(self, capture_frame: bool = False) -> float:
        """The largest |clearance| this field can certify (its final σ's saturation radius)."""
        geo = self.geometry
        r = geo_rs.weak_sdf_max_radius(geo.sigma_final / geo.spec.voxel, geo.spec.voxel)
        return r / self.capture_to_field.scale if capture_frame and self.capture_to_field is not None else r

    def is_free(self, points: torch.Tensor, margin: float, capture_frame: bool = False) -> torch.Tensor:
        """(N,) bool: True where the ball of radius ``margin`` around the point is certified to lie
        outside the smoothed shape (``clearance > margin``); False where it is not certified — inside,
        too close, outside the grid box, non-finite. ``margin`` (same units as the points) must be
        below :meth:`max_clearance`, else nothing could ever be certified and it is a ``UserError``.
        """
        from geo_rs.checks import non_negative_finite

        non_negative_finite("margin", margin, "world units")
        limit = self.max_clearance(capture_frame)
        if margin >= limit:
            raise UserError(f"margin {margin:g} is not certifiable by this field: clearance saturates at "
                            f"{limit:.4g} (~4 final σ); use a smaller margin or train with a larger "
                            f"sigma_vox")
        c = self.clearance(points, capture_frame)
        return torch.nan_to_num(c, nan=-1.0) > margin

    def level_voxelgrid(self):
        """``geo_rs.VoxelGrid`` of the level field (weak SDF for the smoothed model)."""
        with torch.no_grad():
            values = self.geometry.level_grid().detach().float().cpu()
        return geo_rs.VoxelGrid(values, torch.tensor(self.spec.origin), self.spec.voxel)
