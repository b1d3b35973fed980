"""Tables and plots of a box-verification run (``results.json`` of :func:`run_verification`).

* ``cba.md``: Certified Box Accuracy in the paper's layout (rows: extension x method; columns: ε per
  perturbation), the optimal - vanilla gap, and the paper's MNIST numbers (Fig. 8) for reference;
* ``cba.csv`` (same wide layout) and ``cba_long.csv`` (one row per extension/method/perturbation/ε with
  mean IoU bounds and timings);
* ``fig_iou_envelope.png``: mean IoU lower/upper envelope vs ε per extension (paper Fig. 9);
* ``fig_time.png``: time per step vs ε (paper Fig. 10): step 1 (box bounds) per method, step 2 (IoU
  extension) per extension.

Example::

    >>> from keypoint.box.report import write_report
    >>> paths = write_report("runs/box/study")  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from geo_rs import UserError
from geo_rs.atomic import atomic_write, write_json, write_text

from .rs import L2, RS_METHOD

# The paper's Fig. 8, MNIST part (percent). The three ε columns of each perturbation are not legible in
# our text copy of the paper (its grids: noise/brightness ε ∈ [0, 0.002], contrast ε ∈ [0, 0.2], 11 steps),
# so they are shown as columns 1-3 in increasing ε. IBP rows are absent: "Using IBP in Step 1 always fails
# to find any stable box".
PAPER_CBA_MNIST = {
    ("vanilla", "CROWN-IBP"): {"noise": [76.9, 0.0, 0.0], "brightness": [87.2, 0.0, 0.0],
                               "contrast": [31.4, 0.0, 0.0]},
    ("vanilla", "CROWN"): {"noise": [97.4, 0.0, 0.0], "brightness": [100.0, 100.0, 17.9],
                           "contrast": [100.0, 8.6, 0.0]},
    ("optimal", "CROWN-IBP"): {"noise": [100.0, 35.9, 2.6], "brightness": [100.0, 35.0, 0.0],
                               "contrast": [82.9, 0.0, 0.0]},
    ("optimal", "CROWN"): {"noise": [100.0, 66.6, 7.7], "brightness": [100.0, 100.0, 92.3],
                           "contrast": [100.0, 88.6, 8.6]},
}
_COLORS = {"vanilla": "tab:blue", "optimal": "tab:red"}


def load_results(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "results.json"
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: expected a run folder of `geo-rs box verify`, got a file")
    if not path.is_file():
        raise UserError(f"{path}: not found (run `geo-rs box verify --out {run_dir}` first)")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable results file ({exc})") from None
    missing = [k for k in ("config", "cba", "records", "n_images") if k not in results] \
        if isinstance(results, dict) else ["everything"]
    if missing:
        raise UserError(f"{path}: not a box-verification results file (missing {', '.join(missing)})")
    return results


def _layout(results: dict) -> dict:
    """The run's config with the report's rows and columns (``table``: methods incl. median smoothing,
    perturbations incl. ``l2``); runs written before median smoothing have no ``table``."""
    return {**results["config"], **results.get("table", {})}


def _cba_lookup(results: dict) -> dict:
    return {(r["extension"], r["method"], r["perturbation"], r["eps"]): r for r in results["cba"]}


def _fmt_eps(e: float) -> str:
    return f"{e:g}"


def _fmt_cell(c: dict | None) -> str:
    """CBA of one table cell; images the bound engine could not handle count as not certified (†)."""
    if not c:
        return "–"
    unsupported = c.get("n_unsupported", 0)
    if unsupported and unsupported == c["n"]:
        return "unsupported"
    return f"{c['cba']:.1f}" + ("†" if unsupported else "")


def cba_markdown(results: dict) -> str:
    """The CBA tables (one per perturbation, paper layout), the optimal-vanilla gap and the paper's rows."""
    cfg = _layout(results)
    look = _cba_lookup(results)
    t = cfg["threshold"]
    lines = [
        f"# Certified Box Accuracy (%), t = {t}, N = {results['n_images']} images",
        "",
        f"Detector mean IoU on these images (no perturbation): {results['mean_clean_iou']:.4f}.",
        "",
    ]
    for pert in cfg["perturbations"]:
        eps = [float(e) for e in cfg["eps"][pert]]
        head = "| extension | method | " + " | ".join(f"ε={_fmt_eps(e)}" for e in eps) + " |"
        sep = "|---|---|" + "---:|" * len(eps)
        lines += [f"## {pert}", "", head, sep]
        methods = [RS_METHOD] if pert == L2 else cfg["methods"]  # the bound methods have no L2 column
        for ext in cfg["extensions"]:
            for m in methods:
                cells = [look.get((ext, m, pert, e)) for e in eps]
                vals = " | ".join(_fmt_cell(c) for c in cells)
                lines.append(f"| {ext} | {m} | {vals} |")
        if {"vanilla", "optimal"} <= set(cfg["extensions"]):
            for m in methods:
                gaps = []
                for e in eps:
                    o, v = look.get(("optimal", m, pert, e)), look.get(("vanilla", m, pert, e))
                    gaps.append(f"{o['cba'] - v['cba']:+.1f}" if o and v else "–")
                lines.append(f"| gap optimal − vanilla | {m} | " + " | ".join(gaps) + " |")
        if any((look.get((ext, m, pert, e)) or {}).get("n_unsupported") for ext in cfg["extensions"]
               for m in methods for e in eps):
            lines += ["", "† some images could not be bounded with this method "
                      "(geo_rs.UnsupportedModelError); they count as not certified. "
                      "`unsupported`: none could."]
        if RS_METHOD in cfg["methods"]:
            notes = _rs_notes(results, pert, eps)
            lines += notes[:1] if pert == L2 else []  # a table row: no blank line before it
            lines += ["", *(notes[1:] if pert == L2 else notes)]
        if pert == L2:
            lines.append("")
            continue
        lines += ["", "Paper (Fig. 8, MNIST, ~39 images; ε columns not legible in our copy, increasing):", ""]
        lines += ["| extension | method | col 1 | col 2 | col 3 |", "|---|---|---:|---:|---:|"]
        for (ext, m), row in PAPER_CBA_MNIST.items():
            lines.append(f"| {ext} | {m} | " + " | ".join(f"{v:.1f}" for v in row[pert]) + " |")
        lines.append("")
    return "\n".join(lines)


