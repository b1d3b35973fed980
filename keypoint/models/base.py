"""The interface every keypoint model implements (trainer, evaluator and CLI rely only on it).

``model = build_model(cfg, num_keypoints=K, input_size=S)`` (see :mod:`keypoint.models.registry`):

* ``model.codec`` — a :class:`keypoint.codecs.Codec`; the trainer encodes each item's
  ``keypoints (N, K, 2)`` / ``visibility (N, K)`` with ``model.codec.encode`` and stacks them.
* ``model(images (B, 3, S, S)) -> dict[str, Tensor]`` raw outputs.
* ``model.loss(outputs, targets) -> (loss scalar, {name: float})`` with ``targets`` the stacked
  codec targets (each ``(B, ...)``).
* ``model.decode(outputs) -> (keypoints (B, K, 2) input pixels, scores (B, K))``.
* ``model.predict(images)`` = eval-mode, no-grad forward + decode.
* ``model.config`` — the model section it was built from (stored in checkpoints).
* ``model.set_progress(epoch)`` — optional schedule hook, called before every training step.
"""
from __future__ import annotations

import torch
from torch import nn

from ..codecs import Codec


class KeypointModel(nn.Module):
    """Base class; subclasses set ``codec`` and implement ``forward`` and ``loss``."""

    codec: Codec
    config: dict
    num_keypoints: int

    def loss(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def decode(self, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.codec.decode(outputs)

    def set_progress(self, epoch: float) -> None:
        """Called by the trainer before every step with the fractional epoch (``epoch + batch / steps
        per epoch``): models whose loss follows a schedule (AdaAnchor's warm-up) read it here."""

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was = self.training
        self.eval()
        try:
            return self.decode(self(images))
        finally:
            self.train(was)


def parse_options(cfg: dict, schema: type, model_name: str):
    """The typed options (:mod:`keypoint.models.options`) of a ``model:`` section; ``type`` defaults to
    ``model_name``. Unknown keys and bad values raise one :class:`UserError` naming the key."""
    from geo_rs.config import validate_config

    return validate_config(schema, {"type": model_name, **cfg}, f"model '{model_name}'")


def backbone_from(opts):
    """The :class:`~keypoint.models.backbone.Backbone` of typed options (any ``BackboneOptions``)."""
    from .backbone import Backbone

    return Backbone(width=int(opts.width), stride=int(opts.stride),
                    context_levels=int(opts.context_levels), blocks=int(opts.blocks))
