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
    if args.posed:
        return _posed(args)
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


def _posed(args: argparse.Namespace) -> int:
    """Posed images of the runway / cuboid with cameras.json (keypoint.data.posed)."""
    from ..data.posed import PosedConfig, generate_posed, save_posed
    from ..draw import draw_samples

    clash = [f for f, k in (("--preset", "preset"), ("--occlusion-rate", "occlusion_rate"),
                            ("--truncation-rate", "truncation_rate"), ("--max-objects", "max_objects"))
             if getattr(args, k) is not None]
    if clash:
        raise UserError(f"{clash[0]} does not apply to --posed images (one object per image)")
    cfg = PosedConfig(image_size=args.image_size or PosedConfig().image_size, objects=tuple(args.posed))
    data = generate_posed(args.num_images, args.seed, cfg, progress=True)
    save_posed(data, args.out_dir)
    preview = draw_samples(data.keypoint_data(), Path(args.out_dir) / "preview.png")
    print(f"wrote {len(data)} posed images ({', '.join(args.posed)}): {args.out_dir}/annotations.json, "
          f"cameras.json (preview {preview})")
    return 0
