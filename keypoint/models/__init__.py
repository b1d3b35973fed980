"""Keypoint models: shared backbone, baselines, AdaAnchor, and the type-name registry."""
from .backbone import Backbone
from .base import KeypointModel
from .registry import MODEL_BUILDERS, build_model, model_types, register_model

__all__ = ["MODEL_BUILDERS", "Backbone", "KeypointModel", "build_model", "model_types", "register_model"]
