"""Box-stability verification (IBP-IoU paper, Fig. 2): input perturbation -> box bounds -> IoU bounds.

For every image, perturbation (white noise, brightness, contrast), ε of its grid and bound method
(IBP, CROWN-IBP, CROWN, alpha-CROWN; step 1, :func:`geo_rs.output_bounds`), the box bounds are pushed
through the IoU with each extension (vanilla, optimal; step 2, :func:`geo_rs.iou_bounds`). The box
is *stable* (certified) iff the IoU lower bound is >= the threshold t (0.5 by default, paper Property 1).

Runs are split into work units (one image x one perturbation), computed by a pool of worker processes
and stored one JSON file per unit under ``OUT/parts/``, so an interrupted run resumes without
recomputing finished units. A unit is reused only if it was computed with the same configuration,
model weights and image (fingerprints are stored in it).

Any ``nn.Module`` mapping a ``(1, C, H, W)`` image in [0, 1] to one box ``(1, 4)`` (x1, y1, x2, y2)
works, provided the bound engine supports its layers.

Example::

    >>> from keypoint.box.verify import VerifyConfig, run_verification
    >>> cfg = VerifyConfig(perturbations=["brightness"], eps={"brightness": [0.0, 0.001]},
    ...                    methods=["IBP"], workers=1)
    >>> results = run_verification(model, images, boxes, cfg, "runs/box/demo")  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from geo_rs import UserError, box_iou, iou_bounds

PERTURBATIONS = ("noise", "brightness", "contrast")
METHODS = ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN")
EXTENSIONS = ("vanilla", "optimal")
# The paper's MNIST grids (Fig. 7): 11 values from 0.
PAPER_EPS = {
    "noise": [round(float(v), 10) for v in np.linspace(0.0, 0.002, 11)],
    "brightness": [round(float(v), 10) for v in np.linspace(0.0, 0.002, 11)],
    "contrast": [round(float(v), 10) for v in np.linspace(0.0, 0.2, 11)],
}


def make_perturbation(name: str, eps: float):
    """The geo_rs perturbation set called ``name`` (noise | brightness | contrast) of radius ``eps``."""
    import geo_rs

    classes = {"noise": "WhiteNoise", "brightness": "Brightness", "contrast": "Contrast"}
    if name not in classes:
        raise UserError(f"unknown perturbation {name!r}; choose one of {', '.join(PERTURBATIONS)}")
    if not (float(eps) >= 0):
        raise UserError(f"perturbation {name}: eps must be >= 0, got {eps}")
    return getattr(geo_rs, classes[name])(float(eps))


@dataclass
class VerifyConfig:
    """What to verify. ``eps`` maps each perturbation to its ε grid (default: the paper's)."""

    perturbations: list[str] = field(default_factory=lambda: list(PERTURBATIONS))
    eps: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in PAPER_EPS.items()})
    methods: list[str] = field(default_factory=lambda: ["IBP", "CROWN-IBP", "CROWN"])
    extensions: list[str] = field(default_factory=lambda: list(EXTENSIONS))
    threshold: float = 0.5
    workers: int = 2

    def validate(self) -> None:
        for p in self.perturbations:
            if p not in PERTURBATIONS:
                raise UserError(f"unknown perturbation {p!r}; choose from {', '.join(PERTURBATIONS)}")
            grid = self.eps.get(p)
            if not grid:
                raise UserError(f"no eps values given for perturbation {p!r}")
            bad = [e for e in grid if not (float(e) >= 0 and np.isfinite(float(e)))]
            if bad:
                raise UserError(f"eps must be finite and >= 0; got {bad[0]} for {p}")
        for m in self.methods:
            if m not in METHODS:
                raise UserError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
        for e in self.extensions:
            if e not in EXTENSIONS:
                raise UserError(f"unknown extension {e!r}; choose from {', '.join(EXTENSIONS)}")
        if not self.perturbations or not self.methods or not self.extensions:
            raise UserError("need at least one perturbation, method and extension")
        if not 0 <= self.threshold <= 1:
            raise UserError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.workers < 1:
            raise UserError(f"workers must be >= 1, got {self.workers}")

    def fingerprint(self) -> str:
        """Hash of everything that changes a unit's result (not ``workers``)."""
        d = asdict(self)
        d.pop("workers")
        d["eps"] = {p: [float(e) for e in d["eps"][p]] for p in self.perturbations}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- checks
