"""Exact MILP verification vs network width: binaries, solve time (CBC vs HiGHS), and how loose
IBP / CROWN-IBP / CROWN are against the exact extremum.

For each hidden width, a small ReLU CNN (Conv(1→w/4)-ReLU-MaxPool-Flatten-Linear(→w)-ReLU-Linear(→3))
is trained for a second on blob images; the exact max of output 0 over WhiteNoise(eps) and
Brightness(eps) is solved with both solvers. Baseline for times: CBC at the smallest width.

    python bench/bench_milp.py [--widths 8,16,32,64] [--eps 0.03] [--time-limit 60]
        [--out runs/bench/milp.json]

``--float-audit N`` instead repeats issue 9's audit: N networks whose hidden activations (~300) are
cancelled by the next layer's bias (the issue's recipe: an MLP on 2x2 images, and a Conv-BatchNorm-
MaxPool variant on 3x3), max and min of each output under Brightness(0.2) and Contrast(0.3) +
WhiteNoise(0.02); each MILP optimum is compared with the best value the float32 model reaches (a dense
grid over θ for brightness, 20,000 samples, the MILP's own witness). It counts optima *beaten* by the
float32 model, for today's encoder and for the one of commit ``--legacy-ref`` (loaded from git), and
reports how far today's optima sit from attained values in units of their ``float_margin``.

    python bench/bench_milp.py --float-audit 20 [--legacy-ref a7ab383]
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the adversarial test networks

from bench_bounds import legacy_module  # noqa: E402

from geo_rs import Brightness, Contrast, WhiteNoise, output_bounds, output_extremum  # noqa: E402

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


def cancelled_net(seed: int, conv: bool) -> tuple[nn.Module, torch.Tensor]:
    """Issue 9's recipe (hidden activations ~300 cancelled by the last bias) and an image for it; the
    networks are those of the float32 soundness tests."""
    from test_milp_float import cancelled_conv_bn, cancelled_mlp

    g = torch.Generator().manual_seed(1000 + seed)
    if conv:
        return cancelled_conv_bn(seed), torch.rand(1, 1, 3, 3, generator=g)
    return cancelled_mlp(seed), torch.rand(1, 1, 2, 2, generator=g)


def reached(net: nn.Module, x: torch.Tensor, pert, out: int) -> tuple[float, float]:
    """Smallest / largest float32 value of output ``out`` found by a θ grid and sampling."""
    fam = pert.family(x)
    with torch.no_grad():
        vals = [net(pert.sample(x, 20000, generator=torch.Generator().manual_seed(0)).flatten(0, 1))[:, out]]
        if fam.n_params == 1 and fam.noise == 0:
            theta = torch.linspace(float(fam.theta_lo[0]), float(fam.theta_hi[0]), 20001).reshape(-1, 1, 1)
            vals.append(net(pert.apply(x, theta).flatten(0, 1))[:, out])
    v = torch.cat(vals)
    return float(v.min()), float(v.max())


def float_audit(args) -> int:
    legacy = legacy_module(args.legacy_ref, "milp_relu").output_extremum if args.legacy_ref else None
    perts = {"brightness": Brightness(0.2), "contrast+noise": Contrast(0.3) + WhiteNoise(0.02)}
    counts = {"today": [0, 0], "legacy": [0, 0]}
    slack_units, rows = [], []
    for seed in range(args.float_audit):
        for conv in (False, True):
            net, x = cancelled_net(seed, conv)
            for pname, pert in perts.items():
                for out in range(net(x).shape[1]):
                    lo, hi = reached(net, x, pert, out)
                    for sense in ("max", "min"):
                        best = hi if sense == "max" else lo
                        r = output_extremum(net, x, pert, output=out, sense=sense)
                        wit = r.model_value
                        best = max(best, wit) if sense == "max" else min(best, wit)
                        beaten = (r.value < best) if sense == "max" else (r.value > best)
                        counts["today"][0] += 1
                        counts["today"][1] += int(beaten or not r.exact)
                        gap = abs(r.value - best)
                        slack_units.append(gap / r.float_margin if r.float_margin > 0 else 0.0)
                        row = dict(seed=seed, conv=conv, perturbation=pname, output=out, sense=sense,
                                   value=r.value, reached=best, float_margin=r.float_margin)  # fmt: skip
                        if legacy is not None:
                            old = legacy(net, x, pert, output=out, sense=sense)
                            beaten_old = (old.value < best) if sense == "max" else (old.value > best)
                            counts["legacy"][0] += 1
                            counts["legacy"][1] += int(beaten_old)
                            row["legacy_value"] = old.value
                        rows.append(row)
        print(f"  seed {seed}: {counts}", flush=True)
    slack_units.sort()
    load = os.getloadavg()[0]
    print(
        f"float audit: {args.float_audit} seeds x (MLP, Conv-BN-MaxPool) x 2 perturbations, load {load:.1f}"
    )
    today = counts["today"]
    print(f"today's encoder: {today[1]} of {today[0]} optima beaten by the float32 model (or not exact)")
    if legacy is not None:
        print(f"encoder of {args.legacy_ref}: {counts['legacy'][1]} of {counts['legacy'][0]} optima beaten")
    print(
        "today's |optimum - best attained| / float_margin: median "
        f"{slack_units[len(slack_units) // 2]:.3f}, max {slack_units[-1]:.3f} (guarantee: <= 2)"
    )
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(counts=counts, legacy_ref=args.legacy_ref, rows=rows), indent=2))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="8,16,32,64", help="hidden widths (default 8,16,32,64)")
    ap.add_argument("--eps", type=float, default=0.03, help="perturbation size (default 0.03)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="MILP time limit, seconds (default 60)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--out", default=None, help="JSON output (default runs/bench/milp.json or milp_float.json)"
    )
    ap.add_argument(
        "--float-audit", type=int, default=0, help="seeds of issue 9's float audit (default 0: off)"
    )
    ap.add_argument(
        "--legacy-ref", default="a7ab383", help="commit of the old encoder ('' to skip; default a7ab383)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.float_audit:
        args.out = args.out or "runs/bench/milp_float.json"
        return float_audit(args)
    args.out = args.out or "runs/bench/milp.json"
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
