"""Keypoint verification over a dataset on the execution layer (:mod:`geo_rs.parallel`): one unit per
(image, perturbation, ε, reachable level, solver), each running :func:`~keypoint.verify.verify_instance`
(the reachable heatmaps once, then every spec × method). Resumable per unit; results do not depend on
the worker count (units are seeded from their id).

Per-instance record (one per image × perturbation × ε × level × solver × spec × method; ``results.json``
holds them all, ``results.tsv`` the scalar columns):

* ``image`` (index into the data), ``perturbation``, ``eps``, ``reachable`` (asked), ``level_used``
  (the reachable level of the proof or of the last MILP: ``bounds`` when no MILP was needed),
  ``bounds_method`` (used, after any fallback), ``solver``, ``spec``, ``method``;
* ``verdict``: ``certified`` | ``counterexample`` | ``unknown``; ``reason`` for unknown: ``time-out``
  (a MILP hit its time limit), ``spurious`` (the MILP's assignment could not be realised by the attack),
  or ``solver: <status>``; ``seconds``, ``solve_seconds``, ``n_binaries``, ``n_candidates``;
* ``keypoints`` ``(K, 2)`` clean argmax, heatmap pixels (u = column, v = row); ``stride``;
* ``candidates``: per keypoint a list of ``[u, v]`` heatmap pixels (clean first): a sound superset of
  every argmax position the network can take on the set (independent of the spec), and
  ``candidates_input``: the same as input (crop) pixel centres ``(j + 0.5)·stride − 0.5``; with
  ``crop_to_image`` (a 2×3 affine A, when the data has it: image pixel = A · [u, v, 1] for crop pixel
  (u, v)) they map to image pixels.
  This is the ``list of N (n_i, 2) candidate-pixel arrays`` that :func:`geo_rs.pose_error_bound` takes:
  ``[np.array(c) for c in record["candidates_input"]]`` (after mapping with ``crop_to_image`` if the
  pose is in image coordinates);
* ``assignment`` (the MILP's candidate keypoints) and ``counterexample`` (path of the saved ``.pt``
  with the violating input, PNG beside it) when confirmed.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geo_rs.errors import UserError
from geo_rs.parallel import ExecOptions, ResultStore, Task, Unit, fingerprint, run_units

PERTURBATIONS = ("noise", "brightness", "contrast")


@dataclass
class RunConfig:
    """What a dataset run verifies (everything that changes a result is in the job fingerprint)."""

    perturbations: list[str]
    eps: dict[str, list[float]]
    specs: list[dict]  # KeypointSpec fields
    reachable: list[str] = field(default_factory=lambda: ["linear"])
    methods: list[str] = field(default_factory=lambda: ["coupled", "decoupled"])
    bounds_method: str = "CROWN-IBP"
    solvers: list[str] = field(default_factory=lambda: ["cbc"])
    time_limit: float = 60.0
    attack: dict = field(default_factory=dict)
    save_counterexamples: bool = True
    float32: str = "rigorous"


def make_perturbation(name: str, eps: float):
    from geo_rs import Brightness, Contrast, WhiteNoise

    return {"noise": WhiteNoise, "brightness": Brightness, "contrast": Contrast}[name](eps)


def unit_id(i: int, pert: str, eps: float, level: str, solver: str) -> str:
    return f"img{i:06d}_{pert}_{eps:g}_{level}_{solver}"


# ------------------------------------------------------------------------------------ worker hooks
def load_worker_state(model_bytes: bytes, config: dict, out_dir: str) -> dict:
    """Once per worker: the detector, the run config and the specs."""
    import torch

    from .spec import KeypointSpec

    model = torch.load(io.BytesIO(model_bytes), weights_only=False, map_location="cpu").eval()
    cfg = RunConfig(**config)
    return {"model": model, "config": cfg, "specs": [KeypointSpec(**s) for s in cfg.specs], "out": out_dir}


def _reason(r) -> str:
    if r.verdict.name != "UNKNOWN":
        return ""
    status = r.status.lower()
    if "not solved" in status or "time" in status or "fractional" in status:
        return "time-out"
    if r.assignment is not None:
        return "spurious"
    return f"solver: {r.status[:80]}"


def _level_used(r) -> str:
    if r.proof == "bounds":
        return "bounds"
    modes = [p.split(":")[0].strip() for p in r.status.split(";") if ":" in p]
    return modes[-1] if modes and modes[-1] in ("interval", "linear", "exact") else r.reachable


def record(r, head: dict, cand_input: list) -> dict:
    """One per-instance record (see module docstring) from a :class:`KeypointVerification`."""
    d = r.to_dict()
    return {
        **head,
        "spec": d["spec"],
        "method": d["method"],
        "verdict": d["verdict"].lower(),
        "reason": _reason(r),
        "level_used": _level_used(r),
        "bounds_method": d["bounds_method"],
        "solver": d["solver"],
        "seconds": d["seconds"],
        "solve_seconds": d["solve_seconds"],
        "n_binaries": d["n_binaries"],
        "n_candidates": d["n_candidates"],
        "proof": d["proof"],
        "status": d["status"],
        "keypoints": d["keypoints"],
        "stride": d["stride"],
        "candidates": [np.asarray(c).tolist() for c in r.candidates],
        "candidates_input": cand_input,
        "assignment": d["assignment"],
        "counterexample_keypoints": d["counterexample_keypoints"],
        "notes": d["notes"],
    }


def verify_work_unit(state: dict, unit: Unit) -> dict:
    """One unit: payload ``(image index, perturbation, eps, level, solver, image (C, H, W),
    crop_to_image)``."""
    from . import verify_instance

    i, pert, eps, level, solver, image, affine = unit.payload
    cfg: RunConfig = state["config"]
    results = verify_instance(
        state["model"], image, make_perturbation(pert, eps), state["specs"], level, cfg.bounds_method,
        tuple(cfg.methods), solver, cfg.time_limit, attack={**cfg.attack, "seed": unit.seed % 2**31},
        float32=cfg.float32,
    )
    head = {"image": i, "perturbation": pert, "eps": eps, "reachable": level, "crop_to_image": affine}
    out = []
    for j, r in enumerate(results):
        cand_input = None
        if r.stride is not None:
            cand_input = [((np.asarray(c) + 0.5) * r.stride - 0.5).tolist() for c in r.candidates]
        rec = record(r, head, cand_input)
        if r.counterexample is not None and cfg.save_counterexamples:
            name = f"{unit.id}_{j}"
            r.save(Path(state["out"]) / "counterexamples", name)
            rec["counterexample"] = f"counterexamples/{name}.pt"
        out.append(rec)
    return {"records": out}


# ------------------------------------------------------------------------------------ driver
def run_dataset(
    model,
    images,
    crop_to_image: list | None,
    config: RunConfig,
    out_dir: str | Path,
    *,
    workers: int = 1,
    cluster: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
    describe: dict | None = None,
) -> dict:
    """Verify every unit (resuming finished ones) → ``{"records": [...], "computed": n, "resumed": n}``."""
    import torch

    buf = io.BytesIO()
    torch.save(model, buf)
    model_bytes = buf.getvalue()
    cfg = asdict(config)
    job = fingerprint(model_bytes, cfg, seed)
    store = ResultStore(out_dir, job, describe={**(describe or {}), "config": cfg, "seed": seed},
                        overwrite=overwrite)
    units = []
    for i, img in enumerate(images):
        aff = None if crop_to_image is None else np.asarray(crop_to_image[i], float).tolist()
        for pert in config.perturbations:
            for eps in config.eps[pert]:
                for level in config.reachable:
                    for solver in config.solvers:
                        units.append(Unit(unit_id(i, pert, eps, level, solver),
                                          payload=(i, pert, float(eps), level, solver, img, aff),
                                          fingerprint=fingerprint(img, pert, float(eps), level, solver)))
    task = Task(verify_work_unit, load_worker_state, (model_bytes, cfg, str(out_dir)))
    options = ExecOptions(workers=workers, cluster=cluster, progress=progress, desc="keypoint verify")
    run = run_units(task, units, options, store=store, seed=seed)
    records = [rec for u in units for rec in run.results[u.id]["records"]]
    return {"records": records, "computed": run.computed, "resumed": run.resumed}


# ------------------------------------------------------------------------------------ summary
SUMMARY_KEYS = ("perturbation", "eps", "reachable", "solver", "method", "spec")


def summarize(records: list[dict]) -> list[dict]:
    """Per (perturbation, ε, level, solver, method, spec): counts, verified rate, median / p90 seconds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in SUMMARY_KEYS), []).append(r)
    rows = []
    for key, rs in groups.items():
        t = np.array([r["seconds"] for r in rs])
        n_cert = sum(r["verdict"] == "certified" for r in rs)
        rows.append({
            **dict(zip(SUMMARY_KEYS, key)),
            "n": len(rs),
            "certified": n_cert,
            "counterexample": sum(r["verdict"] == "counterexample" for r in rs),
            "unknown": sum(r["verdict"] == "unknown" for r in rs),
            "verified_rate": n_cert / len(rs),
            "median_s": float(np.median(t)),
            "p90_s": float(np.percentile(t, 90)),
        })
    return rows


