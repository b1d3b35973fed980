"""``geo-rs keypoint`` — make-data | train | eval | predict.

* ``geo-rs keypoint make-data OUT_DIR [--num-images N] [--seed S] [--image-size P] [--occlusion-rate R]
  [--truncation-rate R] [--max-objects M]`` — synthetic COCO keypoint set (+ ``preview.png``).
* ``geo-rs keypoint train CONFIG [--out-dir D] [--epochs N] [--no-resume] [--quiet]`` — train from a
  YAML config (resumes from ``OUT_DIR/last.pt``); prints the validation metrics.
* ``geo-rs keypoint eval CHECKPOINT [--data COCO_JSON] [--out JSON]`` — metrics on the checkpoint's
  validation split (or the given COCO file).
* ``geo-rs keypoint predict IMAGE --checkpoint CKPT [--box x,y,w,h ...] [--annotations COCO_JSON]
  [--category ID|auto] [--out PNG]`` — keypoints and links drawn on the image, JSON on stdout.
  Boxes default to those in ``--annotations`` for that file name, else the whole image (the models
  are top-down: trained on box crops, they are much less accurate on a whole-image "box").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from geo_rs.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("keypoint", help="keypoint detection: synthetic data, training, evaluation")
    sub = p.add_subparsers(dest="keypoint_command", metavar="SUBCOMMAND")
    sub.required = True

    m = sub.add_parser("make-data", help="generate a synthetic COCO keypoint dataset")
    m.add_argument("out_dir")
    m.add_argument("--num-images", type=int, default=200)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--image-size", type=int, default=128)
    m.add_argument("--occlusion-rate", type=float, default=None)
    m.add_argument("--truncation-rate", type=float, default=None)
    m.add_argument("--max-objects", type=int, default=None)
    m.set_defaults(func=cmd_make_data)

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config")
    t.add_argument("--out-dir", default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--no-resume", action="store_true")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data", default=None, help="COCO keypoint JSON (default: the checkpoint's val split)")
    e.add_argument("--out", default=None, help="write the metrics JSON here")
    e.set_defaults(func=cmd_eval)

    q = sub.add_parser("predict", help="draw predicted keypoints and links on an image")
    q.add_argument("image")
    q.add_argument("--checkpoint", required=True)
    q.add_argument("--box", action="append", default=[],
                   help="x,y,w,h (pixel centres at integers); repeatable")
    q.add_argument("--annotations", default=None, help="COCO JSON whose boxes for this file name are used")
    q.add_argument("--category", default="auto", help="category id, or 'auto' (highest mean score)")
    q.add_argument("--out", default=None, help="output PNG (default runs/keypoint/predict/<name>.png)")
    q.set_defaults(func=cmd_predict)


def cmd_make_data(args: argparse.Namespace) -> int:
    from .data.coco import save_coco
    from .data.synth import SynthConfig, generate_dataset
    from .draw import draw_samples

    if args.num_images < 1:
        raise UserError(f"--num-images must be >= 1, got {args.num_images}")
    over = {"image_size": args.image_size}
    for k in ("occlusion_rate", "truncation_rate", "max_objects"):
        if getattr(args, k) is not None:
            over[k] = getattr(args, k)
    if "max_objects" in over and over["max_objects"] < 1:
        raise UserError(f"--max-objects must be >= 1, got {over['max_objects']}")
    cfg = SynthConfig.from_dict(over)
    data = generate_dataset(args.num_images, args.seed, cfg, progress=True)
    path = save_coco(data, args.out_dir)
    preview = draw_samples(data, Path(args.out_dir) / "preview.png")
    n_inst = sum(len(s.annotations) for s in data.samples)
    print(f"wrote {len(data)} images, {n_inst} instances: {path} (preview {preview})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .klpnet_cli import cli_train_klpnet, is_klpnet_config

    if is_klpnet_config(args.config):  # KLPNet has its own trainer (graph + grouping stages)
        return cli_train_klpnet(args)
    from .train import json_safe, load_config, train

    cfg = load_config(args.config)
    if args.out_dir:
        cfg["out_dir"] = args.out_dir
    if args.epochs is not None:
        if args.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {args.epochs}")
        cfg["train"]["epochs"] = args.epochs
    summary = train(cfg, resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps(json_safe(summary), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .klpnet_cli import cli_eval_klpnet, is_klpnet_checkpoint

    if is_klpnet_checkpoint(args.checkpoint):
        return cli_eval_klpnet(args)
    from .data.coco import load_coco
    from .data.dataset import KeypointLayout
    from .evaluate import evaluate_model, load_checkpoint
    from .train import json_safe, load_split

    model, ck = load_checkpoint(args.checkpoint)
    layout = KeypointLayout.from_dict(ck["layout"])
    if args.data:
        data = load_coco(args.data)
        names = {(c.id, c.keypoint_names) for c in data.categories}
        want = {(c.id, c.keypoint_names) for c in layout.categories}
        if not names <= want:
            raise UserError(f"{args.data}: categories {sorted(n[0] for n in names)} do not match the "
                            f"checkpoint's {sorted(w[0] for w in want)} (ids and keypoint names must agree)")
    else:
        data = load_split(ck["config"]["data"], "val")
    metrics = evaluate_model(model, data, layout, int(ck["input_size"]), float(ck["padding"]))
    text = json.dumps(json_safe(metrics), indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def read_image(path: Path) -> np.ndarray:
    """An image file as float RGB in [0, 1], (H, W, 3); a clear error if missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError):
        raise UserError(f"{path}: not a readable image") from None


