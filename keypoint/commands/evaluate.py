"""``geo-rs keypoint eval``: metrics of a checkpoint (top-down or KLPNet) on its validation split or a
given COCO file."""
from __future__ import annotations

import argparse
import json

from geo_rs.atomic import json_safe, write_text
from geo_rs.errors import UserError


def _check_categories(path: str, data, known: dict[int, tuple[str, ...]]) -> None:
    """Every category of ``data`` must be known to the checkpoint with the same keypoint names."""
    got = {c.id: tuple(c.keypoint_names) for c in data.categories}
    bad = sorted(i for i, names in got.items() if known.get(i) != names)
    if bad:
        raise UserError(f"{path}: categories {bad} do not match the checkpoint's {sorted(known)} "
                        "(ids and keypoint names must agree)")


def _metrics_topdown(args: argparse.Namespace) -> dict:
    from ..checkpoints import load_checkpoint
    from ..data.coco import load_coco
    from ..data.dataset import KeypointLayout
    from ..data.splits import load_split
    from ..evaluate import evaluate_model

    model, ck = load_checkpoint(args.checkpoint)
    layout = KeypointLayout.from_dict(ck["layout"])
    if args.data:
        data = load_coco(args.data)
        _check_categories(args.data, data, {c.id: tuple(c.keypoint_names) for c in layout.categories})
    else:
        data = load_split(ck["config"]["data"], "val")
    return evaluate_model(model, data, layout, int(ck["input_size"]), float(ck["padding"]))


def _metrics_klpnet(args: argparse.Namespace) -> dict:
    from ..config import validate_keypoint_config
    from ..data.coco import load_coco
    from ..data.splits import load_split
    from ..klpnet_train import evaluate_both, load_klpnet_checkpoint

    model, ck = load_klpnet_checkpoint(args.checkpoint)
    cfg = validate_keypoint_config(ck["config"], f"{args.checkpoint} (its config)")
    if args.data:
        data = load_coco(args.data)
        _check_categories(args.data, data, {c.id: tuple(c.keypoint_names) for c in model.categories})
    else:
        data = load_split(cfg.data, "val")
    return evaluate_both(model, data, cfg)


def run(args: argparse.Namespace) -> int:
    from geo_rs.checks import existing_file

    existing_file(args.checkpoint, "checkpoint")  # before torch is imported
    if args.data:
        existing_file(args.data, "--data file")
    from ..checkpoints import KLPNET_FORMAT, checkpoint_format

    klpnet = checkpoint_format(args.checkpoint) == KLPNET_FORMAT
    metrics = _metrics_klpnet(args) if klpnet else _metrics_topdown(args)
    text = json.dumps(json_safe(metrics), indent=2)
    if args.out:
        write_text(args.out, text)
    print(text)
    return 0
