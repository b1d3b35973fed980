"""AdaAnchor study in the layout of the paper's Table 1: several seeds, paired bootstrap CIs, two splits.

Trains every (split, method, seed) with :func:`keypoint.train.train` (one thread; resumable: a finished
run is reused, an interrupted one resumes), stores each model's per-keypoint validation predictions
(``preds.npz``), then writes the tables. Layout under ``--out`` (default
``runs/keypoint/adaanchor_study``)::

    <split>/<method>/seed<k>/{last.pt, metrics.json, history.json, loss.png, preds.npz}
    results.json     # every number of the tables
    tables.md        # the Markdown tables (beside the paper's Table 1)

Splits (same images for every method; seeds change the initialisation and batch order only):

* ``occlusion`` — the occlusion-heavy synthetic set (80 % of the objects occluded, 30 % pushed across
  the border; keypoints outside the image stay labelled, as in our synthetic data);
* ``coco_like`` — the same scenes with the ``coco-like`` preset: no labelled keypoint outside the
  image (COCO's convention) and occluders that hide more of the shape around a keypoint.

Methods (configs in ``configs/keypoint/``): ``regression``, ``heatmap``, ``fixanchor``,
``adaanchor_add``, ``adaanchor`` (mul, top-k, local refinement, with the collapse guard: r scored on
the coarse estimate and a 2-epoch FixAnchor warm-up), ``adaanchor_single_anchor`` (k = 1),
``adaanchor_no_local``, ``adaanchor_refined``
(the paper's literal scoring of the refined estimate, which collapses here). ``--table guard`` trains
the variants that chose the guard (seed 0).

Statistics: errors are mean Euclidean distances in crop pixels (64-px crops) over keypoints of each
visibility class; "occluded" = hidden inside the image, "truncated" = outside it. Each difference
against heatmap-anchor is the seed-averaged per-keypoint difference, with a 95 % paired bootstrap
interval resampling validation *images* (2,000 resamples).

Usage::

    python scripts/adaanchor_ablation.py train --split occlusion --seeds 0 1      # one heavy job
    python scripts/adaanchor_ablation.py train --split coco_like --seeds 0 1 --only heatmap adaanchor
    python scripts/adaanchor_ablation.py train --table guard
    python scripts/adaanchor_ablation.py report
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = [  # (group, label, config name, paper row: Vis.Error, Vis.Score, Inv.Error, Inv.Score, mAP)
    ("Baselines", "Regression-anchor", "regression", (7.19, None, 17.6, None, 54.1)),
    ("Baselines", "Heatmap-anchor", "heatmap", (6.19, 0.800, 17.1, 0.568, 71.1)),
    ("Baselines", "FixAnchor", "fixanchor", (6.17, 0.709, 17.0, 0.511, 71.1)),
    ("Fusion strategy", "Scoring (add)", "adaanchor_add", (6.13, 0.886, 16.9, 0.683, 71.2)),
    ("Fusion strategy", "Scoring (mul)", "adaanchor", (6.02, 0.925, 16.2, 0.805, 71.3)),
    ("Component analysis", "Ours w/o multiple anchors", "adaanchor_single_anchor",
     (6.34, 0.866, 17.0, 0.705, 70.2)),
    ("Component analysis", "Ours w/o local refinement", "adaanchor_no_local",
     (6.47, 0.902, 16.8, 0.783, 69.0)),
    ("Component analysis", "Ours", "adaanchor", (6.02, 0.925, 16.2, 0.805, 71.3)),
    ("Paper-literal scoring", "Ours, r of the refined estimate", "adaanchor_refined",
     (None, None, None, None, None)),
]
METHODS = list(dict.fromkeys(r[2] for r in ROWS))
COCO_METHODS = ["heatmap", "fixanchor", "adaanchor", "adaanchor_refined"]

#: guard selection: AdaAnchor variants on the occlusion split (seed 0), config overrides of `adaanchor`
GUARD = {
    "previous (k=20, σ=1, R=2), refined": {"top_k": 20, "score_sigma": 1.0, "local_radius": 2.0,
                                          "score_from": "refined", "warmup_epochs": 0.0},
    "paper proportions, refined (paper-literal)": {"score_from": "refined", "warmup_epochs": 0.0},
    "paper proportions, refined, 2-epoch warm-up": {"score_from": "refined", "warmup_epochs": 2.0},
    "paper proportions, refined, stride 2 (32×32 map)": {"score_from": "refined", "warmup_epochs": 0.0,
                                                         "stride": 2},
    "paper proportions, coarse": {"score_from": "coarse", "warmup_epochs": 0.0},
    "paper proportions, coarse, 2-epoch warm-up (chosen)": {"score_from": "coarse", "warmup_epochs": 2.0},
    "k=20, coarse": {"score_from": "coarse", "top_k": 20, "warmup_epochs": 0.0},
    "FixAnchor (paper proportions)": {"selection": "fixed"},
}

SPLITS = {
    "occlusion": {},
    "coco_like": {"label_outside": False, "occluder_size": [0.45, 0.8], "occluder_spread": 0.1},
}
METRICS = [("vis_error", "Vis.Error", 2), ("vis_score", "Vis.Score", 3), ("inv_error", "Inv.Error", 2),
           ("inv_score", "Inv.Score", 3), ("occluded_error", "Occl.Err", 2),
           ("truncated_error", "Trunc.Err", 2)]


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "N/A"
    return f"{v:.{digits}f}"


def _ci_cell(c: dict | None, digits: int) -> str:
    """``+d.dd [+lo, +hi]`` for one paired-bootstrap entry, ``—`` when there is none."""
    return "—" if c is None else (f"{c['diff']:+.{digits}f} [{c['ci95'][0]:+.{digits}f}, "
                                  f"{c['ci95'][1]:+.{digits}f}]")


# ---------------------------------------------------------------------------------------- training
def run_config(method: str, split: str, seed: int, out: Path, epochs: int | None,
               overrides: dict | None = None, run_name: str | None = None):
    from keypoint.config import load_keypoint_config, validate_keypoint_config

    cfg = load_keypoint_config(ROOT / "configs" / "keypoint" / f"{method}.yaml").to_dict()
    cfg["data"]["synth"].update(SPLITS[split])
    cfg["model"].update(overrides or {})
    cfg["seed"] = seed
    cfg["train"]["num_threads"] = 1
    if epochs is not None:
        cfg["train"]["epochs"] = epochs
    cfg["out_dir"] = str(out / split / (run_name or method) / f"seed{seed}")
    return validate_keypoint_config(cfg)


def train_one(cfg, quiet: bool) -> dict:
    """Train (or reuse) one run and store its per-keypoint validation predictions."""
    from keypoint.checkpoints import load_checkpoint
    from keypoint.data.dataset import KeypointLayout
    from keypoint.data.splits import load_split
    from keypoint.evaluate import crop_predictions
    from keypoint.train import train

    run = cfg.run_dir
    done = run / "metrics.json"
    if done.is_file() and (run / "preds.npz").is_file():
        summary = json.loads(done.read_text())
        if summary.get("complete") and summary.get("epochs") == cfg.train.epochs and "val" in summary:
            print(f"[{run}] reusing", flush=True)
            return summary
    t0 = time.time()
    summary = train(cfg, quiet=quiet)
    model, ck = load_checkpoint(run / "last.pt")
    layout = KeypointLayout.from_dict(ck["layout"])
    cp = crop_predictions(model, load_split(cfg.data, "val", quiet=True), layout, cfg.data.input_size,
                          cfg.data.padding)
    np.savez_compressed(run / "preds.npz", error=cp.error, score=cp.score, vis=cp.vis, inside=cp.inside,
                        image=cp.sample_index, category=cp.category_id, has_scores=model.codec.has_scores)
    v = summary["val"]
    print(f"[{run}] {time.time() - t0:.0f} s, {summary['epochs_run']} epochs: vis_err {v['vis_error']:.2f} "
          f"inv_err {v['inv_error']:.2f} vis_score {v['vis_score']:.3f} inv_score {v['inv_score']:.3f}",
          flush=True)
    return summary


def cmd_train(args) -> int:
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    if args.table == "guard":
        for i, (label, over) in enumerate(GUARD.items()):
            if args.only and str(i) not in args.only:
                continue
            method = "adaanchor"
            cfg = run_config(method, "occlusion", 0, out / "guard", args.epochs or 12, over, f"variant{i}")
            print(f"guard variant {i}: {label}", flush=True)
            train_one(cfg, args.quiet)
        return 0
    for seed in args.seeds:
        for method in (COCO_METHODS if args.split == "coco_like" else METHODS):
            if args.only and method not in args.only:
                continue
            train_one(run_config(method, args.split, seed, out, args.epochs), args.quiet)
    return 0


# ----------------------------------------------------------------------------------------- report
def plateau(history: list[dict]) -> float:
    """Relative change of the mean training loss from the third to the last quarter of the epochs."""
    rows = [h for h in history if "loss" in h and h.get("kind") != "epoch"]
    if not rows:
        return float("nan")
    end = max(h["epoch"] for h in rows)
    third = [h["loss"] for h in rows if 0.5 * end < h["epoch"] <= 0.75 * end]
    last = [h["loss"] for h in rows if h["epoch"] > 0.75 * end]
    return float(np.mean(last) / np.mean(third) - 1) if third and last else float("nan")


def _load(run: Path) -> dict | None:
    if not (run / "preds.npz").is_file() or not (run / "metrics.json").is_file():
        return None
    p = dict(np.load(run / "preds.npz"))
    p["summary"] = json.loads((run / "metrics.json").read_text())
    hist = json.loads((run / "history.json").read_text()) if (run / "history.json").is_file() else []
    p["diag"] = [h for h in hist if h.get("kind") == "epoch"]
    p["plateau"] = plateau(hist)
    p["seed"] = run.name
    return p


def _masks(p: dict) -> dict[str, np.ndarray]:
    vis, inside = p["vis"], p["inside"]
    return {"vis": vis == 2, "inv": vis == 1, "occluded": (vis == 1) & inside,
            "truncated": (vis == 1) & ~inside}


def _metric_arrays(p: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric → (per-keypoint values (M, C), mask (M, C))."""
    m = _masks(p)
    out = {"vis_error": (p["error"], m["vis"]), "inv_error": (p["error"], m["inv"]),
           "occluded_error": (p["error"], m["occluded"]), "truncated_error": (p["error"], m["truncated"])}
    if bool(p["has_scores"]):
        out["vis_score"] = (p["score"], m["vis"])
        out["inv_score"] = (p["score"], m["inv"])
    return out


