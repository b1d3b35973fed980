"""Training configuration: a flat dataclass, loadable from YAML (unknown keys are an error)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from geo_rs import UserError

__all__ = ["NerfConfig", "load_config"]


@dataclass
class NerfConfig:
    """All knobs of ``geo-rs nerf train``. Lengths in voxels refer to the final grid."""

    # data: a Blender-layout folder, or a built-in scene name rendered on the fly into OUT/scene
    data: str = "lego"
    scene_views: int = 100  # built-in scenes only: training views, image size, test views
    scene_res: int = 100
    scene_test_views: int = 20
    half_res: bool = False
    bounds: list | None = None  # [[xmin,ymin,zmin],[xmax,ymax,zmax]]; default scene.json / [-1.5,1.5]^3

    # model: "smoothed" (weak-SDF field, the paper) or "plain" (DVGO-like density grid baseline)
    model: str = "smoothed"
    grid_res: int = 96  # voxel centres along the longest box axis (final)
    coarse_res: int | None = 48  # coarse-to-fine: start here ...
    upsample_at: list = field(default_factory=lambda: [0.3])  # ... and upsample at these fractions of steps
    color_res: int | None = None  # colour grid resolution (default: grid_res)
    sigma_vox: float = 1.0  # smoothing σ in final voxels (σ_world = sigma_vox · final voxel)
    alpha_start: float = 4.0  # occupancy eccentricity α, linearly scheduled ...
    alpha_end: float = 24.0
    alpha_ramp: float = 0.7  # ... over this fraction of the steps
    f_activation: str = "sigmoid"  # sigmoid | relu
    theta_init: float = -2.0  # f = 0.12: a faint fog that rendering carves
    density_scale: float = 1.0  # κ: density = κ/voxel · (log(1+ε) − log(1+ε−G))
    density_eps: float = 1e-6
    alpha_init: float = 1e-4  # plain baseline: initial opacity of one sample interval
    fill_cavities: bool = True  # mesh: fill enclosed (never observed) interior cavities first
    plain_mesh_opacity: float = 0.3  # plain baseline: mesh where one voxel length is this opaque
    sh_degree: int = 0

    # optimisation
    steps: int = 2000
    rays_per_batch: int = 4096
    lr_density: float = 0.1
    lr_color: float = 0.1
    lr_final_ratio: float = 0.1  # exponential decay to lr · ratio at the last step
    tv_weight: float = 0.0  # total variation on θ (smoothed) / θ (plain), per voxel
    step_voxels: float = 0.5  # ray-marching step in (current) voxels
    seed: int = 0
    time_limit_s: float | None = None  # stop early after this much training time (not deterministic)

    # bookkeeping
    eval_every: int = 500
    eval_views: int = 4  # test views rendered for the periodic PSNR
    ckpt_every: int = 500
    final_eval_views: int | None = None  # None: all test views
    metric_points: int = 100_000  # surface samples per mesh for Chamfer / normal consistency / F-score
    threads: int | None = None

    def validate(self) -> NerfConfig:
        if self.model not in ("smoothed", "plain"):
            raise UserError(f"config: model must be 'smoothed' or 'plain', got {self.model!r}")
        if self.f_activation not in ("sigmoid", "relu"):
            raise UserError(f"config: f_activation must be 'sigmoid' or 'relu', got {self.f_activation!r}")
        if not 0 <= self.sh_degree <= 2:
            raise UserError(f"config: sh_degree must be 0, 1 or 2, got {self.sh_degree}")
        if self.grid_res < 8 or (self.coarse_res is not None and not 8 <= self.coarse_res <= self.grid_res):
            raise UserError(
                f"config: need 8 <= coarse_res <= grid_res, got {self.coarse_res}, {self.grid_res}"
            )
        for name in ("steps", "rays_per_batch", "eval_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise UserError(f"config: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("sigma_vox", "step_voxels", "density_scale", "lr_density", "lr_color", "lr_final_ratio"):
            if not getattr(self, name) > 0:
                raise UserError(f"config: {name} must be > 0, got {getattr(self, name)}")
        if any(not 0 < float(f) < 1 for f in self.upsample_at):
            raise UserError(f"config: upsample_at fractions must lie in (0, 1), got {self.upsample_at}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, **overrides) -> NerfConfig:
    """Read a YAML file (if given) and apply ``overrides``; unknown keys raise ``UserError``."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p}: config file not found")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{p}: malformed YAML: {exc}") from exc
        if not isinstance(values, dict):
            raise UserError(f"{p}: expected a mapping of config keys")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(NerfConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{path or 'config'}: unknown key(s) {', '.join(unknown)}")
    try:
        return NerfConfig(**values).validate()
    except TypeError as exc:
        raise UserError(f"{path or 'config'}: {exc}") from exc
