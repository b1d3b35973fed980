"""``geo-rs keypoint pose-bound``: certified camera-pose error bounds from certified keypoints.

Writes into ``--out``: ``parts/*.json`` (one per image, resumable), ``results.json`` (per image and ε:
keypoint sets, solved pose, certified rotation / translation bounds, verdict), ``summary.md`` /
``summary.csv`` (fraction of images with a certified pose within tolerance vs ε) and
``figures/<image>.png`` for the first ``--figures`` images. See :mod:`keypoint.pose_certify`.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from geo_rs import checks
from geo_rs.errors import UserError


def _milp_refusal() -> str:
    return (
        "--certifier milp needs --candidates FILE (per image, per keypoint [x, y] candidate pixels), e.g. "
        "OUT/candidates/*.json of 'geo-rs keypoint verify CHECKPOINT --data DIR --out OUT'"
    )


def _pose_items(job, data, cameras, points, candidates):
    from ..pose_certify import PoseInput

    by_index = {i: c for i, c in enumerate(cameras)}
    items = []
    for inst in job.instances:
        cam = by_index[inst.image_index]
        if cam.category_id != inst.category_id:
            raise UserError(
                f"cameras.json: image {inst.image_id} has a camera for category {cam.category_id} "
                f"but an annotation of category {inst.category_id}"
            )
        if inst.category_id not in points:
            raise UserError(f"cameras.json: no points_3d for category {inst.category_id}")
        pts = points[inst.category_id]
        if len(pts) != len(inst.channels):
            raise UserError(
                f"cameras.json: category {inst.category_id} has {len(pts)} 3D keypoints but the "
                f"annotations have {len(inst.channels)}"
            )
        if candidates is None:
            items.append(PoseInput(inst, cam.K, cam.R, cam.t, pts))
        elif inst.image_id in candidates.sets:
            sets = candidates.sets[inst.image_id]
            notes = candidates.notes.get(inst.image_id, ())
            items.append(PoseInput(inst, cam.K, cam.R, cam.t, pts, sets, notes=notes))
        elif inst.image_id in candidates.omitted:  # reported as abstain, never given a set
            items.append(PoseInput(inst, cam.K, cam.R, cam.t, pts, omitted=candidates.omitted[inst.image_id]))
    if not items:
        raise UserError("--candidates: none of its images is in --data")
    return items


def _summary(rows: list[dict], settings: dict) -> str:
    tol = "10 % of the distance" if settings["max_trans"] is None else f"{settings['max_trans']:g}"
    lines = [
        f"# Certified pose within tolerance ({settings['certifier']}): rotation ≤ "
        f"{settings['max_rot_deg']:g}°, translation ≤ {tol}",
        "",
        f"| ε ({'L2' if settings['certifier'] == 'median-smoothing' else settings.get('milp_set', 'file')}) "
        "| images | certified | abstain | median rot bound (°) | median trans bound | "
        "median trans bound (% dist) | converged | solver answer covered |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        lines.append(
            f"| {fmt(r['eps'], 'g')} | {r['images']} | {100 * r['certified']:.1f} % | "
            f"{100 * r['abstain']:.1f} % | {fmt(r['median_rotation_deg'], '.3f')} | "
            f"{fmt(r['median_translation'], '.3f')} | {fmt(r['median_translation_percent'], '.2f')} | "
            f"{r['converged']} | {r['solver_covered']} |"
        )
    if settings["certifier"] == "median-smoothing":
        lines += [
            "",
            f"Keypoint boxes: median smoothing σ = {settings['sigma']:g}, n = {settings['n']}, "
            f"α = {settings['alpha']:g} (joint over an image's keypoints; the pose statement holds with "
            f"probability ≥ 1 − α). Bounds: geo_rs.pose_error_bound vs the ground-truth pose (sound for "
            f"stationary least-squares poses in its search region; 'solver answer covered' counts the "
            f"images whose solved pose lies in it).",
        ]
    if settings["certifier"] == "milp" and settings.get("milp_notes"):
        lines += ["", f"Keypoint sets of {settings['milp_notes']} image(s) carry the verifier's note that "
                  "float32 rounding was bounded heuristically: their pose bounds hold for the "
                  "real-arithmetic network."]
    return "\n".join(lines) + "\n"


def _write_summary(rows: list[dict], out: Path, settings: dict) -> Path:
    from geo_rs.atomic import write_text

    f = io.StringIO()
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text(out / "summary.csv", f.getvalue())
    return write_text(out / "summary.md", _summary(rows, settings))


def _settings(args: argparse.Namespace) -> dict:
    return {
        "certifier": args.certifier,
        "max_rot_deg": checks.positive_finite("--max-rot-deg", args.max_rot_deg, "degrees"),
        "max_trans": None
        if args.max_trans is None
        else checks.positive_finite("--max-trans", args.max_trans),
        "time_limit": checks.positive_finite("--time-limit", args.time_limit, "seconds"),
        "rtol": checks.non_negative_finite("--rtol", args.rtol),
    }


def run(args: argparse.Namespace) -> int:
    from geo_rs.atomic import write_json

    from ..data.posed import load_posed
    from ..pose_certify import pose_unit, read_candidates, summary_rows
    from ..pose_figure import draw_pose_bounds
    from .certify_rs import engine_info, load_job, run_rs_units

    settings = _settings(args)
    figures = checks.count("--figures", args.figures, minimum=0)
    if args.certifier == "milp" and not args.candidates:
        raise UserError(_milp_refusal())
    if args.certifier != "milp" and args.candidates:
        raise UserError("--candidates goes with --certifier milp")
    loaded = {}

    def loader(folder: Path):
        data, cameras, points = load_posed(folder)
        loaded.update(cameras=cameras, points=points)
        return data

    job, data = load_job(args, loader)
    candidates = None
    if args.certifier == "milp":
        counts = {i.image_id: len(i.channels) for i in job.instances}
        candidates = read_candidates(args.candidates, counts)
        settings["milp_eps"] = candidates.eps
        settings["milp_set"] = candidates.perturbation or "file"
        settings["milp_notes"] = sum(any("heuristic" in n for n in v) for v in candidates.notes.values())
    items = _pose_items(job, data, loaded["cameras"], loaded["points"], candidates)
    job.instances = items
    run_ = run_rs_units(job, pose_unit, args, settings, "pose-bound (images)", "pose-bound")
    results = [run_.results[i.unit_id] for i in items]
    rows = summary_rows(results)
    out = Path(args.out)
    summary = _write_summary(rows, out, {**job.settings, **settings})
    skeletons = {c.id: list(c.skeleton) for c in data.categories}
    for item, res in list(zip(items, results, strict=True))[:figures]:
        inst = item.instance
        draw_pose_bounds(
            data.samples[inst.image_index].image,
            item,
            res["records"],
            skeletons[inst.category_id],
            out / "figures" / f"{inst.unit_id}.png",
            f"image {inst.image_id} ({args.certifier})",
        )
    write_json(
        out / "results.json",
        {
            "checkpoint": str(job.checkpoint),
            "data": str(args.data),
            "settings": {**job.settings, **settings},
            "summary": rows,
            "engine": engine_info(run_),
            "images": [
                {
                    "unit": i.unit_id,
                    "image_id": i.instance.image_id,
                    "category_id": i.instance.category_id,
                    **r,
                }
                for i, r in zip(items, results, strict=True)
            ],
        },
    )
    print(summary.read_text())
    print(
        f"{run_.computed} images computed, {run_.resumed} resumed; wrote {out}/results.json, summary.md, "
        f"summary.csv, figures/ ({min(figures, len(items))} PNGs)"
    )
    return 0
