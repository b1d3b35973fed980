"""AdaAnchor ablation in the layout of the paper's Table 1, on the occlusion-heavy synthetic set.

Trains (one process, one model at a time) the seven configs ``configs/keypoint/{regression, heatmap,
fixanchor, adaanchor_add, adaanchor, adaanchor_single_anchor, adaanchor_no_local}.yaml``, evaluates
each on the validation split (ground-truth boxes, top-down crops) and writes under ``--out``
(default ``runs/keypoint/adaanchor_ablation``):

* ``results.json`` — every metric of every model, plus the paper's numbers and the verdict;
* ``table.md`` — our Vis.Error / Vis.Score / Inv.Error / Inv.Score / OKS-AP next to the paper's;
* ``ablation.png`` — invisible-keypoint error and score per method.

A model whose ``metrics.json`` already exists for the same config is not retrained (delete it to
redo); an interrupted training resumes from its checkpoint.

    python scripts/adaanchor_ablation.py                 # everything (~20 min on a busy 2-core CPU)
    python scripts/adaanchor_ablation.py --only heatmap adaanchor --epochs 2
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

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
]


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "N/A"
    return f"{v:.{digits}f}"


def run(configs_dir: Path, out: Path, only: list[str] | None, epochs: int | None, quiet: bool,
        seed: int | None = None) -> dict:
    import torch

    import keypoint.evaluate  # noqa: F401 — import everything now: later edits must not mix in mid-run
    from keypoint.train import json_safe, load_config, train

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    names = list(dict.fromkeys(r[2] for r in ROWS))
    for name in names:
        if only and name not in only:
            continue
        cfg = load_config(configs_dir / f"{name}.yaml")
        cfg["out_dir"] = str(out / name)
        if epochs is not None:
            cfg["train"]["epochs"] = epochs
        if seed is not None:  # model init and batch order; the data stay the same
            cfg["seed"] = seed
        metrics_path = Path(cfg["out_dir"]) / "metrics.json"
        if metrics_path.is_file():
            prev = json.loads(metrics_path.read_text())
            if prev.get("config") == cfg:
                print(f"[{name}] reusing {metrics_path}")
                results[name] = prev
                continue
        t0 = time.time()
        print(f"[{name}] training {cfg['model']} ...", flush=True)
        summary = train(cfg, resume=True, progress=not quiet)
        summary["config"] = cfg
        summary["wall_seconds"] = round(time.time() - t0, 1)
        metrics_path.write_text(json.dumps(json_safe(summary), indent=2))
        v = summary["val"]
        print(f"[{name}] done in {summary['wall_seconds']} s: vis_err {v['vis_error']:.2f} inv_err "
              f"{v['inv_error']:.2f} vis_score {v['vis_score']:.3f} inv_score {v['inv_score']:.3f} "
              f"AP {v['oks_ap']['AP']:.3f}", flush=True)
        results[name] = summary
    return results


def verdict(results: dict) -> dict:
    if "heatmap" not in results or "adaanchor" not in results:
        return {}
    h, a = results["heatmap"]["val"], results["adaanchor"]["val"]
    return {"lower_inv_error_than_heatmap": bool(a["inv_error"] < h["inv_error"]),
            "higher_inv_score_than_heatmap": bool(a["inv_score"] > h["inv_score"]),
            "heatmap_inv_error": h["inv_error"], "adaanchor_inv_error": a["inv_error"],
            "heatmap_inv_score": h["inv_score"], "adaanchor_inv_score": a["inv_score"]}


def paired_bootstrap(out: Path, a: str = "adaanchor", b: str = "heatmap", n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """95 % paired-bootstrap intervals (resampling validation *instances*) of ``a − b`` for the
    invisible- and visible-keypoint mean error and mean score, from the two saved checkpoints."""
    import numpy as np

    from keypoint.data.dataset import KeypointCropDataset, KeypointLayout
    from keypoint.evaluate import load_checkpoint, predict_crops
    from keypoint.train import load_split, materialize

    per = {}
    for name in (a, b):
        model, ck = load_checkpoint(out / name / "last.pt")
        layout = KeypointLayout.from_dict(ck["layout"])
        ds = KeypointCropDataset(load_split(ck["config"]["data"], "val"), int(ck["input_size"]),
                                 float(ck["padding"]), layout)
        m = materialize(ds, model.codec)
        kp, sc = predict_crops(model, m["image"])
        gt = m["keypoints"][:, 0]
        per[name] = ((kp - gt).norm(dim=-1).numpy(), sc.numpy(), m["visibility"][:, 0].numpy())
    err_a, sc_a, vis = per[a]
    err_b, sc_b, _ = per[b]
    rng = np.random.default_rng(seed)
    n = len(vis)
    res = {}
    for tag, v in (("inv", 1), ("vis", 2)):
        sel = (vis == v).astype(np.float64)
        diffs = {"error": [], "score": []}
        for _ in range(n_boot):
            idx = rng.integers(0, n, n)
            w = sel[idx]
            tot = w.sum()
            diffs["error"].append(((err_a[idx] - err_b[idx]) * w).sum() / tot)
            diffs["score"].append(((sc_a[idx] - sc_b[idx]) * w).sum() / tot)
        for key, vals in diffs.items():
            j = 0 if key == "error" else 1
            full = ((per[a][j] - per[b][j]) * sel).sum() / sel.sum()
            lo, hi = np.percentile(vals, [2.5, 97.5])
            res[f"{tag}_{key}_diff"] = {"mean": float(full), "ci95": [float(lo), float(hi)]}
    return res


def anchor_distances(out: Path, names: list[str], max_crops: int = 256) -> dict:
    """Where the inference anchor (max-confidence cell) sits: mean distance to the target in map cells,
    for visible and invisible keypoints, per AdaAnchor-family model (diagnoses anchor drift)."""
    import torch

    from keypoint.data.dataset import KeypointCropDataset, KeypointLayout
    from keypoint.evaluate import load_checkpoint
    from keypoint.train import load_split, materialize

    res = {}
    for name in names:
        path = out / name / "last.pt"
        if not path.is_file():
            continue
        model, ck = load_checkpoint(path)
        if ck["model_config"]["type"] != "adaanchor":
            continue
        layout = KeypointLayout.from_dict(ck["layout"])
        ds = KeypointCropDataset(load_split(ck["config"]["data"], "val"), int(ck["input_size"]),
                                 float(ck["padding"]), layout)
        m = materialize(ds, model.codec)
        with torch.no_grad():
            conf = model(m["image"][:max_crops])["confidence"]
        b, k, h, w = conf.shape
        am = conf.reshape(b, k, -1).argmax(-1)
        cell = torch.stack([am % w, am // w], -1).float()
        d = (cell - m["targets"]["points"][:b, 0]).norm(dim=-1)
        vis = m["visibility"][:b, 0]
        res[name] = {f"{t}_anchor_distance_cells": float(d[vis == v].mean())
                     for t, v in (("vis", 2), ("inv", 1))}
    return res


def markdown(results: dict) -> str:
    lines = ["| Method | Vis.Error | Vis.Score | Inv.Error | Inv.Score | OKS-AP | PCK@0.1 | "
             "Occl.Err | Trunc.Err | paper Vis.Err | paper Vis.Score | paper Inv.Err | paper Inv.Score | "
             "paper mAP |",
             "|---" * 14 + "|"]
    group = None
    for g, label, name, paper in ROWS:
        if g != group:
            lines.append(f"| *{g}* |" + " |" * 13)
            group = g
        r = results.get(name)
        if r is None:
            ours = ["not run"] + [""] * 7
        else:
            v = r["val"]
            ours = [_fmt(v["vis_error"], 2), _fmt(v["vis_score"], 3), _fmt(v["inv_error"], 2),
                    _fmt(v["inv_score"], 3), _fmt(100 * v["oks_ap"]["AP"], 1), _fmt(100 * v["pck@0.1"], 1),
                    _fmt(v["occluded_error"], 2), _fmt(v["truncated_error"], 2)]
        pp = [_fmt(paper[0], 2), _fmt(paper[1], 3), _fmt(paper[2], 1), _fmt(paper[3], 3), _fmt(paper[4], 1)]
        lines.append(f"| {label} | " + " | ".join(ours + pp) + " |")
    return "\n".join(lines)


def verdict_markdown(v: dict) -> str:
    if not v:
        return "Verdict: needs both the heatmap and the full AdaAnchor rows.\n"
    err_ok = "holds" if v["lower_inv_error_than_heatmap"] else "does NOT hold"
    score_ok = "holds" if v["higher_inv_score_than_heatmap"] else "does NOT hold"
    lines = [f"- AdaAnchor Inv.Error {v['adaanchor_inv_error']:.2f} vs heatmap-anchor "
             f"{v['heatmap_inv_error']:.2f}: the paper's claim (lower) {err_ok} here.",
             f"- AdaAnchor Inv.Score {v['adaanchor_inv_score']:.3f} vs heatmap-anchor "
             f"{v['heatmap_inv_score']:.3f}: the paper's claim (higher) {score_ok} here."]
    for key, d in v.get("paired_bootstrap_adaanchor_minus_heatmap", {}).items():
        lines.append(f"- paired bootstrap, AdaAnchor − heatmap, {key.replace('_diff', '')}: {d['mean']:+.3f} "
                     f"(95 % CI {d['ci95'][0]:+.3f} … {d['ci95'][1]:+.3f})")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [(label, results[name]["val"]) for _, label, name, _ in ROWS if name in results]
    seen, uniq = set(), []
    for label, v in rows:
        if label not in seen:
            seen.add(label)
            uniq.append((label, v))
    labels = [u[0] for u in uniq]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    x = np.arange(len(uniq))
    for ax, keys, title in ((axes[0], ("vis_error", "inv_error"), "mean error (crop px, lower is better)"),
                            (axes[1], ("vis_score", "inv_score"), "mean score (higher is better)"),
                            (axes[2], ("occluded_error", "truncated_error"),
                             "invisible: occluded vs truncated")):
        for j, k in enumerate(keys):
            vals = [0.0 if u[1][k] is None else float(np.nan_to_num(u[1][k], nan=0.0)) for u in uniq]
            ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=k)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("AdaAnchor ablation on the occlusion-heavy synthetic set (regression has no score)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs-dir", default="configs/keypoint")
    ap.add_argument("--out", default="runs/keypoint/adaanchor_ablation")
    ap.add_argument("--only", nargs="*", default=None, help="config names to (re)run")
    ap.add_argument("--epochs", type=int, default=None, help="override every config's epochs")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--seed", type=int, default=None, help="override every config's training seed")
    ap.add_argument("--diagnose-only", action="store_true",
                    help="only measure inference-anchor distances of the trained AdaAnchor-family models")
    ap.add_argument("--no-bootstrap", action="store_true",
                    help="skip the paired bootstrap (AdaAnchor vs heatmap)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.diagnose_only:
        import torch

        torch.set_num_threads(1)
        diag = anchor_distances(out, list(dict.fromkeys(r[2] for r in ROWS)))
        (out / "anchor_distances.json").write_text(json.dumps(diag, indent=2))
        print(json.dumps(diag, indent=2))
        return 0
    results = run(Path(args.configs_dir), out, args.only, args.epochs, args.quiet, args.seed)
    table = markdown(results)
    verdict_ = verdict(results)
    if verdict_ and not args.no_bootstrap:
        verdict_["paired_bootstrap_adaanchor_minus_heatmap"] = paired_bootstrap(out)
    (out / "table.md").write_text(table + "\n\n" + verdict_markdown(verdict_))
    from keypoint.train import json_safe

    (out / "results.json").write_text(json.dumps(json_safe({
        "results": {k: v["val"] for k, v in results.items()},
        "train_seconds": {k: v.get("train_seconds") for k, v in results.items()},
        "paper": {name: paper for _, _, name, paper in ROWS}, "verdict": verdict_}), indent=2))
    if results:
        plot(results, out / "ablation.png")
    print(table)
    print(json.dumps(verdict_, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
