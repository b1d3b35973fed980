"""keypoint — keypoint detectors (heatmap, regression, AdaAnchor, KLPNet), their data, training and
metrics, and box detectors with their verification (``keypoint.box``).

The public API is flat and lazy (PEP 562): ``from keypoint import train`` imports the trainer, and
with it torch, only then; ``import keypoint`` and ``geo-rs keypoint --help`` stay light.
"""
from ._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("AnchorCodec", "Codec", "HeatmapCodec", "HeatmapOffsetCodec", "OffsetCodec",
                     "RegressionCodec", "codec_from_dict", "encode_batch"), "codecs"),
    **dict.fromkeys(("CATEGORIES", "PRESETS", "KeypointCropDataset", "KeypointData", "KeypointImageDataset",
                     "KeypointLayout", "SynthConfig", "generate_dataset", "generate_sample", "load_coco",
                     "load_split", "save_coco"), "data"),
    **dict.fromkeys(("KLPNetConfig", "TopDownConfig", "load_keypoint_config", "validate_keypoint_config"),
                    "config"),
    **dict.fromkeys(("FitResult", "FitSettings", "fit"), "fit"),
    **dict.fromkeys(("load_checkpoint",), "checkpoints"),
    **dict.fromkeys(("train",), "train"),
    **dict.fromkeys(("evaluate_model", "predict_crops"), "evaluate"),
    **dict.fromkeys(("Grouping", "fit_similarity", "fit_templates", "group_nodes_lis", "group_nodes_naive"),
                    "instability"),
    **dict.fromkeys(("load_klpnet_checkpoint", "train_klpnet"), "klpnet_train"),
    **dict.fromkeys(("evaluate_klpnet", "predict_dataset", "predict_image_klpnet"), "klpnet_eval"),
    **dict.fromkeys(("ConditionalGraphAutoEncoder", "average_precision", "link_loss", "roc_auc"), "links"),
    **dict.fromkeys(("keypoint_recall", "nme", "oks", "oks_ap", "oks_matrix", "pck", "pck_per_keypoint",
                     "visibility_split"), "metrics"),
    **dict.fromkeys(("Backbone", "KeypointModel", "build_model", "model_types", "register_model"), "models"),
    "KLPNet": "models.klpnet",
    "anchor_report": "models.adaanchor",
    **dict.fromkeys(("KeypointSpec", "KeypointVerification", "verify_instance", "verify_keypoints",
                     "verify_keypoints_decoupled"), "verify"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
