"""``geo-rs keypoint make-data``: a synthetic COCO keypoint set plus a preview with a legend."""
from __future__ import annotations

import argparse
from pathlib import Path

from geo_rs.errors import UserError


def run(args: argparse.Namespace) -> int:
    from ..data.coco import save_coco
    from ..data.synth import PRESETS, SynthConfig, generate_dataset
    from ..draw import draw_samples

    if args.num_images < 1:
        raise UserError(f"--num-images must be >= 1, got {args.num_images}")
    values = dict(PRESETS[args.preset]) if args.preset else {}
    for key in ("image_size", "occlusion_rate", "truncation_rate", "max_objects"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if values.get("max_objects", SynthConfig().max_objects) < SynthConfig().min_objects:
        raise UserError(f"--max-objects must be >= 1, got {values['max_objects']}")
    cfg = SynthConfig.from_dict(values)
    data = generate_dataset(args.num_images, args.seed, cfg, progress=True)
    path = save_coco(data, args.out_dir)
    preview = draw_samples(data, Path(args.out_dir) / "preview.png")
    n_inst = sum(len(s.annotations) for s in data.samples)
    print(f"wrote {len(data)} images, {n_inst} instances: {path} (preview {preview})")
    return 0
