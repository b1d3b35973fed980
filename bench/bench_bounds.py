"""Bound propagation on the ~2 M-parameter MNIST-canvas box detector (IBP-IoU paper, FIELD-NOTES).

Per-image time and mean bound width of IBP / CROWN-IBP / CROWN for white noise, brightness and contrast
at eps = 0.002, plus the width of the unfused IBP brightness encoding (how the IoU paper's public code
did it) and the empirical spread from sampling. Ratios are against the baseline "IBP, white noise",
measured in the same run.

    python bench/bench_bounds.py [--images 4] [--eps 0.002] [--threads 2] [--out runs/bench/bounds.json]

``--cache-cost`` instead measures what dropping the cache of bounded models costs (issue 9): per call,
today's ``output_bounds`` (fresh copy + fresh bounded module every call) against the cached version of
commit ``--legacy-ref`` (loaded from git; timed in its steady state, i.e. every call a cache hit), on the
same model, images and method, in the same run; it also checks both give the same bounds.
``--quick`` uses two tiny nets only.

    python bench/bench_bounds.py --cache-cost [--quick] [--threads 1] [--repeats 5]

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


def legacy_module(ref: str, name: str):
    """``geo_rs/bounds/<name>.py`` of commit ``ref``, loaded from git as a sibling module of today's
    ``geo_rs.bounds`` (its relative imports resolve to today's package)."""
    import importlib.util
    import subprocess
    import types

    path = f"geo_rs/bounds/{name}.py"
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    full = f"geo_rs.bounds._legacy_{name}"
    module = types.ModuleType(full)
    module.__spec__, module.__package__ = importlib.util.spec_from_loader(full, loader=None), "geo_rs.bounds"
    sys.modules[full] = module
    exec(compile(src, f"{ref}:{path}", "exec"), module.__dict__)
    return module


def tiny_nets() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    conv = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4),
    ).eval()  # fmt: skip
    mlp = nn.Sequential(
        nn.Flatten(), nn.Linear(144, 32), nn.Sigmoid(), nn.Linear(32, 16), nn.Sigmoid(), nn.Linear(16, 4)
    ).eval()
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    return {"tiny CNN (12x12, maxpool)": (conv, x), "sigmoid MLP (12x12)": (mlp, x)}


def grid_nets() -> dict[str, nn.Sequential]:
    """Small 12x12 architectures of the crash grid (random weights)."""
    c, r, mp, fl, lin, sig = nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear, nn.Sigmoid
    return {
        "conv-maxpool-conv": lambda: nn.Sequential(
            c(1, 4, 3, padding=1), r(), mp(2), c(4, 4, 3), r(), fl(), lin(64, 16), r(), lin(16, 4)
        ),
        "conv-sigmoid x2": lambda: nn.Sequential(c(1, 2, 3), sig(), c(2, 2, 3), sig(), fl(), lin(128, 3)),
        "conv-sigmoid-maxpool": lambda: nn.Sequential(c(1, 2, 3, padding=1), sig(), mp(2), fl(), lin(72, 3)),
        "2x conv-maxpool": lambda: nn.Sequential(
            c(1, 2, 3, padding=1), r(), mp(2), c(2, 2, 3, padding=1), r(), mp(2), fl(), lin(18, 3)
        ),
        "box-like": lambda: nn.Sequential(
            c(1, 4, 3, padding=1),
            r(),
            mp(2),
            c(4, 4, 3, padding=1),
            r(),
            mp(2),
            fl(),
            lin(36, 8),
            r(),
            lin(8, 4),
        ),
        "maxpool first": lambda: nn.Sequential(c(1, 2, 3, padding=1), mp(2), r(), fl(), lin(72, 3)),
        "strided": lambda: nn.Sequential(c(1, 3, 3, stride=2), r(), mp(2), c(3, 2, 2), r(), fl(), lin(2, 3)),
        "sigmoid-conv-maxpool": lambda: nn.Sequential(
            c(1, 2, 3, padding=1), sig(), mp(2), c(2, 2, 3), sig(), fl(), lin(32, 3)
        ),
        "tanh-conv": lambda: nn.Sequential(c(1, 2, 3), nn.Tanh(), c(2, 2, 3), r(), fl(), lin(128, 3)),
        "sigmoid MLP": lambda: nn.Sequential(c(1, 2, 3), sig(), fl(), lin(200, 8), sig(), lin(8, 3)),
    }


def grid_case(make, pert, method: str, b: int) -> tuple[str, str]:
    """``(outcome, detail)`` of one grid case: ok / UNSOUND (with the strategy), UnsupportedModelError or
    raw <exception> (with the message)."""
    from geo_rs import UnsupportedModelError, layer_bounds

    torch.manual_seed(0)
    net = make().eval()
    x = torch.rand(b, 1, 12, 12, generator=torch.Generator().manual_seed(b))
    x[:, :, :3], x[:, :, -1] = 0.0, 1.0
    try:
        res = layer_bounds(net, x, pert, method, alpha_iterations=2)
    except UnsupportedModelError as exc:
        return "UnsupportedModelError", str(exc)[:160]
    except Exception as exc:  # what issue 9 is about: must not happen
        return f"raw {type(exc).__name__}", str(exc)[:160]
    with torch.no_grad():
        ys = net(pert.sample(x, 300, generator=torch.Generator().manual_seed(0)).flatten(0, 1)).reshape(
            300, b, -1
        )
    ok = bool(((ys >= res.output.lower - 1e-5) & (ys <= res.output.upper + 1e-5)).all())
    return ("ok" if ok else "UNSOUND"), res.strategy


