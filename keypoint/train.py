"""Train a top-down keypoint model (heatmap / regression / AdaAnchor) from a config.

The config is a :class:`keypoint.config.TopDownConfig` (YAML layout there); training runs on the one
loop (:func:`keypoint.fit.fit`): resumable mid-epoch, checkpoints by epoch and wall time, graceful
SIGINT/SIGTERM, ``train.max_minutes`` per invocation. Writes into the run folder (``out_dir``,
default ``runs/keypoint/<name>``): ``last.pt`` (:mod:`keypoint.checkpoints`), ``history.json``,
``loss.png`` and ``metrics.json`` (the summary below, with the validation metrics of
:func:`keypoint.evaluate.evaluate_model`).

A folder holding another model's ``last.pt`` is refused (``fresh=True`` overwrites it); raising
``train.epochs`` on resume extends the run. For AdaAnchor the history gets, every epoch, the
anchor–target correlation and distance on validation crops (:func:`keypoint.models.adaanchor.
anchor_report`), so a collapse of the adaptive selection shows while it happens.

Example::

    >>> from keypoint.config import load_keypoint_config   # doctest: +SKIP
    >>> summary = train(load_keypoint_config("configs/keypoint/adaanchor.yaml"))
    >>> summary["val"]["inv_error"]
"""
from __future__ import annotations

from typing import Any

import torch

from geo_rs.atomic import write_json
from geo_rs.errors import UserError

from .checkpoints import CHECKPOINT_FORMAT
from .config import KeypointConfig, TopDownConfig, resume_identity, validate_keypoint_config
from .data.dataset import KeypointCropDataset, KeypointLayout
from .data.splits import load_split
from .data.synth import KeypointData
from .data.tensors import materialize
from .fit import FitResult, FitSettings, check_run_folder, fit
from .models.registry import build_model

__all__ = ["prepare_run", "run_summary", "train"]

DIAGNOSTIC_CROPS = 256


def prepare_run(cfg: KeypointConfig) -> torch.device:
    """Thread count, seeds, the run folder; returns the device (CUDA when present, else CPU)."""
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    torch.manual_seed(int(cfg.seed))
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_summary(cfg: KeypointConfig, result: FitResult, model_config: dict, **more: Any) -> dict:
    """The common part of a run's ``metrics.json``."""
    losses = [h["loss"] for h in result.history if "loss" in h]
    return {"name": cfg.name, "model": model_config, "epochs": cfg.train.epochs,
            "epochs_run": round(result.epochs_done, 4), "steps": result.step, "complete": result.complete,
            "stopped_by": result.reason, "resumed_from_step": result.resumed_from,
            "train_seconds": round(result.elapsed, 1), "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None, "checkpoint": str(result.checkpoint), **more}


def _anchor_hook(model, val: KeypointData, layout: KeypointLayout, cfg: TopDownConfig, device):
    """Per-epoch AdaAnchor diagnostics on the first validation crops (None for other models)."""
    if cfg.model.type != "adaanchor" or not cfg.train.diagnostics:
        return None
    from .models.adaanchor import anchor_report

    ds = KeypointCropDataset(val, cfg.data.input_size, cfg.data.padding, layout)
    m = materialize(ds, model.codec)
    take = slice(0, DIAGNOSTIC_CROPS)
    images = m["image"][take].to(device)
    points = m["targets"]["points"][take, 0].to(device)
    vis = m["visibility"][take, 0]

    def hook(epoch: int) -> dict:
        return anchor_report(model, images, points, vis.to(device))

    return hook


def train(cfg: KeypointConfig | dict, *, fresh: bool = False, quiet: bool = False,
          evaluate_after: bool = True, data: tuple[KeypointData, KeypointData] | None = None) -> dict:
    """Train per ``cfg`` (a :class:`TopDownConfig` or a mapping); returns the summary written to
    ``metrics.json``. ``data = (train, val)`` replaces the config's data source (tests)."""
    cfg = validate_keypoint_config(cfg)
    if not isinstance(cfg, TopDownConfig):
        raise UserError("model.type 'klpnet' trains on whole images: use keypoint.klpnet_train.train_klpnet")
    # a foreign checkpoint in the run folder is refused before any data work
    check_run_folder(cfg.run_dir / "last.pt", CHECKPOINT_FORMAT, resume_identity(cfg), fresh)
    device = prepare_run(cfg)
    out_dir = cfg.run_dir
    train_data = data[0] if data else load_split(cfg.data, "train", quiet=quiet)
    layout = KeypointLayout.from_categories(train_data.categories)
    model = build_model(cfg.model.to_dict(), num_keypoints=layout.num_channels,
                        input_size=cfg.data.input_size).to(device)
    tensors = materialize(KeypointCropDataset(train_data, cfg.data.input_size, cfg.data.padding, layout),
                          model.codec)
    images, targets = tensors["image"], tensors["targets"]
    val = None
    hooks = []
    if evaluate_after or cfg.train.diagnostics:
        val = data[1] if data else load_split(cfg.data, "val", quiet=quiet)
        hook = _anchor_hook(model, val, layout, cfg, device)
        hooks = [hook] if hook else []

    noise = float(cfg.train.noise_sigma)

    def loss_fn(batch):
        idx = batch.items
        x = images[idx].to(device)
        if noise > 0:  # Gaussian noise augmentation: the base model of a median-smoothed detector
            x = x + noise * torch.randn_like(x)
        return model.loss(model(x), {k: v[idx].to(device) for k, v in targets.items()})

    extra = {"config": cfg.to_dict(), "model_config": model.config, "codec": model.codec.to_dict(),
             "layout": layout.to_dict(), "input_size": cfg.data.input_size, "padding": cfg.data.padding}
    result = fit(model, loss_fn, num_items=len(images),
                 settings=FitSettings.from_section(cfg.train, cfg.seed, quiet, cfg.name),
                 checkpoint=out_dir / "last.pt", identity=resume_identity(cfg), fmt=CHECKPOINT_FORMAT,
                 extra=extra, epoch_hooks=hooks, fresh=fresh, plot_title=cfg.name)
    summary = run_summary(cfg, result, model.config, train_instances=len(images))
    if result.reason != "signal" and evaluate_after:
        from .evaluate import evaluate_model

        model.set_progress(float("inf"))
        summary["val"] = evaluate_model(model, val, layout, cfg.data.input_size, cfg.data.padding)
    write_json(out_dir / "metrics.json", summary, indent=2)
    result.raise_if_interrupted()
    return summary
