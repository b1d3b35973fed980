"""Table and sampling checks of scripts/pose_milp_study.sh: ``python scripts/pose_milp_check.py OUT N EPS...``

Per ε (runs OUT/kpv_ε from ``keypoint verify`` and OUT/pose_ε from ``pose-bound --certifier milp``):
candidate-set sizes, certified fraction, median bounds, times, float32 notes, and two sampling checks —
``set``: argmax of the detector on sampled crops x + δ (|δ| ≤ ε: random signs, i.e. corners of the box,
and uniform) outside the verifier's candidate cells; ``pose``: PnP on random configurations of the
candidate sets whose error exceeds the certified bounds and whose pose the bound covers
(``PoseBound.covers``), plus the bound's own worst found > bound. Both must be 0.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from geo_rs import pose_error_bound, rotation_error_deg, solve_pnp
from keypoint.commands.verify import load_data, load_model
from keypoint.data.posed import load_posed

SAMPLES, CONFIGS = 256, 200


def set_violations(model, images, records, eps: float, gen) -> tuple[int, int]:
    bad = total = 0
    for rec in records:
        x = images[rec["image"]][None]
        signs = torch.randint(0, 2, (SAMPLES // 2, *x.shape[1:]), generator=gen) * 2.0 - 1
        unif = torch.rand((SAMPLES // 2, *x.shape[1:]), generator=gen) * 2 - 1
        with torch.no_grad():
            hm = model(x + eps * torch.cat([signs, unif]))["heatmaps"]
        w = hm.shape[-1]
        idx = hm.flatten(2).argmax(-1).numpy()  # (S, K)
        for ch, cells in enumerate(rec["candidates"]):
            allowed = {int(v) * w + int(u) for u, v in cells}
            bad += int(sum(i not in allowed for i in idx[:, ch]))
            total += len(idx)
    return bad, total


def pose_violations(pose_res, cams, points, rng) -> tuple[int, int, int, int]:
    bad = exceed = worst_bad = false_cert = 0
    for im in pose_res["images"]:
        r = im["records"][0]
        if r["verdict"] == "abstain":
            continue
        r = {**r, **{k: math.inf for k in ("rotation_deg", "translation") if r[k] is None}}  # JSON null: inf
        worst_bad += (r["worst_rotation_deg"] > r["rotation_deg"] + 1e-9
                      or r["worst_translation"] > r["translation"] + 1e-9)
        cam = cams[im["image_id"]]
        pts, cands = points[cam.category_id], [np.asarray(c, float) for c in r["candidates"]]
        over = []
        for _ in range(CONFIGS):
            u = np.stack([c[rng.integers(len(c))] for c in cands])
            p = solve_pnp(pts, u, cam.K)
            if rotation_error_deg(p.R, cam.R) > r["rotation_deg"] + 1e-9 or \
                    np.linalg.norm(p.t - cam.t) > r["translation"] + 1e-9:
                over.append((p, u))
        if over:  # the bound speaks only about poses in its search region: recompute it to ask
            exceed += len(over)
            false_cert += len(over) if r["verdict"] == "certified" else 0  # what a user would be told
            b = pose_error_bound(pts, cands, cam.K, (cam.R, cam.t), time_limit_s=20)
            for p, u in over:
                if b.covers(p, u):
                    bad += 1
                    print(f"VIOLATION image {im['image_id']}: rot {rotation_error_deg(p.R, cam.R):.4g}° "
                          f"> {r['rotation_deg']:.4g}° or trans {np.linalg.norm(p.t - cam.t):.4g} > "
                          f"{r['translation']:.4g} (recomputed bound {b.rotation_deg:.4g}°, "
                          f"{b.translation:.4g})", file=sys.stderr)
    return bad, exceed, worst_bad, false_cert


def main(out: str, n: int, eps_list: list[str]) -> None:
    torch.set_num_threads(1)
    out = Path(out)
    model, info = load_model(str(out / "det" / "last.pt"))
    model.eval()
    images, _, _ = load_data(str(out / "data" / "val"), n, info)
    _, cameras, points = load_posed(out / "data" / "val", load_images=False)
    cams = {c.image_id: c for c in cameras}
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    head = ("ε", "n", "median |set| per kp", "max |set|", "certified", "abstain", "med rot° bound",
            "med trans bound", "verify s/inst", "pose s/img", "f32 notes", "set viol.", "pose viol. (exceed)",
            "false certificates")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for e in eps_list:
        recs = json.loads((out / f"kpv_{e}" / "results.json").read_text())["records"]
        path = out / f"pose_{e}" / "results.json"
        pose = json.loads(path.read_text()) if path.is_file() else {"images": []}  # pose-bound failed
        rows = [im["records"][0] for im in pose["images"]]
        bounded = [r for r in rows if r["verdict"] != "abstain"]
        sizes = np.array([len(c) for r in bounded for c in r["candidates"]]  # per keypoint of the category
                         or [len(c) for r in recs for c in r["candidates"]])
        sv, st = set_violations(model, images, recs, float(e), gen)
        pv, pe, pw, pf = pose_violations(pose, cams, points, rng)
        def med(k, bounded=bounded):
            vals = [math.inf if r[k] is None else r[k] for r in bounded]
            return f"{np.median(vals):.3g}" if bounded else "-"

        notes = sum(bool(r.get("set_notes")) for r in rows)
        print(f"| {e} | {len(rows)} | {np.median(sizes):.0f} | {sizes.max()} | "
              f"{np.mean([r['verdict'] == 'certified' for r in rows] or np.nan):.2f} | "
              f"{np.mean([r['verdict'] == 'abstain' for r in rows] or np.nan):.2f} | {med('rotation_deg')} | "
              f"{med('translation')} | {np.median([r['seconds'] for r in recs]):.1f} | {med('seconds')} | "
              f"{notes}/{len(rows)} | {sv}/{st} | {pv + pw} ({pe}) | {pf} |")
    notes = {n for e in eps_list if (out / f"pose_{e}" / "results.json").is_file()
             for r in json.loads((out / f"pose_{e}" / "results.json").read_text())["images"]
             for n in r["records"][0].get("set_notes", [])}
    for note in sorted(notes):
        print(f"note: {note}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
