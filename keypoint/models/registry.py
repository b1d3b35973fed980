"""Model type name → builder. Builders are named as ``"module:function"`` strings and imported on
first use, so adding a model is ONE added line in :data:`MODEL_BUILDERS` (no import cycles).

A builder has the signature ``build(cfg: dict, *, num_keypoints: int, input_size: int) ->
KeypointModel`` (see :mod:`keypoint.models.base`), where ``cfg`` is the config's ``model:`` section
(``cfg["type"]`` selects the builder; the rest are that model's options).

Example::

    >>> m = build_model({"type": "heatmap", "width": 8}, num_keypoints=4, input_size=64)
    >>> type(m).__name__
    'HeatmapAnchorModel'
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from geo_rs.errors import UserError

MODEL_BUILDERS: dict[str, str] = {
    "heatmap": "keypoint.models.baselines:build_heatmap_anchor",
    "regression": "keypoint.models.baselines:build_regression_anchor",
    "adaanchor": "keypoint.models.adaanchor:build_adaanchor",
    "klpnet": "keypoint.models.klpnet:build_klpnet",  # trains via keypoint.klpnet_train (whole images)
}


def register_model(name: str, target: str) -> None:
    """Add (or replace) a builder at run time: ``target`` = ``"package.module:function"``."""
    if ":" not in target:
        raise UserError(f"model builder target must look like 'module:function', got '{target}'")
    MODEL_BUILDERS[name] = target


def model_types() -> list[str]:
    return sorted(MODEL_BUILDERS)


def get_builder(name: str):
    if name not in MODEL_BUILDERS:
        raise UserError(f"unknown model type '{name}'; known: {model_types()}")
    module, func = MODEL_BUILDERS[name].split(":")
    return getattr(import_module(module), func)


def build_model(cfg: dict[str, Any], *, num_keypoints: int, input_size: int):
    """Build the model described by ``cfg`` (needs ``cfg["type"]``)."""
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise UserError(f"model config must be a mapping with a 'type' (one of {model_types()}), got {cfg!r}")
    builder = get_builder(str(cfg["type"]))
    return builder(dict(cfg), num_keypoints=int(num_keypoints), input_size=int(input_size))