def paired_bootstrap(a_runs: list[dict], b_runs: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Seed-averaged difference a − b per metric with a 95 % bootstrap CI over validation images."""
    ma = [_metric_arrays(p) for p in a_runs]
    mb = [_metric_arrays(p) for p in b_runs]
    images = a_runs[0]["image"]
    uniq, inv = np.unique(images, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), (n_boot, len(uniq)))
    counts = np.stack([np.bincount(d, minlength=len(uniq)) for d in draws])  # (n_boot, n_images)
    res = {}
    for key in ma[0]:
        if key not in mb[0]:
            continue
        mask = ma[0][key][1]
        diff = np.mean([x[key][0] for x in ma], 0) - np.mean([x[key][0] for x in mb], 0)
        num = np.bincount(inv, weights=(diff * mask).sum(1), minlength=len(uniq))
        den = np.bincount(inv, weights=mask.sum(1), minlength=len(uniq))
        if den.sum() == 0:
            continue
        point = num.sum() / den.sum()
        boot = (counts @ num) / np.maximum(counts @ den, 1e-12)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        res[key] = {"diff": float(point), "ci95": [float(lo), float(hi)], "keypoints": int(mask.sum())}
    return res


def _mean_metric(runs: list[dict], key: str) -> tuple[float, list[float]]:
    vals = []
    for p in runs:
        arrs = _metric_arrays(p)
        if key not in arrs:
            return float("nan"), []
        v, m = arrs[key]
        vals.append(float((v * m).sum() / m.sum()) if m.sum() else float("nan"))
    return float(np.mean(vals)), vals


def _diag(runs: list[dict]) -> dict:
    last = [p["diag"][-1] for p in runs if p["diag"]]
    keys = [f"{kind}_{k}" for kind in ("infer", "train")
            for k in ("corr_x", "corr_y", "dist_vis", "dist_occ", "dist_out", "distinct")]
    out = {}
    for k in keys:
        vals = [d[k] for d in last if d.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out if last else {}


def collect(out: Path, split: str, methods: list[str]) -> dict:
    res = {}
    for method in methods:
        runs = [r for r in (_load(d) for d in sorted((out / split / method).glob("seed*"))) if r is not None]
        if runs:
            res[method] = runs
    return res


def split_table(runs: dict, split: str) -> tuple[str, dict]:
    """Markdown table of one split + the numbers."""
    base = runs.get("heatmap")
    head = ("| Method | seeds | epochs | loss Δ last ¼ | " + " | ".join(m[1] for m in METRICS)
            + " | OKS-AP | " + " | ".join(f"Δ{m[1]} vs heatmap [95 % CI]" for m in METRICS[:4]) + " |")
    lines = [head, "|" + "---|" * (4 + len(METRICS) + 1 + 4)]
    numbers: dict = {}
    labels: dict[str, list[str]] = {}  # one row per config: "Scoring (mul)" and "Ours" are both `adaanchor`
    for _, label, method, _ in ROWS:
        labels.setdefault(method, []).append(label)
    for method, names in labels.items():
        if method not in runs:
            continue
        label = " = ".join(names)
        rs = runs[method]
        row = {k: _mean_metric(rs, k) for k, _, _ in METRICS}
        ap = float(np.mean([p["summary"]["val"]["oks_ap"]["AP"] for p in rs]))
        epochs = sorted({p["summary"]["epochs_run"] for p in rs})
        cis = paired_bootstrap(rs, base) if base is not None and method != "heatmap" else {}
        numbers[method] = {"seeds": len(rs), "epochs_run": epochs, "oks_ap": ap, "diag": _diag(rs),
                           "loss_change_last_quarter": [p["plateau"] for p in rs],
                           **{k: {"mean": v[0], "per_seed": v[1]} for k, v in row.items()},
                           "vs_heatmap": cis}
        cells = [_fmt(row[k][0], d) for k, _, d in METRICS]
        deltas = [_ci_cell(cis.get(k), d) for k, _, d in METRICS[:4]]
        change = "/".join(f"{100 * p['plateau']:+.0f} %" for p in rs)
        lines.append(f"| {label} | {len(rs)} | {'/'.join(f'{e:g}' for e in epochs)} | {change} | "
                     + " | ".join(cells)
                     + f" | {100 * ap:.1f} | " + " | ".join(deltas) + " |")
    return "\n".join(lines), numbers


def invisible_table(results: dict) -> str:
    """Invisible error split into occluded inside the image and truncated outside it, against heatmap."""
    lines = ["| split | method | seeds | Occl.Err | ΔOccl.Err vs heatmap [95 % CI] | occluded kps | "
             "Trunc.Err | ΔTrunc.Err vs heatmap [95 % CI] | truncated kps |", "|---|---|---|" + "---|" * 6]
    for split, numbers in results.items():
        for method, n in numbers.items():
            cells = []
            for key in ("occluded_error", "truncated_error"):
                c = n["vs_heatmap"].get(key)
                cells += [_fmt(n[key]["mean"], 2), _ci_cell(c, 2), "—" if c is None else str(c["keypoints"])]
            lines.append(f"| {split} | {method} | {n['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(runs_by_split: dict) -> tuple[str, dict]:
    """Each seed minus heatmap-anchor of the same seed: the spread the image bootstrap cannot show."""
    keys = METRICS[:4]
    lines = ["| split | method | seed | " + " | ".join(f"Δ{m[1]} vs heatmap" for m in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    numbers: dict = {}
    for split, runs in runs_by_split.items():
        base = {p["seed"]: p for p in runs.get("heatmap", [])}
        for method, rs in runs.items():
            paired = [p for p in rs if p["seed"] in base]
            if method == "heatmap" or len(paired) < 2:
                continue
            for p in paired:
                cells = []
                for k, _, d in keys:
                    a, b = _mean_metric([p], k)[0], _mean_metric([base[p["seed"]]], k)[0]
                    numbers.setdefault(split, {}).setdefault(method, {}).setdefault(p["seed"], {})[k] = a - b
                    cells.append(_fmt(a - b, d) if math.isfinite(a - b) else "—")
                cells = [c if c in ("—", "N/A") or c.startswith("-") else "+" + c for c in cells]
                lines.append(f"| {split} | {method} | {p['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines), numbers


def versus_table(runs_by_split: dict, base: str = "fixanchor", name: str = "FixAnchor") -> str:
    """AdaAnchor variants minus ``base`` (FixAnchor: same heads, fixed anchors), 95 % paired bootstrap."""
    keys = METRICS
    lines = ["| split | method | " + " | ".join(f"Δ{m[1]} vs {name} [95 % CI]" for m in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for split, runs in runs_by_split.items():
        if base not in runs:
            continue
        for method in runs:
            if not method.startswith("adaanchor") or method == base:
                continue
            cis = paired_bootstrap(runs[method], runs[base])
            cells = [_ci_cell(cis.get(k), d) for k, _, d in keys]
            lines.append(f"| {split} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_table() -> str:
    lines = ["| Method (paper, COCO, ResNet-50) | Vis.Error | Vis.Score | Inv.Error | Inv.Score | mAP |",
             "|---|---|---|---|---|---|"]
    for _, label, _, paper in ROWS:
        if paper[0] is None:
            continue
        lines.append(f"| {label} | " + " | ".join(_fmt(v, d) for v, d in zip(paper, (2, 3, 1, 3, 1))) + " |")
    return "\n".join(dict.fromkeys(lines))


def _anchor_cells(d: dict, kind: str) -> str:
    f = {k: _fmt(d.get(f"{kind}_{k}"), 2 if k.startswith(("corr", "distinct")) else 1)
         for k in ("corr_x", "corr_y", "dist_vis", "dist_occ", "dist_out", "distinct")}
    return (f"{f['corr_x']} / {f['corr_y']} | {f['dist_vis']} / {f['dist_occ']} / {f['dist_out']} | "
            f"{f['distinct']}")


ANCHOR_HEAD = ("inference anchor corr x / y | dist. visible / occluded / outside (cells) | distinct | "
               "training anchor corr x / y | dist. visible / occluded / outside | distinct")


def anchor_table(runs_by_split: dict) -> str:
    lines = [f"| split | method | {ANCHOR_HEAD} |", "|---|---|" + "---|" * 6]
    for split, runs in runs_by_split.items():
        for method in runs:
            d = _diag(runs[method])
            if d:
                row = f"{_anchor_cells(d, 'infer')} | {_anchor_cells(d, 'train')}"
                lines.append(f"| {split} | {method} | {row} |")
    return "\n".join(lines)


GUARD_CHOSEN = next(i for i, label in enumerate(GUARD) if "(chosen)" in label)


def guard_table(out: Path) -> tuple[str, dict]:
    """One row per guard variant (seed 0), with Vis./Inv.Error against the chosen guard (paired CI)."""
    loaded = {i: _load(out / "guard" / "occlusion" / f"variant{i}" / "seed0") for i in range(len(GUARD))}
    chosen = loaded[GUARD_CHOSEN]
    lines = [f"| variant | {ANCHOR_HEAD} | Vis.Error | Inv.Error | Inv.Score | "
             "ΔVis.Error vs chosen [95 % CI] | ΔInv.Error vs chosen [95 % CI] |", "|---|" + "---|" * 11]
    numbers = {}
    for i, label in enumerate(GUARD):
        p = loaded[i]
        if p is None:
            continue
        d = _diag([p])
        v = p["summary"]["val"]
        cis = paired_bootstrap([p], [chosen]) if chosen is not None and i != GUARD_CHOSEN else {}
        numbers[label] = {"diag": d, "history": p["diag"], "vs_chosen": cis,
                          **{k: v[k] for k in ("vis_error", "inv_error", "inv_score")}}
        lines.append(f"| {label} | {_anchor_cells(d, 'infer')} | {_anchor_cells(d, 'train')} | "
                     f"{v['vis_error']:.2f} | {v['inv_error']:.2f} | {v['inv_score']:.3f} | "
                     f"{_ci_cell(cis.get('vis_error'), 2)} | {_ci_cell(cis.get('inv_error'), 2)} |")
    return "\n".join(lines), numbers


def cmd_report(args) -> int:
    from geo_rs.atomic import write_json, write_text

    out = Path(args.out)
    md = ["# AdaAnchor study (generated by scripts/adaanchor_ablation.py report)", "",
          "Errors in crop pixels (64-px crops), scores = confidence at the prediction. CIs: 95 % paired "
          "bootstrap over validation images of the seed-averaged per-keypoint differences; they do not "
          "contain seed-to-seed variance (see the seed-by-seed table). A row with `seeds` = 1 is a single "
          "training run. \"Scoring (mul)\" and \"Ours\" are one configuration (`adaanchor`: mul fusion, "
          "top-k, local refinement), as in the paper, whose two rows are identical; they share one row.", ""]
    results: dict = {}
    by_split = {}
    for split, methods in (("occlusion", METHODS), ("coco_like", COCO_METHODS)):
        runs = collect(out, split, methods)
        if not runs:
            continue
        by_split[split] = runs
        table, numbers = split_table(runs, split)
        results[split] = numbers
        md += [f"## Split `{split}`", "", table, ""]
    md += ["## Invisible keypoints: occluded inside the image / truncated outside it", "",
           invisible_table(results), ""]
    st, snum = seed_table(by_split)
    results["per_seed_vs_heatmap"] = snum
    md += ["## Seed by seed (each seed against heatmap-anchor of the same seed)", "", st, ""]
    md += ["## AdaAnchor against FixAnchor", "", versus_table(by_split), ""]
    md += ["## Fusion and components against Ours (`adaanchor`)", "",
           versus_table(by_split, "adaanchor", "Ours"), ""]
    md += ["## Where the anchors sit (last epoch, validation crops, mean over seeds)", "",
           anchor_table(by_split), ""]
    gt, gnum = guard_table(out)
    results["guard"] = gnum
    md += ["## Guard selection (occlusion split, seed 0)", "", gt, "", "## Paper, Table 1", "",
           paper_table(), ""]
    write_text(out / "tables.md", "\n".join(md))
    write_json(out / "results.json", results, indent=1)
    print("\n".join(md))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train (or reuse) the runs of one split / table")
    t.add_argument("--split", choices=sorted(SPLITS), default="occlusion",
                   help="data split (default occlusion)")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    t.add_argument("--only", nargs="*", default=None, help="methods (or guard variant numbers) to run")
    t.add_argument("--epochs", type=int, default=None, help="override the configs' epochs (default: theirs)")
    t.add_argument("--table", choices=["main", "guard"], default="main", help="main rows or guard variants")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    r = sub.add_parser("report", help="tables from the finished runs")
    for p in (t, r):
        p.add_argument("--out", default="runs/keypoint/adaanchor_study", help="study folder")
    args = ap.parse_args(argv)
    return cmd_train(args) if args.cmd == "train" else cmd_report(args)


if __name__ == "__main__":
    from geo_rs.interrupt import Interrupted, exit_code

    try:
        sys.exit(main())
    except Interrupted as exc:  # SIGINT/SIGTERM: the run saved its checkpoint; a re-run resumes
        print(f"{Path(__file__).name}: {exc}; re-run to resume", file=sys.stderr)
        sys.exit(exit_code(exc.signum))
