"""Train the MNIST-canvas box regressor on CPU (minutes) and measure its mean IoU on held-out canvases.

Loss: smooth-L1 on the four pixel coordinates. The data are generated from the seeded canvas
generator (fresh positions every epoch, same 4,000-digit training pool), so the model sees the digit
pool at many positions; evaluation uses the held-out digit pool.

Example::

    >>> from keypoint.box.train import TrainConfig, train_box_detector
    >>> model, report = train_box_detector(TrainConfig(n_train=64, epochs=1, n_eval=16))  # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from geo_rs import UserError, box_iou

from .data import mnist_canvas
from .model import MnistBoxCNN


@dataclass
class TrainConfig:
    n_train: int = 4000  # canvases per epoch (positions re-drawn every epoch)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    n_eval: int = 500  # held-out canvases for the reported mean IoU
    threads: int = 0  # torch threads (0: leave as is)

    def validate(self) -> None:
        for name in ("n_train", "epochs", "batch_size", "n_eval"):
            if getattr(self, name) <= 0:
                raise UserError(f"train: {name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"train: lr must be positive, got {self.lr}")


@torch.no_grad()
def evaluate_iou(model: nn.Module, images: torch.Tensor, boxes: torch.Tensor, batch_size: int = 256) -> dict:
    """Mean / median IoU and the fraction with IoU >= 0.5 of ``model`` on ``images (N,1,H,W)``."""
    model.eval()
    device = next(model.parameters()).device
    preds = torch.cat(
        [model(images[s:s + batch_size].to(device)).cpu() for s in range(0, len(images), batch_size)]
    )
    ious = box_iou(preds.double(), boxes.double())
    return {
        "mean_iou": float(ious.mean()),
        "median_iou": float(ious.median()),
        "frac_iou_ge_0.5": float((ious >= 0.5).double().mean()),
        "n": len(images),
    }


def train_box_detector(config: TrainConfig | None = None, progress: bool = True) -> tuple[nn.Module, dict]:
    """Train :class:`MnistBoxCNN`; returns ``(model (eval mode, CPU), report dict)``."""
    config = config or TrainConfig()
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    model = MnistBoxCNN().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    loss_fn = nn.SmoothL1Loss()
    eval_images, eval_boxes, _ = mnist_canvas(config.n_eval, "test", seed=config.seed + 10_000)
    history = []
    start = time.time()
    for epoch in range(config.epochs):
        images, boxes, _ = mnist_canvas(config.n_train, "train", seed=config.seed * 1000 + epoch)
        perm = torch.randperm(len(images))
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(images), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for s in bar:
            idx = perm[s:s + config.batch_size]
            x, y = images[idx].to(device), boxes[idx].to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        sched.step()
        metrics = evaluate_iou(model, eval_images, eval_boxes)
        history.append({"epoch": epoch + 1, "train_loss": total / seen, **metrics})
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: loss {total / seen:.3f}, held-out mean IoU {metrics['mean_iou']:.4f}"
            )
    model = model.cpu().eval()
    report = {
        "config": asdict(config),
        "history": history,
        "heldout": history[-1] | {"split": "test", "seed": config.seed + 10_000},
        "train_seconds": time.time() - start,
    }
    return model, report
