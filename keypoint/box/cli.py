"""``geo-rs box ...``: train the MNIST-canvas detector, verify box stability, write tables and plots.

    geo-rs box train --out runs/box/mnist_box.pt --epochs 10
    geo-rs box verify --model runs/box/mnist_box.pt --perturbation noise brightness contrast \\
        --method IBP CROWN-IBP CROWN --extension vanilla optimal --images 40 --out runs/box/study
    geo-rs box verify --model-factory mypkg.models:runway_net --weights w.pt --data DIR ...
    geo-rs box report runs/box/study
    geo-rs box export-mnist --images 100 --out runs/box/mnist_coco   # a COCO-style folder

``--eps`` takes values (``0 0.001 0.002``) or a grid ``start:stop:steps`` (``0:0.002:11``); without it
each perturbation uses the paper's grid. ``--config configs/box.yaml`` supplies defaults for any flag
not given on the command line.
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import numpy as np

from geo_rs import UserError

from .verify import EXTENSIONS, METHODS, PAPER_EPS, PERTURBATIONS

_TRAIN_DEFAULTS = {"out": "runs/box/mnist_box.pt", "epochs": 10, "n_train": 4000, "batch_size": 64,
                   "lr": 1e-3, "seed": 0, "n_eval": 500, "threads": 0}
_VERIFY_DEFAULTS = {"data": "mnist", "images": 40, "seed": 0, "perturbation": list(PERTURBATIONS),
                    "eps": None, "method": ["IBP", "CROWN-IBP", "CROWN"], "extension": list(EXTENSIONS),
                    "threshold": 0.5, "workers": 2, "out": "runs/box/verify"}


def parse_eps(values: list[str] | None) -> list[float] | None:
    """``["0", "0.001"]`` -> floats; ``["0:0.002:11"]`` -> 11 evenly spaced values. Negative -> UserError."""
    if values is None:
        return None
    out: list[float] = []
    for v in values:
        for part in str(v).replace(",", " ").split():
            try:
                if ":" in part:
                    a, b, n = part.split(":")
                    if int(n) < 1:
                        raise ValueError
                    out += [round(float(e), 12) for e in np.linspace(float(a), float(b), int(n))]
                else:
                    out.append(float(part))
            except ValueError:
                raise UserError(f"--eps: cannot read {part!r}; give numbers or start:stop:steps") from None
    bad = [e for e in out if not (e >= 0 and np.isfinite(e))]
    if bad:
        raise UserError(f"--eps: eps must be finite and >= 0, got {bad[0]}")
    if not out:
        raise UserError("--eps: no values given")
    return out


def _with_config(args: argparse.Namespace, section: str, defaults: dict) -> dict:
    """Flag value if given, else the YAML config's ``section`` value, else the built-in default."""
    cfg: dict = {}
    if getattr(args, "config", None):
        import yaml

        path = Path(args.config)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict) or not isinstance(loaded.get(section, {}), dict):
            raise UserError(f"{path}: expected a mapping with a '{section}' section")
        cfg = loaded.get(section, {}) or {}
        unknown = set(cfg) - set(defaults)
        if unknown:
            raise UserError(f"{path}: unknown key(s) in '{section}': {', '.join(sorted(unknown))}")
    merged = {}
    for key, default in defaults.items():
        value = getattr(args, key, None)
        merged[key] = value if value is not None else cfg.get(key, default)
    return merged


# --------------------------------------------------------------------------- handlers
def _train(args: argparse.Namespace) -> int:
    from .model import save_detector
    from .train import TrainConfig, train_box_detector

    o = _with_config(args, "train", _TRAIN_DEFAULTS)
    config = TrainConfig(n_train=int(o["n_train"]), epochs=int(o["epochs"]),
                         batch_size=int(o["batch_size"]), lr=float(o["lr"]), seed=int(o["seed"]),
                         n_eval=int(o["n_eval"]), threads=int(o["threads"]))
    model, report = train_box_detector(config, progress=not args.quiet)
    path = save_detector(model, o["out"], heldout=report["heldout"], train_config=report["config"],
                         train_seconds=round(report["train_seconds"], 1))
    Path(path).with_name(Path(path).stem + "_train_report.json").write_text(json.dumps(report, indent=1))
    h = report["heldout"]
    print(f"saved {path} (+ .json metadata); held-out mean IoU {h['mean_iou']:.4f} on {h['n']} canvases, "
          f"IoU>=0.5 for {100 * h['frac_iou_ge_0.5']:.1f}%; {report['train_seconds']:.0f} s")
    return 0


def _load_model(args: argparse.Namespace):
    import torch

    from .model import load_detector

    if args.model and args.model_factory:
        raise UserError("give either --model (geo-rs weights) or --model-factory, not both")
    if args.model_factory:
        mod_name, _, fn_name = args.model_factory.partition(":")
        if not fn_name:
            raise UserError(
                f"--model-factory must look like 'package.module:function', got {args.model_factory!r}"
            )
        try:
            factory = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"--model-factory {args.model_factory}: {exc}") from None
        model = factory()
        if not isinstance(model, torch.nn.Module):
            raise UserError(
                f"--model-factory {args.model_factory} returned {type(model).__name__}, not an nn.Module"
            )
        if args.weights:
            if not Path(args.weights).is_file():
                raise UserError(f"{args.weights}: weights file not found")
            try:
                model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
            except RuntimeError as exc:
                raise UserError(f"{args.weights}: {str(exc).strip().splitlines()[0]}") from None
        return model.eval(), {"factory": args.model_factory, "weights": args.weights}
    path = args.model or "runs/box/mnist_box.pt"
    model, meta = load_detector(path)
    return model, {"weights": str(path), **meta}


