"""Tables and the plot of ``geo-rs keypoint certify-rs``: fraction of keypoints certified within r px vs ε.

A labelled keypoint (visibility > 0) is *certified within r pixels* at ε when every point of its
certified box lies within r pixels (Euclidean) of the ground truth; unbounded boxes never are.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from geo_rs.atomic import write_text

__all__ = ["certified_fractions", "fractions_markdown", "plot_fractions", "write_tables"]


def certified_fractions(
    results: list[dict], visibility: list[np.ndarray], eps: list[float], radii: list[float]
) -> list[dict]:
    """Rows ``{eps, keypoints, bounded, within: {r: fraction}}`` over all labelled keypoints."""
    rows = []
    for e in eps:
        dists = []
        for res, vis in zip(results, visibility, strict=True):
            d = np.array([np.inf if v is None else v for v in res["eps"][repr(float(e))]["distance"]], float)
            dists.append(d[np.asarray(vis) > 0])
        d = np.concatenate(dists) if dists else np.zeros(0)
        total = max(len(d), 1)
        rows.append(
            {
                "eps": float(e),
                "keypoints": int(len(d)),
                "bounded": float(np.isfinite(d).sum() / total),
                "within": {repr(float(r)): float((d <= r).sum() / total) for r in radii},
                "median_distance": float(np.median(d)) if len(d) else None,
            }
        )
    return rows


def fractions_markdown(rows: list[dict], radii: list[float], head: str) -> str:
    cols = " | ".join(f"≤ {r:g} px" for r in radii)
    lines = [
        head,
        "",
        f"| ε (L2) | keypoints | bounded | {cols} | median farthest (px) |",
        "|---:|---:|---:|" + "---:|" * len(radii) + "---:|",
    ]
    for r in rows:
        within = " | ".join(f"{100 * r['within'][repr(float(x))]:.1f} %" for x in radii)
        med = (
            "inf"
            if r["median_distance"] is None or not np.isfinite(r["median_distance"])
            else f"{r['median_distance']:.2f}"
        )
        lines.append(f"| {r['eps']:g} | {r['keypoints']} | {100 * r['bounded']:.1f} % | {within} | {med} |")
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict], radii: list[float], out: Path, head: str) -> tuple[Path, Path]:
    md = write_text(out / "table.md", fractions_markdown(rows, radii, head))
    f = io.StringIO()
    w = csv.writer(f)
    w.writerow(["eps", "keypoints", "bounded"] + [f"within_{r:g}px" for r in radii] + ["median_distance"])
    for r in rows:
        w.writerow(
            [r["eps"], r["keypoints"], f"{r['bounded']:.4f}"]
            + [f"{r['within'][repr(float(x))]:.4f}" for x in radii]
            + [r["median_distance"]]
        )
    return md, write_text(out / "table.csv", f.getvalue())


def plot_fractions(rows: list[dict], radii: list[float], path: Path, title: str) -> Path:
    from .draw import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    eps = [r["eps"] for r in rows]
    for x in radii:
        ax.plot(eps, [100 * r["within"][repr(float(x))] for r in rows], "-o", ms=3, label=f"within {x:g} px")
    ax.plot(eps, [100 * r["bounded"] for r in rows], "k:", lw=1, label="bounded (finite box)")
    ax.set_xlabel("ε (L2, pixel intensity)")
    ax.set_ylabel("certified keypoints (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