def parse_box(text: str) -> np.ndarray:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--box must be four numbers x,y,w,h; got '{text}'") from None
    if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0:
        raise UserError(f"--box must be x,y,w,h with w, h > 0; got '{text}'")
    return np.asarray(vals)


def cmd_predict(args: argparse.Namespace) -> int:
    from .klpnet_cli import cli_predict_klpnet, is_klpnet_checkpoint

    if is_klpnet_checkpoint(args.checkpoint):
        return cli_predict_klpnet(args)
    import torch

    from .data.dataset import KeypointLayout, apply_affine, crop_affine, warp_crop
    from .draw import draw_instances
    from .evaluate import load_checkpoint

    path = Path(args.image)
    image = read_image(path)
    model, ck = load_checkpoint(args.checkpoint)
    layout = KeypointLayout.from_dict(ck["layout"])
    h, w = image.shape[:2]
    boxes: list[tuple[np.ndarray, int | None]] = [(parse_box(b), None) for b in args.box]
    if not boxes and args.annotations:
        from .data.coco import load_coco

        ann = load_coco(args.annotations, load_images=False)
        match = [s for s in ann.samples if Path(s.file_name).name == path.name]
        if not match:
            raise UserError(f"{args.annotations}: no image with file name '{path.name}'")
        boxes = [(a.box, a.category_id) for a in match[0].annotations]
    if not boxes:
        boxes = [(np.array([-0.5, -0.5, w, h]), None)]
    if args.category != "auto":
        try:
            forced = int(args.category)
        except ValueError:
            raise UserError(f"--category must be an integer id or 'auto', got '{args.category}'") from None
        layout.channels(forced)  # raises a UserError naming the known ids
    else:
        forced = None
    size, pad = int(ck["input_size"]), float(ck["padding"])
    instances, report = [], []
    for box, ann_cat in boxes:
        affine = crop_affine(box, size, pad)
        crop = torch.from_numpy(warp_crop(image, affine, size)).permute(2, 0, 1)[None]
        kp, score = model.predict(crop)
        kp, score = kp[0].numpy().astype(np.float64), score[0].numpy().astype(np.float64)
        cat_id = forced if forced is not None else ann_cat
        if cat_id is None:
            if not model.codec.has_scores:
                raise UserError("this model has no confidence scores: pass --category ID (or --annotations)")
            cat_id = max(layout.categories, key=lambda c: score[layout.channels(c.id)].mean()).id
        ch = layout.channels(cat_id)
        cat = next(c for c in layout.categories if c.id == cat_id)
        pts = apply_affine(kp[ch], affine)
        shown = score[ch] if model.codec.has_scores else np.ones(len(ch))
        instances.append({"keypoints": pts, "scores": shown,
                          "skeleton": list(cat.skeleton), "box": box, "label": cat.name})
        report.append({"category_id": int(cat_id), "category": cat.name, "box": [float(v) for v in box],
                       "keypoints": pts.round(2).tolist(), "scores": score[ch].round(4).tolist()})
    out = Path(args.out) if args.out else Path("runs/keypoint/predict") / f"{path.stem}.png"
    name = ck.get("config", {}).get("name", ck["model_config"].get("type"))
    draw_instances(image, instances, out, title=f"{name}: {path.name} (green: score >= 0.3)")
    print(json.dumps({"image": str(path), "output": str(out), "instances": report}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0