def _verify(args: argparse.Namespace) -> int:
    from .data import load_coco_folder, mnist_canvas
    from .report import write_report
    from .verify import VerifyConfig, run_verification

    o = _with_config(args, "verify", _VERIFY_DEFAULTS)
    eps_values = parse_eps(o["eps"] if isinstance(o["eps"], list) or o["eps"] is None else [str(o["eps"])])
    perts = list(o["perturbation"])
    for p in perts:
        if p not in PERTURBATIONS:
            raise UserError(f"--perturbation: unknown {p!r}; choose from {', '.join(PERTURBATIONS)}")
    eps = {p: (eps_values if eps_values is not None else PAPER_EPS[p]) for p in perts}
    config = VerifyConfig(perturbations=perts, eps=eps, methods=list(o["method"]),
                          extensions=list(o["extension"]), threshold=float(o["threshold"]),
                          workers=int(o["workers"]))
    config.validate()  # before the (slow) model and data loading
    n = int(o["images"])
    if n < 1:
        raise UserError(f"--images must be >= 1, got {n}")
    model, info = _load_model(args)
    if o["data"] == "mnist":
        images, boxes, _ = mnist_canvas(n, "test", seed=int(o["seed"]))
        images = list(images)
    else:
        images, boxes = load_coco_folder(o["data"])
        images, boxes = images[:n], boxes[:n]
    results = run_verification(model, images, boxes, config, o["out"], progress=not args.quiet,
                               model_info=info)
    paths = write_report(o["out"])
    print(f"{results['n_images']} images, mean clean IoU {results['mean_clean_iou']:.4f}; "
          f"{results['computed_units']} units computed, {results['resumed_units']} resumed")
    print(paths["markdown"].read_text())
    print(f"wrote {o['out']}/results.json, cba.md, cba.csv, fig_iou_envelope.png, fig_time.png")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    if args.merge and not args.out:
        raise UserError("--merge needs --out (the folder for the merged results)")
    paths = write_report(args.run_dir, merge_with=args.merge, out_dir=args.out)
    print(paths["markdown"].read_text())
    return 0


def _export(args: argparse.Namespace) -> int:
    from .data import mnist_canvas, save_coco_folder

    if args.images < 1:
        raise UserError(f"--images must be >= 1, got {args.images}")
    images, boxes, _ = mnist_canvas(args.images, args.split, seed=args.seed)
    path = save_coco_folder(args.out, images, boxes)
    print(f"wrote {args.images} images and {path}")
    return 0


# --------------------------------------------------------------------------- parsers
def register(subparsers) -> None:
    """Add ``box`` with sub-commands ``train``, ``verify``, ``report``, ``export-mnist``."""
    box = subparsers.add_parser("box", help="box detectors: train, verify IoU stability (IBP-IoU), report")
    sub = box.add_subparsers(dest="box_command", metavar="SUBCOMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train the MNIST-canvas box regressor (CPU, minutes)")
    t.add_argument("--out", help="weights path (.pt; metadata goes to the .json beside it)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--n-train", type=int, help="canvases per epoch")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--n-eval", type=int, help="held-out canvases for the reported mean IoU")
    t.add_argument("--threads", type=int, help="torch threads (0: default)")
    t.add_argument("--config", help="YAML with a 'train' section of defaults (e.g. configs/box.yaml)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)

    v = sub.add_parser("verify", help="certify box stability under noise / brightness / contrast")
    v.add_argument("--model", help="weights saved by 'geo-rs box train' (default runs/box/mnist_box.pt)")
    v.add_argument("--model-factory",
                   help="'package.module:function' returning any nn.Module mapping an image to 4 numbers")
    v.add_argument("--weights", help="state dict for --model-factory")
    v.add_argument("--data", help="'mnist' (held-out canvases) or a COCO-style folder with annotations.json")
    v.add_argument("--images", type=int, help="number of images (first N)")
    v.add_argument("--seed", type=int, help="seed of the MNIST canvases")
    v.add_argument("--perturbation", nargs="+", help=f"any of {', '.join(PERTURBATIONS)}")
    v.add_argument("--eps", nargs="+", help="ε values or start:stop:steps (default: the paper's grids)")
    v.add_argument("--method", nargs="+", help=f"any of {', '.join(METHODS)}")
    v.add_argument("--extension", nargs="+", help=f"any of {', '.join(EXTENSIONS)}")
    v.add_argument("--threshold", type=float, help="IoU threshold t (default 0.5)")
    v.add_argument("--workers", type=int, help="worker processes (default 2)")
    v.add_argument("--out", help="run folder (resumes if it holds finished units)")
    v.add_argument("--config", help="YAML with a 'verify' section of defaults (e.g. configs/box.yaml)")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=_verify)

    r = sub.add_parser("report", help="(re)write tables and plots of a verify run")
    r.add_argument("run_dir")
    r.add_argument("--merge", nargs="+", help="other run folders on the same images to merge in")
    r.add_argument("--out", help="folder for the merged results and report")
    r.set_defaults(func=_report)

    e = sub.add_parser("export-mnist", help="write MNIST canvases as a COCO-style folder")
    e.add_argument("--images", type=int, default=100)
    e.add_argument("--split", choices=["train", "test"], default="test")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True)
    e.set_defaults(func=_export)
