"""``geo-rs keypoint train``: any keypoint model from a YAML config (KLPNet or top-down)."""
from __future__ import annotations

import argparse
import json

from geo_rs.atomic import json_safe


def run(args: argparse.Namespace) -> int:
    from ..config import KLPNetConfig, load_keypoint_config

    overrides = {"out_dir": args.out_dir, "train.epochs": args.epochs, "train.max_minutes": args.max_minutes}
    flags = {"out_dir": "--out-dir", "train.epochs": "--epochs", "train.max_minutes": "--max-minutes"}
    cfg = load_keypoint_config(args.config, overrides, flags)  # validated before torch is imported
    if isinstance(cfg, KLPNetConfig):  # whole images, graphs: its own task on the same loop
        from ..klpnet_train import train_klpnet as trainer
    else:
        from ..train import train as trainer
    summary = trainer(cfg, fresh=args.fresh, quiet=args.quiet)
    print(json.dumps(json_safe(summary), indent=2))
    return 0
