"""Certified camera pose from certified keypoints (``geo-rs keypoint pose-bound``).

Per posed image (``keypoint.data.posed``: COCO annotations + ``cameras.json`` with K, R, t and the
object's 3D keypoints) and per ε:

* keypoint sets — ``median-smoothing``: the median-smoothed detector's boxes
  (:func:`keypoint.rs_keypoints.certify_instance`, joint over the keypoints, probability ≥ 1 − α);
  ``milp``: per-keypoint candidate pixels of the argmax verifier, read from a JSON file
  (:func:`read_candidates`);
* :func:`geo_rs.pose_error_bound` against the ground-truth pose: sound upper bounds on the rotation
  (degrees) and translation (world units) error of every stationary least-squares pose in the search
  region, for every configuration in the set (see that function for what is and is not covered);
* verdict: ``certified`` when both bounds are within ``--max-rot-deg`` / ``--max-trans`` **and** the
  pose the pipeline reports (below) is one the proof covers (``PoseBound.covers``: inside the search
  region, stationary); ``not covered`` when the bounds are within tolerance but the solver's answer lies
  outside the proved region (another local minimum: the bounds do not speak about it), or when the
  bound's witness search found a configuration of the set with a stationary pose outside the region
  (``outside_region``: the set is too large for the region, so a solver may leave it);
  ``not certified`` otherwise, ``abstain`` when a keypoint set is unbounded (median smoothing ran out
  of order statistics) or, for ``milp``, the candidate file lists the image under ``omitted`` (the
  verifier gave it no set: ``reason`` "no certified keypoint set: …") — no pose statement is made then.

The pose reported is :func:`geo_rs.solve_pnp` on the smoothed median keypoints (or the set centres).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geo_rs.errors import UserError

__all__ = ["CandidateFile", "PoseInput", "pose_records", "read_candidates", "summary_rows"]


@dataclass(frozen=True)
class PoseInput:
    """One posed instance: the keypoint instance, its camera, 3D keypoints and (milp) candidates."""

    instance: object  # keypoint.rs_keypoints.InstanceInput
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    points_3d: np.ndarray
    candidates: list | None = None
    # milp: why this image has no candidate set (listed under 'omitted' in the candidate file), and the
    # verifier's notes on its set (e.g. float32 rounding bounded heuristically)
    omitted: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def unit_id(self) -> str:
        return self.instance.unit_id

    def fingerprint_parts(self) -> tuple:
        cands = None if self.candidates is None else [c.tolist() for c in self.candidates]
        extra = () if self.omitted is None and not self.notes else (self.omitted, list(self.notes))
        return (*self.instance.fingerprint_parts(), self.K, self.R, self.t, self.points_3d, cands, *extra)


@dataclass(frozen=True)
class CandidateFile:
    """A ``--candidates`` file: ``eps``, ``sets`` {image id: per keypoint ``(n_k, 2)`` image pixels},
    ``omitted`` {image id: reason it has no set}, ``notes`` {image id: the verifier's notes on its set}."""

    eps: float | None
    sets: dict[int, list]
    omitted: dict[int, str]
    notes: dict[int, tuple[str, ...]]
    perturbation: str | None = None


def read_candidates(path: str | Path, num_keypoints: dict[int, int]) -> CandidateFile:
    """A candidate-set file → :class:`CandidateFile`.

    Format (image pixels, pixel centres at integers, as ``cameras.json``; ``geo-rs keypoint verify`` on a
    COCO dataset writes it as ``OUT/candidates/*.json``, see :mod:`keypoint.verify.export`)::

        {"eps": 0.01, "images": [{"image_id": 3, "candidates": [[[x, y], ...], ...], "notes": [...]}, ...],
         "omitted": [{"image_id": 5, "reason": "..."}]}

    ``num_keypoints`` maps image id → the object's keypoint count; every listed image must have that many
    non-empty candidate lists of finite pairs, and appear once (one object per posed image). ``omitted``
    (optional) names images the verifier gave no set. One :class:`UserError` line otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--candidates file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise UserError(f"{path}: expected an object with an 'images' list")
    eps = doc.get("eps")
    if eps is not None and not (isinstance(eps, int | float) and math.isfinite(eps) and eps >= 0):
        raise UserError(f"{path}: 'eps' must be a finite number >= 0, got {eps!r}")
    out: dict[int, list] = {}
    notes: dict[int, tuple[str, ...]] = {}
    for i, entry in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or "image_id" not in entry or "candidates" not in entry:
            raise UserError(f"{where} needs 'image_id' and 'candidates'")
        image_id = entry["image_id"]
        if image_id not in num_keypoints:
            raise UserError(f"{where}: image_id {image_id!r} is not in --data")
        if image_id in out:
            raise UserError(f"{where}: image_id {image_id} is listed twice (one object per posed image)")
        notes[int(image_id)] = tuple(str(n) for n in entry.get("notes", []))
        cands = entry["candidates"]
        if not isinstance(cands, list) or len(cands) != num_keypoints[image_id]:
            got = len(cands) if isinstance(cands, list) else type(cands).__name__
            raise UserError(
                f"{where}: expected {num_keypoints[image_id]} candidate lists (one per keypoint), got {got}"
            )
        arrays = []
        for k, c in enumerate(cands):
            try:
                a = np.asarray(c, dtype=np.float64)
            except (TypeError, ValueError):
                raise UserError(f"{where}.candidates[{k}]: not a list of [x, y] pairs") from None
            if a.ndim != 2 or a.shape[1] != 2 or len(a) == 0 or not np.isfinite(a).all():
                raise UserError(
                    f"{where}.candidates[{k}]: needs a non-empty list of finite [x, y] pairs, "
                    f"got shape {a.shape}"
                )
            arrays.append(a)
        out[int(image_id)] = arrays
    omitted = _read_omitted(path, doc.get("omitted", []), out)
    if not out and not omitted:
        raise UserError(f"{path}: 'images' is empty")
    pert = doc.get("perturbation")
    return CandidateFile(None if eps is None else float(eps), out, omitted, notes,
                         None if pert is None else str(pert))


def _read_omitted(path: Path, entries, sets: dict) -> dict[int, str]:
    """``omitted`` entries with an image id → {image id: reason} (entries without one, e.g. synthetic
    crops, name no image of the data and are skipped)."""
    if not isinstance(entries, list):
        raise UserError(f"{path}: 'omitted' must be a list")
    out = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UserError(f"{path}: omitted[{i}] must be an object with 'image_id' and 'reason'")
        if entry.get("image_id") is None:
            continue
        image_id = int(entry["image_id"])
        if image_id in sets:
            raise UserError(f"{path}: omitted[{i}]: image_id {image_id} also has a candidate set")
        out[image_id] = str(entry.get("reason", "no reason given"))
    return out


def _pose_dict(pose) -> dict:
    return {"R": np.asarray(pose.R).tolist(), "t": np.asarray(pose.t).tolist()}


def bound_record(item: PoseInput, keypoint_set, centre: np.ndarray, settings: dict) -> dict:
    """The pose bound of one keypoint set (boxes or candidate lists) and its verdict."""
    from geo_rs import UserError, pose_error_bound, rotation_error_deg, solve_pnp
    from geo_rs.pose import as_intrinsics, as_points_3d

    truth = (item.R, item.t)
    max_trans = (
        settings["max_trans"] if settings["max_trans"] is not None else 0.1 * float(np.linalg.norm(item.t))
    )
    t0 = time.perf_counter()
    as_points_3d(item.points_3d)  # bad 3D keypoints or K are input errors (exit 2), not a set's failure
    as_intrinsics(item.K)
    try:
        b = pose_error_bound(
            item.points_3d,
            keypoint_set,
            item.K,
            truth,
            rtol=settings["rtol"],
            time_limit_s=settings["time_limit"],
        )
        pose = solve_pnp(item.points_3d, centre, item.K)
    except UserError as exc:  # e.g. candidate sets that fill the heatmap: their centres coincide
        return {"verdict": "abstain", "reason": f"no pose from this keypoint set: {exc}"}
    ok = b.rotation_deg <= settings["max_rot_deg"] and b.translation <= max_trans
    # A certificate about poses the pipeline does not return would be a false one: the reported pose
    # must be covered, and no configuration of the set may be known to reach a pose outside the region.
    solver_covered = bool(b.covers(pose, centre))
    covered = solver_covered and not b.leaves_region
    return {
        "verdict": ("certified" if covered else "not covered") if ok else "not certified",
        "rotation_deg": b.rotation_deg,
        "translation": b.translation,
        "translation_percent": b.translation_percent,
        "camera_position": b.camera_position,
        "worst_rotation_deg": b.worst_rotation_deg,
        "worst_translation": b.worst_translation,
        "estimate_rotation_deg": b.estimate_rotation_deg,
        "estimate_translation": b.estimate_translation,
        "converged": b.converged,
        "branches": b.branches,
        "max_trans": max_trans,
        "pose": _pose_dict(pose),
        "pose_rotation_error_deg": rotation_error_deg(pose.R, item.R),
        "pose_translation_error": float(np.linalg.norm(pose.t - item.t)),
        "solver_covered": solver_covered,
        "outside_region": list(b.outside_region),
        "seconds": time.perf_counter() - t0,
    }


def pose_records(model, item: PoseInput, input_size: int, settings: dict, seed: int) -> dict:
    """All ε records of one image (median smoothing) or its one candidate-set record (milp)."""
    if settings["certifier"] == "milp":
        if item.candidates is None:  # the verifier gave this image no set: no pose statement
            reason = f"no certified keypoint set: {item.omitted}"
            return {"records": [{"eps": settings["milp_eps"], "verdict": "abstain", "reason": reason}]}
        cands = item.candidates
        centre = np.stack([c.mean(0) for c in cands])
        rec = bound_record(item, cands, centre, settings)
        head = {"eps": settings["milp_eps"], "candidates": [c.tolist() for c in cands]}
        if item.notes:
            head["set_notes"] = list(item.notes)
        return {"records": [{**head, **rec}]}
    from .rs_keypoints import certify_instance

    cert = certify_instance(
        model,
        item.instance,
        input_size,
        settings["eps"],
        settings["sigma"],
        settings["n"],
        settings["alpha"],
        settings["batch_size"],
        seed,
    )
    median = np.asarray(cert["median"], np.float64)
    records = []
    for e in settings["eps"]:
        c = cert["eps"][repr(float(e))]
        head = {"eps": float(e), "lower": c["lower"], "upper": c["upper"], "median": cert["median"]}
        lo = np.array([[-np.inf if v is None else v for v in row] for row in c["lower"]])
        hi = np.array([[np.inf if v is None else v for v in row] for row in c["upper"]])
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            records.append({**head, "verdict": "abstain"})
            continue
        records.append({**head, **bound_record(item, (lo, hi), np.clip(median, lo, hi), settings)})
    return {"records": records, "seconds_sampling": cert["seconds_sampling"]}


def pose_unit(state: dict, unit) -> dict:
    """Unit of ``geo-rs keypoint pose-bound``: payload = :class:`PoseInput`."""
    return pose_records(state["model"], unit.payload, state["input_size"], state, unit.seed)


def summary_rows(per_image: list[dict]) -> list[dict]:
    """Per ε: images, certified / not certified / abstain fractions, median bounds (over bounded images)."""
    by_eps: dict[float, list[dict]] = {}
    for result in per_image:
        for r in result["records"]:
            by_eps.setdefault(r["eps"] if r["eps"] is not None else math.nan, []).append(r)
    rows = []
    for e in sorted(by_eps, key=lambda v: (math.isnan(v), v)):
        recs = by_eps[e]
        bounded = [r for r in recs if r["verdict"] != "abstain"]

        def med(key: str, bounded=bounded) -> float | None:
            return float(np.median([r[key] for r in bounded])) if bounded else None

        rows.append(
            {
                "eps": None if math.isnan(e) else e,
                "images": len(recs),
                "certified": sum(r["verdict"] == "certified" for r in recs) / len(recs),
                "abstain": sum(r["verdict"] == "abstain" for r in recs) / len(recs),
                "median_rotation_deg": med("rotation_deg"),
                "median_translation": med("translation"),
                "median_translation_percent": med("translation_percent"),
                "converged": sum(bool(r.get("converged")) for r in bounded),
                "solver_covered": sum(bool(r.get("solver_covered")) for r in bounded),
            }
        )
    return rows