TSV_COLUMNS = ("image", "perturbation", "eps", "reachable", "level_used", "bounds_method", "solver", "spec",
               "method", "verdict", "reason", "seconds", "solve_seconds", "n_binaries", "n_candidates",
               "counterexample")


def write_outputs(out_dir: str | Path, records: list[dict], meta: dict) -> dict[str, Path]:
    """``results.json`` (every record), ``results.tsv``, ``summary.json``, ``summary.md``, ``summary.csv``
    and ``fig_verified_rate.png`` (verified rate vs δ, coupled vs decoupled) under ``out_dir``."""
    from geo_rs.atomic import write_json, write_text

    out = Path(out_dir)
    rows = summarize(records)
    paths = {"results": write_json(out / "results.json", {**meta, "records": records})}

    def cell(v):
        return " ".join(str(v).split()) if v is not None else ""

    tsv = ["\t".join(TSV_COLUMNS)] + ["\t".join(cell(r.get(c)) for c in TSV_COLUMNS) for r in records]
    paths["tsv"] = write_text(out / "results.tsv", "\n".join(tsv) + "\n")
    paths["summary"] = write_json(out / "summary.json", {**meta, "rows": rows}, indent=1)
    cols = (*SUMMARY_KEYS, "n", "certified", "counterexample", "unknown", "verified_rate", "median_s",
            "p90_s")
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    paths["markdown"] = write_text(out / "summary.md", "\n".join(md) + "\n")
    paths["csv"] = write_text(out / "summary.csv", "\n".join(
        [",".join(cols)] + [",".join(fmt(r[c]).replace(",", ";") for c in cols) for r in rows]) + "\n")
    paths["figure"] = plot_verified_rate(rows, out / "fig_verified_rate.png")
    return paths


