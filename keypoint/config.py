"""Keypoint training configs on the one schema (:class:`geo_rs.config.Schema`): typed sections
``data`` / ``model`` / ``train`` (+ ``eval`` for KLPNet), unknown keys refused, every error one line
naming the file, the key and the value. Imports no torch.

Two config kinds, chosen by ``model.type``:

* :class:`TopDownConfig` — heatmap / regression / AdaAnchor (top-down crops of every instance);
  ``model`` is typed by the model's options schema (:mod:`keypoint.models.options`);
* :class:`KLPNetConfig` — KLPNet (whole images; adds ``train.graph_lr_mult`` and ``eval``).

YAML layout::

    name: adaanchor          # run name (default out_dir: runs/keypoint/<name>)
    seed: 0                  # model init, batch order
    data: {source: synth, synth: {...}, train_images: 600, val_images: 150, input_size: 64, ...}
    model: {type: adaanchor, top_k: 20, ...}
    train: {epochs: 10, batch_size: 32, lr: 0.002, max_minutes: null, checkpoint_every_minutes: 5, ...}

:func:`load_keypoint_config` reads a file and applies command-line overrides (dotted keys) through
the same validation; :func:`resume_identity` is the part of a config a checkpoint must share to be
resumed (everything but the run length and the operational knobs: epochs, time limit, threads,
checkpoint cadence, logging, out_dir).

Example::

    >>> cfg = validate_keypoint_config({"model": {"type": "heatmap"}, "train": {"epochs": 2}})
    >>> type(cfg).__name__, cfg.model.sigma, str(cfg.run_dir)
    ('TopDownConfig', 1.5, 'runs/keypoint/keypoint')
"""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import create_model, model_validator

from geo_rs.config import Schema, load_config, read_yaml, setting, validate_config
from geo_rs.errors import UserError

from .data.synth import SynthConfig
from .models.options import AdaAnchorOptions, KLPNetOptions, ModelOptions, options_schema

__all__ = [
    "EvalSection",
    "ImageData",
    "KLPNetConfig",
    "KLPNetTrainSection",
    "KeypointConfig",
    "TopDownConfig",
    "TopDownData",
    "TrainSection",
    "load_keypoint_config",
    "resume_identity",
    "validate_keypoint_config",
]

DEFAULT_MODEL = "adaanchor"
#: train keys that may change between a run and its resumption (run length and operational knobs)
RESUMABLE_KEYS = ("epochs", "max_minutes", "num_threads", "checkpoint_every_steps",
                  "checkpoint_every_minutes", "log_every")


class ImageData(Schema):
    """Where the images come from (whole images: KLPNet)."""

    source: Literal["synth", "coco"] = setting("synth", "synth (generated, cached) or coco (JSON files)")
    synth: SynthConfig = setting(SynthConfig(image_size=96), "generator settings (source: synth)")
    train_images: int = setting(300, "synthetic training images", "images", ge=1, le=1_000_000)
    val_images: int = setting(100, "synthetic validation images", "images", ge=1, le=1_000_000)
    train_seed: int = setting(0, "seed of the synthetic training split", ge=0)
    val_seed: int = setting(1000, "seed of the synthetic validation split", ge=0)
    train_json: str | None = setting(None, "COCO keypoint JSON of the training split (source: coco)")
    val_json: str | None = setting(None, "COCO keypoint JSON of the validation split (source: coco)")

    @model_validator(mode="after")
    def _coco_needs_files(self) -> ImageData:
        if self.source == "coco":
            missing = [k for k in ("train_json", "val_json") if not getattr(self, k)]
            if missing:
                raise ValueError(f"data.source 'coco' needs data.{missing[0]}")
        return self


class TopDownData(ImageData):
    """Images plus the top-down crop of each instance (heatmap / regression / AdaAnchor)."""

    synth: SynthConfig = setting(SynthConfig(), "generator settings (source: synth)")
    train_images: int = setting(600, "synthetic training images", "images", ge=1, le=1_000_000)
    val_images: int = setting(150, "synthetic validation images", "images", ge=1, le=1_000_000)
    input_size: int = setting(64, "crop side fed to the network", "pixels", ge=8, le=1024)
    padding: float = setting(1.25, "crop = the box enlarged by this factor, made square", "factor",
                             ge=1.0, le=4.0)


class TrainSection(Schema):
    """Optimisation and run control (AdamW, cosine learning-rate decay over the whole run)."""

    epochs: int = setting(10, "passes over the training crops (raise it on resume to extend a run)",
                          "epochs", ge=1, le=100_000)
    batch_size: int = setting(32, "crops per step", "crops", ge=1, le=65_536)
    lr: float = setting(2e-3, "peak learning rate (cosine decay to 0 over the run)", gt=0, le=10)
    weight_decay: float = setting(1e-4, "AdamW weight decay", ge=0, le=1)
    clip_grad_norm: float | None = setting(10.0, "gradient-norm clip (null: none)", gt=0)
    num_threads: int | None = setting(None, "torch threads (null: leave as is)", "threads", ge=1, le=256)
    max_minutes: float | None = setting(None, "stop this invocation after that much training time and keep "
                                        "the checkpoint (a re-run resumes); null: no limit", "minutes", gt=0)
    checkpoint_every_steps: int | None = setting(None, "also checkpoint every this many steps (null: at "
                                                 "each epoch end)", "steps", ge=1)
    checkpoint_every_minutes: float = setting(5.0, "checkpoint when this much wall time passed since the "
                                              "last one", "minutes", gt=0)
    log_every: int = setting(20, "record the loss in the history every this many steps", "steps", ge=1)
    noise_sigma: float = setting(0.0, "std of Gaussian noise added to every training crop (noise "
                                 "augmentation for randomized smoothing; 0: none)", "pixel intensity",
                                 ge=0, le=1)
    diagnostics: bool = setting(True, "per-epoch diagnostics in the history (AdaAnchor: anchor–target "
                                "correlation and distance)")


