"""Training configuration of ``geo-rs nerf train``: one flat :class:`geo_rs.config.Schema`.

Every key has a type, a range, a help text and a unit (``geo_rs.config.field_help`` turns them into
the ``--help`` texts); YAML files and command-line overrides go through the same validation, and any
problem is one :class:`geo_rs.UserError` naming the file (or the flag) and the key. ``half_res: "no"``
is not a bool, ``steps: 5.7`` is not an int, unknown keys are errors, and a grid too large for this
machine's memory is refused before anything is allocated.

This module imports no torch: the CLI validates a config before it pays for the heavy imports.

Example:
    >>> cfg = load_config(None, data="sphere", steps=50)
    >>> cfg.steps, cfg.model
    (50, 'smoothed')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from geo_rs import UserError
from geo_rs.config import Schema, check_memory, read_yaml, setting, validate_config

__all__ = ["BUILTIN_SCENE_NAMES", "RESUMABLE_KEYS", "NerfConfig", "load_config", "merge_for_resume"]

# The built-in scenes of nerf.scene (kept here, free of heavy imports, for the CLI's early checks).
BUILTIN_SCENE_NAMES = ("lego", "sphere", "torus")

Fraction = Annotated[float, Field(gt=0, lt=1)]


class NerfConfig(Schema):
    """All knobs of ``geo-rs nerf train``. Lengths in voxels refer to the final grid."""

    model_config = ConfigDict(allow_inf_nan=False)

    # -- data
    data: str = setting("lego", "training data: a Blender-layout folder, an instant-ngp/nerfstudio "
                                "transforms.json (or its folder), a COLMAP project (text model), or a "
                                "built-in "
                                "scene (lego, sphere, torus) rendered once into OUT/scene")
    scene_views: int = setting(100, "built-in scenes: training views to render", "views", ge=1, le=10_000)
    scene_res: int = setting(100, "built-in scenes: image width = height", "pixels", ge=8, le=4096)
    scene_test_views: int = setting(20, "built-in scenes: test views to render", "views", ge=1, le=10_000)
    half_res: bool = setting(False, "halve the images (2×2 average) and the focal length when loading")
    bounds: list[list[float]] | None = setting(
        None, "scene box [[xmin, ymin, zmin], [xmax, ymax, zmax]] in the training frame; unset: the scene's "
              "scene.json (Blender layout), the normalisation's box (captures), else [-1.5, "
              "1.5]³", "world units")
    normalize: Literal["auto", "none", "cameras", "points"] = setting(
        "auto", "scene normalisation (centre, scale, up → +z) of a capture: from the cameras' positions and "
                "viewing directions, from COLMAP's sparse points, or none; auto: points when COLMAP has "
                "them, else cameras; none for the Blender layout (recorded in report.json)")
    background: Literal["white", "black", "random"] = setting(
        "white", "colour behind the scene: images with alpha are composited on it and renders use it; "
                 "random: a random colour per ray in training (needs alpha), white in evaluation")
    test_every: int = setting(8, "captures without a split: every this-many-th frame (by file name) is a "
                                 "test view", "frames", ge=2)

    # -- model
    model: Literal["smoothed", "plain"] = setting(
        "smoothed", "geometry: 'smoothed' (weak-SDF field, the paper) or 'plain' (DVGO-like density grid)")
    grid_res: int = setting(96, "final voxel centres along the longest box axis", "voxels", ge=8)
    coarse_res: int | None = setting(48, "coarse-to-fine: start at this resolution (unset: no coarse stage)",
                                     "voxels", ge=8)
    upsample_at: list[Fraction] = setting([0.3], "coarse-to-fine: upsample at these fractions of training",
                                          "fractions in (0, 1)")
    color_res: int | None = setting(None, "colour grid resolution (unset: grid_res)", "voxels", ge=8)
    sigma_vox: float = setting(1.0, "final smoothing σ (σ_world = sigma_vox · final voxel): the σ of the "
                                    "certified "
                                    "weak SDF, the mesh and clearance()", "final voxels", gt=0)
    sigma_start_vox: float | None = setting(
        None, "σ schedule, coarse to fine: σ at the start of training, decaying geometrically to sigma_vox "
              "(unset: constant sigma_vox)", "final voxels", gt=0)
    sigma_ramp: float = setting(0.6, "σ schedule: σ reaches sigma_vox at this fraction of "
                                     "training", "fraction",
                                gt=0, le=1)
    alpha_start: float = setting(4.0, "occupancy eccentricity α at the start of the ramp", gt=0)
    alpha_end: float = setting(24.0, "occupancy eccentricity α at the end of the ramp", gt=0)
    alpha_ramp: float = setting(0.7, "α ramps linearly over this fraction of training", "fraction",
                                gt=0, le=1)
    f_activation: Literal["sigmoid", "relu"] = setting("sigmoid",
                                                       "θ → occupancy f: sigmoid or clip to [0, 1]")
    theta_init: float = setting(-2.0, "initial θ (−2: f = 0.12, a faint fog that rendering carves)")
    density_scale: float = setting(1.0, "κ: density = κ/voxel · (log(1+ε) − log(1+ε−G))", gt=0)
    density_eps: float = setting(1e-6, "ε of the log density (caps it at κ·log((1+ε)/ε)/voxel)", gt=0, lt=1)
    alpha_init: float = setting(1e-4, "plain model: initial opacity of one sample interval", "probability",
                                gt=0, lt=1)
    fill_cavities: bool = setting(True, "mesh: fill enclosed, never observed interior cavities first")
    plain_mesh_opacity: float = setting(0.3, "plain model: mesh where one voxel length is this opaque",
                                        "probability", gt=0, lt=1)
    sh_degree: int = setting(0, "spherical-harmonic degree of the colour grid", ge=0, le=2)

    # -- optimisation
    steps: int = setting(2000, "optimisation steps", "steps", ge=1)
    rays_per_batch: int = setting(4096, "rays per optimisation step", "rays", ge=1, le=1 << 24)
    lr_density: float = setting(0.1, "Adam learning rate of the density grid", gt=0)
    lr_color: float = setting(0.1, "Adam learning rate of the colour grid", gt=0)
    lr_final_ratio: float = setting(0.1, "learning rates decay exponentially to lr · this at the last step",
                                    gt=0)
    tv_weight: float = setting(0.0, "total-variation weight on θ", ge=0)
    step_voxels: float = setting(0.5, "ray-marching step", "current voxels", gt=0)
    seed: int = setting(0, "seed of batches, offsets and scene cameras", ge=0)
    time_limit_s: float | None = setting(None, "stop training after this much training time (runs are then "
                                               "not bit-reproducible)", "seconds", gt=0)

    # -- bookkeeping
    eval_every: int = setting(500, "render eval_views test views every this many steps", "steps", ge=1)
    eval_views: int = setting(4, "test views rendered for the periodic PSNR", "views", ge=1)
    ckpt_every: int = setting(500, "write OUT/checkpoint.pt every this many steps", "steps", ge=1)
    ckpt_every_s: float | None = setting(120.0, "also write it whenever this much wall time passed since "
                                                "the last one (unset: by steps only)", "seconds", gt=0)
    final_eval_views: int | None = setting(None, "test views rendered at the end (unset: all)", "views", ge=1)
    metric_points: int = setting(100_000, "surface samples per mesh for Chamfer / normal consistency / "
                                          "F-score", "points", ge=100)
    threads: int | None = setting(None, "torch CPU threads (unset: torch's default)", "threads", ge=1)

    @field_validator("bounds")
    @classmethod
    def _box(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        if value is None:
            return None
        if len(value) != 2 or any(len(v) != 3 for v in value):
            raise ValueError("must be [[xmin, ymin, zmin], [xmax, ymax, zmax]]")
        if not all(hi > lo for lo, hi in zip(*value)):
            raise ValueError("needs max > min on every axis")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NerfConfig:
        if self.coarse_res is not None and self.coarse_res > self.grid_res:
            raise ValueError(f"coarse_res {self.coarse_res} must be <= grid_res {self.grid_res}")
        if self.sigma_start_vox is not None and self.sigma_start_vox < self.sigma_vox:
            raise ValueError(f"sigma_start_vox {self.sigma_start_vox} must be >= sigma_vox {self.sigma_vox} "
                             "(the schedule goes coarse to fine)")
        if self.alpha_end < self.alpha_start:
            raise ValueError(f"alpha_end {self.alpha_end} must be >= alpha_start {self.alpha_start}")
        check_memory(training_bytes(self), f"grid_res {self.grid_res} (a {self.grid_res}³ grid with its "
                                           "optimiser state)")
        return self


def training_bytes(cfg: NerfConfig) -> float:
    """Rough peak memory of training (bytes), from the grid sizes alone (the box may be a cube).

    Geometry: θ, its gradient, two Adam moments, f, the blurred f̂, the blur's scratch buffer, the
    weak SDF and what autograd keeps of them: ~16 float32 a voxel. Colour: 3·(d+1)² channels, each
    with a gradient and two Adam moments. Rays of a built-in scene: origin, direction and colour of
    every training pixel. A rough figure: it only has to refuse absurd settings before allocating.
    """
    colour = cfg.color_res or cfg.grid_res
    grids = 16 * cfg.grid_res**3 + 4 * 3 * (cfg.sh_degree + 1) ** 2 * colour**3
    rays = 13 * cfg.scene_views * cfg.scene_res**2 if cfg.data in BUILTIN_SCENE_NAMES else 0
    return 4.0 * (grids + rays)


def load_config(path: str | Path | None = None, flags: Mapping[str, str] | None = None,
                **overrides: Any) -> NerfConfig:
    """Read a YAML file (if given) and apply ``overrides`` (None values are skipped).

    ``flags`` maps override keys to the command-line flag that set them, so errors name the flag.
    Every problem (unknown key, wrong type, out of range, too much memory) is one ``UserError``.
    """
    values = read_yaml(path) if path is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    where = str(path) if path is not None else "config"
    flagged = {k: flags[k] for k in given if flags and k in flags}  # Python keywords are named as keys
    return validate_config(NerfConfig, values, where, flagged)


# Settings that may change when a run is resumed: they do not change the model being trained
# (only how long, how often things are saved or evaluated, and what is written at the end).
RESUMABLE_KEYS = frozenset({
    "steps", "time_limit_s", "threads", "eval_every", "eval_views", "ckpt_every", "ckpt_every_s",
    "final_eval_views", "metric_points", "fill_cavities", "plain_mesh_opacity",
})


def _same_data(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def merge_for_resume(saved: Mapping[str, Any], given: Mapping[str, Any], origins: Mapping[str, str],
                     checkpoint: str | Path) -> NerfConfig:
    """The config of a resumed run: the checkpoint's ``saved`` settings, with the settings the user
    ``given`` again (from a YAML file or flags) checked against them.

    A key in :data:`RESUMABLE_KEYS` takes the new value (``--steps 540`` extends the run); any other
    key that differs would change the model, so it is refused with one line naming where it came from
    (``origins[key]``: the flag or the file) and both values. Keys not given keep the saved value.
    """
    saved_cfg = validate_config(NerfConfig, saved, where=f"{checkpoint} (saved config)")
    if "data" in given and not _same_data(str(given["data"]), saved_cfg.data):
        raise UserError(f"{origins.get('data', 'data')}: {given['data']!r} is not the data the checkpoint "
                        f"{checkpoint} was trained on ({saved_cfg.data!r}); use another --out for a new run")
    merged = {**saved_cfg.to_dict(), **{k: v for k, v in given.items() if k != "data"}}
    where = ", ".join(sorted({o for o in origins.values()})) or "config"
    cfg = validate_config(NerfConfig, merged, where=where,
                          overridden={k: o for k, o in origins.items() if o.startswith("--")})
    for key in sorted(given):
        if key == "data" or key in RESUMABLE_KEYS:
            continue
        new, old = getattr(cfg, key), getattr(saved_cfg, key)
        if new != old:
            raise UserError(
                f"{origins.get(key, key)}: {key} {new!r} differs from {old!r} in {checkpoint}; a setting "
                "that changes the model cannot change on --resume (use another --out for a new run; "
                f"may change: {', '.join(sorted(RESUMABLE_KEYS))})")
    return cfg
