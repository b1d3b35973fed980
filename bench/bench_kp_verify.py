"""Keypoint verification on the verification detector (8 keypoints, 64x64 crops, 16x16 / 32x32 heatmaps):
verdicts, binaries, surviving candidates and seconds per instance, per perturbation, reachable level and
MILP solver; coupled vs decoupled.

An *instance* is one (image, perturbation, ε, spec δ, method) verification; its seconds are those of a
standalone ``verify_keypoints`` call (the reachable heatmaps, shared by every δ of an image in
:func:`keypoint.verify.verify_instance`, are counted in full for each). Baselines in the same run: the
``interval`` level (time ratios of the other levels) and CBC (time ratios of HiGHS).

    python bench/bench_kp_verify.py --checkpoint runs/kp_verify/detector_32.pt [--images 5] [--quick]
        [--eps noise=0.001,brightness=0.002,contrast=0.01] [--deltas 0,2,4,8] [--levels interval,linear]
        [--bounds CROWN-IBP] [--solvers cbc,highs] [--time-limit 20] [--threads 1] [--out runs/bench/kpv.json]

Train the detector first: ``python -m keypoint.verify.detector --out runs/kp_verify`` (see
configs/keypoint/verify_heatmap.yaml).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geo_rs import Brightness, Contrast, WhiteNoise  # noqa: E402
from geo_rs.atomic import write_json  # noqa: E402
from keypoint import KeypointSpec  # noqa: E402
from keypoint.verify import verify_instance  # noqa: E402
from keypoint.verify.detector import DetectorConfig, load_detector, make_crops  # noqa: E402

PERTS = {"noise": WhiteNoise, "brightness": Brightness, "contrast": Contrast}


def parse_eps(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        name, value = part.split("=")
        if name not in PERTS:
            raise SystemExit(f"--eps: unknown perturbation {name!r}; use {', '.join(PERTS)}")
        out[name] = float(value)
    return out


def run(args) -> list[dict]:
    model = load_detector(args.checkpoint)
    data_cfg = DetectorConfig().data.model_copy(update={"val_images": max(args.images, 1)})
    images = make_crops(data_cfg, "val")["image"][: args.images]
    specs = [KeypointSpec.l1(d) for d in args.deltas]
    rows = []
    for name, eps in args.eps.items():
        pert = PERTS[name](eps)
        for level in args.levels:
            for solver in args.solvers:
                for i, img in enumerate(images):
                    t0 = time.perf_counter()
                    res = verify_instance(
                        model,
                        img,
                        pert,
                        specs,
                        reachable=level,
                        bounds_method=args.bounds,
                        solver=solver,
                        time_limit=args.time_limit,
                        float32=args.float32,
                    )
                    wall = time.perf_counter() - t0
                    for r, (d, method) in zip(
                        res, [(d, m) for d in args.deltas for m in ("coupled", "decoupled")]
                    ):
                        rows.append(
                            {
                                "perturbation": name,
                                "eps": eps,
                                "level": level,
                                "solver": solver,
                                "image": i,
                                "delta": d,
                                "method": method,
                                "verdict": r.verdict.name,
                                "seconds": r.seconds,
                                "n_binaries": r.n_binaries,
                                "candidates": r.n_candidates,
                                "proof": r.proof,
                                "notes": r.notes,
                                "bounds_method": r.bounds_method,
                                "image_wall": wall,
                            }
                        )
                    print(
                        f"{name}={eps:g} {level:8s} {solver:5s} img{i}: "
                        + " ".join(f"{r.verdict.name[:4]}" for r in res)
                        + f"  cand={sum(res[0].n_candidates)} {wall:.1f}s",
                        flush=True,
                    )
    return rows


def summarise(rows: list[dict], args) -> str:
    lines = [
        "| perturbation | ε | level | solver | method | CERT | CEX | UNK | median s | p90 s | "
        "median binaries | median candidates |",
        "|" + "---|" * 12,
    ]
    base: dict = {}
    for key in sorted({(r["perturbation"], r["eps"], r["level"], r["solver"], r["method"]) for r in rows}):
        sel = [r for r in rows if (r["perturbation"], r["eps"], r["level"], r["solver"], r["method"]) == key]
        sec = np.array([r["seconds"] for r in sel])
        counts = {v: sum(r["verdict"] == v for r in sel) for v in ("CERTIFIED", "COUNTEREXAMPLE", "UNKNOWN")}
        lines.append(
            f"| {key[0]} | {key[1]:g} | {key[2]} | {key[3]} | {key[4]} | {counts['CERTIFIED']} | "
            f"{counts['COUNTEREXAMPLE']} | {counts['UNKNOWN']} | {np.median(sec):.2f} | "
            f"{np.percentile(sec, 90):.2f} | {np.median([r['n_binaries'] for r in sel]):.0f} | "
            f"{np.median([sum(r['candidates']) for r in sel]):.0f} |"
        )
        base[key] = float(np.median(sec))
    ratios = []
    for (p, e, lvl, sv, m), med in base.items():
        ref_lvl = base.get((p, e, "interval", sv, m))
        ref_sv = base.get((p, e, lvl, "cbc", m))
        if lvl != "interval" and ref_lvl:
            ratios.append(f"{p}={e:g} {m} {sv}: {lvl}/interval median time = {med / ref_lvl:.2f}")
        if sv != "cbc" and ref_sv:
            ratios.append(f"{p}={e:g} {m} {lvl}: {sv}/cbc median time = {med / ref_sv:.2f}")
    rate = []
    for d in args.deltas:
        for m in ("coupled", "decoupled"):
            sel = [r for r in rows if r["delta"] == d and r["method"] == m]
            rate.append(f"δ={d:g} {m}: verified {sum(r['verdict'] == 'CERTIFIED' for r in sel)}/{len(sel)}")
    return "\n".join(lines + [""] + ratios + [""] + rate)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint", default="runs/kp_verify/detector_32.pt", help="trained verification detector"
    )
    p.add_argument("--images", type=int, default=5, help="validation crops (default 5)")
    p.add_argument(
        "--eps",
        type=parse_eps,
        default=parse_eps("noise=0.001,brightness=0.002,contrast=0.01"),
        help="perturbation=ε list (pixel units in [0, 1]; contrast: relative)",
    )
    p.add_argument(
        "--deltas",
        type=lambda s: [float(v) for v in s.split(",")],
        default=[0, 2, 4, 8],
        help="L1 budgets δ of the joint spec, heatmap pixels (default 0,2,4,8)",
    )
    p.add_argument(
        "--levels", type=lambda s: s.split(","), default=["interval", "linear"], help="reachable levels"
    )
    p.add_argument("--bounds", default="CROWN-IBP", help="bound method (default CROWN-IBP)")
    p.add_argument("--solvers", type=lambda s: s.split(","), default=["cbc", "highs"], help="MILP solvers")
    p.add_argument(
        "--time-limit", type=float, default=20.0, help="MILP seconds per verification (default 20)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--float32", default="rigorous", choices=["rigorous", "heuristic"],
                   help="float32 margin of the reachable sets (default rigorous)")
    p.add_argument("--quick", action="store_true", help="2 images, brightness only, CBC only")
    p.add_argument("--out", default=None, help="write rows + summary as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.eps, args.solvers = 2, {"brightness": args.eps.get("brightness", 0.002)}, ["cbc"]
    torch.set_num_threads(args.threads)

    import subprocess

    def uptime() -> str:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    start = uptime()
    print(f"uptime at start: {start}  threads: {args.threads}  bounds: {args.bounds}", flush=True)
    rows = run(args)
    model = load_detector(args.checkpoint)
    k, h = model[-1].out_channels, int(args.checkpoint.rsplit("_", 1)[-1].split(".")[0])
    med = float(np.median([r["seconds"] for r in rows])) if rows else float("nan")
    text = summarise(rows, args) + (
        f"\n\nmedian seconds per instance at {k} keypoints x {h}x{h} heatmaps (all levels, ε, δ): "
        f"{med:.2f} s "
        f"(target <= 10 s; ratio {med / 10:.2f}); uptime at start: {start}; at end: {uptime()}"
    )
    print(text)
    if args.out:
        write_json(
            args.out, {"args": {k: v for k, v in vars(args).items()}, "rows": rows, "summary": text}, indent=1
        )


if __name__ == "__main__":
    main()
