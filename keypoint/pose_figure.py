"""Per-image figure of ``geo-rs keypoint pose-bound``: the image, the certified keypoint sets, the pose.

One panel per ε: certified keypoint boxes (median smoothing) or candidate pixels (milp), the
ground-truth keypoints, the object projected with the solved pose, and the keypoints projected with
poses **on** the certified bounds (the ground-truth pose turned by ± the rotation bound about, and
shifted by ± the translation bound along, each camera axis) — how far the bounds let the object move
in the image. Titles give the verdict and the bounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["draw_pose_bounds"]


def _axis_rotation(axis: int, degrees: float) -> np.ndarray:
    import cv2

    v = np.zeros(3)
    v[axis] = np.radians(degrees)
    return cv2.Rodrigues(v)[0]


def bound_poses(
    R: np.ndarray, t: np.ndarray, rot_deg: float, trans: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Poses on the bounds: rotations ±rot_deg about each camera axis, shifts ±trans along each axis."""
    out = []
    for axis in range(3):
        for s in (-1.0, 1.0):
            out.append((_axis_rotation(axis, s * rot_deg) @ R, t))
            shift = np.zeros(3)
            shift[axis] = s * trans
            out.append((R, t + shift))
    return out


def _panel(ax, image, item, rec, skeleton) -> None:
    from matplotlib.patches import Rectangle

    from geo_rs import project_points

    ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
    h, w = image.shape[:2]
    truth = project_points(item.points_3d, (item.R, item.t), item.K)
    if "candidates" in rec:
        for c in rec["candidates"]:
            c = np.asarray(c)
            ax.plot(c[:, 0], c[:, 1], "s", ms=2, color="yellow", alpha=0.8)
    elif rec.get("lower") is not None:
        for lo, hi in zip(rec["lower"], rec["upper"], strict=True):
            if None in lo or None in hi:
                continue
            ax.add_patch(
                Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], fill=False, ec="yellow", lw=1)
            )
    if rec["verdict"] != "abstain" and np.isfinite(rec["rotation_deg"]) and np.isfinite(rec["translation"]):
        for R, t in bound_poses(item.R, item.t, rec["rotation_deg"], rec["translation"]):
            p = project_points(item.points_3d, (R, t), item.K)
            ax.plot(p[:, 0], p[:, 1], ".", ms=2, color="orange", alpha=0.6)
        pose = rec["pose"]
        p = project_points(item.points_3d, (np.asarray(pose["R"]), np.asarray(pose["t"])), item.K)
        for a, b in skeleton:
            ax.plot(p[[a, b], 0], p[[a, b], 1], "-", color="deepskyblue", lw=1)
    ax.plot(truth[:, 0], truth[:, 1], "x", ms=4, color="lime")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if rec["verdict"] == "abstain":
        text = "abstain (no keypoint set)" if "reason" in rec else "abstain (unbounded keypoint)"
    else:
        text = f"{rec['verdict']}: rot ≤ {rec['rotation_deg']:.2f}°, trans ≤ {rec['translation']:.2f}"
    eps = "file" if rec["eps"] is None else f"{rec['eps']:g}"
    ax.set_title(f"ε = {eps}: {text}", fontsize=7)


def draw_pose_bounds(
    image: np.ndarray, item, records: list[dict], skeleton, path: str | Path, title: str
) -> Path:
    """Write the figure (one panel per record) to ``path``."""
    from matplotlib.lines import Line2D

    from .draw import _plt, save_figure

    plt = _plt()
    wide = len(records) > 1
    fig, axes = plt.subplots(
        1, len(records), figsize=(3.4 * len(records) if wide else 4.2, 4.0), squeeze=False
    )
    for ax, rec in zip(axes[0], records, strict=True):
        _panel(ax, image, item, rec, skeleton)
    handles = [
        Line2D([], [], color="yellow", marker="s", ls="", label="certified keypoint set"),
        Line2D([], [], color="lime", marker="x", ls="", label="ground truth"),
        Line2D([], [], color="deepskyblue", label="solved pose"),
        Line2D([], [], color="orange", marker=".", ls="", label="poses on the bounds"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4 if wide else 2, fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.06 if wide else 0.1, 1, 1))
    return save_figure(fig, path, layout=False)
