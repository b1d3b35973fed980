"""The one training loop of every model in ``keypoint/`` (top-down heads, KLPNet, the box detector).

Built on :class:`geo_rs.training.TrainingLoop` (steps, checkpoints by steps *and* wall time, time
limit, graceful SIGINT/SIGTERM). This module adds what epoch-based trainers share:

* **steps ↔ (epoch, batch)**: step ``s`` is batch ``s mod n_b`` of epoch ``s div n_b``; the items of
  an epoch are a permutation drawn from ``(seed, epoch)`` alone, and each step gets its own
  generator seeded from ``(seed, step)`` (for losses that sample). A checkpoint taken at any step —
  by the clock, or on SIGTERM — therefore resumes mid-epoch and reproduces the uninterrupted run.
* **optimizer groups and schedule**: AdamW; each group ``{"params", "lr_mult"}`` runs at
  ``lr · lr_mult · ½(1 + cos(π s / S))`` with S the run's total steps (epochs × n_b). Raising the
  epochs on resume extends the run: the remaining cosine is stretched over the new total.
* **resume**: ``out/last.pt`` is resumed when its ``identity`` (the config without the run length and
  the operational knobs) equals the current one; anything else — another model, another learning
  rate, an unreadable file — is refused with one line (``fresh=True``, the CLI's ``--fresh``,
  overwrites it).
* **history** (loss every ``log_every`` steps, per-epoch records from ``epoch_hooks``), ``loss.png``
  through the shared figure saver and ``history.json`` beside the checkpoint.

Example::

    >>> import torch                                          # doctest: +SKIP
    >>> net = torch.nn.Linear(2, 1); x, y = torch.randn(64, 2), torch.randn(64, 1)
    >>> loss = lambda b: (((net(x[b.items]) - y[b.items]) ** 2).mean(), {})
    >>> res = fit(net, loss, num_items=64, settings=FitSettings(epochs=2, batch_size=16, lr=0.01),
    ...           checkpoint=None, identity={}, fmt="demo/1")
    >>> res.reason, res.step
    ('done', 8)
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geo_rs.atomic import torch_save, write_json
from geo_rs.errors import UserError
from geo_rs.interrupt import Interrupted
from geo_rs.training import Hook, TrainingLoop

__all__ = ["Batch", "FitResult", "FitSettings", "check_run_folder", "fit", "read_checkpoint",
           "step_permutation"]


@dataclass
class FitSettings:
    """Run control of :func:`fit` (a config's ``train`` section maps onto it).

    ``checkpoint_every_steps`` None saves at every epoch end; ``max_minutes`` bounds the training time
    of *this* invocation (a re-run resumes).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    clip_grad_norm: float | None = 10.0
    seed: int = 0
    max_minutes: float | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float | None = 5.0
    log_every: int = 20
    drop_last: bool = True
    quiet: bool = False
    desc: str = "train"

    @classmethod
    def from_section(cls, train: Any, seed: int, quiet: bool = False, desc: str = "train",
                     drop_last: bool = True) -> FitSettings:
        """From a :class:`keypoint.config.TrainSection`."""
        return cls(epochs=train.epochs, batch_size=train.batch_size, lr=train.lr,
                   weight_decay=train.weight_decay, clip_grad_norm=train.clip_grad_norm, seed=seed,
                   max_minutes=train.max_minutes, checkpoint_every_steps=train.checkpoint_every_steps,
                   checkpoint_every_minutes=train.checkpoint_every_minutes, log_every=train.log_every,
                   drop_last=drop_last, quiet=quiet, desc=desc)


@dataclass
class Batch:
    """One step: ``items`` (LongTensor) index the epoch's items; ``generator`` is this step's own."""

    step: int
    epoch: int
    index: int
    items: torch.Tensor
    generator: torch.Generator
    progress: float  # epoch + index / steps_per_epoch


@dataclass
class FitResult:
    """How :func:`fit` ended. ``reason``: ``done`` | ``time_limit`` | ``signal``; ``step`` = steps done."""

    step: int
    total_steps: int
    steps_per_epoch: int
    reason: str
    elapsed: float
    history: list[dict]
    resumed_from: int | None = None
    signum: int | None = None
    checkpoint: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def epochs_done(self) -> float:
        return self.step / self.steps_per_epoch

    @property
    def complete(self) -> bool:
        return self.step >= self.total_steps

    def raise_if_interrupted(self) -> None:
        """Raise :class:`~geo_rs.interrupt.Interrupted` (exit 130/143) if a signal ended the run."""
        if self.signum is not None:
            raise Interrupted(self.signum)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def step_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The item order of ``epoch``: depends on ``(seed, epoch)`` only (resume reproduces it)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, 0, epoch)))


