"""``geo-rs box ...``: train the MNIST-canvas detector, verify box stability, write tables and plots.

    geo-rs box train --out runs/box/mnist_box.pt --epochs 10
    geo-rs box verify --model runs/box/mnist_box.pt --perturbation noise brightness contrast \\
        --method IBP CROWN-IBP CROWN --extension vanilla optimal --images 40 --out runs/box/study
    geo-rs box verify --model-factory mypkg.models:runway_net --weights w.pt --data DIR ...
    geo-rs box verify ... --workers 4 --cluster tcp://scheduler:8786     # on a Dask cluster
    geo-rs box verify --certifier bounds median-smoothing --sigma 0.25 --n 1000 --alpha 0.001 \
        --l2-eps 0 0.25 0.5 ...                                         # + an RS (median smoothing) row
    geo-rs box report runs/box/study
    geo-rs box export-mnist --images 100 --out runs/box/mnist_coco   # a COCO-style folder

``--eps`` takes values (``0 0.001 0.002``) or a grid ``start:stop:steps`` (``0:0.002:11``); without it
each perturbation uses the paper's grid. ``--config configs/box.yaml`` supplies defaults for any flag
not given on the command line (its ``train`` and ``verify`` sections follow :class:`BoxConfig`).
Nothing here imports torch until a command runs, so ``geo-rs box --help`` starts fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import field_validator

from geo_rs import UserError
from geo_rs.config import Schema, field_help, load_config, setting

from .rs import RS_METHOD
from .verify import CERTIFIERS, EXTENSIONS, METHODS, PERTURBATIONS

DEFAULT_WEIGHTS = "runs/box/mnist_box.pt"


def parse_eps(values: list[str] | None) -> list[float] | None:
    """``["0", "0.001"]`` -> floats; ``["0:0.002:11"]`` -> 11 evenly spaced values. Negative -> UserError."""
    if values is None:
        return None
    import numpy as np

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


# --------------------------------------------------------------------------- the config schema
def _known(kind: str, values: list[str], choices: tuple[str, ...]) -> list[str]:
    for v in values:
        if v not in choices:
            raise ValueError(f"unknown {kind} {v!r}; choose from {', '.join(choices)}")
    return values


class BoxTrainSection(Schema):
    """Defaults of ``geo-rs box train`` (the ``train`` section of a box config)."""

    out: str = setting(DEFAULT_WEIGHTS, "weights path (.pt; metadata goes to the .json beside it)", "file")
    epochs: int = setting(10, "passes over the training canvases", "epochs", ge=1)
    n_train: int = setting(4000, "canvases per epoch (positions re-drawn every epoch)", "canvases", ge=1)
    batch_size: int = setting(64, "canvases per optimisation step", "canvases", ge=1)
    lr: float = setting(1e-3, "learning rate of Adam (cosine decay)", "1/step", gt=0)
    seed: int = setting(0, "seed of the initialisation and the canvases", ge=0)
    n_eval: int = setting(500, "held-out canvases for the reported mean IoU", "canvases", ge=1)
    threads: int = setting(0, "torch threads (0: torch's default)", "threads", ge=0)


class BoxVerifySection(Schema):
    """Defaults of ``geo-rs box verify`` (the ``verify`` section of a box config)."""

    data: str = setting("mnist", "'mnist' (held-out canvases) or a COCO-style folder with annotations.json")
    images: int = setting(40, "number of images (the first N)", "images", ge=1)
    seed: int = setting(0, "seed of the MNIST canvases", ge=0)
    perturbation: list[str] = setting(list(PERTURBATIONS),
                                      f"perturbations: any of {', '.join(PERTURBATIONS)}", min_length=1)
    eps: list[float] | str | None = setting(
        None, "ε values, or a grid start:stop:steps (none: the paper's 11-step grids)", "pixel intensity")
    method: list[str] = setting(["IBP", "CROWN-IBP", "CROWN"], f"bound methods: any of {', '.join(METHODS)}",
                                min_length=1)
    extension: list[str] = setting(list(EXTENSIONS), f"IoU extensions: any of {', '.join(EXTENSIONS)}",
                                   min_length=1)
    threshold: float = setting(0.5, "IoU threshold t of a stable box", "IoU", ge=0, le=1)
    workers: int = setting(2, "worker processes (1: in this process)", "processes", ge=1)
    cluster: str | None = setting(None, "Dask scheduler address or 'local' (none: $GEO_RS_CLUSTER, else the "
                                        "local pool)")
    out: str = setting("runs/box/verify", "run folder (finished units are resumed)", "folder")
    certifier: list[str] = setting(["bounds"], "certifiers: 'bounds' (the --method bound propagation) "
                                   f"and/or '{RS_METHOD}' (randomized median smoothing, an L2 certificate "
                                   f"of the smoothed detector)", min_length=1)
    sigma: float = setting(0.25, f"{RS_METHOD}: std of the Gaussian noise", "pixel intensity", gt=0)
    n: int = setting(1000, f"{RS_METHOD}: noisy forward passes per image", "samples", ge=1)
    alpha: float = setting(0.001, f"{RS_METHOD}: failure probability of a box certificate (joint over "
                           f"its 4 corners)", gt=0, lt=1)
    l2_eps: list[float] | str | None = setting(
        None, f"{RS_METHOD}: extra L2 radii, values or start:stop:steps (the L∞ tables use the L2 ball "
              f"containing each set either way; none: no l2 table)", "pixel intensity, L2")
    rs_batch_size: int = setting(1000, f"{RS_METHOD}: noisy images per forward batch", "images", ge=1)

    @field_validator("certifier")
    @classmethod
    def _certifiers(cls, v: list[str]) -> list[str]:
        return _known("certifier", v, CERTIFIERS)

    @field_validator("perturbation")
    @classmethod
    def _perturbations(cls, v: list[str]) -> list[str]:
        return _known("perturbation", v, PERTURBATIONS)

    @field_validator("method")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        return _known("method", v, METHODS)

    @field_validator("extension")
    @classmethod
    def _extensions(cls, v: list[str]) -> list[str]:
        return _known("extension", v, EXTENSIONS)


class BoxConfig(Schema):
    """A box config file (e.g. ``configs/box.yaml``): defaults for ``box train`` and ``box verify``."""

    train: BoxTrainSection = setting(BoxTrainSection(), "defaults of `geo-rs box train`")
    verify: BoxVerifySection = setting(BoxVerifySection(), "defaults of `geo-rs box verify`")


def _section(args: argparse.Namespace, name: str, schema: type[Schema]):
    """The ``name`` section: built-in defaults < the --config file < flags given on the command line."""
    overrides = {f"{name}.{k}": getattr(args, k, None) for k in schema.model_fields}
    if name == "verify" and args.eps is not None:
        overrides["verify.eps"] = parse_eps(args.eps)
    if name == "verify" and args.l2_eps is not None:
        overrides["verify.l2_eps"] = parse_eps(args.l2_eps)
    flags = {f"{name}.{k}": f"--{k.replace('_', '-')}" for k in schema.model_fields}
    return getattr(load_config(BoxConfig, args.config, overrides, flags), name)


# --------------------------------------------------------------------------- handlers
def _train(args: argparse.Namespace) -> int:
    from geo_rs.atomic import write_json

    from .model import save_detector
    from .train import TrainConfig, train_box_detector

    o = _section(args, "train", BoxTrainSection)
    config = TrainConfig(n_train=o.n_train, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, seed=o.seed,
                         n_eval=o.n_eval, threads=o.threads)
    model, report = train_box_detector(config, progress=not args.quiet)
    path = save_detector(model, o.out, heldout=report["heldout"], train_config=report["config"],
                         train_seconds=round(report["train_seconds"], 1))
    write_json(Path(path).with_name(Path(path).stem + "_train_report.json"), report, indent=1)
    h = report["heldout"]
    print(f"saved {path} (+ .json metadata); held-out mean IoU {h['mean_iou']:.4f} on {h['n']} canvases, "
          f"IoU>=0.5 for {100 * h['frac_iou_ge_0.5']:.1f}%; {report['train_seconds']:.0f} s")
    return 0


def _load_model(args: argparse.Namespace):
    from geo_rs.smooth_model import build_model, model_source

    from .model import load_detector

    if args.model and args.model_factory:
        raise UserError("give either --model (geo-rs weights) or --model-factory, not both")
    if args.weights and not args.model_factory:
        raise UserError("--weights goes with --model-factory (for --model, the weights are the file itself)")
    if args.model_factory:
        model = build_model(model_source(factory=args.model_factory, weights=args.weights), "cpu")
        return model, {"factory": args.model_factory, "weights": args.weights}
    path = args.model or DEFAULT_WEIGHTS
    model, meta = load_detector(path)
    return model, {"weights": str(path), **meta}


def _eps_grid(o: BoxVerifySection) -> dict[str, list[float]]:
    from .verify import PAPER_EPS

    if o.eps is None:
        return {p: PAPER_EPS[p] for p in o.perturbation}
    values = parse_eps([o.eps] if isinstance(o.eps, str) else [repr(float(e)) for e in o.eps])
    return {p: values for p in o.perturbation}


def _load_data(o: BoxVerifySection):
    from .data import load_coco_folder, mnist_canvas

    if o.data == "mnist":
        images, boxes, _ = mnist_canvas(o.images, "test", seed=o.seed)
        return list(images), boxes
    folder = Path(o.data)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise UserError(f"--data {folder} {what}; give 'mnist' or a COCO-style folder with annotations.json")
    images, boxes = load_coco_folder(folder)
    return images[: o.images], boxes[: o.images]


def _verify(args: argparse.Namespace) -> int:
    from .report import write_report
    from .verify import VerifyConfig, run_verification

    o = _section(args, "verify", BoxVerifySection)
    l2_eps = [] if o.l2_eps is None else parse_eps([o.l2_eps] if isinstance(o.l2_eps, str)
                                                   else [repr(float(e)) for e in o.l2_eps])
    config = VerifyConfig(perturbations=list(o.perturbation), eps=_eps_grid(o), methods=list(o.method),
                          extensions=list(o.extension), threshold=o.threshold, workers=o.workers,
                          certifiers=list(o.certifier), sigma=o.sigma, n=o.n, alpha=o.alpha, l2_eps=l2_eps,
                          rs_batch_size=o.rs_batch_size)
    config.validate()  # before the (slow) model and data loading
    model, info = _load_model(args)
    images, boxes = _load_data(o)
    results = run_verification(model, images, boxes, config, o.out, progress=not args.quiet,
                               model_info=info, cluster=o.cluster, overwrite=args.overwrite)
    paths = write_report(o.out)
    print(f"{results['n_images']} images, mean clean IoU {results['mean_clean_iou']:.4f}; "
          f"{results['computed_units']} units computed, {results['resumed_units']} resumed")
    if results["unsupported"]:
        first = results["unsupported"][0]
        print(f"{len(results['unsupported'])} (image, method) pair(s) unsupported by the bound engine, "
              f"counted as not certified; e.g. image {first['image']} with {first['method']}: "
              f"{first['reason'][:160]}")
    print(paths["markdown"].read_text())
    print(f"wrote {o.out}/results.json, cba.md, cba.csv, fig_iou_envelope.png, fig_time.png")
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
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    images, boxes, _ = mnist_canvas(args.images, args.split, seed=args.seed)
    path = save_coco_folder(args.out, images, boxes)
    print(f"wrote {args.images} images and {path}")
    return 0


# --------------------------------------------------------------------------- parsers
_CONFIG_HELP = ("YAML config with 'train' and 'verify' sections of defaults, e.g. configs/box.yaml "
                "(default: none; flags given here win)")


def _add(p: argparse.ArgumentParser, schema: type[Schema], name: str, **kwargs) -> None:
    """An option whose help (with unit and default) comes from the schema field ``name``."""
    p.add_argument(f"--{name.replace('_', '-')}", default=None, help=field_help(schema, name), **kwargs)


def register(subparsers) -> None:
    """Add ``box`` with sub-commands ``train``, ``verify``, ``report``, ``export-mnist`` (no torch import)."""
    box = subparsers.add_parser("box", help="box detectors: train, verify IoU stability (IBP-IoU), report")
    sub = box.add_subparsers(dest="box_command", metavar="SUBCOMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train the MNIST-canvas box regressor (CPU, minutes)")
    _add(t, BoxTrainSection, "out", metavar="FILE.pt")
    for name in ("epochs", "n_train", "batch_size", "seed", "n_eval", "threads"):
        _add(t, BoxTrainSection, name, type=int)
    _add(t, BoxTrainSection, "lr", type=float)
    t.add_argument("--config", default=None, help=_CONFIG_HELP)
    t.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")
    t.set_defaults(func=_train)

    v = sub.add_parser("verify", help="certify box stability under noise / brightness / contrast")
    v.add_argument("--model", default=None, metavar="FILE.pt",
                   help=f"weights saved by 'geo-rs box train' (file; default {DEFAULT_WEIGHTS})")
    v.add_argument("--model-factory", default=None, metavar="MODULE:FUNCTION",
                   help="function returning any nn.Module that maps an image to 4 numbers; the current "
                        "folder is on the import path (default: none, use --model)")
    v.add_argument("--weights", default=None, metavar="FILE",
                   help="state dict for --model-factory (file; default: none, the factory's own weights)")
    _add(v, BoxVerifySection, "data", metavar="mnist|DIR")
    for name in ("images", "seed", "workers"):
        _add(v, BoxVerifySection, name, type=int)
    _add(v, BoxVerifySection, "perturbation", nargs="+")
    _add(v, BoxVerifySection, "eps", nargs="+")
    _add(v, BoxVerifySection, "method", nargs="+")
    _add(v, BoxVerifySection, "extension", nargs="+")
    _add(v, BoxVerifySection, "threshold", type=float)
    _add(v, BoxVerifySection, "certifier", nargs="+", metavar="|".join(CERTIFIERS))
    for name in ("sigma", "alpha"):
        _add(v, BoxVerifySection, name, type=float)
    for name in ("n", "rs_batch_size"):
        _add(v, BoxVerifySection, name, type=int)
    _add(v, BoxVerifySection, "l2_eps", nargs="+")
    _add(v, BoxVerifySection, "cluster", metavar="ADDRESS")
    _add(v, BoxVerifySection, "out", metavar="DIR")
    v.add_argument("--overwrite", action="store_true",
                   help="delete results of an earlier run in the run folder and start afresh (default: "
                        "resume them if they match, refuse otherwise)")
    v.add_argument("--config", default=None, help=_CONFIG_HELP)
    v.add_argument("--quiet", action="store_true", help="no progress bar (default: shown)")
    v.set_defaults(func=_verify)

    r = sub.add_parser("report", help="(re)write tables and plots of a verify run")
    r.add_argument("run_dir", metavar="RUN_DIR",
                   help="folder of a `geo-rs box verify` run (with results.json)")
    r.add_argument("--merge", nargs="+", default=None, metavar="RUN_DIR",
                   help="other run folders on the same images and detector to merge in (default: none)")
    r.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the merged results and report (default: RUN_DIR; required with --merge)")
    r.set_defaults(func=_report)

    e = sub.add_parser("export-mnist", help="write MNIST canvases as a COCO-style folder")
    e.add_argument("--images", type=int, default=100, help="number of canvases (images; default 100)")
    e.add_argument("--split", choices=["train", "test"], default="test",
                   help="digit pool: train (4,000 digits) or test (1,000 held-out digits) (default test)")
    e.add_argument("--seed", type=int, default=0, help="seed of the digit choice and position (default 0)")
    e.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the PNGs and annotations.json (created; required)")
    e.set_defaults(func=_export)
