"""Training: Adam on the voxel grids, random ray batches, coarse-to-fine, checkpoints with resume.

The loop is :class:`geo_rs.training.TrainingLoop`: a checkpoint is written every ``ckpt_every``
steps *and* every ``ckpt_every_s`` seconds of wall time, and the first SIGINT/SIGTERM finishes the
running step, saves and ends the run (``LoopResult.reason == "signal"``; the CLI exits 130/143).

Determinism: batches and stratified offsets come from one CPU ``torch.Generator`` seeded by
``cfg.seed``; its state, the global RNG states, the optimiser state and the step are saved in every
checkpoint, so ``train(n); save; resume; train(m)`` equals ``train(n + m)`` bit for bit on the same
machine and thread count (without ``time_limit_s``, whose schedules follow the clock).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from geo_rs import UserError
from geo_rs.atomic import write_json
from geo_rs.training import Hook, LoopResult, TrainingLoop

from .cameras import pixel_rays
from .capture import load_capture
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import NerfConfig
from .field import GridSpec, PlainDensity, RadianceField, SHColor, SmoothedDensity
from .render import make_estimator, nerfacc_cuda_available, render_rays, update_estimator
from .scene import BUILTIN_SCENES, make_scene

__all__ = ["Trainer", "prepare_data", "build_field", "load_field", "resolution_schedule", "total_variation"]

CHECKPOINT = "checkpoint.pt"


def prepare_data(cfg: NerfConfig, out_dir: Path) -> Path:
    """The Blender-layout folder to train on: ``cfg.data`` itself, or a built-in scene rendered once
    into ``out_dir/scene`` (reused when already there with the same settings)."""
    if cfg.data in BUILTIN_SCENES and not Path(cfg.data).exists():
        root = out_dir / "scene"
        stamp = {
            "source": cfg.data,
            "views": cfg.scene_views,
            "res": cfg.scene_res,
            "test": cfg.scene_test_views,
            "seed": cfg.seed,  # the val/test camera directions depend on it
        }
        stamp_file = root / "make_scene.json"
        if not (stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp):
            make_scene(
                cfg.data,
                root,
                views=cfg.scene_views,
                res=cfg.scene_res,
                val_views=2,
                test_views=cfg.scene_test_views,
                seed=cfg.seed,
            )
            write_json(stamp_file, stamp)  # last: a scene interrupted half-way is rendered again
        return root
    root = Path(cfg.data)
    if not root.exists():
        raise UserError(
            f"data {cfg.data!r} is neither a scene folder, a transforms.json, a COLMAP project nor a "
            f"built-in "
            f"scene ({', '.join(sorted(BUILTIN_SCENES))})"
        )
    return root


def resolution_schedule(cfg: NerfConfig) -> list[tuple[float, int]]:
    """[(progress fraction, grid resolution)]: coarse_res → grid_res, geometric steps at ``upsample_at``."""
    if cfg.coarse_res is None or cfg.coarse_res == cfg.grid_res or not cfg.upsample_at:
        return [(0, cfg.grid_res)]
    fr = sorted(float(f) for f in cfg.upsample_at)
    n = len(fr)
    res = [round(cfg.coarse_res * (cfg.grid_res / cfg.coarse_res) ** (k / n)) for k in range(n + 1)]
    return [(0.0, res[0])] + list(zip(fr, res[1:]))


def training_progress(cfg: NerfConfig, step: int, train_time: float) -> float:
    """Fraction of training done after ``step`` steps and ``train_time`` seconds, in [0, 1]."""
    p = step / cfg.steps
    if cfg.time_limit_s:
        p = max(p, train_time / cfg.time_limit_s)
    return min(1.0, p)


def alpha_at(cfg: NerfConfig, progress: float) -> float:
    """Occupancy sharpness α: ``alpha_start`` → ``alpha_end``, linear over ``alpha_ramp`` of training."""
    ramp = max(1e-9, cfg.alpha_ramp)
    return cfg.alpha_start + (cfg.alpha_end - cfg.alpha_start) * min(1.0, progress / ramp)


def sigma_at(cfg: NerfConfig, progress: float, final_voxel: float) -> float:
    """Training σ in world units: ``sigma_start_vox`` → ``sigma_vox`` (final voxels), geometric over
    ``sigma_ramp`` of training, then constant — so the last part of training (and every output)
    uses the final σ, the one the certificate is stated for."""
    final = cfg.sigma_vox * final_voxel
    if cfg.sigma_start_vox is None:
        return final
    t = min(1.0, progress / max(1e-9, cfg.sigma_ramp))
    return final * (cfg.sigma_start_vox / cfg.sigma_vox) ** (1.0 - t)


def set_schedules(field: RadianceField, cfg: NerfConfig, progress: float, final_voxel: float) -> None:
    """α and σ of a smoothed field at ``progress`` (no-op for the plain model)."""
    if cfg.model == "smoothed":
        field.geometry.alpha = alpha_at(cfg, progress)
        field.geometry.sigma_world = sigma_at(cfg, progress, final_voxel)


def build_field(cfg: NerfConfig, bounds, res: int, final_voxel: float) -> RadianceField:
    spec = GridSpec.from_bounds(bounds[0], bounds[1], res)
    color_res = round(res * (cfg.color_res or cfg.grid_res) / cfg.grid_res)
    cspec = GridSpec.from_bounds(bounds[0], bounds[1], max(color_res, 8))
    if cfg.model == "smoothed":
        geo = SmoothedDensity(
            spec,
            (cfg.sigma_start_vox or cfg.sigma_vox) * final_voxel,
            cfg.theta_init,
            cfg.f_activation,
            cfg.density_scale,
            cfg.density_eps,
            cfg.alpha_start,
            sigma_final=cfg.sigma_vox * final_voxel,
        )
    else:
        geo = PlainDensity(spec, cfg.alpha_init, cfg.step_voxels, cfg.plain_mesh_opacity)
    return RadianceField(geo, SHColor(cspec, cfg.sh_degree))


def load_field(checkpoint: str | Path) -> tuple[RadianceField, dict, NerfConfig]:
    """The field of a checkpoint (CPU, eval mode), its payload and its config.

    The field's ``capture_to_field`` is the run's normalisation, so ``field.clearance(x,
    capture_frame=True)`` answers in the capture's own coordinates.

    Example:
        >>> field, payload, cfg = load_field("runs/lego/checkpoint.pt")     # doctest: +SKIP
        >>> field.is_free(torch.tensor([[0.0, 0.0, 1.2]]), margin=0.02)      # doctest: +SKIP
        tensor([True])
    """
    from geo_rs.config import validate_config

    from .normalize import Similarity

    payload = load_checkpoint(checkpoint)
    cfg = validate_config(NerfConfig, payload["config"], where=f"{checkpoint} (saved config)")
    bounds = payload["bounds"]
    res = resolution_schedule(cfg)[payload["stage"]][1]
    final_voxel = GridSpec.from_bounds(*bounds, cfg.grid_res).voxel
    field = build_field(cfg, bounds, res, final_voxel)
    # σ and α are not parameters: without this a finished smoothed field would render with the
    # schedule's starting (4-voxel) kernel instead of the one it was trained to at this step
    set_schedules(field, cfg, training_progress(cfg, payload["step"], payload.get("train_time", 0.0)),
                  final_voxel)
    try:
        field.load_state_dict(payload["field"])
    except RuntimeError as exc:
        raise UserError(f"{checkpoint}: checkpoint does not fit its own config: "
                        f"{' '.join(str(exc).split())[:160]}") from None
    norm = payload.get("normalization")
    if norm and norm.get("method") != "none":
        field.capture_to_field = Similarity.from_dict(norm["capture_to_train"])
    return field.eval(), payload, cfg


def total_variation(theta: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring voxels (anisotropic TV², as in Plenoxels/DVGO)."""
    return sum(torch.diff(theta, dim=d).pow(2).mean() for d in range(theta.dim()))