def _difference(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=lambda k: (k != "type", str(k))):
            out += _difference(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1] or 'value'}: {a!r} → {b!r}"]


def read_checkpoint(path: Path, fmt: str, hint: str = "pass --fresh to overwrite it") -> dict:
    """A checkpoint dict of format ``fmt``; one :class:`UserError` line if unreadable or foreign."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure: not a usable checkpoint
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}); {hint}") from None
    if not isinstance(ck, dict) or ck.get("format") != fmt:
        got = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise UserError(f"{path} holds a {got!r} checkpoint, not {fmt!r}; {hint}")
    return ck


def check_run_folder(checkpoint: str | Path | None, fmt: str, identity: dict, fresh: bool = False,
                     hint: str = "pass --fresh to overwrite it") -> dict | None:
    """The checkpoint a run would resume (None if none, or ``fresh``), checked *before* any data are
    prepared: another format, another model or training, an unreadable file → one UserError line."""
    if checkpoint is None or fresh or not Path(checkpoint).is_file():
        return None
    path = Path(checkpoint)
    ck = read_checkpoint(path, fmt, hint)
    _check_resumable(ck, path, identity, None, hint)
    return ck


def _check_resumable(ck: dict, path: Path, identity: dict, steps_per_epoch: int | None, hint: str) -> None:
    if "identity" not in ck or "step" not in ck:
        raise UserError(f"{path} was written by an older geo-rs and cannot be resumed; {hint}")
    diffs = sorted(_difference(ck["identity"], identity), key=lambda d: ".type:" not in f".{d}")
    if diffs:
        more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
        raise UserError(f"{path} was written for a different model or training ({diffs[0]}{more}); "
                        f"{hint}, or choose another output folder")
    if steps_per_epoch is not None and ck.get("steps_per_epoch") != steps_per_epoch:
        raise UserError(f"{path} has {ck.get('steps_per_epoch')} steps per epoch, this run "
                        f"{steps_per_epoch} (the data changed); {hint}")


def _optimizer(model: nn.Module, groups: Sequence[dict] | None, s: FitSettings) -> torch.optim.Optimizer:
    if groups is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    built = [{"params": list(g["params"]), "lr_mult": float(g.get("lr_mult", 1.0)),
              "lr": s.lr * float(g.get("lr_mult", 1.0))} for g in groups]
    return torch.optim.AdamW(built, lr=s.lr, weight_decay=s.weight_decay)


def _note(settings: FitSettings, text: str) -> None:
    if not settings.quiet:
        print(text, file=sys.stderr, flush=True)


def fit(model: nn.Module, loss_fn: Callable[[Batch], tuple[torch.Tensor, dict]], *, num_items: int,
        settings: FitSettings, checkpoint: str | Path | None, identity: dict, fmt: str,
        extra: Callable[[], dict] | dict | None = None, param_groups: Sequence[dict] | None = None,
        epoch_hooks: Sequence[Callable[[int], dict]] = (), fresh: bool = False,
        fresh_hint: str = "pass --fresh to overwrite it", plot_title: str | None = None) -> FitResult:
    """Train ``model`` with ``loss_fn(batch) -> (loss, {part: float})`` (see module docstring).

    Args:
        num_items: items per epoch (``batch.items`` index them).
        checkpoint: ``last.pt`` path (resumed when compatible; None: no checkpoint, no plot).
        identity: what a checkpoint must match to be resumed (JSON-like).
        fmt: checkpoint format tag (``"geo-rs-keypoint/2"``).
        extra: entries stored in every checkpoint (a dict, or a function returning one at save time).
        param_groups: ``[{"params": [...], "lr_mult": 5.0}, ...]`` (default: all parameters, mult 1).
        epoch_hooks: ``fn(epoch_done) -> dict`` after each epoch; the dict joins the history.
        fresh: ignore and overwrite an existing checkpoint.
    Returns:
        :class:`FitResult`; call ``raise_if_interrupted()`` once the caller's outputs are written.
    """
    s = settings
    n = int(num_items)
    if n < 1:
        raise UserError("nothing to train on: the training set has no item")
    bs = min(int(s.batch_size), n)
    spe = max(1, n // bs) if s.drop_last else math.ceil(n / bs)
    total = int(s.epochs) * spe
    path = Path(checkpoint) if checkpoint is not None else None
    opt = _optimizer(model, param_groups, s)
    history: list[dict] = []
    step, elapsed, resumed = 0, 0.0, None
    if path is not None and path.is_file() and not fresh:
        ck = read_checkpoint(path, fmt, fresh_hint)
        _check_resumable(ck, path, identity, spe, fresh_hint)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        step, elapsed, history, resumed = int(ck["step"]), float(ck["train_seconds"]), list(ck["history"]), \
            int(ck["step"])
        if step >= total:
            _note(s, f"{path}: already trained {step / spe:g} epochs (asked for {s.epochs}); "
                     "nothing to train")
        else:
            _note(s, f"resuming {path} at epoch {step / spe:.2f} of {s.epochs} (step {step}/{total})")

    def save() -> None:
        if path is None:
            return
        more = extra() if callable(extra) else dict(extra or {})
        torch_save(path, {**more, "format": fmt, "identity": identity, "state_dict": model.state_dict(),
                          "optimizer": opt.state_dict(), "step": loop.step, "steps_per_epoch": spe,
                          "epochs": s.epochs, "history": history, "train_seconds": loop.elapsed})

    def step_fn(step_: int) -> dict:
        epoch, b = divmod(step_, spe)
        items = step_permutation(s.seed, epoch, n)[b * bs:(b + 1) * bs]
        gen = torch.Generator().manual_seed(_seed(s.seed, 1, step_))
        factor = 0.5 * (1 + math.cos(math.pi * min(step_, total) / total))
        for g in opt.param_groups:
            g["lr"] = s.lr * g["lr_mult"] * factor
        model.train()
        if hasattr(model, "set_progress"):
            model.set_progress(epoch + b / spe)
        loss, parts = loss_fn(Batch(step_, epoch, b, items, gen, epoch + b / spe))
        if not torch.isfinite(loss):
            raise UserError(f"{s.desc}: the loss became {float(loss)} at epoch {epoch + 1}, step {step_} "
                            f"({parts}); lower train.lr (now {s.lr:g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.clip_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), s.clip_grad_norm)
        opt.step()
        stats = {"loss": float(loss.detach()), **parts}
        if (step_ + 1) % s.log_every == 0 or b == spe - 1 or step_ == 0:
            history.append({"step": step_ + 1, "epoch": (step_ + 1) / spe, "lr": s.lr * factor, **stats})
        return stats

    def epoch_end(done: int, stats: dict) -> None:
        epoch = done // spe
        record: dict = {"kind": "epoch", "step": done, "epoch": epoch}
        for hook in epoch_hooks:
            record.update(hook(epoch))
        if len(record) > 3:
            history.append(record)
        shown = ", ".join([f"{k} {v:.3g}" for k, v in record.items()
                           if k not in ("kind", "step", "epoch") and isinstance(v, int | float)][:4])
        loop.write(f"{s.desc}: epoch {epoch}/{s.epochs} loss {stats.get('loss', float('nan')):.4g}"
                   + (f"; {shown}" if shown else ""))

    limit = None if s.max_minutes is None else elapsed + 60.0 * s.max_minutes
    loop = TrainingLoop(total, step=min(step, total), elapsed=elapsed,
                        checkpoint_every_steps=s.checkpoint_every_steps or spe,
                        checkpoint_every_s=None if s.checkpoint_every_minutes is None
                        else 60.0 * s.checkpoint_every_minutes,
                        time_limit_s=limit, desc=s.desc, quiet=s.quiet)
    if step >= total:
        result = FitResult(step, total, spe, "done", elapsed, history, resumed, checkpoint=path)
    else:
        out = loop.run(step_fn, save, hooks=[Hook(spe, epoch_end)])
        result = FitResult(out.step, total, spe, out.reason, out.elapsed, history, resumed, out.signum, path)
        if out.reason == "time_limit":
            _note(s, f"{s.desc}: stopped by train.max_minutes after epoch {out.step / spe:.2f} "
                     f"of {s.epochs}; "
                     "the checkpoint is kept, run again to continue")
    if path is not None:
        write_json(path.parent / "history.json", history)
        from .draw import plot_history  # matplotlib only when there is something to draw

        if history:
            plot_history(history, path.parent / "loss.png", plot_title or s.desc)
    return result
