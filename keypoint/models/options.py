"""Typed options of every keypoint model (the config's ``model:`` section), one :class:`Schema` each.

This module imports no torch: configs are validated (and ``--help`` texts built) before any model
exists. ``model_options(section, where)`` picks the schema from ``section["type"]`` and validates;
every error is one :class:`~geo_rs.errors.UserError` naming the key and the value.

Map-relative AdaAnchor hyper-parameters
---------------------------------------
AdaAnchor's three selection hyper-parameters are stated in *map cells* and, when left unset, scaled
to the feature map so that they keep the paper's proportions (paper: SimpleBaseline, input
256×192, stride 4 → a 64×48 map):

=====================  ===========================  ============================  ===================
option                 paper                        proportion (default)          16×16 map (input 64)
=====================  ===========================  ============================  ===================
``top_k``              k = 20 of 64·48 = 3072       ``top_k_fraction`` 0.0065     k = 2
``score_sigma``        σ = 4 px = 1 cell            ``score_sigma_fraction``      σ = 0.33 cell
                                                    0.0208 (1 of 48 cells)
``local_radius``       not given; the local offset  ``local_radius_fraction``     R = 1.56 cells
                       follows G-RMI (Papandreou    0.097 (R = 25 px of a
                       2017)                        257-px crop)
=====================  ===========================  ============================  ===================

"map side" is the shorter side of the map; ``k = max(1, round(fraction · h · w))``. Setting the
option itself (``top_k: 20``) overrides the proportion.

Collapse guard (default; see the AdaAnchor section of ``keypoint/STUDY.md``): the regression score r
is computed on the *coarse* estimate (cell + δ; ``score_from: coarse``) and the first
``warmup_epochs: 2`` select anchors as FixAnchor does. Scoring the refined estimate as eq. 12 says
(``score_from: refined``) lets every candidate whose coarse estimate lands within the refinement
radius look accurate, and the selection then drifts to cells the network finds easy to make confident
(border cells): measured on the 16×16 map with the paper's proportions and with k = 20, σ = 1 cell,
with a 2-epoch warm-up (which only delays it) and on a 32×32 map (stride 2). Coarse scoring is the
part of the guard that prevents it, and only with the paper's small k (k = 20 with coarse scoring
fails too); the warm-up lowers the visible error a little (guard table, one seed).
``score_from: refined, warmup_epochs: 0`` is the paper's literal setting.

Example::

    >>> opts = model_options({"type": "adaanchor", "width": 8})
    >>> type(opts).__name__, opts.resolved_top_k(16, 16), round(opts.resolved_sigma(16), 3)
    ('AdaAnchorOptions', 2, 0.333)
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from geo_rs.config import Schema, setting, validate_config
from geo_rs.errors import UserError

__all__ = [
    "AdaAnchorOptions",
    "BackboneOptions",
    "HeatmapOptions",
    "KLPNetOptions",
    "MODEL_OPTIONS",
    "ModelOptions",
    "RegressionOptions",
    "model_options",
]

# the paper's proportions (see module docstring)
PAPER_TOP_K_FRACTION = 20 / (64 * 48)
PAPER_SIGMA_FRACTION = 1 / 48
GRMI_RADIUS_FRACTION = 25 / 257


class BackboneOptions(Schema):
    """Options of :class:`keypoint.models.backbone.Backbone`, shared by every model."""

    width: int = setting(16, "backbone base width (channels of the first stage)", "channels", ge=4)
    stride: Literal[1, 2, 4, 8, 16] = setting(4, "output stride of the feature map", "input pixels per cell")
    context_levels: int = setting(2, "extra stride-2 levels for image-wide context", "levels", ge=0, le=5)
    blocks: int = setting(1, "residual blocks per stage (from stride 4 on)", "blocks", ge=0, le=8)


class ModelOptions(BackboneOptions):
    """Base of the per-model schemas; ``type`` selects the builder in :mod:`keypoint.models.registry`."""

    type: str


class HeatmapOptions(ModelOptions):
    """heatmap-anchor: Gaussian heatmap + local offset read at the argmax cell."""

    type: Literal["heatmap"] = "heatmap"
    sigma: float = setting(1.5, "σ of the target Gaussian", "map cells", gt=0, le=16)
    offset_radius: float = setting(2.0, "cells within this distance of a keypoint regress its offset",
                                   "map cells", gt=0)
    offset_weight: float = setting(1.0, "weight of the offset L1 loss", ge=0)


class RegressionOptions(ModelOptions):
    """regression-anchor: every coordinate regressed from the image centre."""

    type: Literal["regression"] = "regression"
    hidden: int = setting(256, "hidden units of the regression MLP", "units", ge=1)


class AdaAnchorOptions(ModelOptions):
    """AdaAnchor (paper §3) and its ablations (FixAnchor = ``selection: fixed``)."""

    type: Literal["adaanchor"] = "adaanchor"
    fusion: Literal["mul", "add"] = setting("mul", "score fusion s = c·r (mul, eq. 9) or (c + r)/2 (add)")
    selection: Literal["adaptive", "fixed"] = setting(
        "adaptive", "anchor selection: adaptive (top-k of s) or fixed (FixAnchor: the k cells nearest "
        "the target)")
    top_k: int | None = setting(None, "anchors per target (eq. 11); unset: top_k_fraction of the map",
                                "anchors", ge=1)
    top_k_fraction: float = setting(PAPER_TOP_K_FRACTION, "anchors per target as a fraction of the map's "
                                    "cells when top_k is unset (paper: 20 of 64·48)", "fraction", gt=0, le=1)
    score_sigma: float | None = setting(None, "σ of the regression score r (eq. 8); unset: "
                                        "score_sigma_fraction of the map's shorter side", "map cells", gt=0)
    score_sigma_fraction: float = setting(PAPER_SIGMA_FRACTION, "σ of r as a fraction of the map's shorter "
                                          "side when score_sigma is unset (paper: 1 cell of 48)",
                                          "fraction", gt=0, le=1)
    score_from: Literal["refined", "coarse"] = setting(
        "coarse", "estimate scored by r: the coarse cell + δ (the collapse guard, default) or the refined "
        "one (the paper's eq. 12, which collapses here: see keypoint/STUDY.md)")
    warmup_epochs: float = setting(2.0, "epochs of FixAnchor selection before the adaptive one starts "
                                   "(part of the collapse guard)", "epochs", ge=0)
    local_refinement: bool = setting(True, "local refinement module (eq. 12)")
    local_radius: float | None = setting(None, "radius of the local offset targets; unset: "
                                         "local_radius_fraction of the map's shorter side", "map cells", gt=0)
    local_radius_fraction: float = setting(GRMI_RADIUS_FRACTION, "local radius as a fraction of the map's "
                                           "shorter side when local_radius is unset (G-RMI: 25 of 257 px)",
                                           "fraction", gt=0, le=1)
    reg_weight: float = setting(1.0, "λ: weight of the anchor-offset L1 loss (eq. 4)", ge=0)
    local_weight: float = setting(1.0, "weight of the local-offset L1 loss", ge=0)
    focal_alpha: float | None = setting(None, "focal-loss α (unset: none, as CenterNet; RetinaNet uses "
                                        "0.25)", ge=0, le=1)
    focal_gamma: float = setting(2.0, "focal-loss γ", ge=0)
    prior: float = setting(0.01, "initial confidence (bias of the confidence head)", "probability",
                           gt=0, lt=1)

    def resolved_top_k(self, h: int, w: int) -> int:
        """k for an ``h × w`` map (explicit ``top_k`` or the map fraction, at least 1)."""
        k = self.top_k if self.top_k is not None else max(1, round(self.top_k_fraction * h * w))
        return min(int(k), h * w)

    def resolved_sigma(self, map_side: int) -> float:
        """σ of r in map cells for a map whose shorter side is ``map_side`` cells."""
        return float(self.score_sigma if self.score_sigma is not None
                     else self.score_sigma_fraction * map_side)

    def resolved_local_radius(self, map_side: int) -> float:
        """Local refinement radius in map cells (0 without local refinement)."""
        if not self.local_refinement:
            return 0.0
        return float(self.local_radius if self.local_radius is not None
                     else self.local_radius_fraction * map_side)


class KLPNetOptions(ModelOptions):
    """KLPNet (category-implicit heatmap, CKLM stages, conditional graph auto-encoder, LIS)."""

    type: Literal["klpnet"] = "klpnet"
    # CKLM
    num_stages: int = setting(3, "CKLM stages (1 → kernel 3; 2 → 5, 3; 3 → 7, 5, 3)", "stages", ge=1)
    kernels: list[int] = setting([7, 5, 3], "Gaussian kernel sizes, coarse to fine", "map cells")
    sigma_scale: float = setting(1.0, "multiplies every kernel's σ", gt=0)
    cklm_channels: int = setting(32, "CKLM feature channels", "channels", ge=1)
    offset_radius: float = setting(1.5, "cells within this distance regress the offset", "map cells", gt=0)
    heatmap_pos_weight: float = setting(10.0, "extra BCE weight on the heatmap's positive mass", ge=0)
    offset_weight: float = setting(1.0, "weight of the offset Smooth-L1 loss", ge=0)
    heatmap_invisible: bool = setting(True, "draw occluded (labelled, visibility 1) keypoints on the heatmap")
    # link predictor
    gae_hidden: int = setting(64, "graph auto-encoder hidden width", "units", ge=1)
    gae_latent: int = setting(32, "graph auto-encoder embedding size", "units", ge=1)
    gae_layers: int = setting(2, "graph convolution layers", "layers", ge=1)
    variational: bool = setting(False, "variational graph auto-encoder (KL term)")
    negatives_per_positive: int = setting(3, "sampled negative edges per skeleton edge", ge=1)
    node_jitter_px: float = setting(1.0, "σ of the jitter on training-graph node positions", "pixels", ge=0)
    link_weight: float = setting(1.0, "β: weight of the link loss (eq. 8)", ge=0)
    id_weight: float = setting(1.0, "weight of the keypoint-identity loss", ge=0)
    kd_weight: float = setting(1.0, "α: weight of the keypoint-detection loss (eq. 8)", ge=0)
    box_margin: float = setting(0.1, "box enlargement when deciding which nodes an object may own",
                                "fraction of the box's longer side", ge=0)
    # detector (DPAD stand-in)
    detector: bool = setting(True, "train the centre detector (needed to predict without boxes)")
    detector_weight: float = setting(1.0, "weight of the detector loss", ge=0)
    detector_threshold: float = setting(0.3, "minimum centre score of a detection", "probability", gt=0, lt=1)
    max_objects: int = setting(10, "most detections per image", "objects", ge=1)
    # inference
    peak_threshold: float = setting(0.2, "minimum heatmap peak of a node", "probability", gt=0, lt=1)
    max_peaks: int = setting(64, "most nodes per image", "nodes", ge=1)
    link_threshold: float = setting(0.5, "link probability above which an edge is drawn", "probability",
                                    gt=0, lt=1)
    lis_geo_weight: float = setting(1.0, "LIS: weight of the geometric cue", ge=0)
    lis_geo_sigma: float = setting(0.1, "LIS: scale of the geometric cue", "fraction of the box size", gt=0)
    lis_outlier_cost: float = setting(3.0, "LIS: cost of declaring a node an outlier", "nats", gt=0)
    feedback: bool = setting(True, "LIS feedback into CKLM: re-localise the grouped keypoints from the "
                             "heatmap around their template positions")
    feedback_radius: float = setting(0.12, "feedback: search radius around a template prediction",
                                     "fraction of the box size", gt=0)
    feedback_min_score: float = setting(0.05, "feedback: weakest heatmap value accepted as a keypoint",
                                        "probability", gt=0, lt=1)

    @model_validator(mode="after")
    def _check_stages(self) -> KLPNetOptions:
        if any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be positive odd sizes, got {self.kernels}")
        if self.num_stages > len(self.kernels):
            raise ValueError(f"num_stages {self.num_stages} needs at least as many kernels, "
                             f"got {self.kernels}")
        return self


MODEL_OPTIONS: dict[str, type[ModelOptions]] = {
    "heatmap": HeatmapOptions,
    "regression": RegressionOptions,
    "adaanchor": AdaAnchorOptions,
    "klpnet": KLPNetOptions,
}


def register_options(name: str, schema: type[ModelOptions]) -> None:
    """Declare the options schema of a model type added with :func:`keypoint.models.register_model`."""
    MODEL_OPTIONS[name] = schema


def options_schema(model_type: Any, where: str = "model") -> type[ModelOptions]:
    """The schema of ``model_type``; one UserError naming the known types otherwise."""
    if model_type not in MODEL_OPTIONS:
        raise UserError(f"{where}: key 'model.type': unknown model type {model_type!r}; "
                        f"known: {sorted(MODEL_OPTIONS)}")
    return MODEL_OPTIONS[model_type]


def model_options(section: Any, where: str = "model") -> ModelOptions:
    """Validate a ``model:`` section (a mapping with ``type``) into its typed options."""
    if isinstance(section, ModelOptions):
        return section
    if not isinstance(section, dict) or "type" not in section:
        raise UserError(f"{where}: the model section must be a mapping with a 'type' "
                        f"(one of {sorted(MODEL_OPTIONS)}), got {section!r}")
    return validate_config(options_schema(section["type"], where), section, where)
