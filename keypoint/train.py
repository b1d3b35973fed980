"""Train a keypoint model from a YAML config (top-down crops of every annotated instance).

Config layout (``configs/keypoint/*.yaml``)::

    name: adaanchor_full
    seed: 0
    out_dir: runs/keypoint/adaanchor_full     # checkpoint last.pt, metrics.json, loss.png
    data:
      source: synth          # synth | coco
      synth: {occlusion_rate: 0.7, ...}       # SynthConfig fields (synth only)
      train_images: 600      # synth only
      val_images: 150
      train_seed: 0
      val_seed: 1000
      train_json: path/annotations.json       # coco only (images in <json dir>/images)
      val_json: path/annotations.json
      input_size: 64         # crop side in pixels
      padding: 1.25          # crop = box enlarged by this factor, made square
    model: {type: adaanchor, ...}             # see keypoint.models.registry
    train: {epochs: 10, batch_size: 32, lr: 0.002, weight_decay: 0.0001, num_threads: null,
            max_minutes: null, log_every: 20}

Synthetic data is generated once and cached as COCO under ``runs/keypoint/cache/synth-<hash>``.
Training resumes from ``out_dir/last.pt`` when it exists and was written for the same config.

Checkpoint (``torch.save`` dict): ``format`` = ``"geo-rs-keypoint/1"``, ``config``, ``model_config``,
``codec`` (``codec.to_dict()``), ``layout``, ``state_dict``, ``optimizer``, ``epoch``, ``history``.

Example::

    >>> from keypoint.train import train, load_config   # doctest: +SKIP
    >>> summary = train(load_config("configs/keypoint/adaanchor.yaml"))
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from geo_rs.errors import UserError

from .codecs import encode_batch
from .data.coco import load_coco, save_coco
from .data.dataset import KeypointCropDataset, KeypointLayout
from .data.synth import KeypointData, SynthConfig, generate_dataset
from .models.registry import build_model

CHECKPOINT_FORMAT = "geo-rs-keypoint/1"
CACHE_ROOT = Path("runs/keypoint/cache")

DEFAULT_CONFIG: dict[str, Any] = {
    "name": "keypoint",
    "seed": 0,
    "out_dir": None,
    "data": {"source": "synth", "synth": {}, "train_images": 600, "val_images": 150, "train_seed": 0,
             "val_seed": 1000, "train_json": None, "val_json": None, "input_size": 64, "padding": 1.25},
    "model": {"type": "adaanchor"},
    "train": {"epochs": 10, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "num_threads": None,
              "max_minutes": None, "log_every": 20},
}


def merge_config(base: dict, over: dict, where: str = "") -> dict:
    """``base`` overridden by ``over``; unknown fields are errors (``model``, ``synth``: owners check)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise UserError(f"config: unknown field '{where}{k}'; known: {sorted(base)}")
        if isinstance(base[k], dict) and k not in ("model", "synth"):
            if not isinstance(v, dict):
                raise UserError(f"config: '{where}{k}' must be a mapping, got {type(v).__name__}")
            out[k] = merge_config(base[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


def resolve_config(cfg: dict) -> dict:
    """Fill defaults and validate field names (``model`` and ``data.synth`` are checked by their owners)."""
    if not isinstance(cfg, dict):
        raise UserError(f"config must be a mapping, got {type(cfg).__name__}")
    out = merge_config(DEFAULT_CONFIG, cfg)
    if out["data"]["source"] not in ("synth", "coco"):
        raise UserError(f"config: data.source must be 'synth' or 'coco', got '{out['data']['source']}'")
    SynthConfig.from_dict(out["data"]["synth"] or {})
    t = out["train"]
    if int(t["epochs"]) < 1 or int(t["batch_size"]) < 1 or not float(t["lr"]) > 0:
        raise UserError(f"config: train needs epochs >= 1, batch_size >= 1, lr > 0; got {t}")
    if out["out_dir"] is None:
        out["out_dir"] = f"runs/keypoint/{out['name']}"
    return out


def read_config(path: str | Path, resolve: Callable[[dict], dict]) -> dict:
    """Read a YAML config and ``resolve`` it; errors name the file (missing, bad YAML, bad field)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return resolve(raw)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def load_config(path: str | Path) -> dict:
    """Read a YAML config and resolve it with :func:`resolve_config`."""
    return read_config(path, resolve_config)


def json_safe(obj):
    """``obj`` with float NaN/inf replaced by ``None`` (strict JSON readers such as jq reject NaN),
    recursively; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def load_split(data_cfg: dict, split: str, cache_root: Path | None = CACHE_ROOT) -> KeypointData:
    """The ``train`` or ``val`` :class:`KeypointData` of a resolved ``data`` config section."""
    if data_cfg["source"] == "coco":
        path = data_cfg[f"{split}_json"]
        if not path:
            raise UserError(f"config: data.{split}_json is required when data.source is 'coco'")
        return load_coco(path)
    synth = SynthConfig.from_dict(data_cfg["synth"] or {})
    n, seed = int(data_cfg[f"{split}_images"]), int(data_cfg[f"{split}_seed"])
    if cache_root is None:
        return generate_dataset(n, seed, synth)
    cache = Path(cache_root) / f"synth-{_hash([synth.to_dict(), n, seed])}"
    if not (cache / "annotations.json").is_file():
        save_coco(generate_dataset(n, seed, synth, progress=True), cache)
    return load_coco(cache / "annotations.json")


def materialize(dataset: KeypointCropDataset, codec) -> dict[str, torch.Tensor]:
    """Stack every crop and its codec targets into tensors (the data are static: encode once)."""
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise UserError("dataset has no annotated instance to train on")
    out = {"image": torch.stack([it["image"] for it in items]),
           "keypoints": torch.stack([it["keypoints"] for it in items]),
           "visibility": torch.stack([it["visibility"] for it in items]),
           "crop_to_image": torch.stack([it["crop_to_image"] for it in items]),
           "box": torch.stack([it["box"] for it in items]),
           "area": torch.tensor([it["area"] for it in items]),
           "category_id": torch.tensor([it["category_id"] for it in items]),
           "sample_index": torch.tensor([it["index"][0] for it in items])}
    out["targets"] = encode_batch(codec, out["keypoints"], out["visibility"])
    return out


def _save_loss_plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prepare_run(cfg: dict) -> tuple[Path, torch.device]:
    """Common start of a training run from a resolved config: thread count, seeds, the output folder
    (created) and the device (CUDA when present, else CPU)."""
    if cfg["train"]["num_threads"]:
        torch.set_num_threads(int(cfg["train"]["num_threads"]))
    torch.manual_seed(int(cfg["seed"]))
    np.random.seed(int(cfg["seed"]))
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(cfg: dict, resume: bool = True, progress: bool = True, evaluate_after: bool = True) -> dict:
    """Train per the resolved config; returns a summary (and writes it to ``out_dir/metrics.json``)."""
    from tqdm import tqdm

    cfg = resolve_config(cfg)
    t_cfg = cfg["train"]
    out_dir, device = prepare_run(cfg)

    d_cfg = cfg["data"]
    train_data = load_split(d_cfg, "train")
    layout = KeypointLayout.from_categories(train_data.categories)
    model = build_model(cfg["model"], num_keypoints=layout.num_channels, input_size=int(d_cfg["input_size"]))
    model.to(device)
    ds = KeypointCropDataset(train_data, int(d_cfg["input_size"]), float(d_cfg["padding"]), layout)
    data = materialize(ds, model.codec)
    n = len(data["image"])
    bs = min(int(t_cfg["batch_size"]), n)
    steps_per_epoch = max(1, n // bs)
    epochs = int(t_cfg["epochs"])
    total_steps = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=float(t_cfg["lr"]),
                            weight_decay=float(t_cfg["weight_decay"]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))

    ckpt_path = out_dir / "last.pt"
    start_epoch, history, elapsed = 0, [], 0.0
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck.get("config") == cfg:
            model.load_state_dict(ck["state_dict"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            start_epoch, history, elapsed = ck["epoch"], ck["history"], ck.get("train_seconds", 0.0)
            print(f"resuming {ckpt_path} at epoch {start_epoch}/{epochs}")
        else:
            print(f"{ckpt_path} was written for a different config: starting afresh")

    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    for _ in range(start_epoch):  # keep the shuffling sequence identical after a resume
        torch.randperm(n, generator=gen)
    deadline = None if not t_cfg["max_minutes"] else time.time() + 60 * float(t_cfg["max_minutes"])
    model.train()
    stopped_early = False
    epochs_run = start_epoch
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"{cfg['name']} epoch {epoch + 1}/{epochs}",
                   disable=not progress, leave=False)
        for it in bar:
            idx = perm[it * bs:(it + 1) * bs]
            images = data["image"][idx].to(device)
            targets = {k: v[idx].to(device) for k, v in data["targets"].items()}
            outputs = model(images)
            loss, parts = model.loss(outputs, targets)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss {float(loss)} at epoch {epoch}, step {it}: {parts}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            step = epoch * steps_per_epoch + it
            if step % int(t_cfg["log_every"]) == 0 or it == steps_per_epoch - 1:
                history.append({"step": step, "epoch": epoch, "loss": loss.item(), **parts})
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if deadline is not None and time.time() > deadline:
                stopped_early = True
                break
        elapsed += time.time() - t0
        epochs_run = epoch + 1
        _save_checkpoint(ckpt_path, cfg, model, layout, opt, sched, epochs_run, history, elapsed)
        if stopped_early:
            print(f"time budget of {t_cfg['max_minutes']} min reached after epoch {epoch + 1}")
            break
    _save_loss_plot(history, out_dir / "loss.png", cfg["name"])
    summary = {"name": cfg["name"], "model": model.config, "train_instances": n, "epochs_run": epochs_run,
               "train_seconds": round(elapsed, 1), "final_loss": history[-1]["loss"] if history else None,
               "checkpoint": str(ckpt_path)}
    if evaluate_after:
        from .evaluate import evaluate_model

        val = load_split(d_cfg, "val")
        summary["val"] = evaluate_model(model, val, layout, int(d_cfg["input_size"]), float(d_cfg["padding"]))
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(summary), indent=2))
    return summary


def _save_checkpoint(path: Path, cfg, model, layout, opt, sched, epoch, history, elapsed) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg, "model_config": model.config,
                "codec": model.codec.to_dict(), "layout": layout.to_dict(),
                "input_size": int(cfg["data"]["input_size"]), "padding": float(cfg["data"]["padding"]),
                "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch, "history": history, "train_seconds": elapsed}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a truncated checkpoint