class Trainer:
    """Trains one field on one scene; ``run()`` trains to ``cfg.steps``, ``finalize()`` writes outputs.

    Example:
        >>> t = Trainer(load_config(None, data="sphere", steps=50), Path("runs/t"))   # doctest: +SKIP
        >>> t.run(); report = t.finalize()                                             # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: NerfConfig,
        out_dir: str | Path,
        device: str | torch.device | None = None,
        quiet: bool = False,
    ):
        if not isinstance(cfg, NerfConfig):
            raise UserError(f"cfg must be a nerf.NerfConfig (nerf.load_config), got {type(cfg).__name__}")
        self.cfg = cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.quiet = quiet
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.data_root = prepare_data(cfg, self.out)
        self.capture = load_capture(self.data_root, cfg.background, cfg.half_res, cfg.normalize,
                                    cfg.test_every,
                                    cfg.bounds)
        self.gt_mesh = self.capture.gt_mesh
        self.bounds = [list(map(float, b)) for b in self.capture.bounds]
        self.train_views, self.test_views = self.capture.train, self.capture.test
        self._make_rays()
        self.final_voxel = GridSpec.from_bounds(*self.bounds, cfg.grid_res).voxel
        self.schedule = resolution_schedule(cfg)
        self.stage = 0
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.field = self._new_field(self.schedule[0][1])
        self.optimizer = self._make_optimizer()
        self.estimator, self.renderer = None, "dense"
        if self.device.type == "cuda":
            ok, why = nerfacc_cuda_available()
            if ok:
                self.estimator, self.renderer = make_estimator(self.bounds, device=self.device), "occgrid"
            else:
                tqdm.write(f"warning: nerfacc's CUDA extension is unavailable ({why}); rendering with the "
                           "dense path on the GPU")
        self.step = 0
        self.train_time = 0.0
        self.train_cpu = 0.0
        self.history: list[dict] = []
        self.last_run: LoopResult | None = None

    def _make_rays(self) -> None:
        """Every training pixel's ray, colour (and alpha for random backgrounds); masked pixels dropped."""
        views = self.train_views
        o, d = pixel_rays(views.c2w, views.height, views.width, views.intrinsics, distortion=views.distortion)
        keep = views.valid.reshape(-1) if views.valid is not None else slice(None)
        self.rays_o = o.reshape(-1, 3)[keep].to(self.device)
        self.rays_d = d.reshape(-1, 3)[keep].to(self.device)
        self.rays_rgb = views.images.reshape(-1, 3)[keep].to(self.device)
        self.rays_alpha = None
        if self.cfg.background == "random":
            if views.alpha is None:
                raise UserError(f"background: random needs images with an alpha channel; {self.data_root} "
                                f"has "
                                "none (use background: white or black)")
            self.rays_alpha = views.alpha.reshape(-1)[keep].to(self.device)
        if self.rays_o.shape[0] == 0:
            raise UserError(f"{self.data_root}: the masks exclude every training pixel")

    def _camera_summary(self) -> dict:
        from .turntable import camera_summary

        v = self.train_views
        return camera_summary(v.c2w, v.intrinsics, v.height, v.width, self.bounds)

    def _new_field(self, res: int) -> RadianceField:
        field = build_field(self.cfg, self.bounds, res, self.final_voxel).to(self.device)
        if self.capture.normalization.method != "none":
            field.capture_to_field = self.capture.normalization.transform
        return field

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    # -- schedules -------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            [
                {"params": [self.field.geometry.theta], "lr": self.cfg.lr_density, "name": "density"},
                {"params": [self.field.color.features], "lr": self.cfg.lr_color, "name": "color"},
            ],
            betas=(0.9, 0.99),
            eps=1e-15,
        )

    def progress(self, step: int | None = None) -> float:
        """Fraction of training done, in [0, 1]: by steps, or by time when ``time_limit_s`` is set and
        the clock runs out first — so schedules (α, lr, coarse-to-fine) complete within the budget on
        a slow or loaded machine (such runs are then not bit-reproducible)."""
        return training_progress(self.cfg, self.step if step is None else step, self.train_time)

    def _set_schedules(self) -> None:
        """α and σ of the smoothed field at the current progress (no-op for the plain model)."""
        set_schedules(self.field, self.cfg, self.progress(), self.final_voxel)

    def _set_lr(self, progress: float) -> None:
        decay = self.cfg.lr_final_ratio**progress
        for group in self.optimizer.param_groups:
            base = self.cfg.lr_density if group["name"] == "density" else self.cfg.lr_color
            group["lr"] = base * decay

    def _maybe_upsample(self) -> None:
        while self.stage + 1 < len(self.schedule) and self.progress() >= self.schedule[self.stage + 1][0]:
            self.stage += 1
            res = self.schedule[self.stage][1]
            color_res = max(8, round(res * (self.cfg.color_res or self.cfg.grid_res) / self.cfg.grid_res))
            self.field.upsample(
                GridSpec.from_bounds(*self.bounds, res), GridSpec.from_bounds(*self.bounds, color_res)
            )
            self.optimizer = self._make_optimizer()  # new parameters: fresh Adam moments

    @property
    def march_step(self) -> float:
        return self.cfg.step_voxels * self.field.spec.voxel

    # -- training ----------------------------------------------------------------------------
    def train_step(self) -> dict:
        self._maybe_upsample()
        self._set_lr(self.progress())
        self._set_schedules()
        idx = torch.randint(0, self.rays_o.shape[0], (self.cfg.rays_per_batch,), generator=self.generator)
        idx = idx.to(self.device)
        grid = self.field.prepare()
        if self.estimator is not None:
            update_estimator(self.estimator, self.field, grid, self.step, self.march_step)
        target, background = self.rays_rgb[idx], torch.tensor(self.train_views.background, device=self.device)
        if self.rays_alpha is not None:  # random background: composite the target on it too
            background = torch.rand(idx.shape[0], 3, generator=self.generator).to(self.device)
            target = target + (1 - self.rays_alpha[idx, None]) * (background - 1.0)  # images were on white
        out = render_rays(
            self.field,
            grid,
            self.rays_o[idx],
            self.rays_d[idx],
            self.bounds,
            self.march_step,
            stratified=True,
            generator=self.generator,
            estimator=self.estimator,
            background=background,
        )
        mse = torch.mean((out["rgb"] - target) ** 2)
        loss = mse
        if self.cfg.tv_weight > 0:
            loss = loss + self.cfg.tv_weight * total_variation(self.field.geometry.theta)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):  # refuse before the update: the last checkpoint stays sound
            raise UserError(f"training diverged at step {self.step}: the loss is {loss_value} "
                            f"(lower lr_density {self.cfg.lr_density:g} / lr_color {self.cfg.lr_color:g}); "
                            f"{self.checkpoint_path} holds the last sound state")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": loss_value, "psnr": -10 * math.log10(max(float(mse.detach()), 1e-10))}

    def _timed_step(self, step: int) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        stats = self.train_step()
        self.train_time += time.perf_counter() - t0
        self.train_cpu += time.process_time() - c0  # CPU seconds (all threads): load-independent
        return stats

    def evaluate(self, n_views: int | None = None, out_dir: Path | None = None) -> dict:
        from .evaluate import render_test_views

        return render_test_views(
            self.field, self.test_views, self.bounds, self.march_step, out_dir, n_views, self.estimator
        )

    def _eval_hook(self, step: int, stats: dict) -> None:
        if step >= self.cfg.steps:  # the final evaluation (finalize) renders every test view anyway
            return
        ev = self.evaluate(self.cfg.eval_views)
        self.history.append(
            {
                "step": step,
                "train_time_s": round(self.train_time, 1),
                "train_cpu_s": round(self.train_cpu, 1),
                "train_psnr": stats.get("psnr"),
                "test_psnr": ev["psnr"],
            }
        )
        tqdm.write(
            f"step {step}: test PSNR {ev['psnr']:.2f} dB ({ev['n_views']} views), "
            f"train PSNR {stats.get('psnr', float('nan')):.2f}, {self.train_time:.0f} s"
        )

    def run(self, until: int | None = None, checkpoint_path: Path | None = None) -> LoopResult:
        """Train up to step ``until`` (default ``cfg.steps``); checkpoint every ``ckpt_every`` steps and
        every ``ckpt_every_s`` seconds, and once at the end — also when stopped by the time limit or
        a signal (then ``result.reason`` says which; the caller decides whether to go on)."""
        until = self.cfg.steps if until is None else min(until, self.cfg.steps)
        ckpt = checkpoint_path or self.checkpoint_path
        loop = TrainingLoop(
            until,
            step=self.step,
            elapsed=self.train_time,
            checkpoint_every_steps=self.cfg.ckpt_every,
            checkpoint_every_s=self.cfg.ckpt_every_s,
            time_limit_s=self.cfg.time_limit_s,
            desc=f"nerf {self.cfg.model}",
            quiet=self.quiet,
        )
        self.last_run = loop.run(self._timed_step, lambda: self.save(ckpt), [Hook(self.cfg.eval_every,
                                                                                  self._eval_hook)])
        return self.last_run

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "kind": "geo-rs-nerf",
            "config": self.cfg.to_dict(),
            "step": self.step,
            "stage": self.stage,
            "geo_shape": list(self.field.geometry.spec.shape),
            "field": self.field.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.generator),
            "train_time": self.train_time,
            "train_cpu": self.train_cpu,
            "history": self.history,
            "bounds": self.bounds,
            "normalization": self.capture.normalization.to_dict(),
            "cameras": self._camera_summary(),
            "data_root": str(self.data_root),
            "gt_mesh": str(self.gt_mesh) if self.gt_mesh else None,
        }

    def save(self, path: str | Path | None = None) -> Path:
        return save_checkpoint(path or self.checkpoint_path, self.state())

    def load_state(self, payload: dict) -> None:
        """Restore a checkpoint written by :meth:`save` (same model settings) into this trainer."""
        self.stage = payload["stage"]
        res = self.schedule[self.stage][1]
        self.field = self._new_field(res)
        try:
            self.field.load_state_dict(payload["field"])
            self.optimizer = self._make_optimizer()
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:  # shapes/keys of another model
            reason = " ".join(str(exc).split())[:160]
            raise UserError(f"checkpoint does not fit the model of its own config: {reason}") from None
        self.step = payload["step"]
        self.train_time = payload["train_time"]
        self.train_cpu = payload.get("train_cpu", 0.0)
        self.history = list(payload["history"])
        self._set_schedules()
        set_rng_state(payload["rng"], self.generator)

    @classmethod
    def resume(
        cls,
        checkpoint: str | Path,
        out_dir: str | Path | None = None,
        quiet: bool = False,
        config: NerfConfig | None = None,
        payload: dict | None = None,
    ) -> Trainer:
        """A trainer continuing ``checkpoint``. ``config`` (from :func:`nerf.config.merge_for_resume`)
        may differ from the saved one in :data:`nerf.config.RESUMABLE_KEYS` only — e.g. more steps."""
        from geo_rs.config import validate_config

        payload = payload if payload is not None else load_checkpoint(checkpoint)
        cfg = config or validate_config(NerfConfig, payload["config"], where=f"{checkpoint} (saved config)")
        trainer = cls(cfg, out_dir or Path(checkpoint).parent, quiet=quiet)
        trainer.load_state(payload)
        return trainer

    # -- outputs -----------------------------------------------------------------------------
    def _to_capture(self):
        """Training → capture similarity of a normalised capture (None when they coincide)."""
        norm = self.capture.normalization
        return None if norm.method == "none" else norm.transform.inverse()

    def finalize(self) -> dict:
        """Test renders + depth maps, SDF cuts, ``mesh.ply``, metrics → ``report.json``.

        ``report["outputs"]`` lists the files written; ``report["not_produced"]`` maps each output
        that could not be made (``mesh.ply``, ``mesh_metrics``) to the reason.
        """
        from .evaluate import extract_and_score

        t0 = time.perf_counter()
        ev = self.evaluate(self.cfg.final_eval_views, self.out / "renders")
        what = "weak SDF" if self.cfg.model == "smoothed" else f"opacity − {self.cfg.plain_mesh_opacity}"
        geo = extract_and_score(
            self.field,
            self.out,
            self.gt_mesh,
            title=f"{self.cfg.model} field: {what}",
            n_points=self.cfg.metric_points,
            fill=self.cfg.fill_cavities,
            to_capture=self._to_capture(),
        )
        reason = self.last_run.reason if self.last_run is not None else None
        report = {
            "model": self.cfg.model,
            "data": str(self.data_root),
            "steps": self.step,
            "steps_planned": self.cfg.steps,
            "stopped_by": reason,
            "train_time_s": round(self.train_time, 2),
            "train_cpu_s": round(self.train_cpu, 2),
            "eval_time_s": round(time.perf_counter() - t0, 2),
            "test_psnr": ev["psnr"],
            "test_ssim": ev["ssim"],
            "test_views": ev["n_views"],
            "grid_shape": list(self.field.spec.shape),
            "voxel_size": self.field.spec.voxel,
            # the σ of the certified weak SDF (mesh, clearance) and the σ training ended at
            "sigma_world": getattr(self.field.geometry, "sigma_final", None),
            "sigma_world_rendered": getattr(self.field.geometry, "sigma_world", None),
            "threads": torch.get_num_threads(),
            "device": str(self.device),
            "renderer": "nerfacc OccGridEstimator" if self.renderer == "occgrid" else "dense",
            "history": self.history,
            "capture": self.capture.report(),
            "config": self.cfg.to_dict(),
            **geo,
        }
        report["outputs"] = ["report.json", CHECKPOINT, "renders/r_*.png", "renders/r_*_depth.png",
                             "renders/r_*_compare.png", *geo["outputs"]]
        write_json(self.out / "report.json", report, indent=1)
        return report
