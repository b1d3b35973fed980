"""Per-call CPU thread count for the grid kernels (``gaussian_blur3d``, ``weak_sdf``).

Why: on a shared machine a multi-threaded torch op waits at every OpenMP barrier for its slowest
thread, and a descheduled thread stalls all the others. Measured on a loaded 2-core box, the blur
with 2 threads ran 2–18× *slower* than with 1 at 64³–256³, while on an idle box 2 threads win on
large grids. No fixed threshold is right for both, so the choice is measured, per size class.

The rule (:class:`ThreadPolicy`), for a call on CPU with ``n = torch.get_num_threads() > 1`` threads:

* grids below 2¹⁵ voxels run as they are (ATen runs such small element-wise ops on one thread anyway);
* otherwise, per size class (voxel count rounded to a power of two), the policy keeps an exponential
  moving average of the seconds per voxel for 1 thread and for n threads and runs the faster one;
* the other one is re-tried now and then — after 8 calls, then 16, 32, … up to every 1024 calls while
  it keeps losing (back to 8 when it wins) — so a change of load is noticed and the cost of trying
  stays a few per cent;
* the very first call of a size class runs on n threads only if the 1-minute load average leaves n
  cores free, else on 1.

The thread count is set with ``torch.set_num_threads`` for the call and restored after it (a
process-wide setting: other Python threads running torch ops at the same moment see it too). Results
do not depend on it: both blur methods give bit-identical output for any thread count (tested).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["ThreadPolicy"]


@dataclass
class _SizeClass:
    seconds_per_voxel: dict[int, float] = field(default_factory=dict)  # threads -> EMA
    since_try: int = 0  # calls since the slower option was last tried
    wait: int = 8  # calls to wait before trying it again


class ThreadPolicy:
    """Chooses 1 or n threads for each call from timings of earlier calls of the same size class.

    Example:
        >>> policy = ThreadPolicy()
        >>> with policy.threads(1 << 20) as k:     # doctest: +SKIP
        ...     run_the_kernel()                     # on k threads; timed and recorded
    """

    MIN_VOXELS = 1 << 15
    FIRST_WAIT, MAX_WAIT, EMA = 8, 1024, 0.3

    def __init__(self, idle_cores: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.enabled = True
        self._classes: dict[int, _SizeClass] = {}
        self._lock = threading.Lock()
        self._idle_cores = idle_cores or _idle_cores
        self._clock = clock

    def choose(self, voxels: int, requested: int) -> int:
        """The thread count to run a call on ``voxels`` voxels with, when ``requested`` are set."""
        if not self.enabled or requested <= 1 or voxels < self.MIN_VOXELS:
            return requested
        with self._lock:
            c = self._classes.setdefault(int(voxels).bit_length(), _SizeClass())
            one, many = c.seconds_per_voxel.get(1), c.seconds_per_voxel.get(requested)
            if one is None and many is None:  # first call of this size: trust the load average
                return requested if self._idle_cores() >= requested else 1
            if one is None or many is None:  # one option never measured: measure it now (a try)
                c.since_try = c.wait
                return 1 if one is None else requested
            best = 1 if one <= many else requested
            c.since_try += 1
            if c.since_try >= c.wait:  # time to try the other one again
                return requested if best == 1 else 1
            return best

    def record(self, voxels: int, threads: int, seconds: float, requested: int) -> None:
        """Book the time a call took on ``threads`` threads (``requested`` were set)."""
        if not self.enabled or requested <= 1 or voxels < self.MIN_VOXELS:
            return
        with self._lock:
            c = self._classes.setdefault(int(voxels).bit_length(), _SizeClass())
            spv = c.seconds_per_voxel
            s = seconds / voxels
            if c.since_try >= c.wait:  # this call was the periodic try of the slower option
                # A fresh sample, not a blend with a stale one: a load that went away is seen at once
                # (and a lucky sample is corrected by the next calls, which run on it).
                spv[threads] = s
                c.since_try = 0
                other = requested if threads == 1 else 1
                won = other not in spv or s < spv[other]
                c.wait = self.FIRST_WAIT if won else min(self.MAX_WAIT, 2 * c.wait)
            else:
                spv[threads] = s if threads not in spv else (1 - self.EMA) * spv[threads] + self.EMA * s

    @contextmanager
    def threads(self, voxels: int) -> Iterator[int]:
        """Run the body on the chosen thread count (restored after), timing it for later choices."""
        import torch

        requested = torch.get_num_threads()
        k = self.choose(voxels, requested)
        if k != requested:
            torch.set_num_threads(k)
        t0 = self._clock()
        try:
            yield k
        finally:
            if k != requested:
                torch.set_num_threads(requested)
        self.record(voxels, k, self._clock() - t0, requested)

    def reset(self) -> None:
        """Forget every timing (a benchmark's fresh start)."""
        with self._lock:
            self._classes.clear()


def _idle_cores() -> float:
    """Cores not busy on average over the last minute (0 when the load average is unknown)."""
    try:
        return (os.cpu_count() or 1) - os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - no load average on this platform
        return 0.0
