"""A compact heatmap keypoint detector built for verification, and its small self-contained trainer.

The network is one ``nn.Sequential`` of layers the bound engine handles well (Conv2d, BatchNorm2d in
eval, ReLU, a residual add inside :class:`Residual`): no upsampling (auto_LiRPA's dense "matrix" mode,
which a nearest Upsample needs, is ~10x slower on 64x64 inputs), and the first layer is a Conv2d, so
brightness / contrast are fused with it (exact first layer, see :func:`geo_rs.output_bounds`).

* 16x16 heatmaps (stride 4): conv s2 → conv s2 → ``blocks`` residual blocks → 1x1 head;
* 32x32 heatmaps (stride 2): conv s2 → ``blocks`` residual blocks → 1x1 head.

The residual blocks use ``kernel``x``kernel`` convolutions (5 by default): without an upsampling path the
receptive field must come from the kernels (5x5 at stride 2: 51 input pixels after 3 blocks), and zero
padding is what tells a corner near the crop's top-left from one near its bottom-left. (A learned
per-position bias or a transposed-conv decoder would help accuracy but break auto_LiRPA 0.3's CROWN
"patches" mode or push it into the dense mode, ~100x slower on 64x64 inputs.)

Training (:func:`train_detector`) uses :class:`geo_rs.training.TrainingLoop` on 64x64 crops of the
synthetic ``airstrip`` category (8 keypoints). Loss ``train.loss``: ``mse`` to Gaussian heatmaps or ``ce``
(softmax cross-entropy over each heatmap's pixels, :func:`heatmap_loss`), plus either or both of two
IBP terms over the box ``x ± ibp_eps`` (:func:`interval_forward`): the summed interval width of the
heatmaps (``ibp_weight``) and the robust cross-entropy of the worst-case logits (``robust_weight`` κ,
:func:`robust_ce`, IBP certified training), both after ``ibp_warmup`` clean steps and ramped over
``ibp_ramp``. Without them the interval bounds through ~9 conv layers are useless (median IBP width of the
heatmap bounds at white noise 0.001: ~2·10⁴ plain vs 0.3 with ce + robust κ 0.5, ε 0.002); the width
penalty alone (with ce or mse) stalls the fit, so configs/keypoint/verify_heatmap_quick.yaml uses ce +
robust (PCK@0.1 0.90 at 16x16, 0.84 at 32x32 on its 60 validation images). Keypoints are the heatmap
argmax (no sub-pixel refinement: that is what the verifier certifies).

Example::

    >>> net = build_detector(num_keypoints=8, heatmap_size=32, width=8, blocks=2, kernel=5)
    >>> import torch
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 8, 32, 32])

CLI (the keypoint package's trainer is being rewritten; this entry point stays small on purpose)::

    python -m keypoint.verify.detector --config configs/keypoint/verify_heatmap.yaml --out runs/kpv
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from geo_rs.config import Schema, load_config, setting
from geo_rs.errors import UserError

CHECKPOINT_FORMAT = "geo-rs-kp-verify-detector/1"


class Residual(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))`` (``kernel``x``kernel`` convs, same channels)."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        p = kernel // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel, 1, p, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel, 1, p, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def build_detector(
    num_keypoints: int = 8,
    heatmap_size: int = 32,
    width: int = 8,
    blocks: int = 3,
    input_size: int = 64,
    in_channels: int = 3,
    kernel: int = 5,
) -> nn.Sequential:
    """The verification detector: ``(B, in_channels, S, S)`` → heatmaps ``(B, K, h, h)``."""
    if heatmap_size * 2 == input_size:
        stem = [nn.Conv2d(in_channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        ch = width
    elif heatmap_size * 4 == input_size:
        ch = 2 * width
        stem = [
            nn.Conv2d(in_channels, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, ch, 3, 2, 1, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(),
        ]
    else:
        raise UserError(
            f"heatmap_size must be input_size/2 or input_size/4 ({input_size // 2} or "
            f"{input_size // 4}), got {heatmap_size}"
        )
    if kernel < 1 or kernel % 2 == 0:
        raise UserError(f"kernel must be an odd number >= 1, got {kernel}")
    return nn.Sequential(
        *stem, *[Residual(ch, kernel) for _ in range(blocks)], nn.Conv2d(ch, num_keypoints, 1)
    )


# ----------------------------------------------------------------------------------------------- training IBP
def interval_forward(model: nn.Module, x: torch.Tensor, center: torch.Tensor, radius: torch.Tensor):
    """Clean output and differentiable interval bounds (centre, radius) through the detector, for
    *training* only (IBP-regularised training keeps the trained net's bounds tight; verification uses the
    geo_rs engine). BatchNorm in training mode scales by the clean batch's statistics, as its forward
    does. Returns ``(y, centre, radius)``."""
    if isinstance(model, nn.Sequential):
        for layer in model:
            x, center, radius = interval_forward(layer, x, center, radius)
        return x, center, radius
    if isinstance(model, Residual):
        y, c, r = interval_forward(model.body, x, center, radius)
        return interval_forward(model.act, x + y, center + c, radius + r)
    if isinstance(model, nn.Conv2d):
        r = F.conv2d(
            radius, model.weight.abs(), None, model.stride, model.padding, model.dilation, model.groups
        )
        c = F.conv2d(
            center, model.weight, model.bias, model.stride, model.padding, model.dilation, model.groups
        )
        return model(x), c, r
    if isinstance(model, nn.BatchNorm2d):
        var = x.var((0, 2, 3), unbiased=False) if model.training else model.running_var
        mean = x.mean((0, 2, 3)) if model.training else model.running_mean
        scale = (model.weight / torch.sqrt(var + model.eps)).reshape(1, -1, 1, 1)
        shift = model.bias.reshape(1, -1, 1, 1) - mean.reshape(1, -1, 1, 1) * scale
        return model(x), center * scale + shift, radius * scale.abs()
    if isinstance(model, nn.ReLU):
        lo, hi = torch.relu(center - radius), torch.relu(center + radius)
        return torch.relu(x), (lo + hi) / 2, (hi - lo) / 2
    raise UserError(f"interval_forward: unsupported layer {type(model).__name__}")


# ----------------------------------------------------------------------------------------------- config
class DataSection(Schema):
    category: str = setting("airstrip", "synthetic category to train on (8 keypoints: airstrip)")
    image_size: int = setting(96, "synthetic image side", unit="pixels", ge=32)
    max_objects: int = setting(1, "objects per synthetic image", ge=1)
    occlusion_rate: float = setting(0.1, "chance an instance gets occluders", ge=0, le=1)
    truncation_rate: float = setting(0.05, "chance an instance is pushed to the border", ge=0, le=1)
    train_images: int = setting(2500, "synthetic training images", ge=1)
    val_images: int = setting(150, "synthetic validation images", ge=1)
    train_seed: int = setting(0, "seed of the training images")
    val_seed: int = setting(1000, "seed of the validation images")
    input_size: int = setting(64, "crop side fed to the detector", unit="pixels", ge=16)
    padding: float = setting(1.25, "crop side / instance box side", gt=1)


class ModelSection(Schema):
    heatmap_sizes: list[int] = setting([16, 32], "heatmap sides to train (one detector each)")
    width: int = setting(8, "channels of the first stage (16x16 detectors use twice that)", ge=2)
    blocks: int = setting(3, "residual blocks", ge=0)
    kernel: int = setting(5, "kernel side of the residual blocks' convolutions (odd)", ge=1)
    sigma: float = setting(
        1.0,
        "Gaussian target sigma (small: a sharp peak, a wide top-1/top-2 gap)",
        unit="heatmap pixels",
        gt=0,
    )


class TrainSection(Schema):
    loss: Literal["mse", "ce"] = setting(
        "mse",
        "heatmap loss: mse (squared error to the Gaussian targets) or ce (softmax cross-entropy over each "
        "heatmap's pixels against the Gaussian normalised to sum 1: trains the argmax itself)",
    )
    epochs: int = setting(20, "passes over the training crops", ge=1)
    batch_size: int = setting(32, "crops per step", ge=1)
    lr: float = setting(3e-3, "AdamW learning rate (cosine decay)", gt=0)
    weight_decay: float = setting(1e-4, "AdamW weight decay", ge=0)
    threads: int = setting(1, "torch threads", ge=1)
    ibp_eps: float = setting(
        0.002, "white-noise radius of the IBP regulariser (0: plain training)", unit="pixel value", ge=0
    )
    ibp_weight: float = setting(
        0.0005, "weight of the summed IBP bound width of the heatmaps in the loss", ge=0
    )
    robust_weight: float = setting(
        0.0,
        "final weight κ of the robust cross-entropy in (1-κ)·loss + κ·robust (IBP-style certified training: "
        "the worst-case logits over x ± ibp_eps, the labelled pixel at its lower bound and every other at "
        "its upper bound; grows with the radius)",
        ge=0,
        le=1,
    )
    ibp_warmup: float = setting(
        0.0,
        "fraction of the steps trained clean before the IBP radius starts to grow (the interval bounds of "
        "an untrained net are ~1000x its input radius: IBP from step 0 stalls the fit)",
        ge=0,
        lt=1,
    )
    ibp_ramp: float = setting(
        0.5, "fraction of the steps over which the IBP radius (and κ) then grows from 0", gt=0, le=1
    )
    time_limit_s: float | None = setting(None, "stop training after this long", unit="seconds")


class DetectorConfig(Schema):
    name: str = setting("verify_heatmap", "run name")
    seed: int = setting(0, "seed of initialisation and shuffling")
    data: DataSection = setting(DataSection(), "synthetic data")
    model: ModelSection = setting(ModelSection(), "detector")
    train: TrainSection = setting(TrainSection(), "optimisation")


# ----------------------------------------------------------------------------------------------- data
def make_crops(data_cfg: DataSection, split: str) -> dict[str, torch.Tensor]:
    """Crops of one category: ``image (N, 3, S, S)``, ``keypoints (N, K, 2)`` crop pixels,
    ``visibility (N, K)``, ``norm (N,)`` (instance box side in crop pixels, the PCK normaliser),
    ``crop_to_image (N, 2, 3)`` (affine, crop pixel → image pixel)."""
    from ..data import KeypointCropDataset, KeypointLayout, SynthConfig, generate_dataset
    from ..data.synth import ALL_CATEGORIES

    cats = [c for c in ALL_CATEGORIES if c.name == data_cfg.category]
    if not cats:
        raise UserError(f"unknown category {data_cfg.category!r}; known: {[c.name for c in ALL_CATEGORIES]}")
    cat = cats[0]
    synth = SynthConfig(
        image_size=data_cfg.image_size,
        max_objects=data_cfg.max_objects,
        occlusion_rate=data_cfg.occlusion_rate,
        truncation_rate=data_cfg.truncation_rate,
        category_ids=(cat.id,),
    )
    n = data_cfg.train_images if split == "train" else data_cfg.val_images
    seed = data_cfg.train_seed if split == "train" else data_cfg.val_seed
    data = generate_dataset(n, seed, synth)
    data.categories = (cat,)
    ds = KeypointCropDataset(
        data, data_cfg.input_size, data_cfg.padding, KeypointLayout.from_categories([cat])
    )
    items = [ds[i] for i in range(len(ds))]
    boxes = torch.stack([it["box"] for it in items])
    scale = torch.stack([it["crop_to_image"][0, 0] for it in items])
    return {
        "image": torch.stack([it["image"] for it in items]),
        "keypoints": torch.stack([it["keypoints"][0] for it in items]),
        "visibility": torch.stack([it["visibility"][0] for it in items]),
        "norm": boxes[:, 2:].amax(1) / scale,
        "crop_to_image": torch.stack([it["crop_to_image"] for it in items]),
    }


def heatmap_targets(
    keypoints: torch.Tensor, visibility: torch.Tensor, input_size: int, heatmap_size: int, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian targets ``(N, K, h, h)`` and weights ``(N, K)`` (the HeatmapCodec convention)."""
    from ..codecs import HeatmapCodec

    codec = HeatmapCodec(input_size, heatmap_size, sigma)
    enc = [codec.encode(keypoints[i : i + 1], visibility[i : i + 1]) for i in range(len(keypoints))]
    return torch.stack([e["heatmaps"] for e in enc]), torch.stack([e["heatmap_weights"] for e in enc])


