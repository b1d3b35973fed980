"""Exact MILP verification vs network width: binaries, solve time (CBC vs HiGHS), and how loose
IBP / CROWN-IBP / CROWN are against the exact extremum.

For each hidden width, a small ReLU CNN (Conv(1→w/4)-ReLU-MaxPool-Flatten-Linear(→w)-ReLU-Linear(→3))
is trained for a second on blob images; the exact max of output 0 over WhiteNoise(eps) and
Brightness(eps) is solved with both solvers. Baseline for times: CBC at the smallest width.

    python bench/bench_milp.py [--widths 8,16,32,64] [--eps 0.03] [--time-limit 60]
        [--out runs/bench/milp.json]
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

from geo_rs import Brightness, WhiteNoise, output_bounds, output_extremum  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIDE = 10


def blobs(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(n, 1, SIDE, SIDE)
    y = torch.zeros(n, 3)
    for i in range(n):
        r, c = torch.randint(0, SIDE - 4, (2,), generator=g).tolist()
        x[i, 0, r : r + 4, c : c + 4] = 0.5 + 0.5 * torch.rand(4, 4, generator=g)
        y[i] = torch.tensor([r / SIDE, c / SIDE, float(x[i].mean())])
    return x, y


def make_net(width: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    ch = max(1, width // 4)
    net = nn.Sequential(
        nn.Conv2d(1, ch, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(ch * (SIDE // 2) ** 2, width),
        nn.ReLU(),
        nn.Linear(width, 3),
    )
    g = torch.Generator().manual_seed(seed)
    x, y = blobs(512, g)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = nn.functional.mse_loss(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="8,16,32,64")
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench/milp.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = blobs(1, torch.Generator().manual_seed(123))[0]
    print(
        f"input 1x{SIDE}x{SIDE}, eps={args.eps}, time limit {args.time_limit}s, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        net = make_net(width)
        for pname, pert in {"white noise": WhiteNoise(args.eps), "brightness": Brightness(args.eps)}.items():
            bounds = {
                m: float(output_bounds(net, x, pert, m)[1][0, 0]) for m in ["IBP", "CROWN-IBP", "CROWN"]
            }
            with torch.no_grad():
                sampled = float(net(pert.sample(x, 5000)[:, 0])[:, 0].max())
            for solver in ["CBC", "HiGHS"]:
                t0 = time.perf_counter()
                r = output_extremum(
                    net, x, pert, output=0, sense="max", solver=solver, time_limit=args.time_limit
                )
                total = time.perf_counter() - t0
                rows.append(
                    dict(
                        width=width,
                        perturbation=pname,
                        solver=solver,
                        binaries=r.milp.n_binaries,
                        unstable_relus=r.milp.extra.get("n_unstable"),
                        exact=r.exact,
                        value=r.value,
                        solve_seconds=r.milp.seconds,
                        total_seconds=total,
                        verdict=r.milp.verdict.name,
                        upper_bounds=bounds,
                        sampled_max=sampled,
                    )
                )
                print(
                    f"  done: width {width}, {pname}, {solver}: {r.milp.verdict.name}, "
                    f"{r.milp.n_binaries} binaries, {r.milp.seconds:.2f} s",
                    flush=True,
                )
    base = rows[0]["solve_seconds"]
    print(f"baseline solve time = CBC, width {rows[0]['width']}, {rows[0]['perturbation']}: {base:.2f} s")
    print(
        f"{'width':>5s} {'perturbation':12s} {'solver':6s} {'bin':>5s} {'exact':>5s} {'solve s':>8s} "
        f"{'x base':>7s} "
        f"{'max':>9s} {'IBP-max':>9s} {'CROWN-IBP-max':>13s} {'CROWN-max':>9s} {'max-sampled':>11s}"
    )
    for r in rows:
        v = r["value"]
        gaps = {
            m: f"{ub - v:9.4g}" if v is not None else f"{'n/a':>9s}" for m, ub in r["upper_bounds"].items()
        }
        print(
            f"{r['width']:5d} {r['perturbation']:12s} {r['solver']:6s} {r['binaries']:5d} "
            f"{str(r['exact']):>5s} "
            f"{r['solve_seconds']:8.2f} {r['solve_seconds'] / base:7.1f} "
            f"{(v if v is not None else float('nan')):9.4f} {gaps['IBP']} {gaps['CROWN-IBP']:>13s} "
            f"{gaps['CROWN']} "
            f"{(v - r['sampled_max']) if v is not None else float('nan'):11.2e}"
        )
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(eps=args.eps, load_average=os.getloadavg()[0], rows=rows), indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
