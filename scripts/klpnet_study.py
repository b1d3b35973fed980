"""KLPNet study: 1, 2, 3 CKLM stages × grouping (naive / LIS / LIS + feedback into CKLM), two PCK protocols.

Trains one model per (stage count, seed) with :func:`keypoint.klpnet_train.train_klpnet` on the one
loop — no wall-clock cap: every run completes its cosine schedule (the epochs run are recorded) —
and evaluates the same weights three ways (LIS and its feedback act at inference):

* ``naive`` — each object takes the top-K nodes in its box (no LIS);
* ``LIS`` — the Location Instability Strategy assigns debatable nodes (:mod:`keypoint.instability`);
* ``LIS + feedback`` — LIS, then the slots it left empty are re-localised from the CKLM heatmap around
  the fitted template (:func:`keypoint.instability.relocalise_missing`).

PCK@0.1 twice: "ours" over every labelled in-image keypoint of every object (occluded and truncated
objects included) and the paper's protocol (non-truncated, non-occluded objects only, Pascal3D+ §4.1);
each with keypoint identities from the model and with OracleId. A labelled keypoint that is not
correct is either *missing* (its slot stayed empty) or *wrong* (found too far away).

Writes under ``--out`` (default ``runs/keypoint/klpnet_study``): ``<config>/seed<k>/`` runs,
``results.json``, ``results.md`` (tables beside the paper's Tables 3–5) and ``examples.png``.

Usage::

    python scripts/klpnet_study.py --seeds 0 1          # ~1 h on a busy 2-core machine (one thread)
    python scripts/klpnet_study.py --quick              # smoke run (tiny sizes, numbers meaningless)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER = """\
