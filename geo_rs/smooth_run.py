"""Randomized smoothing over a dataset on :mod:`geo_rs.parallel`: one unit per (σ, input).

A unit runs :meth:`geo_rs.Smooth.certify` (or ``predict``) on one input with its own seed
(:func:`geo_rs.parallel.unit_seed` of the base seed and the unit id), so each input's result is the
same whatever the worker count, the engine or which other inputs are in the run, and equals
``Smooth(model, C, σ).certify(x[i:i+1], ..., generator=unit_seed(seed, unit_id))`` in one process.

Example:
    >>> from geo_rs.smooth_data import load_dataset
    >>> from geo_rs.smooth_model import model_source
    >>> rows = run_smoothing(load_dataset("mnist"), [0, 1], {0.25: model_source("m:f", "w.pt")},
    ...                      SmoothSettings("certify", n0=100, n=1000, alpha=0.001, batch_size=500),
    ...                      ExecOptions(workers=2), out="runs/s")            # doctest: +SKIP
    >>> rows[0.25][0]["radius"]                                              # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .parallel import ExecOptions, ResultStore, RunResult, Task, Unit, fingerprint, run_units
from .smooth_data import LabelledInputs
from .smooth_model import ModelSource, build_model

__all__ = ["SmoothSettings", "probe_num_classes", "run_smoothing", "setup_models", "smooth_unit", "unit_id"]


@dataclass(frozen=True)
class SmoothSettings:
    """Parameters shared by all units (Cohen et al.'s names).

    Attributes:
        mode: ``certify`` or ``predict``.
        n0: selection samples (certify only). n: estimation samples. alpha: failure probability.
        batch_size: forward batch. seed: the base seed. device: ``cpu`` or ``cuda[:k]``.
    """

    mode: str
    n0: int
    n: int
    alpha: float
    batch_size: int
    seed: int = 0
    device: str = "cpu"

    def describe(self) -> dict:
        d = asdict(self)
        d["device"] = str(self.device).split(":")[0]  # CPU and CUDA noise differ; which GPU does not
        if self.mode == "predict":
            d.pop("n0")
        return d


def unit_id(sigma: float, index: int) -> str:
    return f"sigma{sigma:g}_{index:06d}"


def setup_models(sources: dict[str, ModelSource], device: str) -> dict:
    """Per-worker state: every distinct model, built once (and the statistics modules imported, so
    the first unit's time is not an import's)."""
    import statsmodels.stats.proportion  # noqa: F401
    from scipy import stats  # noqa: F401

    return {key: build_model(src, device) for key, src in sources.items()}


def smooth_unit(models: dict, unit: Unit) -> dict:
    """Certify or predict one input (``unit.payload``, see :func:`run_smoothing`); JSON-able row."""
    import torch

    from .smoothing import Smooth

    p = unit.payload
    x = torch.from_numpy(p["x"]).unsqueeze(0)
    smooth = Smooth(models[p["model"]], p["num_classes"], p["sigma"])
    row = {"idx": p["idx"], "label": p["label"]}
    if p["mode"] == "certify":
        cert = smooth.certify(x, n0=p["n0"], n=p["n"], alpha=p["alpha"], batch_size=p["batch_size"],
                              generator=unit.seed, progress=False)
        row.update(predict=int(cert.prediction[0]), radius=float(cert.radius[0]),
                   pa_lower=float(cert.pa_lower[0]), count=int(cert.count[0]))
    else:
        pred = smooth.predict(x, n=p["n"], alpha=p["alpha"], batch_size=p["batch_size"], generator=unit.seed,
                              progress=False)
        row.update(predict=int(pred.prediction[0]), p_value=float(pred.p_value[0]))
    row["correct"] = int(row["predict"] == p["label"])
    return row


def probe_num_classes(model, x: np.ndarray, label: str) -> int:
    """Run ``model`` on one input; its logits (1, C) give the number of classes C (≥ 2)."""
    import torch

    with torch.inference_mode():
        try:
            device = next((t.device for t in model.parameters()), torch.device("cpu"))
            out = model(torch.from_numpy(x).unsqueeze(0).to(device))
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"model {label} failed on an input of shape {tuple(x.shape)}: {msg}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model {label} must return logits (batch, num_classes ≥ 2); got {got} for one input")
    return int(out.shape[1])


def run_smoothing(data: LabelledInputs, indices: list[int], sources: dict[float, ModelSource],
                  settings: SmoothSettings, options: ExecOptions, out: str | Path | None = None,
                  overwrite: bool = False,
                  on_result: Callable[[Unit, dict, float], None] | None = None
                  ) -> tuple[dict[float, list[dict]], RunResult, int]:
    """Certify (or predict) ``data[indices]`` at every σ of ``sources`` (σ → its base classifier).

    Returns ``(rows, run, num_classes)``: ``rows[σ]`` lists one dict per input in ``indices`` order
    (``idx, label, predict, radius, pa_lower, count, correct, time`` for certify; ``p_value`` instead
    of the radius columns for predict).
    """
    keys = {src: f"m{k}" for k, src in enumerate(dict.fromkeys(sources.values()))}
    built = {src: build_model(src, "cpu") for src in keys}  # fail here, in one line, not in the workers
    first = data.input(indices[0])
    classes = {probe_num_classes(m, first, src.label) for src, m in built.items()}
    if len(classes) > 1:
        raise UserError(f"the models give different numbers of classes: {sorted(classes)}")
    num_classes = classes.pop()
    del built
    bad = [i for i in indices if data.label(i) >= num_classes]
    if bad:
        raise UserError(f"{data.names[bad[0]]}: label {data.label(bad[0])} is outside the model's "
                        f"{num_classes} classes (0..{num_classes - 1})")
    model_fps = {src: src.fingerprint() for src in keys}
    common = {k: v for k, v in asdict(settings).items() if k not in ("seed", "device")}
    units = []
    for sigma, src in sources.items():
        for i in indices:
            x = data.input(i)
            payload = {"model": keys[src], "sigma": sigma, "idx": i, "label": data.label(i), "x": x,
                       "num_classes": num_classes, **common}
            units.append(Unit(unit_id(sigma, i), payload,
                              fingerprint(x, data.label(i), sigma, model_fps[src], num_classes)))
    store = None
    if out is not None:
        describe = settings.describe() | {"num_classes": num_classes}
        store = ResultStore(out, fingerprint(describe), describe=describe, overwrite=overwrite)
    task = Task(smooth_unit, setup_models, ({key: src for src, key in keys.items()}, settings.device))
    run = run_units(task, units, options, store=store, seed=settings.seed, on_result=on_result)
    rows: dict[float, list[dict]] = {}
    for unit in units:
        sigma = unit.payload["sigma"]
        rows.setdefault(sigma, []).append({**run.results[unit.id], "time": run.seconds[unit.id]})
    return rows, run, num_classes
