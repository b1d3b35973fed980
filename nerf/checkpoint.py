"""Checkpoints: model, optimiser, step, and every RNG state, so that resuming continues identically."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from geo_rs import UserError
from geo_rs.atomic import torch_save

__all__ = ["rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint"]

KIND = "geo-rs-nerf"


def rng_state(generator: torch.Generator) -> dict:
    """Global torch / numpy / python RNG states plus the trainer's own ``generator``."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write atomically (temp file + rename): an interrupted save never leaves a broken checkpoint."""
    return torch_save(path, payload)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by :func:`save_checkpoint`; a missing, truncated or foreign file is one
    ``UserError`` line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: expected a checkpoint file, got a folder")
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt or truncated files
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise UserError(f"{path}: not a geo-rs nerf checkpoint")
    needed = ("config", "step", "stage", "field", "optimizer", "rng", "bounds")
    missing = [k for k in needed if k not in payload]
    if missing:
        raise UserError(f"{path}: incomplete nerf checkpoint (missing {', '.join(missing)})")
    return payload