def heatmap_loss(pred: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, kind: str = "mse"):
    """Mean over labelled keypoints of the per-heatmap loss; ``pred``/``targets`` ``(B, K, h, w)``,
    ``weights`` ``(B, K)``. ``mse``: summed squared error to the Gaussian targets. ``ce``: cross-entropy
    of the softmax over each heatmap's pixels against the target normalised to sum 1: it trains the
    argmax the verifier certifies and lifts the top-1 logit above the rest, where MSE to σ=1 Gaussians
    starts at the all-zero heatmap (loss ≈ π σ²) and leaves it slowly (PCK@0.1 0.18 after 40 epochs of
    the quick config vs 0.94 after 12 with ce)."""
    if kind == "mse":
        per = ((pred - targets) ** 2).sum((-1, -2))
    elif kind == "ce":
        p = targets.flatten(2)
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
        per = -(p * F.log_softmax(pred.flatten(2), -1)).sum(-1)
    else:
        raise UserError(f"train.loss: unknown {kind!r}; choose mse or ce")
    return (per * weights).sum() / weights.sum().clamp_min(1.0)


def robust_ce(lower: torch.Tensor, upper: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor):
    """Cross-entropy of the worst-case logits over an input box (IBP certified training, Gowal et al. 2018):
    the labelled pixel (the target's argmax) at its ``lower`` bound, every other pixel at its ``upper`` bound;
    it is small only where the bounds already prove the argmax. ``(B, K, h, w)`` bounds and targets,
    ``(B, K)`` weights → the mean over labelled keypoints."""
    t = targets.flatten(2).argmax(-1, keepdim=True)
    worst = upper.flatten(2).scatter(-1, t, lower.flatten(2).gather(-1, t))
    per = -F.log_softmax(worst, -1).gather(-1, t).squeeze(-1)
    return (per * weights).sum() / weights.sum().clamp_min(1.0)


