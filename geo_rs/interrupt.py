"""Graceful stops on SIGINT/SIGTERM: finish the current unit of work, save, exit 130/143.

A long job wraps its loop in :class:`StopSignal`; a first SIGINT or SIGTERM only *records* the
request (``stop.requested``), so the loop can finish its step, write a checkpoint and return. A second
signal raises :class:`Interrupted` at once (the user insists). ``geo-rs`` maps an escaping
:class:`Interrupted` to exit status 128 + signal number (130 for SIGINT, 143 for SIGTERM), and
installs a SIGTERM handler for every command, so ``finally`` blocks (pool shutdown, temp files) run
on ``kill`` as they do on Ctrl-C.

Example:
    >>> with StopSignal() as stop:          # doctest: +SKIP
    ...     while not done and not stop.requested:
    ...         do_one_step()
    ...     save_checkpoint()
    ...     stop.raise_if_requested()        # -> Interrupted(SIGTERM): exit 143
"""
from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["Interrupted", "StopSignal", "exit_code", "install_sigterm_handler"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The job was stopped by a signal; ``signum`` says which (a KeyboardInterrupt, so bare
    ``except Exception`` blocks do not swallow it)."""

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None):
        self.signum = int(signum)
        super().__init__(message or f"interrupted by {signal.Signals(self.signum).name}")


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + signal number (SIGINT → 130, SIGTERM → 143)."""
    return 128 + int(signum)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install_sigterm_handler() -> None:
    """Make SIGTERM raise :class:`Interrupted` like Ctrl-C does (main thread only; no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupted)


class StopSignal:
    """Context manager deferring SIGINT/SIGTERM: the first records ``signum``, the second raises.

    Outside the main thread signals cannot be handled; the manager then does nothing (``requested``
    stays False) and signals keep their previous behaviour.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def raise_if_requested(self) -> None:
        """Raise :class:`Interrupted` with the recorded signal, if one came."""
        if self.signum is not None:
            raise Interrupted(self.signum)
