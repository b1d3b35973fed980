"""Base classifiers for ``geo-rs smooth``: a factory ``module:function`` (+ state-dict weights) or a
TorchScript file, read once in the main process and rebuilt once per worker from the same bytes.

The model maps a batch (k, ...) of inputs *in input units* (noise is added there, e.g. to pixels in
[0, 1]; put any normalisation inside the model, as Cohen et al. do) to logits (k, num_classes).

Example:
    >>> src = model_source(factory="geo_rs.smooth_models:mnist_cnn", weights=None)  # doctest: +SKIP
    >>> model = build_model(src, "cpu")                                              # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import io
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["ModelSource", "build_model", "import_factory", "model_source"]


@dataclass(frozen=True)
class ModelSource:
    """Everything a worker needs to rebuild the model (picklable, shipped once per worker).

    Attributes:
        factory: ``module:function`` returning an ``nn.Module`` (None for TorchScript).
        data: the weights (state dict) or TorchScript file bytes (None: the factory's own weights).
        label: the file or factory named in messages.
    """

    factory: str | None
    data: bytes | None
    label: str

    def fingerprint(self) -> str:
        from .parallel import fingerprint

        return fingerprint(self.factory or "torchscript", self.data or b"")


def _read(path: str | Path, what: str) -> bytes:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p}: expected a file, got a folder")
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    return p.read_bytes()


def model_source(factory: str | None = None, weights: str | Path | None = None,
                 torchscript: str | Path | None = None) -> ModelSource:
    """Read the model files (not yet the model): a factory + optional weights, or TorchScript."""
    if (factory is None) == (torchscript is None):
        raise UserError("give either --model-factory module:function (with --weights) or --model FILE.pt "
                        "(TorchScript)")
    if torchscript is not None:
        if weights is not None:
            raise UserError("--weights goes with --model-factory; a TorchScript --model holds its own")
        return ModelSource(None, _read(torchscript, "TorchScript model"), str(torchscript))
    data = _read(weights, "weights file") if weights is not None else None
    return ModelSource(factory, data, str(weights) if weights is not None else factory)


def import_factory(spec: str):
    """``module:function`` → the callable; the current folder is on the import path."""
    module_name, _, fn_name = spec.partition(":")
    if not module_name or not fn_name:
        raise UserError(f"--model-factory must look like 'package.module:function', got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"--model-factory {spec}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # an error inside the user's module while importing it
        raise UserError(f"--model-factory {spec}: importing {module_name!r} failed: "
                        f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(f"--model-factory {spec}: module {module_name!r} has no function {fn_name!r}")
    return fn


def build_model(src: ModelSource, device: str = "cpu"):
    """The model of ``src`` in eval mode on ``device``; every failure is one UserError line."""
    import torch

    if src.factory is None:
        try:
            model = torch.jit.load(io.BytesIO(src.data), map_location="cpu")
        except Exception as exc:  # RuntimeError for anything that is not a TorchScript archive
            raise UserError(f"--model {src.label}: not a TorchScript file ({_first_line(exc)}); for a plain "
                            "state dict use --model-factory with --weights") from None
    else:
        try:
            model = import_factory(src.factory)()
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"--model-factory {src.factory} raised {type(exc).__name__}: "
                            f"{_first_line(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"--model-factory {src.factory} returned {type(model).__name__}, not a "
                            "torch.nn.Module")
        if src.data is not None:
            _load_weights(model, src)
    return model.to(device).eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _state_dict_of(obj: Any, label: str) -> Mapping:
    import torch

    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise UserError(f"weights file {label}: expected a state dict (names → tensors), got "
                    f"{type(obj).__name__}")


def _load_weights(model, src: ModelSource) -> None:
    import torch

    try:
        loaded = torch.load(io.BytesIO(src.data), map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle/EOF errors of a corrupt or truncated file
        raise UserError(f"weights file {src.label}: not a readable PyTorch file, corrupt or truncated "
                        f"({_first_line(exc)})") from None
    state = _state_dict_of(loaded, src.label)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''}")
    if shapes:
        k = shapes[0]
        problems.append(f"{k} has shape {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} "
                        "in the model")
    if problems:
        raise UserError(f"weights file {src.label} does not fit --model-factory {src.factory}: "
                        + "; ".join(problems))
    model.load_state_dict(state, strict=True)