def crash_grid(args) -> int:
    from collections import Counter

    perts = {
        "noise": WhiteNoise(0.02),
        "brightness": Brightness(0.05),
        "contrast": Contrast(0.1),
        "all": Contrast(0.05) + Brightness(0.02) + WhiteNoise(0.005),
    }
    counts, strategies = Counter(), Counter()
    print(f"crash grid: threads={args.threads}, load {os.getloadavg()[0]:.1f}")
    for name, make in grid_nets().items():
        for pname, pert in perts.items():
            for method in ["IBP", "CROWN-IBP", "CROWN", "alpha-CROWN"]:
                for b in [1, 3, 20]:
                    outcome, detail = grid_case(make, pert, method, b)
                    counts[outcome] += 1
                    if outcome in ("ok", "UNSOUND"):
                        strategies[detail] += 1
                    if outcome != "ok":
                        print(f"  {name}, {pname}, {method}, batch {b}: {outcome}: {detail}")
        print(f"  {name}: {dict(counts)}", flush=True)
    print(f"outcomes: {dict(counts)}")
    print(f"strategies used: {dict(strategies)}")
    return 0 if set(counts) <= {"ok", "UnsupportedModelError"} else 1


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def cache_cost(args) -> int:
    from geo_rs import output_bounds

    legacy = legacy_module(args.legacy_ref, "output_bounds").output_bounds
    cases = tiny_nets()
    if not args.quick:
        model, src = load_model()
        print(f"box detector: {src}")
        label = "MnistBoxCNN (random weights)" if "RANDOM" in src else "MnistBoxCNN (trained)"
        cases[label] = (model, load_images(args.images)[0])
    perts = {"white noise": WhiteNoise(args.eps), "brightness": Brightness(args.eps)}
    print(
        f"cost of no cache: today's output_bounds vs the cached one of {args.legacy_ref} (steady state: "
        f"cache hits); median of {args.repeats}; threads={args.threads}, load {os.getloadavg()[0]:.1f}"
    )
    head = ("model", "perturbation", "method", "new ms", "cached ms", "ratio", "max |diff|")
    print(
        f"{head[0]:44s} {head[1]:12s} {head[2]:10s} {head[3]:>8s} {head[4]:>9s} {head[5]:>6s} {head[6]:>10s}"
    )
    rows = []
    for mname, (model, x) in cases.items():
        for pname, pert in perts.items():
            for method in args.methods.split(","):
                call = (model, x, pert, method)
                lo_old, hi_old = legacy(*call)  # builds and caches
                t_old = timed(lambda c=call: legacy(*c), args.repeats)
                lo, hi = output_bounds(*call)
                t_new = timed(lambda c=call: output_bounds(*c), args.repeats)
                diff = float(torch.maximum((lo - lo_old).abs(), (hi - hi_old).abs()).max())
                rows.append(dict(model=mname, perturbation=pname, method=method, new_s=t_new, cached_s=t_old,
                                 ratio=t_new / t_old, max_abs_diff=diff))  # fmt: skip
                print(
                    f"{mname:44s} {pname:12s} {method:10s} {t_new * 1e3:8.1f} {t_old * 1e3:9.1f} "
                    f"{t_new / t_old:6.2f} {diff:10.2e}"
                )
    ratios = sorted(r["ratio"] for r in rows)
    print(f"ratio new/cached: median {ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    from geo_rs.atomic import write_json

    write_json(out, dict(legacy_ref=args.legacy_ref, threads=args.threads, load_average=os.getloadavg()[0],
                         rows=rows))  # fmt: skip
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4, help="images per call (default 4)")
    ap.add_argument("--eps", type=float, default=0.002, help="perturbation size (pixel units; default 0.002)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument(
        "--methods", default="IBP,CROWN-IBP,CROWN", help="comma-separated (default IBP,CROWN-IBP,CROWN)"
    )
    ap.add_argument(
        "--out", default=None, help="JSON output (default runs/bench/bounds.json or bounds_cache.json)"
    )
    ap.add_argument(
        "--cache-cost", action="store_true", help="measure the cost of dropping the cache (issue 9)"
    )
    ap.add_argument(
        "--legacy-ref", default="a7ab383", help="git commit of the cached output_bounds (default a7ab383)"
    )
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed calls per case for --cache-cost (default 5)"
    )
    ap.add_argument("--quick", action="store_true", help="--cache-cost on the tiny nets only")
    ap.add_argument("--crash-grid", action="store_true", help="issue 9's coverage grid (see above)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.crash_grid:
        return crash_grid(args)
    if args.cache_cost:
        args.out = args.out or "runs/bench/bounds_cache.json"
        return cache_cost(args)
    args.out = args.out or "runs/bench/bounds.json"
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
            layer_bounds(model, x[:1], pert, method)  # warm-up (imports, allocator); nothing is cached
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
