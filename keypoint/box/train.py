"""Train the MNIST-canvas box regressor on CPU (minutes) and measure its mean IoU on held-out canvases.

Loss: smooth-L1 on the four pixel coordinates. The data are generated from the seeded canvas
generator (fresh positions every epoch, drawn from ``(seed, epoch)``; same 4,000-digit training
pool), so the model sees the digit pool at many positions; evaluation uses the held-out digit pool.
Training runs on the keypoint package's one loop (:func:`keypoint.fit.fit`): Adam (AdamW without
weight decay), cosine decay per step, held-out IoU after every epoch; with ``checkpoint=`` it
checkpoints by epoch and wall time, resumes mid-epoch and survives SIGINT/SIGTERM.

Example::

    >>> from keypoint.box.train import TrainConfig, train_box_detector
    >>> model, report = train_box_detector(TrainConfig(n_train=64, epochs=1, n_eval=16))  # doctest: +SKIP
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from geo_rs import UserError, box_iou
from geo_rs.config import Schema, format_validation_error, setting

from ..fit import FitSettings, fit
from .data import mnist_canvas
from .model import MnistBoxCNN

CHECKPOINT_FORMAT = "geo-rs-box-train/1"


class TrainConfig(Schema):
    """Settings of :func:`train_box_detector` (typed; bad values are one :class:`UserError`)."""

    n_train: int = setting(4000, "canvases per epoch (positions re-drawn every epoch)", "canvases", ge=1)
    epochs: int = setting(8, "passes (raise it on resume to extend a run)", "epochs", ge=1)
    batch_size: int = setting(64, "canvases per step", "canvases", ge=1)
    lr: float = setting(1e-3, "peak learning rate (cosine decay to 0)", gt=0)
    seed: int = setting(0, "seed of the initialisation, the canvases and the batch order", ge=0)
    n_eval: int = setting(500, "held-out canvases for the reported mean IoU", "canvases", ge=1)
    threads: int = setting(0, "torch threads (0: leave as is)", "threads", ge=0)
    checkpoint_every_minutes: float = setting(5.0, "checkpoint by wall time (with a checkpoint path)",
                                              "minutes", gt=0)

    def __init__(self, **data) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, "train")) from None

    def validate(self) -> None:
        """Kept for callers of the dataclass version: construction already validated everything."""


@torch.no_grad()
def evaluate_iou(model: nn.Module, images: torch.Tensor, boxes: torch.Tensor, batch_size: int = 256) -> dict:
    """Mean / median IoU and the fraction with IoU >= 0.5 of ``model`` on ``images (N,1,H,W)``."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    preds = torch.cat(
        [model(images[s:s + batch_size].to(device)).cpu() for s in range(0, len(images), batch_size)]
    )
    model.train(was)
    ious = box_iou(preds.double(), boxes.double())
    return {
        "mean_iou": float(ious.mean()),
        "median_iou": float(ious.median()),
        "frac_iou_ge_0.5": float((ious >= 0.5).double().mean()),
        "n": len(images),
    }


class _EpochCanvases:
    """The training canvases of one epoch, regenerated when the epoch changes (resume-safe)."""

    def __init__(self, config: TrainConfig):
        self.config, self.epoch, self.data = config, -1, None

    def __call__(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if epoch != self.epoch:
            seed = self.config.seed * 1000 + epoch
            images, boxes, _ = mnist_canvas(self.config.n_train, "train", seed=seed)
            self.epoch, self.data = epoch, (images, boxes)
        return self.data


def train_box_detector(config: TrainConfig | None = None, progress: bool = True,
                       checkpoint: str | Path | None = None, fresh: bool = False) -> tuple[nn.Module, dict]:
    """Train :class:`MnistBoxCNN`; returns ``(model (eval mode, CPU), report dict)``.

    ``checkpoint``: a ``.pt`` path to checkpoint into and resume from (None: no checkpoint; a signal
    then stops without saving). Raises :class:`geo_rs.interrupt.Interrupted` after saving when
    SIGINT/SIGTERM stopped the run.
    """
    config = config or TrainConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    model = MnistBoxCNN().to(device)
    loss_fn = nn.SmoothL1Loss()
    eval_images, eval_boxes, _ = mnist_canvas(config.n_eval, "test", seed=config.seed + 10_000)
    canvases = _EpochCanvases(config)

    def step_loss(batch):
        images, boxes = canvases(batch.epoch)
        x, y = images[batch.items].to(device), boxes[batch.items].to(device)
        return loss_fn(model(x), y), {}

    settings = FitSettings(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, weight_decay=0.0,
                           clip_grad_norm=None, seed=config.seed,
                           checkpoint_every_minutes=config.checkpoint_every_minutes,
                           log_every=20, drop_last=False, quiet=not progress, desc="box")
    identity = {k: v for k, v in config.to_dict().items() if k not in ("epochs", "threads",
                                                                      "checkpoint_every_minutes")}
    start = time.time()
    result = fit(model, step_loss, num_items=config.n_train, settings=settings, checkpoint=checkpoint,
                 identity=identity, fmt=CHECKPOINT_FORMAT, extra={"config": config.to_dict()},
                 epoch_hooks=[lambda epoch: evaluate_iou(model, eval_images, eval_boxes)], fresh=fresh,
                 fresh_hint="delete it or pass fresh=True")
    result.raise_if_interrupted()
    history = [{"epoch": h["epoch"], "train_loss": _epoch_loss(result.history, h["epoch"]),
                **{k: h[k] for k in ("mean_iou", "median_iou", "frac_iou_ge_0.5", "n")}}
               for h in result.history if h.get("kind") == "epoch"]
    model = model.cpu().eval()
    heldout = evaluate_iou(model, eval_images, eval_boxes)
    report = {
        "config": config.to_dict(),
        "history": history,
        "heldout": heldout | {"split": "test", "seed": config.seed + 10_000},
        "train_seconds": time.time() - start,
        "epochs_run": result.epochs_done,
    }
    return model, report


def _epoch_loss(history: list[dict], epoch: int) -> float:
    """Mean logged training loss during ``epoch`` (1-based)."""
    vals = [h["loss"] for h in history if "loss" in h and epoch - 1 < h["epoch"] <= epoch]
    return float(sum(vals) / len(vals)) if vals else float("nan")