def check_detector(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on one image ``(C, H, W)``; returns the box ``(4,)`` or raises a clear UserError."""
    if not isinstance(model, nn.Module):
        raise UserError(f"the detector must be a torch.nn.Module, got {type(model).__name__}")
    device = _device_of(model)
    with torch.no_grad():
        try:
            out = model(image[None].to(device))
        except Exception as exc:  # a shape mismatch inside a user's model: report it in one line
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"the detector failed on an image of shape {tuple(image.shape)}: {msg}") from None
    if not isinstance(out, torch.Tensor) or out.numel() != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"the detector must output 4 numbers (x1, y1, x2, y2) per image; it returned shape {shape}"
        )
    return out.reshape(4).float().cpu()


def check_gt(boxes: torch.Tensor) -> torch.Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UserError(f"ground-truth boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    bad = ~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise UserError(f"ground-truth box {i} {boxes[i].tolist()} has x2 <= x1 or y2 <= y1")
    return boxes


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _hash_tensor(*ts: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in ts:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    return _hash_tensor(*[t.float() for t in model.state_dict().values()]) if model.state_dict() else "none"


# --------------------------------------------------------------------------- one unit
def verify_unit(
    model: nn.Module, image: torch.Tensor, gt: torch.Tensor, perturbation: str, config: VerifyConfig
) -> list[dict]:
    """All (ε, method) records of one image under one perturbation.

    Each record: ``perturbation, eps, method, box_lower, box_upper, time_box`` and, per extension,
    ``{lower, upper, stable, time}`` (+ ``lower_box``, ``upper_box`` for optimal).
    """
    from geo_rs import output_bounds

    device = _device_of(model)
    x = image[None].to(device)
    gt64 = gt.double()
    records = []
    for eps in config.eps[perturbation]:
        pert = make_perturbation(perturbation, eps)
        for method in config.methods:
            t0 = time.perf_counter()
            lo, hi = output_bounds(model, x, pert, method)
            t_box = time.perf_counter() - t0
            lo, hi = lo.detach().reshape(4).double().cpu(), hi.detach().reshape(4).double().cpu()
            rec = {
                "perturbation": perturbation, "eps": float(eps), "method": method,
                "box_lower": lo.tolist(), "box_upper": hi.tolist(), "time_box": t_box,
            }
            for ext in config.extensions:
                t1 = time.perf_counter()
                res = iou_bounds(lo, hi, gt64, ext)
                t_iou = time.perf_counter() - t1
                entry = {
                    "lower": float(res.lower[0]), "upper": float(res.upper[0]),
                    "stable": bool(float(res.lower[0]) >= config.threshold), "time": t_iou,
                }
                if res.lower_box is not None:
                    entry["lower_box"] = res.lower_box[0].tolist()
                    entry["upper_box"] = res.upper_box[0].tolist()
                rec[ext] = entry
            records.append(rec)
    return records


# --------------------------------------------------------------------------- worker pool
_WORKER: dict = {}


def _worker_init(model_bytes: bytes, images: list, boxes: torch.Tensor, config: VerifyConfig) -> None:
    torch.set_num_threads(1)  # one core per worker: the pool provides the parallelism
    _WORKER["model"] = torch.load(io.BytesIO(model_bytes), weights_only=False).eval()
    _WORKER["images"], _WORKER["boxes"], _WORKER["config"] = images, boxes, config


def _worker_run(task: tuple[int, str]) -> tuple[int, str, list[dict], float]:
    i, pert = task
    t0 = time.perf_counter()
    recs = verify_unit(_WORKER["model"], _WORKER["images"][i], _WORKER["boxes"][i], pert, _WORKER["config"])
    return i, pert, recs, time.perf_counter() - t0


def _part_path(out: Path, i: int, pert: str) -> Path:
    return out / "parts" / f"img{i:06d}_{pert}.json"


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)  # a crash never leaves a half-written unit behind


def run_verification(
    model: nn.Module,
    images: list[torch.Tensor] | torch.Tensor,
    boxes: torch.Tensor,
    config: VerifyConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    model_info: dict | None = None,
) -> dict:
    """Verify every image; write ``OUT/parts/*.json`` (resumable) and ``OUT/results.json``.

    Args:
        model: detector, ``(1, C, H, W)`` -> ``(1, 4)``.
        images: ``N`` images ``(C, H, W)`` in [0, 1] (list or ``(N, C, H, W)`` tensor).
        boxes: ``(N, 4)`` ground-truth boxes (x1, y1, x2, y2).
        config: :class:`VerifyConfig`.
        out_dir: output folder (created).
    Returns the results dict (also written as ``results.json``): config, per-record bounds/timings,
    clean IoU per image and the Certified Box Accuracy per (extension, method, perturbation, ε).
    """
    config.validate()
    images = list(images)
    boxes = check_gt(boxes)
    if len(images) != len(boxes):
        raise UserError(f"got {len(images)} images but {len(boxes)} ground-truth boxes")
    if not images:
        raise UserError("no images to verify")
    model = model.eval()
    clean = torch.stack([check_detector(model, im) for im in images])
    out = Path(out_dir)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    cfg_fp, model_fp = config.fingerprint(), model_fingerprint(model)
    image_fps = [_hash_tensor(im, bx) for im, bx in zip(images, boxes)]

    done: dict[tuple[int, str], list[dict]] = {}
    todo: list[tuple[int, str]] = []
    for i in range(len(images)):
        for pert in config.perturbations:
            path = _part_path(out, i, pert)
            if path.is_file():
                try:
                    part = json.loads(path.read_text())
                except json.JSONDecodeError:
                    part = {}
                stamp = (part.get("config"), part.get("model"), part.get("image"))
                if stamp == (cfg_fp, model_fp, image_fps[i]):
                    done[(i, pert)] = part["records"]
                    continue
            todo.append((i, pert))

    def store(i: int, pert: str, recs: list[dict], seconds: float) -> None:
        done[(i, pert)] = recs
        part = {"config": cfg_fp, "model": model_fp, "image": image_fps[i], "seconds": seconds,
                "records": recs}
        _write_json_atomic(_part_path(out, i, pert), part)

    bar = tqdm(total=len(todo), desc="verify (image x perturbation)", disable=not progress)
    if todo and (config.workers == 1 or len(todo) == 1):
        for i, pert in todo:
            t0 = time.perf_counter()
            store(i, pert, verify_unit(model, images[i], boxes[i], pert, config), time.perf_counter() - t0)
            bar.update()
    elif todo:
        buf = io.BytesIO()
        torch.save(model.cpu() if _device_of(model).type == "cpu" else model, buf)
        ctx = mp.get_context("spawn")  # fork after torch's thread pools were started can deadlock
        # ProcessPoolExecutor (not multiprocessing.Pool): a worker killed by the OS (e.g. out of memory)
        # breaks the pool with an error instead of silently losing its task and hanging the run.
        with ProcessPoolExecutor(min(config.workers, len(todo)), mp_context=ctx, initializer=_worker_init,
                                 initargs=(buf.getvalue(), images, boxes, config)) as pool:
            futures = [pool.submit(_worker_run, task) for task in todo]
            try:
                for fut in as_completed(futures):
                    i, pert, recs, seconds = fut.result()
                    store(i, pert, recs, seconds)
                    bar.update()
            except BrokenProcessPool:
                bar.close()
                raise UserError(
                    f"a worker process died (killed by the OS, likely out of memory) after {bar.n} of "
                    f"{len(todo)} units; finished units are saved in {out}/parts: rerun to resume, with "
                    "fewer --workers, a cheaper --method or fewer --images"
                ) from None
    bar.close()

    records = []
    for i in range(len(images)):
        for pert in config.perturbations:
            for rec in done[(i, pert)]:
                records.append({"image": i, **rec})
    clean_iou = box_iou(clean.double(), boxes.double())
    results = {
        "config": asdict(config),
        "fingerprints": {"config": cfg_fp, "model": model_fp},
        "model": model_info or {"class": type(model).__name__},
        "n_images": len(images),
        "gt_boxes": boxes.tolist(),
        "clean_boxes": clean.tolist(),
        "clean_iou": clean_iou.tolist(),
        "mean_clean_iou": float(clean_iou.mean()),
        "records": records,
        "cba": certified_box_accuracy(records, config),
        "resumed_units": len(done) - len(todo),
        "computed_units": len(todo),
    }
    _write_json_atomic(out / "results.json", results)
    return results


def certified_box_accuracy(records: list[dict], config: VerifyConfig) -> list[dict]:
    """Rows ``{extension, method, perturbation, eps, cba, n, mean_lower, mean_upper, mean_time_box,
    mean_time_iou}``; ``cba`` in percent of images whose IoU lower bound is >= the threshold."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["perturbation"], r["eps"]), []).append(r)
    rows = []
    for ext in config.extensions:
        for method in config.methods:
            for pert in config.perturbations:
                for eps in config.eps[pert]:
                    g = groups.get((method, pert, float(eps)), [])
                    if not g:
                        continue
                    rows.append({
                        "extension": ext, "method": method, "perturbation": pert, "eps": float(eps),
                        "cba": 100.0 * sum(r[ext]["stable"] for r in g) / len(g), "n": len(g),
                        "mean_lower": float(np.mean([r[ext]["lower"] for r in g])),
                        "mean_upper": float(np.mean([r[ext]["upper"] for r in g])),
                        "mean_time_box": float(np.mean([r["time_box"] for r in g])),
                        "mean_time_iou": float(np.mean([r[ext]["time"] for r in g])),
                    })
    return rows
