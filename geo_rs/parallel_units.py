"""The two value types of :mod:`geo_rs.parallel`: a work :class:`Unit` and the :class:`Task` run on it.

Their own module so that the engines and the result store can name them without importing
:mod:`geo_rs.parallel` (which imports them): no import cycle.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Task", "Unit"]


@dataclass(frozen=True)
class Unit:
    """One piece of work.

    Attributes:
        id: unique within the job; letters, digits, ``._-`` (it names the result file).
        payload: the unit's input (picklable; keep it small: it is sent once per unit).
        fingerprint: digest of everything in the payload that changes the result (see
            :func:`fingerprint`); a stored result is reused only under the same fingerprint.
        seed: set by :func:`run_units` from (base seed, id); read it inside the unit function.
    """

    id: str
    payload: Any = None
    fingerprint: str = ""
    seed: int = 0


@dataclass(frozen=True)
class Task:
    """What to run: ``fn(state, unit) -> dict`` per unit, with ``state = setup(*setup_args)`` built
    once per worker (``state = None`` without setup). Both must be module-level functions."""

    fn: Callable[[Any, Unit], dict]
    setup: Callable[..., Any] | None = None
    setup_args: tuple = ()