def _rs_notes(results: dict, pert: str, eps: list[float]) -> list[str]:
    """What the median-smoothing row certifies, and the L2 / L∞ balls that contain each other."""
    cfg = results["config"]
    d = int(results.get("input_dim") or 0)
    root = math.sqrt(d) if d else float("nan")
    common = (f"{RS_METHOD}: the *smoothed* detector (median box under N(0, σ²I), σ = {cfg['sigma']:g}, "
              f"n = {cfg['n']}), certified with probability ≥ 1 − α = {1 - cfg['alpha']:g} jointly over "
              f"the 4 corners; the bound methods certify the detector itself, deterministically.")
    if pert == L2:
        inside = " | ".join(f"{e / root:.3g}" for e in eps)
        return [f"| L∞ ball inside (ε/√d) | | {inside} |",
                f"Here ε is an **L2** radius (pixel intensity, d = {d} = C·H·W). The largest L∞ ball inside "
                f"it has radius ε/√d (row above); the L∞ ball of radius ε needs the L2 ball ε·√d = "
                f"{root:.4g}·ε. {common}"]
    if pert == "contrast":
        how = "r = ε·‖x‖₂ per image (c·x with |c − 1| ≤ ε moves x by at most ε‖x‖₂)"
    else:
        what = "‖δ‖∞ ≤ ε" if pert == "noise" else "one offset |b| ≤ ε on every pixel"
        radii = " | ".join(f"{e * root:.3g}" for e in eps)
        how = f"r = ε·√d = {root:.4g}·ε ({what}, d = {d}); r per column: {radii}"
    return [f"L2 vs L∞: {RS_METHOD} certifies the L2 ball that contains this set, {how}; clamping "
            f"keeps the clamped set inside it. So it is sound here but loose (the L2 ball is much larger). "
            f"{common}"]


