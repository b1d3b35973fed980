"""One training loop for every model in geo-rs: steps, time limit, checkpoints by steps *and* wall
time, graceful SIGINT/SIGTERM, progress.

The loop knows nothing about models: the caller passes ``step_fn(step) -> stats`` (one optimisation
step; ``step`` is the 0-based index of the step being run), ``save_fn()`` (write a checkpoint of
everything needed to resume) and optional hooks run every k steps (evaluation, logging, epoch ends).
An epoch-based trainer maps steps to (epoch, batch) itself.

Guarantees:

* a checkpoint is written every ``checkpoint_every_steps`` steps, and whenever
  ``checkpoint_every_s`` seconds of wall time passed since the last one, and once at the end;
* with ``time_limit_s`` the loop stops before a step would overrun the limit (by the mean step time);
* the first SIGINT/SIGTERM finishes the running step, saves, and ends the run with
  ``reason="signal"`` — the caller then exits 128 + signal (``result.raise_if_interrupted()``);
  a second signal aborts at once;
* ``elapsed`` counts training time only (inside ``step_fn``), so schedules that follow time behave
  the same whether or not evaluation hooks run.

Example:
    >>> loop = TrainingLoop(total_steps=3, quiet=True)
    >>> res = loop.run(lambda step: {"loss": 1.0 / (step + 1)}, save_fn=lambda: None)
    >>> res.reason, res.step
    ('done', 3)
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tqdm.auto import tqdm

from .checks import count, positive_finite
from .interrupt import Interrupted, StopSignal

__all__ = ["Hook", "LoopResult", "TrainingLoop"]

Stats = Mapping[str, float]


@dataclass
class Hook:
    """Call ``fn(step, stats)`` after every ``every``-th step (``step`` counts finished steps).

    ``at_end``: also call it after the last step of the run when that is not a multiple of ``every``.
    """

    every: int
    fn: Callable[[int, Stats], None]
    at_end: bool = False


@dataclass
class LoopResult:
    """How a run ended: ``reason`` is ``done`` (reached ``total_steps``), ``time_limit`` or ``signal``."""

    step: int
    reason: Literal["done", "time_limit", "signal"]
    elapsed: float
    signum: int | None = None
    last_stats: dict = field(default_factory=dict)

    def raise_if_interrupted(self) -> None:
        """Raise :class:`geo_rs.interrupt.Interrupted` if a signal ended the run (exit 130/143)."""
        if self.signum is not None:
            raise Interrupted(self.signum)


class TrainingLoop:
    """Run ``step_fn`` from ``step`` to ``total_steps`` with checkpoints, time limit and signals.

    Args:
        total_steps: the step count to reach (a resumed run passes its saved ``step``).
        step: steps already done (resume).
        elapsed: training seconds already spent (resume).
        checkpoint_every_steps: save every this many steps (None: not by steps).
        checkpoint_every_s: save when this much wall time passed since the last save (None: not by time).
        time_limit_s: stop when training time would exceed this (None: no limit).
        desc: progress-bar label; ``quiet`` hides the bar.
        postfix_every: refresh the bar's stats every this many steps.
    """

    def __init__(self, total_steps: int, *, step: int = 0, elapsed: float = 0.0,
                 checkpoint_every_steps: int | None = None, checkpoint_every_s: float | None = None,
                 time_limit_s: float | None = None, desc: str = "train", quiet: bool = False,
                 postfix_every: int = 10, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total_steps = count("total_steps", total_steps, minimum=0)
        self.step = count("step", step, minimum=0)
        self.elapsed = float(elapsed)
        self.checkpoint_every_steps = (None if checkpoint_every_steps is None
                                       else count("checkpoint_every_steps", checkpoint_every_steps))
        self.checkpoint_every_s = (None if checkpoint_every_s is None
                                   else positive_finite("checkpoint_every_s", checkpoint_every_s, "seconds"))
        self.time_limit_s = (None if time_limit_s is None
                             else positive_finite("time_limit_s", time_limit_s, "seconds"))
        self.desc, self.quiet, self.postfix_every = desc, quiet, max(1, postfix_every)
        self.clock = clock
        self.saves = 0

    def _out_of_time(self, steps_run: int, step_seconds: float) -> bool:
        if self.time_limit_s is None:
            return False
        mean = step_seconds / steps_run if steps_run else 0.0
        return self.elapsed + mean > self.time_limit_s

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if not self.quiet:
            tqdm.write(message)

    def run(self, step_fn: Callable[[int], Stats], save_fn: Callable[[], None],
            hooks: Sequence[Hook] = ()) -> LoopResult:
        """Train until done, out of time or signalled; always saves once more before returning."""
        stats: dict = {}
        reason: Literal["done", "time_limit", "signal"] = "done"
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.desc, disable=self.quiet,
                   dynamic_ncols=True, mininterval=1.0)
        steps_run, step_seconds = 0, 0.0
        last_save = self.clock()
        with StopSignal() as stop:
            try:
                while self.step < self.total_steps:
                    if stop.requested:
                        reason = "signal"
                        break
                    if self._out_of_time(steps_run, step_seconds):
                        reason = "time_limit"
                        self.write(f"{self.desc}: time limit {self.time_limit_s:g} s reached "
                                   f"at step {self.step}")
                        break
                    t0 = self.clock()
                    stats = dict(step_fn(self.step))
                    dt = self.clock() - t0
                    self.elapsed += dt
                    steps_run += 1
                    step_seconds += dt
                    self.step += 1
                    bar.update(1)
                    if stats and (self.step % self.postfix_every == 0 or self.step == self.total_steps):
                        bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()
                                         if isinstance(v, int | float)}, refresh=False)
                    for hook in hooks:
                        if self.step % hook.every == 0 or (hook.at_end and self.step == self.total_steps):
                            hook.fn(self.step, stats)
                    due_steps = self.checkpoint_every_steps and self.step % self.checkpoint_every_steps == 0
                    due_time = self.checkpoint_every_s and self.clock() - last_save >= self.checkpoint_every_s
                    if (due_steps or due_time) and self.step < self.total_steps and not stop.requested:
                        save_fn()
                        self.saves += 1
                        last_save = self.clock()
                if stop.requested:
                    reason = "signal"
            finally:
                bar.close()
            # still inside StopSignal: a second signal can abort the save, but writes are atomic, so
            # the previous checkpoint survives intact
            save_fn()
            self.saves += 1
        if reason == "signal":
            self.write(f"{self.desc}: stopped by signal at step {self.step}; checkpoint saved")
        return LoopResult(self.step, reason, self.elapsed, stop.signum if reason == "signal" else None, stats)
