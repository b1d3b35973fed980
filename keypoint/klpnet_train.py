"""Train KLPNet on whole images (all instances; :mod:`keypoint.models.klpnet`) on the one loop.

KLPNet does not fit the top-down trainer (:mod:`keypoint.train`): its heatmap holds the keypoints
of *every* object of the image on one channel and its link predictor works on graphs of objects,
so it trains on whole images. The config is a :class:`keypoint.config.KLPNetConfig`
(``configs/keypoint/klpnet*.yaml``); training runs on :func:`keypoint.fit.fit` (resumable
mid-epoch, checkpoints by epoch and time, SIGINT/SIGTERM-safe, no wall-clock cap unless
``train.max_minutes`` is set). The graph auto-encoder and the keypoint prototypes get the learning
rate ``lr × train.graph_lr_mult``.

Checkpoint ``last.pt``: ``format`` = ``"geo-rs-klpnet/2"``, ``config``, ``identity``,
``model_config``, ``categories``, ``state_dict``, ``optimizer``, ``step``, ``steps_per_epoch``,
``history``, ``train_seconds``. Metrics: :mod:`keypoint.klpnet_eval`.

Example::

    >>> from keypoint.config import load_keypoint_config  # doctest: +SKIP
    >>> summary = train_klpnet(load_keypoint_config("configs/keypoint/klpnet.yaml"))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geo_rs.atomic import write_json
from geo_rs.errors import UserError

from .checkpoints import KLPNET_FORMAT, read_torch_file
from .config import KeypointConfig, KLPNetConfig, resume_identity, validate_keypoint_config
from .data.splits import load_split
from .data.synth import Category, KeypointData
from .fit import FitSettings, check_run_folder, fit
from .klpnet_eval import evaluate_klpnet, objects_of
from .models.klpnet import KLPNet
from .train import prepare_run, run_summary

__all__ = ["evaluate_both", "load_klpnet_checkpoint", "materialize_klpnet", "train_klpnet"]

CHECKPOINT_FORMAT = KLPNET_FORMAT


def materialize_klpnet(model: KLPNet, data: KeypointData) -> dict:
    """Images (N, 3, H, W), stacked dense targets and per-image object lists."""
    if not data.samples:
        raise UserError("dataset has no image")
    h, w = data.samples[0].image.shape[:2]
    div = model.backbone.divisor
    if h % div or w % div:
        raise UserError(f"images are {w}x{h}; KLPNet needs sides divisible by {div} "
                        "(stride·2^context_levels)")
    images, targets, objects = [], [], []
    for s in data.samples:
        if s.image.shape[:2] != (h, w):
            raise UserError(f"image {s.image_id} is {s.image.shape[1]}x{s.image.shape[0]}, expected {w}x{h}")
        objs = [o for o in objects_of(s) if o["category_id"] in model.cat_index]
        images.append(torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1))
        targets.append(model.encode_image([o["keypoints"] for o in objs], [o["visibility"] for o in objs],
                                          np.array([o["box"] for o in objs]).reshape(-1, 4),
                                          [o["category_id"] for o in objs], (w, h)))
        objects.append(objs)
    return {"images": torch.stack(images).float(),
            "targets": {k: torch.stack([t[k] for t in targets]) for k in targets[0]},
            "objects": objects}


def categories_to_list(categories) -> list[dict]:
    return [{"id": c.id, "name": c.name, "keypoints": list(c.keypoint_names),
             "skeleton": [list(p) for p in c.skeleton], "sigmas": list(c.sigmas)} for c in categories]


def categories_from_list(d: list[dict]) -> tuple[Category, ...]:
    return tuple(Category(int(c["id"]), c["name"], tuple(c["keypoints"]),
                          tuple(tuple(p) for p in c["skeleton"]), tuple(c["sigmas"])) for c in d)


def evaluate_both(model: KLPNet, data: KeypointData, cfg: KLPNetConfig) -> dict:
    """:func:`evaluate_klpnet` with LIS off and on (and, with LIS, the CKLM feedback off and on)."""
    gt_boxes = cfg.eval.boxes == "gt"
    out = {"lis_off": evaluate_klpnet(model, data, alpha=cfg.eval.alpha, lis=False, use_gt_boxes=gt_boxes,
                                      feedback=False),
           "lis_on": evaluate_klpnet(model, data, alpha=cfg.eval.alpha, lis=True, use_gt_boxes=gt_boxes,
                                     feedback=False)}
    if model.config["feedback"]:
        out["lis_feedback"] = evaluate_klpnet(model, data, alpha=cfg.eval.alpha, lis=True,
                                              use_gt_boxes=gt_boxes, feedback=True)
    return out


def train_klpnet(cfg: KeypointConfig | dict, *, fresh: bool = False, quiet: bool = False,
                 evaluate_after: bool = True, data: tuple[KeypointData, KeypointData] | None = None) -> dict:
    """Train per ``cfg`` (a :class:`KLPNetConfig` or a mapping); writes ``last.pt``, ``history.json``,
    ``loss.png``, ``metrics.json``. ``data`` = (train, val) replaces the config's data (tests)."""
    cfg = validate_keypoint_config(cfg if not isinstance(cfg, dict) else {"model": {"type": "klpnet"}, **cfg})
    if not isinstance(cfg, KLPNetConfig):
        raise UserError(f"train_klpnet needs model.type 'klpnet', got '{cfg.model.type}'")
    # a foreign checkpoint in the run folder is refused before any data work
    check_run_folder(cfg.run_dir / "last.pt", CHECKPOINT_FORMAT, resume_identity(cfg), fresh)
    device = prepare_run(cfg)
    train_data = data[0] if data else load_split(cfg.data, "train", quiet=quiet)
    model = KLPNet(train_data.categories, cfg.model.to_dict())
    model.fit_templates_from(a for s in train_data.samples for a in s.annotations)
    model.to(device)
    batch = materialize_klpnet(model, train_data)
    # the small graph auto-encoder learns from few nodes per step: it gets a larger learning rate
    graph = list(model.gae.parameters()) + [model.prototypes]
    graph_ids = {id(p) for p in graph}
    groups = [{"params": [p for p in model.parameters() if id(p) not in graph_ids], "lr_mult": 1.0},
              {"params": graph, "lr_mult": cfg.train.graph_lr_mult}]

    def loss_fn(b):
        idx = b.items
        targets = {k: v[idx].to(device) for k, v in batch["targets"].items()}
        objects = [batch["objects"][i] for i in idx.tolist()]
        loss, parts = model.loss(model(batch["images"][idx].to(device)), targets, objects, b.generator)
        parts.pop("total", None)
        return loss, parts

    extra = {"config": cfg.to_dict(), "model_config": model.config,
             "categories": categories_to_list(model.categories)}
    result = fit(model, loss_fn, num_items=len(batch["images"]),
                 settings=FitSettings.from_section(cfg.train, cfg.seed, quiet, cfg.name),
                 checkpoint=cfg.run_dir / "last.pt", identity=resume_identity(cfg), fmt=CHECKPOINT_FORMAT,
                 extra=extra, param_groups=groups, fresh=fresh, plot_title=cfg.name)
    summary = run_summary(cfg, result, model.config, train_images=len(batch["images"]))
    if result.reason != "signal" and evaluate_after:
        val = data[1] if data else load_split(cfg.data, "val", quiet=quiet)
        summary["val"] = evaluate_both(model, val, cfg)
    write_json(cfg.run_dir / "metrics.json", summary, indent=2)
    result.raise_if_interrupted()
    return summary


def load_klpnet_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[KLPNet, dict]:
    """Rebuild a KLPNet from a checkpoint; one :class:`UserError` line for a missing, foreign or
    mismatched file."""
    path = Path(path)
    ck = read_torch_file(path, map_location)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a KLPNet checkpoint (format {ck.get('format')!r}, "
                        f"expected {CHECKPOINT_FORMAT!r})")
    model = KLPNet(categories_from_list(ck["categories"]), ck["model_config"])
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0])[:200]
        raise UserError(f"{path}: weights do not fit the recorded model config ({detail})") from None
    model.eval()
    return model, ck