class KLPNetTrainSection(TrainSection):
    noise_sigma: float = setting(0.0, "noise augmentation is not implemented for KLPNet (must be 0)",
                                 "pixel intensity", ge=0, le=0)
    epochs: int = setting(12, "passes over the training images (raise it on resume to extend a run)",
                          "epochs", ge=1, le=100_000)
    batch_size: int = setting(8, "images per step", "images", ge=1, le=65_536)
    log_every: int = setting(10, "record the loss in the history every this many steps", "steps", ge=1)
    graph_lr_mult: float = setting(5.0, "learning rate of the graph auto-encoder = lr × this", gt=0)


class EvalSection(Schema):
    """KLPNet evaluation protocol."""

    alpha: float = setting(0.1, "PCK threshold", "fraction of the box's longer side", gt=0, le=1)
    boxes: Literal["gt", "detector"] = setting("gt", "objects from ground-truth boxes (the paper's PCK "
                                               "protocol) or the model's detector")


class KeypointConfig(Schema):
    """Fields every keypoint config has."""

    name: str = setting("keypoint", "run name (default out_dir: runs/keypoint/<name>)")
    seed: int = setting(0, "seed of the model initialisation and the batch order", ge=0)
    out_dir: str | None = setting(None, "run folder: last.pt, metrics.json, loss.png, history.json")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs/keypoint") / self.name

    @property
    def kind(self) -> str:
        return "klpnet" if isinstance(self, KLPNetConfig) else "topdown"


class TopDownConfig(KeypointConfig):
    data: TopDownData = setting(TopDownData(), "data and crops")
    model: ModelOptions = setting(AdaAnchorOptions(), "model options (model.type selects the model)")
    train: TrainSection = setting(TrainSection(), "optimisation and run control")


class KLPNetConfig(KeypointConfig):
    name: str = setting("klpnet", "run name (default out_dir: runs/keypoint/<name>)")
    data: ImageData = setting(ImageData(), "data (whole images)")
    model: KLPNetOptions = setting(KLPNetOptions(), "KLPNet options")
    train: KLPNetTrainSection = setting(KLPNetTrainSection(), "optimisation and run control")
    eval: EvalSection = setting(EvalSection(), "evaluation protocol")


@cache
def _topdown_schema(options: type[ModelOptions]) -> type[TopDownConfig]:
    """TopDownConfig whose ``model`` field is typed by one model's options (errors name model.<key>)."""
    return create_model(f"TopDownConfig[{options.__name__}]", __base__=TopDownConfig,
                        model=(options, setting(options(), "model options")))


def _model_type(values: dict, where: str) -> Any:
    model = values.get("model", {})
    if model is None:
        model = {}
    if not isinstance(model, dict):
        raise UserError(f"{where}: key 'model': expected a mapping with a 'type', got {type(model).__name__}")
    return model.get("type", DEFAULT_MODEL)


def validate_keypoint_config(values: dict | KeypointConfig, where: str = "config",
                             overridden: dict[str, str] | None = None) -> KeypointConfig:
    """A :class:`TopDownConfig` or :class:`KLPNetConfig` from a mapping (the kind from ``model.type``)."""
    if isinstance(values, KeypointConfig):
        return values
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a mapping of config keys, got {type(values).__name__}")
    kind = _model_type(values, where)
    options = options_schema(kind, where)
    schema = KLPNetConfig if kind == "klpnet" else _topdown_schema(options)
    return validate_config(schema, values, where, overridden)


def load_keypoint_config(path: str | Path, overrides: dict[str, Any] | None = None,
                         flags: dict[str, str] | None = None) -> KeypointConfig:
    """Read a YAML config, apply ``overrides`` (dotted keys; None values skipped) and validate.

    ``flags`` maps dotted keys to the command-line flag that set them, so an error names ``--epochs``
    rather than the file when the bad value was typed there.
    """
    raw = read_yaml(path)
    kind = (overrides or {}).get("model.type") or _model_type(raw, str(path))
    options = options_schema(kind, str(path))
    schema = KLPNetConfig if kind == "klpnet" else _topdown_schema(options)
    return load_config(schema, path, overrides, flags)


def resume_identity(cfg: KeypointConfig) -> dict:
    """The config minus what may change when a run is resumed (see :data:`RESUMABLE_KEYS`)."""
    d = cfg.to_dict()
    d.pop("out_dir", None)
    d.pop("name", None)
    for key in RESUMABLE_KEYS:
        d["train"].pop(key, None)
    if not d["train"].get("noise_sigma"):  # runs from before the option resume as they were
        d["train"].pop("noise_sigma", None)
    return d


def config_difference(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (``"model.type: 'x' → 'y'"``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += config_difference(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} → {b!r}"]
