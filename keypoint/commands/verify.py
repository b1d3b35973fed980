"""``geo-rs keypoint verify``: certified keypoints over a dataset (see :mod:`keypoint.verify.run`).

On COCO data every record also names its crop's origin (``image_id``, ``annotation``: index in the image,
``category_id``) and ``OUT/candidates/*.json`` holds the candidate sets in image pixels for ``geo-rs
keypoint pose-bound --certifier milp --candidates`` (:mod:`keypoint.verify.export`)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from geo_rs.errors import UserError

from ..verify.export import InstanceRef, write_candidate_files

DEFAULT_EPS = {"noise": [0.001], "brightness": [0.002], "contrast": [0.01]}
DEFAULT_SPECS = ["l1:0", "l1:1", "l1:2", "l1:4", "l1:8", "l1:16"]


def parse_eps(values: list[str] | None, perturbations: list[str]) -> dict[str, list[float]]:
    """``["0.001", "0.002"]`` (every perturbation) or ``["noise=0.001,0.002", "contrast=0.01"]``."""
    if values is None:
        return {p: DEFAULT_EPS.get(p, []) for p in perturbations}
    shared: list[float] = []
    per: dict[str, list[float]] = {}
    for v in values:
        name, _, text = v.rpartition("=")
        try:
            nums = [float(t) for t in text.replace(",", " ").split()]
        except ValueError:
            raise UserError(f"--eps: cannot read {v!r}; give numbers or NAME=v1,v2") from None
        if not nums:
            raise UserError(f"--eps: no values in {v!r}")
        (per.setdefault(name, []) if name else shared).extend(nums)
    for name in per:
        if name not in perturbations:
            raise UserError(f"--eps: {name!r} is not one of the perturbations {perturbations}")
    return {p: per.get(p, shared) for p in perturbations}


def parse_specs(texts: list[str] | None, files: list[str]) -> list:
    from ..verify.spec import KeypointSpec

    specs = [KeypointSpec.parse(t) for t in (DEFAULT_SPECS if texts is None and not files else texts or [])]
    return specs + [KeypointSpec.from_file(f) for f in files]


def load_model(path: str):
    """``(model, info)``: a verification-detector checkpoint, or a ``geo-rs keypoint train`` checkpoint."""
    import torch

    from geo_rs.checks import existing_file

    p = existing_file(path, "checkpoint")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"{p}: not a readable torch checkpoint ({type(exc).__name__})") from None
    from ..verify.detector import CHECKPOINT_FORMAT, load_detector

    if isinstance(ck, dict) and ck.get("format") == CHECKPOINT_FORMAT:
        return load_detector(p), {"kind": "verification-detector", "input_size": ck["input_size"],
                                  "padding": ck["config"]["data"]["padding"], "data": ck["config"]["data"]}
    from ..checkpoints import load_checkpoint

    model, ck = load_checkpoint(p)
    return model, {"kind": "keypoint", "input_size": int(ck["input_size"]), "padding": float(ck["padding"]),
                   "layout": ck.get("layout")}


def load_data(data: str, n: int, info: dict):
    """``(images (N, C, H, W), crop_to_image (N, 2, 3) float64, refs)`` — the first ``n`` instances;
    ``refs`` (:class:`keypoint.verify.export.InstanceRef` per instance: COCO image id, category, heatmap
    channels) is None for ``synth``. ``data``: 'synth', a COCO keypoint JSON or a folder holding
    ``annotations.json``."""
    if data == "synth":
        if info["kind"] != "verification-detector":
            raise UserError("--data synth needs a verification-detector checkpoint; give a COCO JSON")
        from ..verify.detector import DataSection, make_crops

        cfg = DataSection(**info["data"]).model_copy(update={"val_images": max(n, 1)})
        crops = make_crops(cfg, "val")
        return crops["image"][:n], crops["crop_to_image"][:n], None
    import torch

    from ..data.coco import load_coco
    from ..data.dataset import KeypointCropDataset, KeypointLayout, crop_affine

    path = Path(data) / "annotations.json" if Path(data).is_dir() else Path(data)
    if not path.is_file():
        raise UserError(f"--data {data}: no such file; give 'synth', a COCO keypoint JSON or its folder")
    ds = KeypointCropDataset(load_coco(path), info["input_size"], info["padding"])
    if not len(ds):
        raise UserError(f"--data {data}: no annotated instance to crop")
    layout = KeypointLayout.from_dict(info["layout"]) if info.get("layout") else ds.layout
    items, refs = [], []
    for k in range(min(n, len(ds))):
        items.append(ds[k])
        i, j = ds.items[k]
        sample = ds.data.samples[i]
        ann = sample.annotations[j]
        refs.append(InstanceRef(int(sample.image_id), j, int(ann.category_id),
                                tuple(int(c) for c in layout.channels(ann.category_id)),
                                # float64 (the dataset's copy is float32): image pixels to ~1e-13 px
                                crop_affine(ann.box, ds.input_size, ds.padding)))
    affines = torch.from_numpy(np.stack([r.crop_to_image for r in refs]))
    return torch.stack([it["image"] for it in items]), affines, refs


def run(args: argparse.Namespace) -> int:
    from geo_rs.checks import count

    from ..verify.run import RunConfig, check_config, run_dataset, write_outputs

    count("--images", args.images, minimum=1)
    count("--workers", args.workers, minimum=1)
    count("--attack-random", args.attack_random, minimum=0)
    specs = parse_specs(args.spec, args.spec_file)
    config = RunConfig(
        perturbations=list(args.perturbation),
        eps=parse_eps(args.eps, list(args.perturbation)),
        specs=[s.__dict__.copy() for s in specs],
        reachable=list(args.reachable),
        methods=list(args.method),
        bounds_method=args.bounds_method,
        solvers=[s.lower() for s in args.solver],
        time_limit=args.time_limit,
        attack={"n_random": args.attack_random},
        float32=args.float32,
    )
    check_config(config)  # before the (slow) model and data loading
    model, info = load_model(args.checkpoint)
    images, affines, refs = load_data(args.data, args.images, info)
    k = model(images[:1]).shape[1] if info["kind"] != "keypoint" else None
    for s in specs:
        if k is not None:
            s.check(k)
    out = run_dataset(model, list(images), list(affines), config, args.out, workers=args.workers,
                      cluster=args.cluster, seed=args.seed, overwrite=args.overwrite,
                      progress=False if args.quiet else None,
                      describe={"checkpoint": str(args.checkpoint), "data": args.data})
    meta = {"checkpoint": str(args.checkpoint), "data": args.data, "n_images": len(images),
            "config": config.__dict__, "computed_units": out["computed"], "resumed_units": out["resumed"]}
    if refs is not None:  # the COCO origin of every record: pose-bound reads its sets by image id
        for rec in out["records"]:
            ref = refs[rec["image"]]
            rec.update(image_id=ref.image_id, annotation=ref.annotation, category_id=ref.category_id)
    paths = write_outputs(args.out, out["records"], meta)
    cands = [] if refs is None else write_candidate_files(args.out, out["records"], refs)
    print(Path(paths["markdown"]).read_text(), end="")
    print(f"{len(out['records'])} instances ({out['computed']} units computed, {out['resumed']} resumed); "
          f"wrote {args.out}/results.json, results.tsv, summary.md, summary.csv, fig_verified_rate.png")
    if cands:
        print(f"candidate sets for 'geo-rs keypoint pose-bound --certifier milp --candidates FILE': "
              f"{', '.join(str(p) for p in cands)}")
    return 0
