"""Turntables of a trained field: colour and depth frames orbiting the scene's up axis, as PNG + GIF + MP4.

The orbit circles the training frame's +z axis (a normalised capture has its cameras' up turned
into +z; the Blender scenes are z-up) around the box centre, at the training cameras' median
distance and elevation (recorded in the checkpoint) unless given. Depth frames share one colour
scale over the whole orbit, so the animation does not flicker.

MP4: through imageio when it has an FFmpeg plugin (``imageio-ffmpeg`` or PyAV), else through
OpenCV's ``VideoWriter`` (``mp4v``); when neither can write one, the MP4 is reported as not produced.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from geo_rs.atomic import write_bytes

from .cameras import look_at
from .evaluate import depth_to_rgb, save_png
from .render import render_image

__all__ = ["orbit_poses", "render_turntable", "write_video", "camera_summary"]


def camera_summary(c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int, bounds) -> dict:
    """Median distance and elevation (degrees) of cameras around the box centre, and the image size
    and focal length — what a turntable needs to look like the training views."""
    centre = 0.5 * (np.asarray(bounds[0]) + np.asarray(bounds[1]))
    rel = c2w[:, :3, 3].double().numpy() - centre
    dist = np.linalg.norm(rel, axis=1)
    elev = np.degrees(np.arcsin(np.clip(rel[:, 2] / np.maximum(dist, 1e-12), -1, 1)))
    return {"centre": centre.tolist(), "radius": float(np.median(dist)),
            "elevation_deg": float(np.median(elev)),
            "width": int(width), "height": int(height), "focal": float(intrinsics[:, :2].mean())}


def orbit_poses(n: int, centre, radius: float, elevation_deg: float) -> np.ndarray:
    """(n, 4, 4) camera-to-world poses evenly around the +z axis through ``centre``, looking at it."""
    centre = np.asarray(centre, dtype=np.float64)
    el = math.radians(elevation_deg)
    poses = []
    for k in range(n):
        az = 2 * math.pi * k / n
        d = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        poses.append(look_at(centre + radius * d, centre))
    return np.stack(poses)


@torch.no_grad()
def render_turntable(field, poses: np.ndarray, height: int, width: int, focal: float, bounds, step: float,
                     background: tuple = (1.0, 1.0, 1.0), progress=None) -> tuple[list, list]:
    """Colour frames (H, W, 3) and depth frames (colour-mapped, one scale for all) in [0, 1]."""
    colours, depths, opacities = [], [], []
    intr = torch.tensor([focal, focal, 0.5 * width, 0.5 * height])
    for i, pose in enumerate(poses):
        out = render_image(field, torch.tensor(pose, dtype=torch.float32), height, width, intr, bounds, step,
                           background=torch.tensor(background))
        colours.append(out["rgb"].clamp(0, 1).cpu().numpy())
        depths.append(out["depth"].cpu().numpy())
        opacities.append(out["opacity"].cpu().numpy())
        if progress is not None:
            progress(i + 1)
    hit = np.concatenate([d[o > 0.5] for d, o in zip(depths, opacities)])
    lo, hi = (float(hit.min()), float(hit.max())) if hit.size else (0.0, 1.0)
    return colours, [depth_to_rgb(d, o, lo, hi) for d, o in zip(depths, opacities)]


def _uint8(frames: list[np.ndarray], even: bool = False) -> list[np.ndarray]:
    out = [np.round(np.clip(f, 0, 1) * 255).astype(np.uint8) for f in frames]
    if even:  # most MP4 encoders need even sizes
        h, w = out[0].shape[:2]
        out = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in out]
    return out


def write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import imageio.v3 as iio

    data = iio.imwrite("<bytes>", _uint8(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    write_bytes(path, data)


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> str | None:
    """Write an MP4; returns the writer used, or None when no MP4 writer is available."""
    import importlib.util

    frames8 = _uint8(frames, even=True)
    for module, plugin in (("av", "pyav"), ("imageio_ffmpeg", "FFMPEG")):
        if importlib.util.find_spec(module) is not None:  # imageio's MP4 plugins
            import imageio.v3 as iio

            kwargs = {"codec": "libx264"} if plugin == "pyav" else {}
            write_bytes(path, iio.imwrite("<bytes>", frames8, extension=".mp4", plugin=plugin, fps=fps,
                                          **kwargs))
            return f"imageio ({plugin})"
    try:
        import cv2
    except ImportError:
        return None
    import tempfile

    h, w = frames8[0].shape[:2]
    fd, name = tempfile.mkstemp(suffix=".mp4", dir=path.parent)  # OpenCV writes to a file name only
    os.close(fd)
    tmp = Path(name)
    try:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not writer.isOpened():
            return None
        for f in frames8:
            writer.write(np.ascontiguousarray(f[..., ::-1]))  # OpenCV wants BGR
        writer.release()
        if tmp.stat().st_size == 0:
            return None
        write_bytes(path, tmp.read_bytes())  # atomically, like every other output
        return "opencv (mp4v)"
    finally:
        tmp.unlink(missing_ok=True)


def write_turntable(out: Path, colours: list, depths: list, fps: float) -> dict:
    """PNG frames, GIFs and MP4s under ``out``; returns ``outputs``, ``not_produced`` and the MP4 writer."""
    out.mkdir(parents=True, exist_ok=True)
    for i, (c, d) in enumerate(zip(colours, depths)):
        save_png(out / f"color_{i:03d}.png", c)
        save_png(out / f"depth_{i:03d}.png", d)
    report = {"outputs": ["color_*.png", "depth_*.png"], "not_produced": {}, "frames": len(colours)}
    for name, frames in (("color", colours), ("depth", depths)):
        write_gif(out / f"turntable_{name}.gif", frames, fps)
        report["outputs"].append(f"turntable_{name}.gif")
        writer = write_video(out / f"turntable_{name}.mp4", frames, fps)
        if writer is None:
            report["not_produced"][f"turntable_{name}.mp4"] = ("no MP4 writer: imageio has no FFmpeg plugin "
                                                                "(pip install imageio-ffmpeg) and OpenCV "
                                                                "could not open an mp4v writer")
        else:
            report["outputs"].append(f"turntable_{name}.mp4")
            report["mp4_writer"] = writer
    return report
