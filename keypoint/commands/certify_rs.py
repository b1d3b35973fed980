"""``geo-rs keypoint certify-rs``: median-smoothing certificates of a keypoint detector over a dataset.

Writes into ``--out``: ``parts/*.json`` (one per instance, resumable), ``results.json`` (per instance and
ε: certified boxes, farthest distance to the truth), ``table.md`` / ``table.csv`` and ``fig_certified.png``
(fraction of keypoints certified within r pixels vs ε).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from geo_rs import checks
from geo_rs.errors import UserError


@dataclass
class RSJob:
    """What both RS keypoint commands share: model bytes, the layout, instances and settings."""

    checkpoint: Path
    checkpoint_bytes: bytes
    input_size: int
    instances: list
    settings: dict

    def fingerprint(self, *more) -> str:
        from geo_rs.parallel import fingerprint

        return fingerprint(self.checkpoint_bytes, self.settings, *more)


def check_rs_settings(args: argparse.Namespace) -> dict:
    """σ, ε list, n, α, batch size as checked numbers (one-line errors naming the flag)."""
    eps = [checks.non_negative_finite("--eps", e, "L2, pixel intensity") for e in args.eps]
    if not eps:
        raise UserError("--eps: give at least one value")
    return {
        "sigma": checks.positive_finite("--sigma", args.sigma, "pixel intensity"),
        "eps": sorted(set(eps)),
        "n": checks.count("--n", args.n, minimum=1),
        "alpha": checks.in_open_unit("--alpha", args.alpha),
        "batch_size": checks.count("--batch-size", args.batch_size, minimum=1),
    }


def load_job(args: argparse.Namespace, data_loader=None) -> tuple[RSJob, object]:
    """Checkpoint, data (``--data`` COCO folder, first ``--images``) and the instances to certify."""
    from ..checkpoints import load_checkpoint
    from ..data.coco import load_coco
    from ..data.dataset import KeypointLayout
    from ..rs_keypoints import instance_inputs

    settings = check_rs_settings(args)
    images = checks.count("--images", args.images, minimum=1) if args.images is not None else None
    folder = checks.existing_dir(args.data, "--data folder")
    _, ck = load_checkpoint(args.checkpoint)
    data = data_loader(folder) if data_loader else load_coco(folder / "annotations.json")
    if images is not None:
        data.samples = data.samples[:images]
    layout = KeypointLayout.from_dict(ck["layout"])
    size, pad = int(ck["input_size"]), float(ck["padding"])
    inst = instance_inputs(data, layout, size, pad)
    job = RSJob(Path(args.checkpoint), Path(args.checkpoint).read_bytes(), size, inst, settings)
    return job, data


def run_rs_units(job: RSJob, fn, args: argparse.Namespace, extra_settings: dict, desc: str, job_key: str):
    """Run ``fn`` (a unit function) over the job's instances on :mod:`geo_rs.parallel` (resumable)."""
    from geo_rs.parallel import ExecOptions, ResultStore, Task, Unit, fingerprint, run_units

    from ..rs_keypoints import load_model_state

    settings = {**job.settings, **extra_settings}
    describe = {"command": job_key, "checkpoint": str(job.checkpoint), **settings}
    store = ResultStore(
        args.out,
        job.fingerprint(job_key, extra_settings, args.seed),
        describe=describe,
        overwrite=args.overwrite,
    )
    units = [
        Unit(i.unit_id, payload=i, fingerprint=fingerprint(*i.fingerprint_parts()))
        for i in job.instances
    ]
    options = ExecOptions(
        workers=checks.count("--workers", args.workers),
        cluster=args.cluster,
        progress=not args.quiet and sys.stderr.isatty(),
        desc=desc,
    )
    return run_units(
        Task(fn, load_model_state, (job.checkpoint_bytes, settings)),
        units,
        options,
        store=store,
        seed=args.seed,
    )


def engine_info(run_) -> dict:
    """Where a run went (for results.json): engine, workers, wall seconds, units computed / resumed."""
    return {"name": run_.engine, "workers": run_.workers, "wall_s": run_.wall, "computed": run_.computed,
            "resumed": run_.resumed}


def run(args: argparse.Namespace) -> int:
    from geo_rs.atomic import write_json

    from ..rs_keypoints import certify_unit
    from ..rs_report import certified_fractions, plot_fractions, write_tables

    radii = [checks.positive_finite("--radii", r, "pixels") for r in args.radii]
    job, _ = load_job(args)
    s = job.settings
    run_ = run_rs_units(job, certify_unit, args, {}, "certify-rs (instances)", "certify-rs")
    results = [run_.results[i.unit_id] for i in job.instances]
    rows = certified_fractions(results, [i.visibility for i in job.instances], s["eps"], radii)
    out = Path(args.out)
    head = (
        f"# Keypoints certified within r pixels (median smoothing), {len(job.instances)} instances\n\n"
        f"σ = {s['sigma']:g}, n = {s['n']}, α = {s['alpha']:g} (joint over each instance's 2K coordinates: "
        f"with probability ≥ 1 − α all its boxes hold for every image within the L2 ball ε). A keypoint "
        f"counts when every point of its certified box is within r px of the ground truth."
    )
    md, _ = write_tables(rows, radii, out, head)
    plot_fractions(
        rows,
        radii,
        out / "fig_certified.png",
        f"median smoothing σ={s['sigma']:g}, n={s['n']}, α={s['alpha']:g}",
    )
    seconds = sum(r["seconds_sampling"] for r in results)
    write_json(
        out / "results.json",
        {
            "checkpoint": str(job.checkpoint),
            "data": str(args.data),
            "settings": s,
            "radii": radii,
            "rows": rows,
            "engine": engine_info(run_),
            "sampling_seconds": seconds,
            "instances": [
                {
                    "unit": i.unit_id,
                    "image_id": i.image_id,
                    "annotation": i.annotation,
                    "category_id": i.category_id,
                    "keypoints": i.keypoints.tolist(),
                    "visibility": i.visibility.tolist(),
                    **run_.results[i.unit_id],
                }
                for i in job.instances
            ],
        },
    )
    print(md.read_text())
    print(
        f"{run_.computed} instances computed, {run_.resumed} resumed; wrote {out}/results.json, table.md, "
        f"table.csv, fig_certified.png"
    )
    return 0
