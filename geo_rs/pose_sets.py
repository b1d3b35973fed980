"""Keypoint sets for the pose bound: per-keypoint pixel boxes or finite candidate pixels (+ a joint polytope).

:func:`as_keypoint_set` turns what a user passes to :func:`geo_rs.pose_error_bound` into a
:class:`KeypointSet`, refusing bad input with one-line :class:`~geo_rs.UserError` messages. The set offers
what the bound needs: its bounding boxes, the support point in a direction (the configuration maximising
a linear function, used to search for bad configurations) and membership of a configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import UserError

__all__ = ["KeypointSet", "as_keypoint_set"]


@dataclass(frozen=True)
class KeypointSet:
    """N keypoints, each in a box ``[lower_i, upper_i]`` or a finite set ``candidates[i]`` (n_i, 2).

    ``constraints = (A, b)``: an optional joint polytope ``A @ u.reshape(-1) <= b`` on the configuration
    u (N, 2) (e.g. from a coupled MILP verifier). The pose bound only *relaxes* it (ignores it where it
    cannot use it), which keeps the bound sound; configurations used as witnesses must satisfy it.
    """

    lower: np.ndarray
    upper: np.ndarray
    candidates: tuple[np.ndarray, ...] | None = None
    constraints: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_keypoints(self) -> int:
        return len(self.lower)

    @property
    def centre(self) -> np.ndarray:
        return (self.lower + self.upper) / 2

    def support(self, direction: np.ndarray) -> np.ndarray:
        """The configuration (N, 2) of the set maximising ``Σ direction ⊙ u`` (``direction`` (N, 2))."""
        if self.candidates is None:
            return np.where(direction >= 0, self.upper, self.lower)
        return np.stack(
            [cand[np.argmax(cand @ d)] for cand, d in zip(self.candidates, direction, strict=True)]
        )

    def contains(self, u: np.ndarray, tol: float = 0.0) -> bool:
        """Whether the configuration ``u`` (N, 2) belongs to the set (within ``tol`` pixels)."""
        u = np.asarray(u, dtype=np.float64)
        if u.shape != self.lower.shape:
            return False
        if self.candidates is None:
            inside = bool(np.all(u >= self.lower - tol) and np.all(u <= self.upper + tol))
        else:
            inside = all(
                np.abs(cand - p).max(1).min() <= tol for cand, p in zip(self.candidates, u, strict=True)
            )
        if inside and self.constraints is not None:
            A, b = self.constraints
            inside = bool(np.all(A @ u.reshape(-1) <= b + tol * np.abs(A).sum(1)))
        return inside


def as_keypoint_set(keypoint_set: object, num: int, constraints: object | None = None) -> KeypointSet:
    """Parse ``(lower, upper)`` boxes or a list of N candidate arrays (n_i, 2) for ``num`` keypoints."""
    if isinstance(keypoint_set, KeypointSet):
        if keypoint_set.num_keypoints != num:
            raise UserError(f"keypoint_set has {keypoint_set.num_keypoints} keypoints, points_3d has {num}")
        return keypoint_set
    if isinstance(keypoint_set, tuple) and len(keypoint_set) == 2:
        lower, upper = (
            _finite(name, v, (num, 2)) for name, v in zip(("lower", "upper"), keypoint_set, strict=True)
        )
        bad = np.argwhere(lower > upper)
        if len(bad):
            i, k = bad[0]
            raise UserError(
                f"keypoint box {i} has lower > upper on axis {'xy'[k]}: {lower[i, k]} > {upper[i, k]}"
            )
        return KeypointSet(lower, upper, None, _constraints(constraints, num))
    if isinstance(keypoint_set, Sequence | np.ndarray) and not isinstance(keypoint_set, str | bytes):
        items = list(keypoint_set)
        if len(items) != num:
            raise UserError(
                f"keypoint_set: expected {num} candidate arrays (one per keypoint), got {len(items)}"
            )
        cands = []
        for i, item in enumerate(items):
            arr = np.asarray(item, dtype=np.float64)
            if arr.ndim == 1 and arr.shape == (2,):
                arr = arr[None]
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise UserError(
                    f"keypoint_set[{i}] must be an (n_i, 2) array of candidate pixels, got {arr.shape}"
                )
            if len(arr) == 0:
                raise UserError(f"keypoint_set[{i}] is empty: every keypoint needs at least one candidate")
            if not np.isfinite(arr).all():
                raise UserError(f"keypoint_set[{i}] contains NaN or infinite values")
            cands.append(arr)
        lower = np.stack([c.min(0) for c in cands])
        upper = np.stack([c.max(0) for c in cands])
        return KeypointSet(lower, upper, tuple(cands), _constraints(constraints, num))
    raise UserError(
        "keypoint_set must be a pair (lower, upper) of (N, 2) pixel boxes or a list of N (n_i, 2) candidate "
        f"arrays, got {type(keypoint_set).__name__}"
    )


def _finite(name: str, value: object, shape: tuple[int, int]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"keypoint box {name} must be a numeric (N, 2) array") from None
    if arr.shape != shape:
        raise UserError(f"keypoint box {name} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise UserError(f"keypoint box {name} contains NaN or infinite values")
    return arr


def _constraints(constraints: object | None, num: int) -> tuple[np.ndarray, np.ndarray] | None:
    if constraints is None:
        return None
    try:
        A, b = constraints  # type: ignore[misc]
        A = np.asarray(A, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError("constraints must be a pair (A (q, 2N), b (q,))") from None
    if A.ndim != 2 or A.shape[1] != 2 * num or len(b) != len(A):
        raise UserError(f"constraints: A must be (q, {2 * num}) and b (q,), got {A.shape} and {b.shape}")
    if not (np.isfinite(A).all() and np.isfinite(b).all()):
        raise UserError("constraints contain NaN or infinite values")
    return A, b