def write_csv(results: dict, out: Path) -> tuple[Path, Path]:
    cfg = _layout(results)
    look = _cba_lookup(results)
    cols = [(p, float(e)) for p in cfg["perturbations"] for e in cfg["eps"][p]]
    f = io.StringIO()
    w = csv.writer(f)
    w.writerow(["extension", "method"] + [f"{p}@{_fmt_eps(e)}" for p, e in cols])
    for ext in cfg["extensions"]:
        for m in cfg["methods"]:
            w.writerow([ext, m] + [f"{look[(ext, m, p, e)]['cba']:.2f}" if (ext, m, p, e) in look else ""
                                   for p, e in cols])
    wide = write_text(out / "cba.csv", f.getvalue())
    keys = ["extension", "method", "perturbation", "eps", "cba", "n", "n_unsupported", "mean_lower",
            "mean_upper", "mean_time_box", "mean_time_iou", "n_abstain"]
    f = io.StringIO()
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    for r in results["cba"]:
        w.writerow({k: r.get(k, 0 if k == "n_unsupported" else None) for k in keys})
    return wide, write_text(out / "cba_long.csv", f.getvalue())


def plot_envelopes(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = _layout(results)
    look = _cba_lookup(results)
    perts, methods = cfg["perturbations"], cfg["methods"]
    fig, axes = plt.subplots(len(methods), len(perts), figsize=(4.2 * len(perts), 3.2 * len(methods)),
                             squeeze=False, sharey=True)
    for r, m in enumerate(methods):
        for c, p in enumerate(perts):
            ax = axes[r][c]
            eps = [float(e) for e in cfg["eps"][p]]
            if not any(look.get((ext, m, p, e)) for ext in cfg["extensions"] for e in eps):
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="gray")
            for ext in cfg["extensions"]:
                rows = [look.get((ext, m, p, e)) for e in eps]
                if not all(row and row["mean_lower"] is not None for row in rows):
                    continue
                lo = [row["mean_lower"] for row in rows]
                hi = [row["mean_upper"] for row in rows]
                ax.fill_between(eps, lo, hi, color=_COLORS.get(ext, "gray"), alpha=0.25,
                                label=f"{ext} envelope")
                ax.plot(eps, lo, color=_COLORS.get(ext, "gray"), lw=1.5)
                ax.plot(eps, hi, color=_COLORS.get(ext, "gray"), lw=1.5, ls="--")
            ax.axhline(cfg["threshold"], color="k", lw=0.8, ls=":", label=f"t = {cfg['threshold']}")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{p} — {m}", fontsize=10)
            if r == len(methods) - 1:
                ax.set_xlabel("ε")
            if c == 0:
                ax.set_ylabel("mean IoU bounds")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Mean IoU lower (solid) / upper (dashed) bounds, N = {results['n_images']}", fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_times(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = _layout(results)
    look = _cba_lookup(results)
    perts = cfg["perturbations"]
    fig, axes = plt.subplots(1, len(perts), figsize=(4.4 * len(perts), 3.4), squeeze=False)
    styles = ["-o", "-s", "-^", "-d"]
    for c, p in enumerate(perts):
        ax = axes[0][c]
        eps = [float(e) for e in cfg["eps"][p]]
        ext0 = cfg["extensions"][0]
        for k, m in enumerate(cfg["methods"]):
            pts = [(e, look[(ext0, m, p, e)]["mean_time_box"]) for e in eps
                   if look.get((ext0, m, p, e), {}).get("mean_time_box") is not None]
            if pts:
                ax.plot(*zip(*pts), styles[k % 4], ms=3, label=f"step 1: {m}")
        for ext in cfg["extensions"]:
            # step-2 time over all methods' boxes at each ε
            pts = []
            for e in eps:
                times = [look[(ext, m, p, e)]["mean_time_iou"] for m in cfg["methods"]
                         if look.get((ext, m, p, e), {}).get("mean_time_iou") is not None]
                if times:
                    pts.append((e, sum(times) / len(times)))
            if pts:
                ax.plot(*zip(*pts), "--", color=_COLORS.get(ext, "gray"), label=f"step 2: {ext} IoU")
        ax.set_yscale("log")
        ax.set_xlabel("ε")
        ax.set_title(p, fontsize=10)
        if c == 0:
            ax.set_ylabel("seconds per image (mean)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Time per step (step 1: box bounds; step 2: IoU interval extension)", fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def merge_results(runs: list[dict]) -> dict:
    """Combine runs on the same images (e.g. a cheap-methods run and a CROWN run) into one results dict.

    Methods, perturbations and ε values are united; a record present in several runs is taken from the
    first. Raises :class:`UserError` if the runs differ in images, detector or threshold.
    """
    from .verify import METHODS, VerifyConfig, certified_box_accuracy, unsupported_pairs

    base = runs[0]
    for r in runs[1:]:
        if r["gt_boxes"] != base["gt_boxes"] or r["fingerprints"]["model"] != base["fingerprints"]["model"]:
            raise UserError("cannot merge runs on different images or detectors")
        if r["config"]["threshold"] != base["config"]["threshold"]:
            raise UserError("cannot merge runs with different thresholds")
    cfgs = [r["config"] for r in runs]
    bound_cfgs = [c for c in cfgs if "bounds" in c.get("certifiers", ["bounds"])]
    rs_cfgs = [c for c in cfgs if RS_METHOD in c.get("certifiers", [])]
    if len({(c["sigma"], c["n"], c["alpha"]) for c in rs_cfgs}) > 1:
        raise UserError(f"cannot merge {RS_METHOD} runs with different sigma, n or alpha")
    methods = [m for m in METHODS if any(m in c["methods"] for c in bound_cfgs)]
    perts = [p for p in ("noise", "brightness", "contrast") if any(p in c["perturbations"] for c in cfgs)]
    eps = {p: sorted({float(e) for c in cfgs if p in c["perturbations"] for e in c["eps"][p]}) for p in perts}
    exts = [e for e in ("vanilla", "optimal") if all(e in c["extensions"] for c in cfgs)]
    rs = {k: rs_cfgs[0][k] for k in ("sigma", "n", "alpha", "rs_batch_size")} if rs_cfgs else {}
    l2_eps = sorted({float(e) for c in rs_cfgs for e in c.get("l2_eps", [])})
    certifiers = (["bounds"] if bound_cfgs else []) + ([RS_METHOD] if rs_cfgs else [])
    config = VerifyConfig(perturbations=perts, eps=eps, methods=methods or ["IBP"], extensions=exts,
                          threshold=base["config"]["threshold"], workers=1, certifiers=certifiers,
                          l2_eps=l2_eps, **rs)
    seen, records = set(), []
    for r in runs:
        for rec in r["records"]:
            key = (rec["image"], rec["perturbation"], rec["eps"], rec["method"])
            if key not in seen:
                seen.add(key)
                records.append(rec)
    merged = {**base, "config": {**config.__dict__}, "records": records,
              "table": {"methods": config.table_methods(), "perturbations": list(config.table_eps()),
                        "eps": config.table_eps()},
              "cba": certified_box_accuracy(records, config), "unsupported": unsupported_pairs(records),
              "merged_from": len(runs)}
    return merged


def write_report(run_dir: str | Path, merge_with: list[str | Path] | None = None,
                 out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``cba.md``, ``cba.csv``, ``cba_long.csv`` and the two figures into ``out_dir`` (default
    ``run_dir``); with ``merge_with``, the runs are merged first (:func:`merge_results`) and the merged
    ``results.json`` is written too."""
    results = load_results(run_dir)
    out = Path(out_dir or run_dir)
    if merge_with:
        results = merge_results([results] + [load_results(d) for d in merge_with])
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", results)
    md = out / "cba.md"
    write_text(md, cba_markdown(results))
    wide, long = write_csv(results, out)
    return {
        "markdown": md, "csv": wide, "csv_long": long,
        "envelope": plot_envelopes(results, out / "fig_iou_envelope.png"),
        "time": plot_times(results, out / "fig_time.png"),
    }
