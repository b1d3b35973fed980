"""The Python half of ``scripts/gpu_check.sh``: the CUDA paths that the CPU-only CI never runs.

Checks, each timed on the GPU and, where a ratio helps, against the CPU in the same run:

* ``nerf``: a short training of the smoothed field on the built-in Lego-like scene on CUDA, through the
  nerfacc ``OccGridEstimator`` path (fails if the trainer had to fall back to the dense renderer);
  steps/s, test PSNR, mesh F-score;
* ``certify``: ``geo_rs.Smooth.certify`` of a small CNN on CIFAR-sized inputs, noise samples/s on
  CUDA and on the CPU;
* ``weak_sdf``: ``geo_rs.weak_sdf`` of a 128³ grid on CUDA vs the CPU (time and max difference).

Prints one line per check and a JSON summary (also written to OUT/gpu_check.json). ``--device cpu``
runs the same code on the CPU (a self-test of this script, not a GPU check); ``--quick`` shrinks it.

    python scripts/gpu_check.py [--device cuda] [--out runs/gpu_check] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def environment(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def check_nerf(device: str, out: Path, quick: bool) -> dict:
    from nerf import Trainer, load_config

    size = (
        dict(
            scene_views=8,
            scene_res=24,
            scene_test_views=1,
            grid_res=24,
            coarse_res=12,
            steps=20,
            rays_per_batch=256,
            metric_points=500,
        )
        if quick
        else dict(
            scene_views=60,
            scene_res=80,
            scene_test_views=4,
            grid_res=96,
            coarse_res=48,
            steps=800,
            rays_per_batch=4096,
            metric_points=20_000,
        )
    )
    cfg = load_config(None, data="lego", eval_every=10**6, ckpt_every=10**6, ckpt_every_s=None, **size)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, out / "nerf", device=device, quiet=True)
    setup = time.perf_counter() - t0
    result = trainer.run()
    _sync(device)
    report = trainer.finalize()
    steps_per_s = report["steps"] / max(report["train_time_s"], 1e-9)
    ok = result.reason == "done" and report["test_psnr"] > (5 if quick else 20)
    if device == "cuda":
        ok = ok and trainer.renderer == "occgrid"
    mm = report.get("mesh_metrics") or {}
    return {
        "ok": bool(ok),
        "renderer": report["renderer"],
        "steps": report["steps"],
        "train_s": report["train_time_s"],
        "steps_per_s": round(steps_per_s, 1),
        "setup_s": round(setup, 1),
        "test_psnr": round(report["test_psnr"], 2),
        "fscore": mm.get("fscore"),
        "not_produced": report.get("not_produced"),
        "out": str(out / "nerf"),
    }


def _certify_rate(device: str, n: int, quick: bool) -> tuple[float, object]:
    import torch

    from geo_rs import Smooth

    torch.manual_seed(0)
    model = (
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(32 * 16, 10),
        )
        .to(device)
        .eval()
    )
    smooth = Smooth(model, num_classes=10, sigma=0.25)
    x = torch.rand(2 if quick else 8, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    smooth.certify(x[:1], n0=10, n=100, alpha=0.001, batch_size=100, generator=0, progress=False)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    cert = smooth.certify(x, n0=100, n=n, alpha=0.001, batch_size=1000, generator=0, progress=False)
    _sync(device)
    seconds = time.perf_counter() - t0
    return x.shape[0] * (n + 100) / seconds, cert


def check_certify(device: str, quick: bool) -> dict:
    import torch

    n_dev = 500 if quick else 20_000
    rate, cert = _certify_rate(device, n_dev, quick)
    out = {"ok": bool(torch.isfinite(cert.radius).all()), "n": n_dev, "samples_per_s": round(rate)}
    if device == "cuda":
        cpu_rate, _ = _certify_rate("cpu", 500 if quick else 2_000, quick)
        out["cpu_samples_per_s"] = round(cpu_rate)
        out["speedup_vs_cpu"] = round(rate / cpu_rate, 1)
    return out


def check_weak_sdf(device: str, quick: bool) -> dict:
    import torch

    from geo_rs import weak_sdf

    n = 48 if quick else 128
    occ = (torch.rand(n, n, n, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    times = {}
    results = {}
    for dev in dict.fromkeys((device, "cpu")):
        g = occ.to(dev)
        weak_sdf(g, 1.5, 0.01)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        results[dev] = weak_sdf(g, 1.5, 0.01).cpu()
        _sync(dev)
        times[dev] = time.perf_counter() - t0
    diff = float((results[device] - results["cpu"]).abs().max())
    out = {
        "ok": diff < 1e-4,
        "grid": f"{n}³",
        "seconds": round(times[device], 4),
        "max_abs_diff_vs_cpu": diff,
    }
    if device != "cpu":
        out["cpu_seconds"] = round(times["cpu"], 4)
        out["speedup_vs_cpu"] = round(times["cpu"] / times[device], 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--device",
        default="cuda",
        choices=("cuda", "cpu"),
        help="cuda (the check) or cpu (a self-test of this script) (default cuda)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check", help="output folder")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds, not minutes)")
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"ok": False, "error": f"torch {torch.__version__} sees no CUDA device"}))
        return 1
    summary: dict = {"environment": environment(args.device)}
    print(f"environment: {json.dumps(summary['environment'], ensure_ascii=False)}", flush=True)
    checks = {
        "weak_sdf": lambda: check_weak_sdf(args.device, args.quick),
        "certify": lambda: check_certify(args.device, args.quick),
        "nerf": lambda: check_nerf(args.device, args.out, args.quick),
    }
    for name, check in checks.items():
        t0 = time.perf_counter()
        try:
            result = check()
        except Exception as exc:  # report every check, whatever one of them raised
            result = {
                "ok": False,
                "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:400],
                "traceback": traceback.format_exc(limit=6),
            }
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        summary[name] = result
        shown = {k: v for k, v in result.items() if k != "traceback"}
        print(
            f"{name}: {'PASS' if result['ok'] else 'FAIL'} {json.dumps(shown, ensure_ascii=False)}",
            flush=True,
        )
    summary["ok"] = all(summary[k]["ok"] for k in checks)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
