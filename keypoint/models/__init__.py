"""Keypoint models: shared backbone, baselines, AdaAnchor, KLPNet, their typed options and the
type-name registry (names resolve lazily: the options import no torch)."""
from .._lazy import lazy_exports

_EXPORTS = {
    "Backbone": "backbone",
    "KeypointModel": "base",
    **dict.fromkeys(("MODEL_BUILDERS", "build_model", "model_types", "register_model"), "registry"),
    **dict.fromkeys(("MODEL_OPTIONS", "model_options", "register_options"), "options"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
