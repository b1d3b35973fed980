"""Issue 10's study: coupled vs decoupled keypoint verification on the verification detector.

For each (perturbation, ε, reachable level, solver) a dataset run of ``keypoint.verify.run`` (resumable
per unit, outputs under ``runs/``) over the first ``--images`` validation crops with l1 specs at every δ
of ``--deltas``, both methods; then every CERTIFIED instance is attacked: ``--samples`` random points of
the set (shared by all specs of a unit: each sample's keypoints are checked against every certified
spec) plus PGD toward every non-clean candidate of each keypoint under the strictest certified spec.
Writes ``OUT/study.json`` and the Markdown table ``keypoint/VERIFY_STUDY.md`` (``--md``).

    /work/bin/heavy /work/bin/wtpy scripts/kp_verify_study.py --checkpoint runs/kp_verify/detector_16.pt \\
        --images 6 --out runs/kp_verify_study --budget-s 1100
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keypoint import KeypointSpec  # noqa: E402
from keypoint.verify.attack import argmax_uv, pgd_toward  # noqa: E402
from keypoint.verify.detector import DataSection, load_detector, make_crops  # noqa: E402
from keypoint.verify.run import RunConfig, make_perturbation, run_dataset, summarize, write_outputs  # noqa: E402

EPS = {"noise": [0.0005, 0.001, 0.002], "brightness": [0.002, 0.005, 0.01], "contrast": [0.005, 0.01, 0.02]}
EPS_TOY = {"noise": [0.02, 0.05, 0.1], "brightness": [0.1, 0.3, 0.5], "contrast": [0.2, 0.5, 0.8]}
# The IBP-trained quick detector certifies everything at EPS (one candidate per keypoint): a wider grid.
EPS_WIDE = {"noise": [0.002, 0.005, 0.01], "brightness": [0.01, 0.03, 0.06], "contrast": [0.02, 0.05, 0.1]}
GRIDS = {"default": EPS, "toy": EPS_TOY, "wide": EPS_WIDE}
ARITH = {"rigorous": "float32 model", "float64": "model run in float64",
         "heuristic": "real-arithmetic network"}


def configs(args) -> list[tuple[str, float, str, str]]:
    """Priority order (cut by the time budget from the end): every (perturbation, ε) at the first level with
    the first solver, then the other solvers, then the next level."""
    grid = GRIDS["toy" if args.checkpoint == "toy" else args.grid]
    if args.configs:  # an explicit list, in its order: PERTURBATION:EPS_INDEX:LEVEL:SOLVER
        out = []
        for text in args.configs:
            pert, j, level, solver = text.split(":")
            out.append((pert, grid[pert][int(j)], level, solver))
        return out
    return [(pert, grid[pert][j], level, solver) for level in args.levels for solver in args.solvers
            for pert in args.perturbations for j in args.eps_index]


@torch.no_grad()
def _sample_keypoints(model, x, pert, n: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    uv = []
    for s in range(0, n, 256):
        pts = pert.sample(x[None], min(256, n - s), generator=gen)[:, 0]
        uv.append(argmax_uv(model(pts)))
    return np.concatenate(uv)


def attack_certified(model, images, records: list[dict], n_samples: int, seed: int = 0,
                     cache: dict | None = None) -> dict:
    """Attack every certified record; returns counts (attacked, violations, samples). ``cache`` keeps the
    sampled keypoints per (image, perturbation, ε) for the other levels / solvers of the same set."""
    units: dict[tuple, list[dict]] = {}
    for r in records:
        if r["verdict"] == "certified":
            units.setdefault((r["image"], r["perturbation"], r["eps"]), []).append(r)
    attacked = violations = 0
    for (i, pname, eps), recs in units.items():
        x = images[i]
        pert = make_perturbation(pname, eps)
        clean = np.asarray(recs[0]["keypoints"])
        specs = {r["spec"]: KeypointSpec.parse(_spec_text(r["spec"])) for r in recs}
        key = (i, pname, eps)
        if cache is None or key not in cache:
            uv = _sample_keypoints(model, x, pert, n_samples, seed + i)
            if cache is not None:
                cache[key] = uv
        uv = cache[key] if cache is not None else uv
        bad = {s for s, sp in specs.items() if any(sp.violated(clean, u) for u in uv)}
        strict = min(specs, key=lambda s: specs[s].delta)
        cands = [np.asarray(c) for c in recs[0]["candidates"]]
        for k, ck in enumerate(cands):
            for c in ck[1:][-3:]:  # up to 3 candidates per keypoint (the last survivors)
                t = clean.copy()
                t[k] = c
                hit = pgd_toward(model, x[None], pert, t, specs[strict], clean, 1.0, steps=20)
                if hit is not None:
                    bad |= {s for s, sp in specs.items() if sp.violated(clean, hit.keypoints)}
        attacked += len(recs)
        violations += sum(r["spec"] in bad for r in recs)
    return {"attacked": attacked, "violations": violations, "samples_per_unit": n_samples}


def attacked_model(model, images: list, float32: str) -> tuple:
    """The model (and images) whose certificates are attacked: a float64 copy for ``--float32 float64``
    (what those certificates cover), else the float32 model."""
    from keypoint.verify.wrappers import in_dtype

    return in_dtype(model, images, torch.float64 if float32 == "float64" else torch.float32)


def _spec_text(described: str) -> str:
    """``l1(delta=4, heatmap px)`` → ``l1:4``."""
    kind = described.split("(")[0]
    delta = described.split("delta=")[1].split(",")[0]
    return f"{kind}:{delta}"


def toy_detector(n_images: int, seed: int = 0):
    """The toy detector of :mod:`keypoint.verify.toy` (2 keypoints, 16x16 images, 8x8 heatmaps) trained
    for 300 steps, and ``n_images`` toy images — for a study without a trained verification detector."""
    from keypoint.verify.toy import toy_images, train_toy

    gen = torch.Generator().manual_seed(seed)
    net = train_toy(300, seed, gen)
    return net, list(toy_images(n_images, gen)[0])  # the images continue the training generator


def load_study(a):
    if a.checkpoint == "toy":
        return toy_detector(a.images)
    model = load_detector(a.checkpoint)
    ck = torch.load(a.checkpoint, weights_only=False, map_location="cpu")
    data = DataSection(**ck["config"]["data"]).model_copy(update={"val_images": a.images})
    return model, list(make_crops(data, "val")["image"][: a.images])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/kp_verify/detector_16.pt",
                   help="detector, or 'toy' (see toy_detector) (default %(default)s)")
    p.add_argument("--images", type=int, default=6, help="validation crops (default %(default)s)")
    p.add_argument("--deltas", default="0,1,2,4,8,16", help="l1 budgets δ, heatmap px (default %(default)s)")
    p.add_argument("--perturbations", nargs="+", default=["brightness", "contrast", "noise"])
    p.add_argument("--levels", nargs="+", default=["interval", "linear"])
    p.add_argument("--eps-index", nargs="+", type=int, default=[0, 1, 2],
                   help="which of the three ε of each perturbation's grid (default 0 1 2)")
    p.add_argument("--grid", default="default", choices=["default", "wide"],
                   help="ε grid per perturbation (toy: always the toy grid) (default %(default)s)")
    p.add_argument("--solvers", nargs="+", default=["cbc", "highs"], choices=["cbc", "highs"],
                   help="MILP solvers, each over every level and (perturbation, ε) (default cbc highs)")
    p.add_argument("--configs", nargs="+", default=None,
                   help="explicit configs PERTURBATION:EPS_INDEX:LEVEL:SOLVER in this order, instead of the "
                        "product of the options above (default: the product)")
    p.add_argument("--bounds-method", default="CROWN-IBP", help="(default %(default)s)")
    p.add_argument("--time-limit", type=float, default=20.0, help="MILP seconds per instance (default 20)")
    p.add_argument("--samples", type=int, default=10_000,
                   help="random samples per certified unit (default 1e4)")
    p.add_argument("--budget-s", type=float, default=1100.0,
                   help="stop starting configs after (s; default 1100)")
    p.add_argument("--float32", default="rigorous", choices=["rigorous", "float64", "heuristic"],
                   help="arithmetic the certificates cover: rigorous (the float32 model), float64 (the model "
                        "run in float64; the attack then runs that model) or heuristic (real arithmetic "
                        "only) (default %(default)s)")
    p.add_argument("--out", default="runs/kp_verify_study")
    p.add_argument("--md", default="keypoint/VERIFY_STUDY.md")
    p.add_argument("--report", action="store_true",
                   help="only rebuild the Markdown table from every config folder under --out (results.json, "
                        "attack.json), e.g. after several resumed invocations")
    a = p.parse_args(argv)
    if a.report:
        return report(a)
    torch.set_num_threads(1)
    t0 = time.time()
    model, images = load_study(a)
    specs = [KeypointSpec.l1(float(d)).__dict__.copy() for d in a.deltas.split(",")]
    rows, attack, done, samples = [], {"attacked": 0, "violations": 0}, [], {}
    for pert, eps, level, solver in configs(a):
        if time.time() - t0 > a.budget_s:
            break
        cfg = RunConfig([pert], {pert: [eps]}, specs, [level], ["coupled", "decoupled"], a.bounds_method,
                        [solver], a.time_limit, {"n_random": 64}, False, a.float32)
        out_dir = Path(a.out) / f"{pert}_{eps:g}_{level}_{solver}"
        res = run_dataset(model, images, None, cfg, out_dir, progress=False)
        write_outputs(out_dir, res["records"], {"checkpoint": a.checkpoint})
        att = attack_certified(*attacked_model(model, images, a.float32), res["records"], a.samples,
                               cache=samples)
        (out_dir / "attack.json").write_text(json.dumps(att))  # per config: --report sums the latest
        attack = {k: attack[k] + att[k] for k in ("attacked", "violations")}
        rows += summarize(res["records"])
        done.append({"perturbation": pert, "eps": eps, "level": level, "solver": solver, **att,
                     "records": len(res["records"])})
        print(done[-1], f"{time.time() - t0:.0f}s", flush=True)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = {"rows": rows, "attack": attack, "configs": done, "images": a.images, "uptime": load,
              "seconds": time.time() - t0, "float32": a.float32, "checkpoint": a.checkpoint}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "study.json").write_text(json.dumps(result, indent=1))
    write_markdown(result, a)
    return 0


def report(a) -> int:
    """The table over every config folder under ``--out`` (each invocation's study.json covers itself
    only); attack counts from each folder's attack.json (the latest attack of that config)."""
    from keypoint.verify.run import summarize

    rows, attack, configs, arith = [], {"attacked": 0, "violations": 0}, 0, set()
    for folder in sorted(Path(a.out).glob("*/results.json")):
        records = json.loads(folder.read_text())["records"]
        rows += summarize(records)
        arith |= {r.get("arithmetic", "unrecorded") for r in records}
        configs += 1
        att = folder.parent / "attack.json"
        if att.exists():
            got = json.loads(att.read_text())
            attack = {k: attack[k] + got[k] for k in attack}
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    write_markdown({"rows": rows, "attack": attack, "seconds": float("nan"), "uptime": load,
                    "arithmetic": sorted(arith)}, a)
    print(f"{configs} configs, {len(rows)} rows, attack {attack} -> {a.md}.table")
    return 0


