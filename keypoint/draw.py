"""Drawing keypoints and their links (skeleton) on images, saved as PNG with matplotlib (Agg).

* :func:`draw_instances(image, instances, path)` — ``image (H, W, 3)`` in [0, 1]; each instance a
  dict with ``keypoints (K, 2)``, ``skeleton`` (0-based pairs), optional ``scores (K,)`` (marker
  colour: green ≥ ``score_threshold``, red below) or ``visibility (K,)`` (green = 2, red = 1,
  nothing = 0), optional ``label`` and ``box`` (xywh).
* :func:`draw_samples(data, path, n)` — a preview grid of synthetic / COCO samples with GT and a
  legend (visible / hidden keypoints, links, boxes).
* :func:`plot_history(history, path)` — the training loss (and its parts) against steps.
* :func:`save_figure(fig, path)` — the one figure saver (layout, folder, close).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_on(ax, image: np.ndarray, instances: list[dict], score_threshold: float = 0.3) -> None:
    ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
    h, w = image.shape[:2]
    palette = ["#ffd400", "#00e5ff", "#ff6ec7", "#a0ff6e", "#ff9f40", "#b388ff"]
    for n, inst in enumerate(instances):
        kp = np.asarray(inst["keypoints"], np.float64)
        colour = palette[n % len(palette)]
        if "visibility" in inst:
            ok = np.asarray(inst["visibility"]) == 2
            shown = np.asarray(inst["visibility"]) > 0
        else:
            s = np.asarray(inst.get("scores", np.ones(len(kp))))
            ok, shown = s >= score_threshold, np.ones(len(kp), bool)
        for a, b in inst.get("skeleton", []):
            if shown[a] and shown[b]:
                ax.plot(kp[[a, b], 0], kp[[a, b], 1], "-", color=colour, lw=1.2, alpha=0.9)
        ax.scatter(kp[shown & ok, 0], kp[shown & ok, 1], s=14, c="lime", edgecolors="k", linewidths=0.4,
                   zorder=3)
        ax.scatter(kp[shown & ~ok, 0], kp[shown & ~ok, 1], s=14, c="red", edgecolors="k", linewidths=0.4,
                   zorder=3)
        if "box" in inst:
            x, y, bw, bh = inst["box"]
            ax.add_patch(_plt().Rectangle((x, y), bw, bh, fill=False, ec=colour, lw=0.6, ls="--"))
        if inst.get("label"):
            ax.text(kp[:, 0].min(), kp[:, 1].min() - 2, inst["label"], color=colour, fontsize=7)
    pad = 0.1 * max(h, w)
    ax.set_xlim(-pad, w - 1 + pad)
    ax.set_ylim(h - 1 + pad, -pad)
    ax.set_xticks([])
    ax.set_yticks([])


def legend_handles(kind: str, score_threshold: float = 0.3) -> list:
    """Legend entries for :func:`_draw_on`'s markers: ``kind`` = ``visibility`` (ground truth) or
    ``scores`` (predictions)."""
    from matplotlib.lines import Line2D

    dot = {"marker": "o", "linestyle": "", "markeredgecolor": "k", "markeredgewidth": 0.4, "markersize": 5}
    if kind == "visibility":
        marks = [Line2D([], [], color="lime", label="visible keypoint (v = 2)", **dot),
                 Line2D([], [], color="red", label="hidden keypoint (v = 1: occluded or outside)", **dot)]
    else:
        marks = [Line2D([], [], color="lime", label=f"score >= {score_threshold:g}", **dot),
                 Line2D([], [], color="red", label=f"score < {score_threshold:g}", **dot)]
    return marks + [Line2D([], [], color="#ffd400", lw=1.2, label="link (skeleton), one colour per object"),
                    Line2D([], [], color="#ffd400", lw=0.8, ls="--", label="object box")]


def draw_instances(image: np.ndarray, instances: list[dict], path: str | Path, title: str = "",
                   score_threshold: float = 0.3, size_inches: float = 5.0, note: str | None = None) -> Path:
    """Draw keypoints + links of every instance on ``image`` and save a PNG; returns the path.

    ``note`` is written across the image (e.g. "no objects").
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(size_inches, size_inches + 0.8))
    _draw_on(ax, image, instances, score_threshold)
    if title:
        ax.set_title(title, fontsize=9)
    if note:
        draw_note(ax, note)
    kind = "visibility" if instances and "visibility" in instances[0] else "scores"
    fig.legend(handles=legend_handles(kind, score_threshold), loc="lower center", ncol=2, fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path, layout=False)


def draw_note(ax, text: str) -> None:
    """A large boxed message in the middle of an axes (e.g. "no objects")."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=16, color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "boxstyle": "round"})


def draw_samples(data, path: str | Path, n: int = 12, cols: int = 4) -> Path:
    """Preview grid of the first ``n`` samples with ground truth (green visible, red hidden)."""
    plt = _plt()
    by_id = {c.id: c for c in data.categories}
    n = min(n, len(data.samples))
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, data.samples[:n]):
        inst = [{"keypoints": np.nan_to_num(a.keypoints), "visibility": a.visibility,
                 "skeleton": by_id[a.category_id].skeleton, "box": a.box, "label": by_id[a.category_id].name}
                for a in s.annotations]
        _draw_on(ax, s.image, inst)
        ax.set_title(f"image {s.image_id}", fontsize=8)
        ax.axis("on")
    fig.legend(handles=legend_handles("visibility"), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.5 / (3 * rows), 1, 1))
    return save_figure(fig, path, dpi=80, layout=False)


def plot_history(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss and its parts (log scale) against steps from a :func:`keypoint.fit.fit` history."""
    plt = _plt()
    rows = [h for h in history if h.get("kind") != "epoch" and "loss" in h]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = [h["step"] for h in rows]
    keys = ["loss"] + sorted({k for h in rows for k in h} - {"loss", "step", "epoch", "lr", "kind", "total"})
    for key in keys:
        vals = [h.get(key, np.nan) for h in rows]
        if np.nanmax(np.abs(vals) if vals else [0]) > 0:
            ax.plot(steps, vals, label=key, lw=1.6 if key == "loss" else 0.9)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 110, layout: bool = True) -> Path:
    """Lay out (unless ``layout`` is False: the caller did), write (creating the folder) and close a
    matplotlib figure; returns the path."""
    if layout:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    return path