def argmax_keypoints(heatmaps: torch.Tensor) -> torch.Tensor:
    """Argmax pixel of each heatmap ``(B, K, h, w)`` → ``(B, K, 2)`` heatmap pixels (u = column, v = row)."""
    b, k, h, w = heatmaps.shape
    idx = heatmaps.reshape(b, k, -1).argmax(-1)
    return torch.stack([idx % w, idx // w], -1)


def to_input_pixels(uv: torch.Tensor, stride: int) -> torch.Tensor:
    """Heatmap pixel centres → input pixels (cell j is centred on input ``(j + 0.5)·stride − 0.5``)."""
    return (uv.double() + 0.5) * stride - 0.5


@torch.no_grad()
def evaluate_pck(model: nn.Module, crops: dict[str, torch.Tensor], alphas=(0.05, 0.1)) -> dict[str, float]:
    """PCK@α (α · instance box side) of the argmax keypoints on ``crops`` (labelled keypoints)."""
    from ..metrics import pck

    model.eval()
    hm = torch.cat([model(crops["image"][i : i + 256]) for i in range(0, len(crops["image"]), 256)])
    stride = crops["image"].shape[-1] // hm.shape[-1]
    pred = to_input_pixels(argmax_keypoints(hm), stride).numpy()
    gt = crops["keypoints"].double().numpy()
    vis = crops["visibility"].numpy()
    norm = crops["norm"].double().numpy()
    return {f"pck@{a:g}": pck(pred, gt, vis, norm, a) for a in alphas}


# ----------------------------------------------------------------------------------------------- training
def train_detector(
    cfg: DetectorConfig,
    out_dir: str | Path,
    heatmap_size: int,
    quiet: bool = False,
    crops: tuple[dict, dict] | None = None,
) -> dict:
    """Train one detector; writes ``out_dir/detector_{h}.pt`` (resumable) and returns its summary."""
    from geo_rs.atomic import torch_save
    from geo_rs.training import Hook, TrainingLoop

    torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, val = crops or (make_crops(cfg.data, "train"), make_crops(cfg.data, "val"))
    k = train["keypoints"].shape[1]
    size = cfg.data.input_size
    sigma = cfg.model.sigma
    targets, weights = heatmap_targets(train["keypoints"], train["visibility"], size, heatmap_size, sigma)
    model = build_detector(k, heatmap_size, cfg.model.width, cfg.model.blocks, size, kernel=cfg.model.kernel)
    n = len(train["image"])
    bs = min(cfg.train.batch_size, n)
    per_epoch = max(1, n // bs)
    total = cfg.train.epochs * per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    path = out / f"detector_{heatmap_size}.pt"
    step, elapsed = 0, 0.0
    if path.is_file():
        ck = torch.load(path, weights_only=False)
        if ck.get("config") == cfg.to_dict() and "optimizer" in ck:
            model.load_state_dict(ck["state_dict"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            step, elapsed = int(ck["step"]), float(ck["train_seconds"])
    gen = torch.Generator().manual_seed(cfg.seed)
    perms: dict[int, torch.Tensor] = {}

    def step_fn(s: int) -> dict:
        epoch, it = divmod(s, per_epoch)
        if epoch not in perms:  # the permutation of an epoch depends only on (seed, epoch): resumable
            perms.clear()
            perms[epoch] = torch.randperm(n, generator=gen.manual_seed(cfg.seed * 1000 + epoch))
        idx = perms[epoch][it * bs : (it + 1) * bs]
        model.train()
        x = train["image"][idx]
        ramp = min(1.0, max(0.0, s - cfg.train.ibp_warmup * total) / max(1.0, cfg.train.ibp_ramp * total))
        eps = cfg.train.ibp_eps * ramp
        kappa = cfg.train.robust_weight * ramp
        rob = torch.zeros(())
        if eps > 0 and (cfg.train.ibp_weight > 0 or kappa > 0):
            # The box x ± eps (a superset of the clipped set); its centre pass is the clean forward.
            pred, ctr, rad = interval_forward(model, x, x, torch.full_like(x, eps))
            width = (2 * rad).sum((-1, -2)).mean()
            if kappa > 0:
                rob = robust_ce(ctr - rad, ctr + rad, targets[idx], weights[idx])
        else:
            pred, width = model(x), torch.zeros(())
        fit = heatmap_loss(pred, targets[idx], weights[idx], cfg.train.loss)
        loss = (1 - kappa) * fit + kappa * rob + cfg.train.ibp_weight * width
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": float(loss.detach()), cfg.train.loss: float(fit.detach()),
                "robust": float(rob.detach()), "ibp_width": float(width.detach())}

    summary: dict = {}

    def save() -> None:
        torch_save(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "config": cfg.to_dict(),
                "heatmap_size": heatmap_size,
                "num_keypoints": k,
                "input_size": size,
                "state_dict": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": loop.step,
                "train_seconds": loop.elapsed,
                "val": summary.get("val"),
            },
        )

    def report(s: int, stats) -> None:
        loop.write(
            f"h={heatmap_size} step {s}/{total} loss {stats.get('loss', float('nan')):.4f} "
            f"val {evaluate_pck(model, val)}"
        )

    loop = TrainingLoop(
        total,
        step=step,
        elapsed=elapsed,
        checkpoint_every_s=60.0,
        time_limit_s=cfg.train.time_limit_s,
        desc=f"detector {heatmap_size}",
        quiet=quiet,
    )
    result = loop.run(step_fn, save, hooks=[Hook(per_epoch * 4, report)])
    summary["val"] = evaluate_pck(model, val)
    summary.update(
        {
            "heatmap_size": heatmap_size,
            "steps": result.step,
            "reason": result.reason,
            "train_seconds": round(result.elapsed, 1),
            "train_crops": n,
            "val_crops": len(val["image"]),
            "checkpoint": str(path),
        }
    )
    save()
    result.raise_if_interrupted()
    return summary


def load_detector(path: str | Path) -> nn.Sequential:
    """A detector written by :func:`train_detector`, in eval mode."""
    from geo_rs.checks import existing_file

    ck = torch.load(existing_file(path, "detector checkpoint"), map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a verification-detector checkpoint (format {CHECKPOINT_FORMAT})")
    m = ck["config"]["model"]
    net = build_detector(
        ck["num_keypoints"], ck["heatmap_size"], m["width"], m["blocks"], ck["input_size"], kernel=m["kernel"]
    )
    net.load_state_dict(ck["state_dict"])
    return net.eval()


def main(argv: list[str] | None = None) -> dict:
    from geo_rs.atomic import write_json

    p = argparse.ArgumentParser(description="Train the verification-oriented heatmap detector(s).")
    p.add_argument("--config", default="configs/keypoint/verify_heatmap.yaml", help="YAML config")
    p.add_argument("--out", required=True, help="output folder (checkpoints detector_{h}.pt, summary.json)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--heatmap-size", type=int, default=None, help="train only this heatmap side (16 or 32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    cfg = load_config(DetectorConfig, a.config, {"train.epochs": a.epochs}, {"train.epochs": "--epochs"})
    t0 = time.time()
    torch.set_num_threads(cfg.train.threads)
    crops = (make_crops(cfg.data, "train"), make_crops(cfg.data, "val"))
    out = {"data_seconds": round(time.time() - t0, 1), "detectors": []}
    for h in [a.heatmap_size] if a.heatmap_size else cfg.model.heatmap_sizes:
        out["detectors"].append(train_detector(cfg, a.out, h, a.quiet, crops))
        print(out["detectors"][-1], flush=True)
    write_json(
        Path(a.out) / f"summary{'_' + str(a.heatmap_size) if a.heatmap_size else ''}.json", out, indent=2
    )
    return out


if __name__ == "__main__":  # pragma: no cover
    main()