def write_markdown(result: dict, a) -> None:
    lines = [f"Checkpoint `{a.checkpoint}`, {a.images} validation crops, l1 specs δ ∈ {{{a.deltas}}} "
             "heatmap px, "
             f"{a.bounds_method}, float32 option {a.float32} (certificates for the "
             f"{ARITH[a.float32]}), MILP limit {a.time_limit:g} s; "
             f"{result['seconds']:.0f} s total; load `{result['uptime']}`.", "",
             f"Soundness: {result['attack']['attacked']} certified instances attacked ({a.samples} random "
             f"samples per (image, perturbation, ε) + PGD toward up to 3 candidates per keypoint): "
             f"{result['attack']['violations']} violations.", "",
             *([f"Arithmetic the records' certificates cover: {', '.join(result['arithmetic'])}.", ""]
               if "arithmetic" in result else []),
             "| perturbation | ε | level | solver | δ | coupled cert/cex/unk | decoupled cert/cex/unk | "
             "coupled median s | coupled p90 s |", "|---|---|---|---|---|---|---|---|---|"]
    by: dict[tuple, dict] = {}
    for r in result["rows"]:
        delta = float(r["spec"].split("delta=")[1].split(",")[0])
        by.setdefault((r["perturbation"], r["eps"], r["reachable"], r["solver"], delta), {})[r["method"]] = r
    for key in sorted(by):
        c, d = by[key].get("coupled"), by[key].get("decoupled")
        f = lambda r: "–" if r is None else f"{r['certified']}/{r['counterexample']}/{r['unknown']}"  # noqa: E731
        lines.append(f"| {key[0]} | {key[1]:g} | {key[2]} | {key[3]} | {key[4]:g} | {f(c)} | {f(d)} | "
                     f"{c['median_s']:.2f} | {c['p90_s']:.2f} |" if c else "")
    Path(a.md + ".table").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
