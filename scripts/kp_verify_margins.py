"""Why a verification detector does or does not verify: per perturbation, the clean top-1/top-2 logit gap,
the median IBP width of the heatmap bounds, the median rounding margin (float32 rigorous, float64 rigorous
for a ``model.double()`` deployment, or heuristic) and the candidates per keypoint that survive the
interval level (CROWN-IBP on the differences), on the first N validation crops.

    /work/bin/wtpy scripts/kp_verify_margins.py runs/kp_verify_quick2/detector_16.pt --images 2 \\
        --eps noise=0.001 brightness=0.005 contrast=0.01 [--float32 heuristic|float64]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keypoint.verify.detector import DataSection, load_detector, make_crops  # noqa: E402
from keypoint.verify.reachable import engine_bounds, flat_model, float_margin, interval_reach  # noqa: E402
from keypoint.verify.run import make_perturbation  # noqa: E402
from keypoint.verify.wrappers import in_dtype  # noqa: E402


def margins(model, images, name: str, eps: float, float32: str) -> dict:
    pert = make_perturbation(name, eps)
    # the float64 deployment: its own margin, its own clean argmax
    model, images = in_dtype(model, images, torch.float64 if float32 == "float64" else torch.float32)
    net = flat_model(model)
    gaps, widths, fms, cands = [], [], [], []
    for x in images:
        x = x[None]
        with torch.no_grad():
            hm = model(x)
        k, h, w = hm.shape[1:]
        flat = hm[0].flatten(1)
        top = flat.topk(2, -1).values
        gaps.append((top[:, 0] - top[:, 1]).numpy())
        fms.append(float(np.median(float_margin(net, x, pert, [], float32).output())))
        lo, hi, _ = engine_bounds(net, x, pert, "IBP", None, [])
        widths.append(float(np.median((hi - lo).numpy())))
        reach = interval_reach(model, x, pert, "CROWN-IBP", flat.argmax(-1).numpy(), (k, h, w), float32)
        cands.append([int(c) for c in reach.n_candidates])
    return {"perturbation": name, "eps": eps, "float32": float32,
            "gap_median": float(np.median(np.concatenate(gaps))),
            "ibp_width_median": float(np.median(widths)), "float_margin_median": float(np.median(fms)),
            "candidates_median": float(np.median(np.concatenate(cands))), "candidates": cands}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="verification-detector checkpoint (detector_16.pt / detector_32.pt)")
    p.add_argument("--images", type=int, default=2, help="validation crops (default 2)")
    p.add_argument("--eps", nargs="+", default=["noise=0.001", "brightness=0.005", "contrast=0.01"],
                   help="NAME=ε pairs (default noise=0.001 brightness=0.005 contrast=0.01)")
    p.add_argument("--float32", default="rigorous", choices=["rigorous", "float64", "heuristic"],
                   help="rounding margin: rigorous (float32 model), float64 (model.double()) or heuristic "
                        "(default rigorous)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_detector(a.checkpoint)
    ck = torch.load(a.checkpoint, weights_only=False, map_location="cpu")
    data = DataSection(**ck["config"]["data"]).model_copy(update={"val_images": a.images})
    images = make_crops(data, "val")["image"][: a.images]
    for item in a.eps:
        name, value = item.split("=")
        print(margins(model, images, name, float(value), a.float32), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
