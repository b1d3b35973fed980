"""Input checks shared by every package: one place for "σ must be positive and finite" and friends.

Each check returns the value in its canonical type (``float``, ``int``, a tensor) or raises
:class:`geo_rs.UserError` with one line that names the argument, the expected form and what was got.
Nothing here imports torch at module load: tensor checks import it lazily, so the CLI's start-up
stays light.

Example:
    >>> from geo_rs.checks import positive_finite, probability
    >>> positive_finite("sigma", 0.25)
    0.25
    >>> probability("alpha", 1.5)
    Traceback (most recent call last):
    ...
    geo_rs.errors.UserError: alpha must be a probability in [0, 1], got 1.5
"""
from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "choice",
    "count",
    "existing_dir",
    "existing_file",
    "finite_number",
    "finite_tensor",
    "float_batch",
    "image_batch",
    "in_open_unit",
    "non_negative_finite",
    "positive_finite",
    "probabilities",
    "probability",
    "tensor_shape",
]


def _unit(unit: str | None) -> str:
    return f" ({unit})" if unit else ""


def finite_number(name: str, value: object, unit: str | None = None) -> float:
    """``value`` as a finite float; bools and non-numbers are refused."""
    if isinstance(value, bool) or isinstance(value, str | bytes):
        raise UserError(f"{name} must be a finite number{_unit(unit)}, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a finite number{_unit(unit)}, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"{name} must be a finite number{_unit(unit)}, got {value!r}")
    return number


def positive_finite(name: str, value: object, unit: str | None = None) -> float:
    """``value`` as a float that is > 0 and finite (σ, voxel sizes, time limits)."""
    try:
        number = finite_number(name, value, unit)
    except UserError:
        raise UserError(f"{name} must be a finite number > 0{_unit(unit)}, got {value!r}") from None
    if not number > 0:
        raise UserError(f"{name} must be a finite number > 0{_unit(unit)}, got {value!r}")
    return number


def non_negative_finite(name: str, value: object, unit: str | None = None) -> float:
    """``value`` as a float that is ≥ 0 and finite (ε of a perturbation, margins)."""
    try:
        number = finite_number(name, value, unit)
    except UserError:
        raise UserError(f"{name} must be a finite number >= 0{_unit(unit)}, got {value!r}") from None
    if number < 0:
        raise UserError(f"{name} must be a finite number >= 0{_unit(unit)}, got {value!r}")
    return number


def probability(name: str, value: object) -> float:
    """``value`` as a float in the closed interval [0, 1]."""
    try:
        number = finite_number(name, value)
    except UserError:
        raise UserError(f"{name} must be a probability in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise UserError(f"{name} must be a probability in [0, 1], got {value!r}")
    return number


def in_open_unit(name: str, value: object) -> float:
    """``value`` as a float strictly inside (0, 1) (a significance level α, a quantile)."""
    try:
        number = finite_number(name, value)
    except UserError:
        raise UserError(f"{name} must be a number strictly between 0 and 1, got {value!r}") from None
    if not 0.0 < number < 1.0:
        raise UserError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return number


def count(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools, floats (5.7) and strings are refused."""
    span = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool):
        raise UserError(f"{name} must be an integer {span}, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise UserError(f"{name} must be an integer {span}, got {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        raise UserError(f"{name} must be an integer {span}, got {number}")
    return number


def choice(name: str, value: object, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; the error lists them."""
    options = list(choices)
    if value not in options:
        raise UserError(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")
    return value


def existing_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a Path to an existing regular file (not a folder)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p}: expected a file, got a folder")
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    return p


def json_object(path: str | Path, what: str = "JSON file", expected: str = "") -> dict:
    """The JSON object (a dict) stored in ``path``; one line naming the file for every way that fails.

    ``expected`` completes "expected a JSON object ..." (e.g. "with 'images' and 'annotations'").
    """
    p = existing_file(path, what)
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not valid JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read it ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a JSON object{' ' + expected if expected else ''}, "
                        f"got a {type(data).__name__}")
    return data


def existing_dir(path: str | Path, what: str = "folder") -> Path:
    """``path`` as a Path to an existing folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{what} {p}: expected a folder, got a file")
    if not p.is_dir():
        raise UserError(f"{what} not found: {p}")
    return p


# -- tensors -------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def tensor_shape(name: str, value: object, shape: Sequence[int | str | None]) -> torch.Tensor:
    """Check that ``value`` is a tensor of the given shape.

    ``shape`` lists one entry a dimension: an int (that exact size), a str (a named size that must
    agree wherever the same name appears; "..." is not supported) or None (any size).

    Example:
        >>> import torch
        >>> tensor_shape("points", torch.zeros(5, 3), ("N", 3)).shape
        torch.Size([5, 3])
    """
    torch = _torch()
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{name} must be a torch.Tensor of shape {_fmt(shape)}, got {type(value).__name__}")
    got = tuple(value.shape)
    ok = len(got) == len(shape)
    named: dict[str, int] = {}
    for want, have in zip(shape, got) if ok else ():
        if isinstance(want, int) and not isinstance(want, bool) and want != have:
            ok = False
        elif isinstance(want, str):
            ok = ok and named.setdefault(want, have) == have
    if not ok:
        raise UserError(f"{name} must have shape {_fmt(shape)}, got {got}")
    return value


def _fmt(shape: Sequence[int | str | None]) -> str:
    inner = ", ".join("?" if s is None else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def finite_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` if it holds no NaN or ±inf; the error counts the bad entries and shows the first."""
    torch = _torch()
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_floating_point() and value.numel():
        bad = ~torch.isfinite(value.detach())
        n_bad = int(bad.sum())
        if n_bad:
            first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
            raise UserError(
                f"{name} contains {n_bad} NaN/inf value(s) "
                f"(first at index {first}, shape {tuple(value.shape)})"
            )
    return value


def probabilities(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` if every entry is a probability in [0, 1] (no NaN)."""
    finite_tensor(name, value)
    if value.numel():
        lo, hi = (float(v) for v in _torch().aminmax(value.detach()))
        if lo < 0 or hi > 1:
            raise UserError(f"{name} must lie in [0, 1]; got range [{lo:.6g}, {hi:.6g}]")
    return value


def float_batch(name: str, value: object) -> torch.Tensor:
    """``value`` if it is a finite floating-point tensor batch ``(B, ...)`` with at least 2 dims."""
    torch = _torch()
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{name} must be a torch.Tensor batch (B, ...), got {type(value).__name__}")
    if value.ndim < 2:
        raise UserError(
            f"{name} must be a batch of shape (B, ...) with at least 2 dims, got shape {tuple(value.shape)}; "
            f"for a single input use {name}.unsqueeze(0)"
        )
    if not value.is_floating_point():
        raise UserError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return finite_tensor(name, value)


_PIXEL_TOL = 1e-6


def image_batch(name: str, value: object) -> torch.Tensor:
    """An image batch ``(B, ...)`` of floats in [0, 1] without NaN (pixels, as the bound engine needs)."""
    torch = _torch()
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() < 2:
        raise UserError(f"{name} must be batched (B, ...), got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise UserError(f"{name} must be a float tensor, got {value.dtype}")
    if value.numel():
        finite_tensor(name, value)
        lo, hi = float(value.min()), float(value.max())
        if lo < -_PIXEL_TOL or hi > 1 + _PIXEL_TOL:
            raise UserError(f"{name} must hold pixels in [0, 1]; got range [{lo:.4g}, {hi:.4g}]")
    return value
