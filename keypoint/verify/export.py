"""Candidate sets of a ``geo-rs keypoint verify`` run as ``geo-rs keypoint pose-bound --candidates`` files.

One file per (perturbation, ε, reachable level, solver): ``OUT/candidates/<perturbation>_<ε>_<level>_
<solver>.json`` in the format :func:`keypoint.pose_certify.read_candidates` reads — per COCO image, per
keypoint of its object (in the category's keypoint order), the candidate pixels in **image** pixels
(pixel centres at integers)::

    {"eps": 0.001, "perturbation": "noise", "reachable": "linear", "solver": "CBC",
     "decode": "argmax", "images": [{"image_id": 3, "annotation": 0, "candidates": [[[x, y], ...], ...],
                                     "notes": [...]}],
     "omitted": [{"image_id": 5, "annotation": 0, "reason": "..."}]}

What is sound. A record's ``candidates`` are the reachable-heatmap survivors, computed before (and
independently of) any specification: every argmax position the detector can take on the perturbation
set, whatever the spec's verdict (``counterexample`` or ``unknown`` only say that the keypoints can — or
may — move more than the spec's δ; the set still contains where they can go). So every instance whose
reachable sets were computed is exported, with the verdicts left out. Exported sets describe the
**argmax** decode (heatmap cell centres ``(j + 0.5)·stride − 0.5`` in the crop, then the crop affine); a
detector whose keypoints are refined inside the cell (the heatmap codec's sub-pixel offset, ≤ ½ cell) is
not covered. The perturbation set is the one ``keypoint verify`` perturbs: the network's input crop.
Where the float32 rounding of the model was bounded heuristically (a structure the forward-error
analysis does not know), the record's note is copied to the entry (``notes``): its sets hold for the
real-arithmetic network, as the verdicts do. An instance is **omitted** (listed with the reason, never
given a set) when its heatmap stride is not integral, its crop affine or COCO ids are unknown, or the
detector's channel count does not match the category layout; ``pose-bound`` reports such an image as
``abstain`` ("no certified keypoint set").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["InstanceRef", "candidate_documents", "write_candidate_files"]

GROUP_KEYS = ("perturbation", "eps", "reachable", "solver")


@dataclass(frozen=True)
class InstanceRef:
    """Where a verified crop comes from: COCO ``image_id``, the annotation's index in its image, the
    category, its keypoints' heatmap ``channels`` (in the category's keypoint order) and the crop → image
    affine ``crop_to_image (2, 3)`` (float64: image pixel = A · [u, v, 1])."""

    image_id: int
    annotation: int
    category_id: int
    channels: tuple[int, ...]
    crop_to_image: np.ndarray


def _group_name(key: tuple) -> str:
    pert, eps, level, solver = key
    return f"{pert}_{eps:g}_{level}_{str(solver).lower()}"


def _entry(record: dict, ref: InstanceRef) -> tuple[dict | None, str]:
    """The image-pixel candidate sets of one instance, or ``(None, reason)``."""
    from ..data.dataset import apply_affine

    cand = record.get("candidates_input")
    if cand is None:
        return None, "the heatmap stride is not integral: candidate cells have no input-pixel centres"
    if max(ref.channels, default=-1) >= len(cand):
        return None, (f"the detector has {len(cand)} heatmaps but category {ref.category_id} uses channels "
                      f"{list(ref.channels)}")
    sets = [apply_affine(np.asarray(cand[ch], np.float64).reshape(-1, 2), ref.crop_to_image)
            for ch in ref.channels]
    notes = [n for n in record.get("notes", []) if "float32" in n]
    return {"image_id": ref.image_id, "annotation": ref.annotation,
            "candidates": [s.tolist() for s in sets], "notes": notes}, ""


def candidate_documents(records: list[dict], refs: list[InstanceRef | None]) -> dict[str, dict]:
    """``{file stem: document}`` for every (perturbation, ε, level, solver) of the run.

    ``records``: the run's per-instance records (``record["image"]`` indexes ``refs``); ``refs[i]`` is
    None when instance i has no COCO origin (e.g. ``--data synth``) — then it is omitted.
    """
    first: dict[tuple, dict[int, dict]] = {}
    for r in records:  # every spec × method of a unit shares its reachable sets: keep the first
        first.setdefault(tuple(r[k] for k in GROUP_KEYS), {}).setdefault(r["image"], r)
    docs = {}
    for key, by_image in first.items():
        images, omitted = [], []
        for i in sorted(by_image):
            ref = refs[i] if i < len(refs) else None
            if ref is None:
                omitted.append({"image": i, "reason": "no COCO image id (not a COCO dataset)"})
                continue
            entry, reason = _entry(by_image[i], ref)
            if entry is None:
                omitted.append({"image_id": ref.image_id, "annotation": ref.annotation, "reason": reason})
            else:
                images.append(entry)
        docs[_group_name(key)] = {**dict(zip(GROUP_KEYS, key)), "decode": "argmax", "images": images,
                                  "omitted": omitted}
    return docs


def write_candidate_files(out_dir: str | Path, records: list[dict],
                          refs: list[InstanceRef | None]) -> list[Path]:
    """Write :func:`candidate_documents` to ``out_dir/candidates/<stem>.json`` (atomically)."""
    from geo_rs.atomic import write_json

    folder = Path(out_dir) / "candidates"
    return [write_json(folder / f"{stem}.json", doc)
            for stem, doc in candidate_documents(records, refs).items()]
