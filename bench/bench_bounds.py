"""Bound propagation on the ~2 M-parameter MNIST-canvas box detector (IBP-IoU paper, FIELD-NOTES).

Per-image time and mean bound width of IBP / CROWN-IBP / CROWN for white noise, brightness and contrast
at eps = 0.002, plus the width of the unfused IBP brightness encoding (how the IoU paper's public code
did it) and the empirical spread from sampling. Ratios are against the baseline "IBP, white noise",
measured in the same run.

    python bench/bench_bounds.py [--images 4] [--eps 0.002] [--threads 2] [--out runs/bench/bounds.json]

Uses ``keypoint.box.model.MnistBoxCNN`` with the trained weights ``runs/box/mnist_box.pt`` (or
``runs/box/model.pt``) when present, MNIST canvases from ``keypoint.box.data.mnist_canvas`` when
importable; otherwise the same architecture with random weights (noted in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geo_rs import Brightness, Contrast, WhiteNoise, layer_bounds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_model() -> tuple[nn.Module, str]:
    """The MNIST-canvas detector of the box study: trained weights if `geo-rs box train` wrote them."""
    from keypoint.box.model import MnistBoxCNN, load_detector

    path = ROOT / "runs/box/mnist_box.pt"
    if path.is_file():
        return load_detector(path)[0], f"MnistBoxCNN, trained weights {path.relative_to(ROOT)}"
    torch.manual_seed(0)
    return MnistBoxCNN().eval(), "MnistBoxCNN, RANDOM weights (run `geo-rs box train` first for trained ones)"


def load_images(n: int) -> tuple[torch.Tensor, str]:
    from keypoint.box.data import mnist_canvas

    return mnist_canvas(n, split="test", seed=0)[0], "MNIST canvases (test split)"


def empirical_width(model: nn.Module, x: torch.Tensor, pert, n: int = 200) -> float:
    with torch.no_grad():
        ys = torch.stack([model(pert.sample(x, 1)[0]) for _ in range(n)])
    return float((ys.amax(0) - ys.amin(0)).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--eps", type=float, default=0.002)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="IBP,CROWN-IBP,CROWN")
    ap.add_argument("--out", default="runs/bench/bounds.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, model_src = load_model()
    x, data_src = load_images(args.images)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {model_src} ({n_params / 1e6:.2f} M parameters); data: {data_src}; "
        f"{args.images} images, eps={args.eps}, threads={args.threads}, load average {os.getloadavg()[0]:.1f}"
    )
    perts = {
        "white noise": WhiteNoise(args.eps),
        "brightness": Brightness(args.eps),
        "contrast": Contrast(args.eps),
    }
    rows = []
    for pname, pert in perts.items():
        emp = empirical_width(model, x, pert)
        for method in args.methods.split(","):
            layer_bounds(model, x[:1], pert, method)  # build + cache the BoundedModule (not timed)
            t0 = time.perf_counter()
            res = layer_bounds(model, x, pert, method)
            sec = (time.perf_counter() - t0) / len(x)
            rows.append(
                dict(
                    perturbation=pname,
                    method=method,
                    seconds_per_image=sec,
                    mean_width=float(res.output.width.mean()),
                    empirical_width=emp,
                    pieces=res.n_pieces,
                    fused=res.fused,
                )
            )
        if pname != "white noise":
            t0 = time.perf_counter()
            res = layer_bounds(model, x, pert, "IBP", fuse=False)
            sec = (time.perf_counter() - t0) / len(x)
            rows.append(
                dict(
                    perturbation=pname,
                    method="IBP (unfused, IoU-paper style)",
                    seconds_per_image=sec,
                    mean_width=float(res.output.width.mean()),
                    empirical_width=emp,
                    pieces=res.n_pieces,
                    fused=False,
                )
            )
    base = next(r for r in rows if r["perturbation"] == "white noise" and r["method"] == "IBP")
    print(
        f"baseline = IBP, white noise: {base['seconds_per_image'] * 1e3:.1f} ms/image, "
        f"mean width {base['mean_width']:.4g} px"
    )
    print(
        f"{'perturbation':12s} {'method':32s} {'ms/img':>8s} {'x base':>7s} {'width':>10s} {'x base':>7s} "
        f"{'x empirical':>11s}"
    )
    for r in rows:
        print(
            f"{r['perturbation']:12s} {r['method']:32s} {r['seconds_per_image'] * 1e3:8.1f} "
            f"{r['seconds_per_image'] / base['seconds_per_image']:7.2f} {r['mean_width']:10.4g} "
            f"{r['mean_width'] / base['mean_width']:7.3f} "
            f"{r['mean_width'] / max(r['empirical_width'], 1e-12):11.1f}"
        )
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                model=model_src,
                data=data_src,
                eps=args.eps,
                images=args.images,
                load_average=os.getloadavg()[0],
                rows=rows,
            ),
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
