"""``geo-rs keypoint predict``: keypoints (and links) of one image, drawn and printed as JSON."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from geo_rs.atomic import json_safe
from geo_rs.errors import UserError

from ..inputs import check_box_in_image, parse_box, read_image


def _boxes(args: argparse.Namespace, image: np.ndarray, path: Path) -> list[tuple[np.ndarray, int | None]]:
    """Objects from ``--box`` (checked against the image) or ``--annotations`` (same file name)."""
    h, w = image.shape[:2]
    boxes = []
    for text in args.box:
        box = parse_box(text)
        check_box_in_image(box, w, h, text)
        boxes.append((box, None))
    if not boxes and args.annotations:
        from ..data.coco import load_coco

        ann = load_coco(args.annotations, load_images=False)
        match = [s for s in ann.samples if Path(s.file_name).name == path.name]
        if not match:
            raise UserError(f"{args.annotations}: no image with file name '{path.name}'")
        boxes = [(np.asarray(a.box, np.float64), int(a.category_id)) for a in match[0].annotations]
    return boxes


def _category(args: argparse.Namespace) -> int | None:
    if args.category == "auto":
        return None
    try:
        return int(args.category)
    except ValueError:
        raise UserError(f"--category must be an integer id or 'auto', got '{args.category}'") from None


def _out_path(args: argparse.Namespace, path: Path) -> Path:
    return Path(args.out) if args.out else Path("runs/keypoint/predict") / f"{path.stem}.png"


def _predict_topdown(args, image, path, boxes, forced) -> dict:
    import torch

    from ..checkpoints import load_checkpoint
    from ..data.dataset import KeypointLayout, apply_affine, crop_affine, warp_crop
    from ..draw import draw_instances

    model, ck = load_checkpoint(args.checkpoint)
    layout = KeypointLayout.from_dict(ck["layout"])
    if forced is not None:
        layout.channels(forced)  # a UserError naming the known ids
    h, w = image.shape[:2]
    boxes = boxes or [(np.array([-0.5, -0.5, w, h]), None)]
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
        instances.append({"keypoints": pts, "scores": shown, "skeleton": list(cat.skeleton), "box": box,
                          "label": cat.name})
        report.append({"category_id": int(cat_id), "category": cat.name, "box": [float(v) for v in box],
                       "keypoints": pts.round(2).tolist(), "scores": score[ch].round(4).tolist()})
    out = _out_path(args, path)
    name = ck.get("config", {}).get("name", ck["model_config"].get("type"))
    draw_instances(image, instances, out, title=f"{name}: {path.name}")
    return {"image": str(path), "output": str(out), "instances": report}


def _predict_klpnet(args, image, path, boxes, forced) -> dict:
    from ..klpnet_eval import predict_image_klpnet
    from ..klpnet_train import load_klpnet_checkpoint

    model, _ = load_klpnet_checkpoint(args.checkpoint)
    cats = None
    if args.box:
        if forced is None:
            raise UserError("KLPNet needs the category of each --box: pass --category ID")
        cats = [forced] * len(boxes)
    elif boxes:
        cats = [c for _, c in boxes]
    arr = np.array([b for b, _ in boxes]) if boxes else None
    out = _out_path(args, path)
    pred = predict_image_klpnet(model, image, out, lis=True, boxes=arr, category_ids=cats)
    if not pred.objects:
        print(f"{path.name}: no objects (the detector found none above its threshold "
              f"{model.config['detector_threshold']:g})", file=sys.stderr)
    report = [{"category_id": ob.category_id, "box": [round(float(v), 2) for v in ob.box],
               "keypoints": np.where(np.isfinite(ob.keypoints), ob.keypoints, np.nan).round(2).tolist(),
               "scores": ob.scores.round(4).tolist(), "links": [list(e) for e in ob.edges]}
              for ob in pred.objects]
    return {"image": str(path), "output": str(out), "objects": report}


def run(args: argparse.Namespace) -> int:
    from geo_rs.checks import existing_file

    # every input is checked before torch is imported: a typo fails in a fraction of a second
    existing_file(args.checkpoint, "checkpoint")
    path = Path(args.image)
    image = read_image(path)
    boxes = _boxes(args, image, path)
    forced = _category(args)
    from ..checkpoints import KLPNET_FORMAT, checkpoint_format

    klpnet = checkpoint_format(args.checkpoint) == KLPNET_FORMAT
    result = (_predict_klpnet if klpnet else _predict_topdown)(args, image, path, boxes, forced)
    print(json.dumps(json_safe(result), indent=2))
    print(f"wrote {result['output']}", file=sys.stderr)
    return 0
