"""``geo-rs keypoint train|eval|predict`` for KLPNet: the generic CLI (keypoint/cli.py) dispatches here
when a config's ``model.type`` is ``klpnet`` or a checkpoint has the KLPNet format."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from geo_rs.errors import UserError

from .klpnet_train import (
    CHECKPOINT_FORMAT,
    evaluate_klpnet,
    load_klpnet_checkpoint,
    load_klpnet_config,
    load_klpnet_split,
    predict_image_klpnet,
    train_klpnet,
)
from .train import json_safe


def is_klpnet_config(path: str | Path) -> bool:
    """True when the YAML file's ``model.type`` is ``klpnet`` (for ``geo-rs keypoint train`` dispatch)."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False  # let the generic loader report the problem
    model = raw.get("model") if isinstance(raw, dict) else None
    return isinstance(model, dict) and model.get("type") == "klpnet"


def is_klpnet_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a KLPNet checkpoint (for ``eval`` / ``predict`` dispatch)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - unreadable: not ours, the generic loader reports it
        return False
    return isinstance(ck, dict) and ck.get("format") == CHECKPOINT_FORMAT


def cli_train_klpnet(args) -> int:
    """``geo-rs keypoint train CONFIG [--out-dir D] [--epochs N] [--no-resume] [--quiet]`` for KLPNet."""
    cfg = load_klpnet_config(args.config)
    if getattr(args, "out_dir", None):
        cfg["out_dir"] = args.out_dir
    if getattr(args, "epochs", None) is not None:
        if args.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {args.epochs}")
        cfg["train"]["epochs"] = args.epochs
    summary = train_klpnet(cfg, resume=not getattr(args, "no_resume", False),
                           progress=not getattr(args, "quiet", False))
    print(json.dumps(json_safe(summary), indent=2))
    return 0


def cli_eval_klpnet(args) -> int:
    """``geo-rs keypoint eval CHECKPOINT [--data COCO_JSON] [--out JSON]`` for KLPNet (LIS off and on)."""
    from .data.coco import load_coco

    model, ck = load_klpnet_checkpoint(args.checkpoint)
    cfg = ck["config"]
    if getattr(args, "data", None):
        data = load_coco(args.data)
        known = {c.id for c in model.categories}
        got = {a.category_id for s in data.samples for a in s.annotations}
        if not got <= known:
            raise UserError(f"{args.data}: category ids {sorted(got - known)} unknown to the checkpoint "
                            f"(knows {sorted(known)})")
    else:
        data = load_klpnet_split(cfg["data"], "val")
    metrics = {f"lis_{'on' if lis else 'off'}": evaluate_klpnet(
        model, data, alpha=float(cfg["eval"]["alpha"]), lis=lis, use_gt_boxes=cfg["eval"]["boxes"] == "gt")
        for lis in (False, True)}
    text = json.dumps(json_safe(metrics), indent=2)
    if getattr(args, "out", None):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def cli_predict_klpnet(args) -> int:
    """``geo-rs keypoint predict IMAGE --checkpoint CKPT [--box x,y,w,h --category ID] [--annotations J]
    [--out PNG]`` for KLPNet: objects from ``--box``/``--category`` (one id for all boxes), from
    ``--annotations``, or else from the model's own detector; keypoints, links and the heatmap drawn."""
    from .cli import read_image  # same reader and errors as the generic predict

    path = Path(args.image)
    image = read_image(path)
    boxes, cats = None, None
    if getattr(args, "box", None):
        from .cli import parse_box  # the generic CLI's parser: same --box syntax and errors

        boxes = [parse_box(text).tolist() for text in args.box]
        if getattr(args, "category", "auto") in (None, "auto"):
            raise UserError("KLPNet needs the category of each --box: pass --category ID")
        try:
            cats = [int(args.category)] * len(boxes)
        except ValueError:
            raise UserError(f"--category must be an integer id, got '{args.category}'") from None
    elif getattr(args, "annotations", None):
        from .data.coco import load_coco

        ann = load_coco(args.annotations, load_images=False)
        match = [s for s in ann.samples if Path(s.file_name).name == path.name]
        if not match:
            raise UserError(f"{args.annotations}: no image with file name '{path.name}'")
        boxes = [list(a.box) for a in match[0].annotations]
        cats = [a.category_id for a in match[0].annotations]
    out = Path(args.out) if getattr(args, "out", None) else Path("runs/keypoint/predict") / f"{path.stem}.png"
    pred = predict_image_klpnet(args.checkpoint, image, out, lis=True,
                                boxes=None if boxes is None else np.array(boxes), category_ids=cats)
    report = [{"category_id": ob.category_id, "box": [round(float(v), 2) for v in ob.box],
               "keypoints": np.where(np.isfinite(ob.keypoints), ob.keypoints, np.nan).round(2).tolist(),
               "scores": ob.scores.round(4).tolist(), "links": [list(e) for e in ob.edges]}
              for ob in pred.objects]
    print(json.dumps(json_safe({"image": str(path), "output": str(out), "objects": report}), indent=2))
    return 0
