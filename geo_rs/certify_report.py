"""Reports of dataset-scale randomized smoothing: Cohen et al.'s TSV files, certified-accuracy curves
and a summary table.

* ``certify.tsv`` / ``predict.tsv``: the reference code's columns (``idx label predict radius correct
  time`` / ``idx label predict correct time``; time as ``H:MM:SS.ffffff``), so its analysis scripts
  read them unchanged;
* the certified accuracy at radius r: the fraction of inputs whose certified prediction is correct
  with radius ≥ r (Cohen et al.'s "approximate certified test accuracy"; abstentions count as
  wrong), as a CSV on a radius grid and a plot with one curve per σ;
* a summary table: certified accuracy at r = 0, 0.25, 0.5, …, abstention rate, time per input.

Example:
    >>> rows = {0.25: [{"idx": 0, "label": 3, "predict": 3, "radius": 0.61, "correct": 1, "time": 1.2},
    ...                {"idx": 1, "label": 5, "predict": -1, "radius": 0.0, "correct": 0, "time": 1.1}]}
    >>> certified_accuracy(rows[0.25], [0.0, 0.5, 1.0]).tolist()
    [0.5, 0.5, 0.0]
"""
from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np

from .atomic import write_text

__all__ = ["certified_accuracy", "plot_certified_accuracy", "summary_radii", "summary_rows",
           "summary_table", "write_curve_csv", "write_tsv"]

ABSTAIN = -1


def _timedelta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=float(seconds)))


def write_tsv(path: str | Path, rows: list[dict], mode: str = "certify") -> Path:
    """Cohen et al.'s ``certify.py`` / ``predict.py`` output (radius with 6 significant digits)."""
    if mode == "certify":
        lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
        lines += [f"{r['idx']}\t{r['label']}\t{r['predict']}\t{r['radius']:.6g}\t{r['correct']}\t"
                  f"{_timedelta(r['time'])}" for r in rows]
    else:
        lines = ["idx\tlabel\tpredict\tcorrect\ttime"]
        lines += [f"{r['idx']}\t{r['label']}\t{r['predict']}\t{r['correct']}\t{_timedelta(r['time'])}"
                  for r in rows]
    return write_text(path, "\n".join(lines) + "\n")


def certified_accuracy(rows: list[dict], radii) -> np.ndarray:
    """Fraction of ``rows`` that are correct with certified radius ≥ r, for each r in ``radii``."""
    radius = np.array([r["radius"] for r in rows], dtype=np.float64)
    correct = np.array([bool(r["correct"]) for r in rows])
    radii = np.asarray(radii, dtype=np.float64)
    if not len(rows):
        return np.zeros(len(radii))
    return (correct[None, :] & (radius[None, :] >= radii[:, None])).mean(axis=1)


def summary_radii(runs: dict[float, list[dict]], step: float = 0.25) -> list[float]:
    """0, 0.25, …, up to max(1.0, the largest certified radius) rounded up to a step."""
    largest = max((r["radius"] for rows in runs.values() for r in rows), default=0.0)
    top = max(1.0, math.ceil(largest / step) * step)
    return [round(k * step, 10) for k in range(int(round(top / step)) + 1)]


def summary_rows(runs: dict[float, list[dict]], mode: str = "certify") -> list[dict]:
    """One dict per σ: n, accuracy, abstention rate, mean time per input, certified accuracy at the
    :func:`summary_radii` (certify only; key ``"r=0.25"`` etc.)."""
    radii = summary_radii(runs) if mode == "certify" else []
    out = []
    for sigma, rows in sorted(runs.items()):
        n = len(rows)
        row = {"sigma": sigma, "n": n,
               "accuracy": sum(r["correct"] for r in rows) / n if n else 0.0,
               "abstain": sum(r["predict"] == ABSTAIN for r in rows) / n if n else 0.0,
               "time_per_input_s": sum(r["time"] for r in rows) / n if n else 0.0}
        if mode == "certify":
            row.update({f"r={r:g}": float(a) for r, a in zip(radii, certified_accuracy(rows, radii))})
        out.append(row)
    return out


def summary_table(runs: dict[float, list[dict]], mode: str = "certify") -> str:
    """Markdown table of :func:`summary_rows` (percentages)."""
    rows = summary_rows(runs, mode)
    radii = [k for k in rows[0] if k.startswith("r=")] if rows else []
    head = ["σ", "inputs"] + ([f"cert. acc. {k}" for k in radii] if mode == "certify" else ["accuracy"])
    head += ["abstain", "s / input"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in rows:
        cells = [f"{row['sigma']:g}", str(row["n"])]
        cells += [f"{100 * row[k]:.1f}%" for k in radii] if mode == "certify" else \
            [f"{100 * row['accuracy']:.1f}%"]
        cells += [f"{100 * row['abstain']:.1f}%", f"{row['time_per_input_s']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _grid(runs: dict[float, list[dict]], step: float) -> np.ndarray:
    largest = max((r["radius"] for rows in runs.values() for r in rows), default=0.0)
    return np.round(np.arange(0.0, largest + 2 * step, step), 10)


def write_curve_csv(path: str | Path, runs: dict[float, list[dict]], step: float = 0.01) -> Path:
    """``radius,sigma=0.25,sigma=0.5,...``: certified accuracy on a grid of ``step`` up to past the
    largest radius."""
    grid = _grid(runs, step)
    sigmas = sorted(runs)
    curves = [certified_accuracy(runs[s], grid) for s in sigmas]
    lines = ["radius," + ",".join(f"sigma={s:g}" for s in sigmas)]
    lines += [f"{r:g}," + ",".join(f"{c[k]:.6g}" for c in curves) for k, r in enumerate(grid)]
    return write_text(path, "\n".join(lines) + "\n")


def plot_certified_accuracy(path: str | Path, runs: dict[float, list[dict]], title: str = "") -> Path:
    """Certified accuracy vs L2 radius, one step curve per σ (the standard plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_write

    largest = max((r["radius"] for rows in runs.values() for r in rows), default=0.0)
    grid = np.linspace(0.0, 1.08 * largest + 0.05, 2000)  # past the largest radius: the last drop shows
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for sigma in sorted(runs):
        ax.plot(grid, certified_accuracy(runs[sigma], grid), drawstyle="steps-post", lw=1.8,
                label=f"σ = {sigma:g} ({len(runs[sigma])} inputs)")
    ax.set_xlabel("L2 radius (input units)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, grid[-1])
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "Certified accuracy of the smoothed classifier", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return Path(path)