Paper (other data, for the trend only). Table 4, CKLM on MS-COCO minival, AP: 1-stage 72.0, 2-stage 75.3,
3-stage 76.1. Table 5, ObjectNet3D+ mean PCK (second half of the categories): backbone only 71.9, + 3-stage
cross-stage aggregation 76.8, + LIS 80.3. Table 3, Pascal3D+ PCK@0.1 (non-truncated, non-occluded
objects): CKLM 86.6, OracleId 96.4. The paper reports no link AUC/AP (links are shown in Fig. 6 only)."""

MODES = [("lis_off", "naive"), ("lis_on", "LIS"), ("lis_feedback", "LIS + feedback")]
COLUMNS = [("pck", "PCK (ours)"), ("missing_rate", "missing"), ("wrong_rate", "wrong"),
           ("pck_paper", "PCK (paper protocol)"), ("pck_oracle_id", "OracleId (ours)"),
           ("pck_paper_oracle_id", "OracleId (paper)"), ("pck_inv", "PCK inv"), ("link_auc", "link AUC"),
           ("link_ap", "link AP"), ("edge_recall", "edge recall"), ("edge_precision", "edge prec."),
           ("debatable_correct", "debatable ok"), ("relocalised", "re-localised")]


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:d}" if isinstance(v, int) else f"{v:.3f}"


def markdown_table(results: dict) -> str:
    head = "| stages | seeds | epochs run | grouping | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (4 + len(COLUMNS))]
    for r in results.values():
        for key, label in MODES:
            vals = [s["val"][key] for s in r["seeds"].values() if key in s["val"]]
            if not vals:
                continue
            cells = []
            for c, _ in COLUMNS:
                xs = [v.get(c) for v in vals if v.get(c) is not None]
                xs = [x for x in xs if np.isfinite(x)]
                mean = (int(round(np.mean(xs))) if c == "relocalised" else float(np.mean(xs))) if xs else None
                cells.append(_fmt(mean))
            epochs = "/".join(f"{s['epochs_run']:g}" for s in r["seeds"].values())
            rows.append(f"| {r['stages']} | {len(vals)} | {epochs} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_examples(model, val, path: Path, n: int = 3) -> None:
    """Validation images with the most debatable nodes: naive / LIS / LIS + feedback."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keypoint.draw import save_figure
    from keypoint.instability import boxes_membership
    from keypoint.klpnet_eval import predict_dataset

    preds = {label: predict_dataset(model, val, lis=key != "lis_off", feedback=key == "lis_feedback")
             for key, label in MODES}
    score = []
    for s, p in zip(val.samples, preds["LIS"]):
        boxes = np.array([a.box for a in s.annotations]).reshape(-1, 4)
        score.append(int((boxes_membership(p.nodes, boxes).sum(1) > 1).sum()) if len(p.nodes) else 0)
    pick = np.argsort(score)[::-1][:n]
    fig, axes = plt.subplots(len(MODES), n, figsize=(3.2 * n, 3.2 * len(MODES)), squeeze=False)
    colours = plt.cm.tab10(np.arange(10))
    for col, i in enumerate(pick):
        for row, (_, label) in enumerate(MODES):
            ax, p = axes[row, col], preds[label][i]
            ax.imshow(val.samples[i].image)
            for oi, ob in enumerate(p.objects):
                c = colours[oi % 10]
                x, y, w, h = ob.box
                ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, ec=c, lw=0.8, ls="--"))
                for a, b in ob.edges:
                    ax.plot(ob.keypoints[[a, b], 0], ob.keypoints[[a, b], 1], "-", color=c, lw=1.4)
                ok = np.isfinite(ob.keypoints).all(1)
                moved = ok & (ob.relocalised if ob.relocalised is not None else False)
                kept = ok & ~moved
                ax.plot(ob.keypoints[kept, 0], ob.keypoints[kept, 1], "o", color=c, ms=3, mec="k", mew=0.4)
                ax.plot(ob.keypoints[moved, 0], ob.keypoints[moved, 1], "s", color=c, ms=4, mec="w", mew=0.8)
            out = p.roles == "outlier"
            if out.any():
                ax.plot(p.nodes[out, 0], p.nodes[out, 1], "x", color="red", ms=6, mew=1.5)
            ax.set_title(f"image {i}: {label}", fontsize=8)
            ax.set_axis_off()
    fig.suptitle("dots: grouped nodes; squares: re-localised by the feedback; red x: LIS outliers",
                 fontsize=8)
    save_figure(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=[f"configs/keypoint/klpnet_s{s}.yaml" for s in (1, 2)]
                    + ["configs/keypoint/klpnet.yaml"], help="KLPNet configs (default: 1, 2, 3 stages)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    ap.add_argument("--out", default="runs/keypoint/klpnet_study", help="study folder")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes: checks the pipeline, numbers meaningless")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    import torch

    from geo_rs.atomic import json_safe, write_json, write_text
    from keypoint.config import load_keypoint_config, validate_keypoint_config
    from keypoint.data.splits import load_split
    from keypoint.klpnet_train import load_klpnet_checkpoint, train_klpnet

    torch.set_num_threads(1)
    out = Path(args.out)
    results: dict = {}
    model = val = None
    for path in args.configs:
        base = load_keypoint_config(path).to_dict()
        entry = None
        for seed in args.seeds:
            cfg = dict(base, seed=seed)
            cfg["train"] = dict(base["train"], num_threads=1, max_minutes=None)
            if args.quick:
                cfg["data"] = dict(base["data"], train_images=16, val_images=8)
                cfg["train"]["epochs"] = 1
            cfg["out_dir"] = str(out / f"{'quick_' if args.quick else ''}{base['name']}" / f"seed{seed}")
            cfg = validate_keypoint_config(cfg)
            t0 = time.time()
            done = cfg.run_dir / "metrics.json"
            summary = json.loads(done.read_text()) if done.is_file() else None
            if not (summary and summary.get("complete") and summary.get("epochs") == cfg.train.epochs
                    and "lis_feedback" in summary.get("val", {})):
                summary = train_klpnet(cfg, quiet=args.quiet)
            model, _ = load_klpnet_checkpoint(cfg.run_dir / "last.pt")
            val = load_split(cfg.data, "val", quiet=True)
            entry = entry or {"config": path, "stages": cfg.model.num_stages,
                              "kernels": list(model.kernels), "seeds": {}}
            entry["seeds"][str(seed)] = {"epochs_run": summary["epochs_run"], "complete": summary["complete"],
                                         "train_seconds": summary["train_seconds"], "val": summary["val"]}
            print(f"{base['name']} seed {seed} ({time.time() - t0:.0f} s, {summary['epochs_run']} epochs): "
                  + json.dumps(json_safe({k: summary['val'][k]['pck'] for k, _ in MODES})), flush=True)
        results[base["name"]] = entry
        write_json(out / "results.json", results, indent=2)
    md = ("## KLPNet study (synthetic overlap-heavy set, ground-truth boxes, PCK@0.1)\n\n"
          + markdown_table(json_safe(results)) + "\n\n" + PAPER + "\n")
    write_text(out / "results.md", md)
    if model is not None and val is not None:
        plot_examples(model, val, out / "examples.png")
    print(md)
    return 0


if __name__ == "__main__":
    from geo_rs.interrupt import Interrupted, exit_code

    try:
        sys.exit(main())
    except Interrupted as exc:  # SIGINT/SIGTERM: the run saved its checkpoint; a re-run resumes
        print(f"{Path(__file__).name}: {exc}; re-run to resume", file=sys.stderr)
        sys.exit(exit_code(exc.signum))