def plot_verified_rate(rows: list[dict], path: Path) -> Path:
    """Verified rate vs the spec's δ, one line per (perturbation, ε, level, method)."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geo_rs.atomic import atomic_write

    lines: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        m = re.search(r"delta=([0-9.eE+-]+)", r["spec"])
        if m:
            key = (r["perturbation"], r["eps"], r["reachable"], r["solver"], r["method"])
            lines.setdefault(key, []).append((float(m.group(1)), r["verified_rate"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (pert, eps, level, solver, method), pts in sorted(lines.items()):
        pts.sort()
        ax.plot(*zip(*pts), "-o" if method == "coupled" else "--x", ms=3,
                label=f"{pert} ε={eps:g} {level} {solver} {method}")
    ax.set_xlabel("δ (spec budget)")
    ax.set_ylabel("verified rate")
    ax.set_ylim(-0.02, 1.02)
    if lines:
        ax.legend(fontsize=6, ncol=2)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def check_config(config: RunConfig) -> None:
    """One-line errors before any slow work."""
    from geo_rs.checks import positive_finite

    from .api import BOUND_METHODS, METHODS
    from .reachable import LEVELS

    for p in config.perturbations:
        if p not in PERTURBATIONS:
            raise UserError(f"--perturbation: unknown {p!r}; choose from {', '.join(PERTURBATIONS)}")
        for e in config.eps.get(p, []):
            if not (np.isfinite(e) and e >= 0):
                raise UserError(f"--eps: {p} eps must be finite and >= 0, got {e}")
        if not config.eps.get(p):
            raise UserError(f"--eps: no eps for perturbation {p}")
    for level in config.reachable:
        if level not in LEVELS:
            raise UserError(f"--reachable: unknown {level!r}; choose from {', '.join(LEVELS)}")
    for m in config.methods:
        if m not in METHODS:
            raise UserError(f"--method: unknown {m!r}; choose from {', '.join(METHODS)}")
    if config.bounds_method.upper() not in {m.upper() for m in BOUND_METHODS}:
        raise UserError(
            f"--bounds-method: unknown {config.bounds_method!r}; choose from {', '.join(BOUND_METHODS)}"
        )
    for s in config.solvers:
        if s.lower() not in ("cbc", "highs"):
            raise UserError(f"--solver: unknown {s!r}; choose from cbc, highs")
    positive_finite("--time-limit", config.time_limit, "seconds")
    if config.float32 not in ("rigorous", "heuristic"):
        raise UserError(f"--float32: unknown {config.float32!r}; choose from rigorous, heuristic")
