"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Every writer goes to a temporary file in the same folder, flushes it and renames it over the target
(``os.replace`` is atomic on POSIX and Windows). A crash or a kill mid-write leaves the old file, or
none, never a truncated one. ``json_safe`` makes results strict JSON (NaN/inf become null).

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.json"
    >>> _ = write_json(p, {"psnr": float("nan"), "steps": 3})
    >>> p.read_text()
    '{"psnr": null, "steps": 3}'
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "json_safe", "torch_save", "write_bytes", "write_json", "write_text"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with float NaN/inf replaced by ``None`` (strict JSON readers such as jq reject NaN),
    recursively; numpy scalars and arrays become Python numbers and lists, paths become strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array/scalar, torch tensor
        return json_safe(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def write_json(path: str | Path, obj: Any, indent: int | None = None) -> Path:
    """Strict JSON (see :func:`json_safe`), written atomically."""
    return write_text(path, json.dumps(json_safe(obj), indent=indent))


def torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save`` written atomically (a checkpoint is either the old one or the new one)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
