"""Box-stability verification (IBP-IoU paper, Fig. 2): input perturbation -> box bounds -> IoU bounds.

For every image, perturbation (white noise, brightness, contrast), ε of its grid and bound method
(IBP, CROWN-IBP, CROWN, alpha-CROWN; step 1, :func:`geo_rs.output_bounds`), the box bounds are pushed
through the IoU with each extension (vanilla, optimal; step 2, :func:`geo_rs.iou_bounds`). The box
is *stable* (certified) iff the IoU lower bound is >= the threshold t (0.5 by default, paper Property 1).

Runs are split into work units (one image x one perturbation) executed by :mod:`geo_rs.parallel`
(in this process, a local process pool, or a Dask cluster; the detector travels once per worker) and
stored one JSON file per unit under ``OUT/parts/``, so an interrupted run resumes without recomputing
finished units. A folder holding results of another configuration or detector is refused unless
``overwrite=True``; a unit is reused only for the same image and box.

Any ``nn.Module`` mapping a ``(1, C, H, W)`` image in [0, 1] to one box ``(1, 4)`` (x1, y1, x2, y2)
works. Where the bound engine cannot handle it with a method (``geo_rs.UnsupportedModelError``, e.g.
alpha-CROWN on max-pooling), that (image, method) is recorded as ``unsupported`` (never certified)
and the run goes on with the other methods and images.

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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geo_rs import UserError
from geo_rs.parallel import ExecOptions, ResultStore, Task, Unit, fingerprint, run_units

from .rs import L2, RS_METHOD, rs_records

if TYPE_CHECKING:  # torch is imported inside the functions: `geo-rs box --help` stays light
    import torch
    from torch import nn

PERTURBATIONS = ("noise", "brightness", "contrast")
CERTIFIERS = ("bounds", RS_METHOD)
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
    certifiers: list[str] = field(default_factory=lambda: ["bounds"])
    sigma: float = 0.25
    n: int = 1000
    alpha: float = 0.001
    l2_eps: list[float] = field(default_factory=list)
    rs_batch_size: int = 1000

    @property
    def uses_bounds(self) -> bool:
        return "bounds" in self.certifiers

    @property
    def uses_rs(self) -> bool:
        return RS_METHOD in self.certifiers

    def table_methods(self) -> list[str]:
        """Method rows of the report: the bound methods (certifier ``bounds``), then median smoothing."""
        return (list(self.methods) if self.uses_bounds else []) + ([RS_METHOD] if self.uses_rs else [])

    def table_eps(self) -> dict[str, list[float]]:
        """ε grid per perturbation column of the report (``l2``: median smoothing's own L2 radii)."""
        grid = {p: [float(e) for e in self.eps[p]] for p in self.perturbations}
        if self.uses_rs and self.l2_eps:
            grid[L2] = [float(e) for e in self.l2_eps]
        return grid

    def rs_grid(self) -> dict[str, list[float]]:
        return self.table_eps() if self.uses_rs else {}

    def _validate_rs(self) -> None:
        from geo_rs import checks

        unknown = [c for c in self.certifiers if c not in CERTIFIERS]
        if unknown or not self.certifiers:
            raise UserError(f"unknown certifier {unknown[0] if unknown else None!r}; choose from "
                            f"{', '.join(CERTIFIERS)}")
        checks.positive_finite("sigma", self.sigma, "pixel intensity")
        checks.count("n", self.n, minimum=1)
        checks.in_open_unit("alpha", self.alpha)
        checks.count("rs_batch_size", self.rs_batch_size, minimum=1)
        for e in self.l2_eps:
            checks.non_negative_finite("l2_eps", e, "pixel intensity, L2")
        if self.l2_eps and not self.uses_rs:
            raise UserError(f"--l2-eps is a radius for --certifier {RS_METHOD}; add it to --certifier")

    def validate(self) -> None:
        self._validate_rs()
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
        if not self.uses_rs:  # runs without median smoothing keep their earlier fingerprint
            for key in ("sigma", "n", "alpha", "l2_eps", "rs_batch_size"):
                d.pop(key)
            if self.certifiers == ["bounds"]:
                d.pop("certifiers")
        if not self.uses_bounds:
            d.pop("methods")
        d["eps"] = {p: [float(e) for e in d["eps"][p]] for p in self.perturbations}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- checks
def check_detector(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on one image ``(C, H, W)``; returns the box ``(4,)`` or raises a clear UserError."""
    import torch
    from torch import nn

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
    import torch

    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UserError(f"ground-truth boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    bad = ~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise UserError(f"ground-truth box {i} {boxes[i].tolist()} has x2 <= x1 or y2 <= y1")
    return boxes


def _device_of(model: nn.Module) -> torch.device:
    import torch

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
    ``{lower, upper, stable, time}`` (+ ``lower_box``, ``upper_box`` for optimal). A method the bound
    engine cannot apply to this model gives records ``{perturbation, eps, method, unsupported: reason}``
    instead (for every ε; it is tried once).
    """
    from geo_rs import UnsupportedModelError, iou_bounds, output_bounds

    device = _device_of(model)
    x = image[None].to(device)
    gt64 = gt.double()
    records = []
    unsupported: dict[str, str] = {}
    for eps in config.eps[perturbation]:
        pert = make_perturbation(perturbation, eps)
        for method in config.methods:
            head = {"perturbation": perturbation, "eps": float(eps), "method": method}
            if method not in unsupported:
                t0 = time.perf_counter()
                try:
                    lo, hi = output_bounds(model, x, pert, method)
                except UnsupportedModelError as exc:
                    unsupported[method] = " ".join(str(exc).split())
            if method in unsupported:
                records.append({**head, "unsupported": unsupported[method]})
                continue
            t_box = time.perf_counter() - t0
            lo, hi = lo.detach().reshape(4).double().cpu(), hi.detach().reshape(4).double().cpu()
            rec = {**head, "box_lower": lo.tolist(), "box_upper": hi.tolist(), "time_box": t_box}
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


# --------------------------------------------------------------------------- execution layer hooks
def load_worker_state(model_bytes: bytes, config: dict) -> dict:
    """Per-worker state (once per worker process): the detector and the configuration."""
    import torch

    model = torch.load(io.BytesIO(model_bytes), weights_only=False, map_location="cpu").eval()
    return {"model": model, "config": VerifyConfig(**config)}


def verify_work_unit(state: dict, unit: Unit) -> dict:
    """One unit of :func:`run_verification`: payload ``(image index, perturbation, image, gt box)``;
    perturbation :data:`RS_METHOD` runs median smoothing on every (perturbation, ε) of the image."""
    _, perturbation, image, gt = unit.payload
    config = state["config"]
    if perturbation == RS_METHOD:
        return {"records": rs_records(state["model"], image, gt, config.rs_grid(), config, unit.seed)}
    return {"records": verify_unit(state["model"], image, gt, perturbation, config)}


def _unit_id(i: int, perturbation: str) -> str:
    return f"img{i:06d}_{perturbation}"


def run_verification(
    model: nn.Module,
    images: list[torch.Tensor] | torch.Tensor,
    boxes: torch.Tensor,
    config: VerifyConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    model_info: dict | None = None,
    cluster: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Verify every image; write ``OUT/parts/*.json`` (resumable) and ``OUT/results.json``.

    Args:
        model: detector, ``(1, C, H, W)`` -> ``(1, 4)``.
        images: ``N`` images ``(C, H, W)`` in [0, 1] (list or ``(N, C, H, W)`` tensor).
        boxes: ``(N, 4)`` ground-truth boxes (x1, y1, x2, y2).
        config: :class:`VerifyConfig` (``workers``: processes of the local pool, or of
            ``cluster="local"``).
        out_dir: output folder (created).
        cluster: Dask scheduler address, ``"local"``, or None (``$GEO_RS_CLUSTER``, else local pool).
        overwrite: replace results of another configuration/detector in ``out_dir``.
    Returns the results dict (also written as ``results.json``): config, per-record bounds/timings,
    clean IoU per image, the Certified Box Accuracy per (extension, method, perturbation, ε) and the
    (image, method) pairs the bound engine does not support.
    """
    import torch

    from geo_rs import box_iou
    from geo_rs.atomic import write_json

    config.validate()
    images = list(images)
    boxes = check_gt(boxes)
    if len(images) != len(boxes):
        raise UserError(f"got {len(images)} images but {len(boxes)} ground-truth boxes")
    if not images:
        raise UserError("no images to verify")
    model = model.eval()
    clean = torch.stack([check_detector(model, im) for im in images])
    cfg_fp, model_fp = config.fingerprint(), model_fingerprint(model)
    describe = {k: v for k, v in asdict(config).items() if k != "workers"} | {"model": model_fp}
    store = ResultStore(out_dir, fingerprint(cfg_fp, model_fp), describe=describe, overwrite=overwrite)
    kinds = (list(config.perturbations) if config.uses_bounds else []) \
        + ([RS_METHOD] if config.uses_rs else [])
    units = [Unit(_unit_id(i, kind), payload=(i, kind, images[i], boxes[i]),
                  fingerprint=_hash_tensor(images[i], boxes[i]))
             for i in range(len(images)) for kind in kinds]
    buf = io.BytesIO()
    torch.save(model.cpu() if _device_of(model).type == "cpu" else model, buf)
    task = Task(verify_work_unit, load_worker_state, (buf.getvalue(), asdict(config)))
    options = ExecOptions(workers=config.workers, cluster=cluster, progress=progress,
                          desc="verify (image x perturbation)")
    run = run_units(task, units, options, store=store)

    records = []
    for unit in units:
        records += [{"image": unit.payload[0], **rec} for rec in run.results[unit.id]["records"]]
    clean_iou = box_iou(clean.double(), boxes.double())
    results = {
        "config": asdict(config),
        "table": {"methods": config.table_methods(), "perturbations": list(config.table_eps()),
                  "eps": config.table_eps()},
        "input_dim": int(images[0].numel()),
        "fingerprints": {"config": cfg_fp, "model": model_fp},
        "model": model_info or {"class": type(model).__name__},
        "n_images": len(images),
        "gt_boxes": boxes.tolist(),
        "clean_boxes": clean.tolist(),
        "clean_iou": clean_iou.tolist(),
        "mean_clean_iou": float(clean_iou.mean()),
        "records": records,
        "cba": certified_box_accuracy(records, config),
        "unsupported": unsupported_pairs(records),
        "resumed_units": run.resumed,
        "computed_units": run.computed,
        "engine": {"name": run.engine, "workers": run.workers, "wall_s": run.wall},
    }
    write_json(Path(out_dir) / "results.json", results)
    return results


def unsupported_pairs(records: list[dict]) -> list[dict]:
    """One ``{image, method, reason}`` per (image, method) the bound engine could not handle."""
    seen: dict[tuple, dict] = {}
    for r in records:
        if "unsupported" in r:
            seen.setdefault((r["image"], r["method"]), {"image": r["image"], "method": r["method"],
                                                        "reason": r["unsupported"]})
    return list(seen.values())


def certified_box_accuracy(records: list[dict], config: VerifyConfig) -> list[dict]:
    """Rows ``{extension, method, perturbation, eps, cba, n, n_unsupported, mean_lower, mean_upper,
    mean_time_box, mean_time_iou}``; ``cba`` in percent of images whose IoU lower bound is >= the
    threshold (an unsupported image counts as not certified); the means are over supported images
    (None if there is none)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["perturbation"], r["eps"]), []).append(r)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    rows = []
    grid = config.table_eps()
    for ext in config.extensions:
        for method in config.table_methods():
            for pert in grid:
                for eps in grid[pert]:
                    g = groups.get((method, pert, float(eps)), [])
                    if not g:
                        continue
                    ok = [r for r in g if "unsupported" not in r]
                    rows.append({
                        "extension": ext, "method": method, "perturbation": pert, "eps": float(eps),
                        "cba": 100.0 * sum(r[ext]["stable"] for r in ok) / len(g), "n": len(g),
                        "n_unsupported": len(g) - len(ok),
                        "mean_lower": mean([r[ext]["lower"] for r in ok]),
                        "mean_upper": mean([r[ext]["upper"] for r in ok]),
                        "mean_time_box": mean([r["time_box"] for r in ok]),
                        "mean_time_iou": mean([r[ext]["time"] for r in ok]),
                        "n_abstain": sum(bool(r.get("abstain")) for r in ok),
                    })
    return rows
