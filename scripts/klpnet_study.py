"""KLPNet study: PCK and link AUC/AP with 1, 2, 3 CKLM stages, each with and without LIS.

Trains one model per stage count (LIS is an inference-time strategy, so the same weights are
evaluated with and without it), one process, one thread, resumable (re-running skips finished
training). Writes under ``--out`` (default ``runs/keypoint/klpnet_study``):

* ``results.json`` — every metric of :func:`keypoint.klpnet_train.evaluate_klpnet` per setting;
* ``results.md`` — the Markdown table next to the paper's Tables 4/5;
* ``results.png`` — PCK / link AP / debatable-node accuracy per setting;
* ``examples.png`` — overlap images: LIS off vs on (links drawn, outliers as red crosses).

Usage::

    .venv/bin/python scripts/klpnet_study.py                      # full (~15–25 min on 2 busy cores)
    .venv/bin/python scripts/klpnet_study.py --quick              # smoke run (tiny sizes, ~1 min)
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keypoint.klpnet_train import (  # noqa: E402
    evaluate_klpnet,
    json_safe,
    load_klpnet_checkpoint,
    load_klpnet_config,
    load_klpnet_split,
    predict_dataset,
    train_klpnet,
)

PAPER = """\
Paper (different data, for the trend only): Table 4, CKLM on MS-COCO minival, AP: 1-stage 72.0,
2-stage 75.3, 3-stage 76.1. Table 5, ObjectNet3D+ mean PCK (second half of the categories):
backbone only ("Ours") 71.9, + 3-stage cross-stage aggregation ("Ours*") 76.8, + LIS ("Ours†") 80.3.
The paper reports no link AUC/AP numbers (links are only shown qualitatively, Fig. 6)."""

COLUMNS = [("pck", "PCK@α"), ("pck_vis", "PCK vis"), ("pck_inv", "PCK inv"),
           ("pck_oracle_id", "PCK OracleId"),
           ("link_auc", "link AUC"), ("link_ap", "link AP"), ("edge_recall", "edge recall"),
           ("edge_precision", "edge prec."), ("debatable_correct", "debatable ok"),
           ("gt_link_auc", "GT-node AUC"), ("gt_link_ap", "GT-node AP")]


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def markdown_table(results: dict, alpha: float) -> str:
    head = "| stages | kernels | LIS | " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|" + "---|" * (3 + len(COLUMNS))
    rows = [head.replace("PCK@α", f"PCK@{alpha:g}"), sep]
    for r in results.values():
        for lis in ("off", "on"):
            m = r[f"lis_{lis}"]
            rows.append(f"| {r['stages']} | {'/'.join(map(str, r['kernels']))} | {lis} | "
                        + " | ".join(_fmt(m.get(c)) for c, _ in COLUMNS) + " |")
    return "\n".join(rows)


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("pck", "PCK"), ("pck_oracle_id", "PCK OracleId"), ("link_ap", "link AP (detected nodes)"),
               ("debatable_correct", "debatable nodes attributed correctly")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.2))
    keys = list(results)
    x = np.arange(len(keys))
    for ax, (m, title) in zip(axes, metrics):
        for i, lis in enumerate(("off", "on")):
            vals = [results[k][f"lis_{lis}"].get(m) for k in keys]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=f"LIS {lis}")
        ax.set_xticks(x, [f"{results[k]['stages']}-stage" for k in keys])
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(model, val, path: Path, n: int = 3) -> None:
    """Images with the most debatable nodes: LIS off (top) vs on (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keypoint.instability import boxes_membership

    off = predict_dataset(model, val, lis=False)
    on = predict_dataset(model, val, lis=True)
    score = []
    for s, p in zip(val.samples, on):
        boxes = np.array([a.box for a in s.annotations]).reshape(-1, 4)
        score.append(int((boxes_membership(p.nodes, boxes).sum(1) > 1).sum()) if len(p.nodes) else 0)
    pick = np.argsort(score)[::-1][:n]
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.4))
    colours = plt.cm.tab10(np.arange(10))
    for col, i in enumerate(pick):
        for row, (preds, name) in enumerate(((off, "LIS off"), (on, "LIS on"))):
            ax = axes[row, col]
            p = preds[i]
            ax.imshow(val.samples[i].image)
            for oi, ob in enumerate(p.objects):
                c = colours[oi % 10]
                x, y, w, h = ob.box
                ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, ec=c, lw=0.8, ls="--"))
                for a, b in ob.edges:
                    ax.plot(ob.keypoints[[a, b], 0], ob.keypoints[[a, b], 1], "-", color=c, lw=1.4)
                ok = np.isfinite(ob.keypoints).all(1)
                ax.plot(ob.keypoints[ok, 0], ob.keypoints[ok, 1], "o", color=c, ms=3, mec="k", mew=0.4)
            out = p.roles == "outlier"
            if out.any():
                ax.plot(p.nodes[out, 0], p.nodes[out, 1], "x", color="red", ms=6, mew=1.5)
            ax.set_title(f"image {i}: {name}", fontsize=8)
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=[f"configs/keypoint/klpnet_s{s}.yaml" for s in (1, 2)]
                    + ["configs/keypoint/klpnet.yaml"])
    ap.add_argument("--out", default="runs/keypoint/klpnet_study")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes: checks the pipeline, numbers meaningless")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    val = None
    model = None
    for path in args.configs:
        cfg = load_klpnet_config(path)
        cfg = copy.deepcopy(cfg)
        cfg["out_dir"] = str(out / cfg["name"])
        cfg["train"]["num_threads"] = args.threads
        if args.quick:
            cfg["data"]["train_images"], cfg["data"]["val_images"] = 16, 8
            cfg["train"]["epochs"] = 1
            cfg["out_dir"] = str(out / f"quick_{cfg['name']}")
        t0 = time.time()
        summary = train_klpnet(cfg, resume=True, progress=True, evaluate_after=False)
        model, _ = load_klpnet_checkpoint(summary["checkpoint"])
        val = load_klpnet_split(cfg["data"], "val")
        alpha = float(cfg["eval"]["alpha"])
        entry = {"config": path, "stages": int(model.config["num_stages"]), "kernels": list(model.kernels),
                 "train_seconds": summary["train_seconds"], "epochs": summary["epochs_run"],
                 "parameters": int(sum(p.numel() for p in model.parameters()))}
        for lis in (False, True):
            entry[f"lis_{'on' if lis else 'off'}"] = evaluate_klpnet(
                model, val, alpha=alpha, lis=lis, use_gt_boxes=cfg["eval"]["boxes"] == "gt")
        entry["wall_seconds"] = round(time.time() - t0, 1)
        results[cfg["name"]] = entry
        print(f"{cfg['name']}: " + json.dumps(json_safe({k: entry[f'lis_{k}'] for k in ('off', 'on')})))
        (out / "results.json").write_text(json.dumps(json_safe(results), indent=2))
    alpha = float(load_klpnet_config(args.configs[0])["eval"]["alpha"])
    table = markdown_table(json_safe(results), alpha)
    md = ("## KLPNet study (synthetic overlap-heavy set, ground-truth boxes)\n\n" + table + "\n\n"
          + PAPER + "\n")
    (out / "results.md").write_text(md)
    plot_results(json_safe(results), out / "results.png")
    if model is not None and val is not None:
        plot_examples(model, val, out / "examples.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
