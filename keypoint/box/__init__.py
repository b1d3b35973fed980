"""keypoint.box — single-box detectors and their IoU stability verification (IBP-IoU paper reproduction).

Stage 1 of a pose pipeline: a detector maps an image to one box (x1, y1, x2, y2); the verifier bounds the
box over a perturbation set (``geo_rs.output_bounds``) and then the IoU with the ground truth
(``geo_rs.iou_bounds``); the box is certified stable when the IoU lower bound is >= t.

Names resolve lazily (PEP 562): importing ``keypoint.box`` does not import torch.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("AttackResult", "attack_min_iou"), "attack"),
    **dict.fromkeys(("load_coco_folder", "mnist_canvas", "save_coco_folder"), "data"),
    **dict.fromkeys(("MnistBoxCNN", "load_detector", "save_detector"), "model"),
    **dict.fromkeys(("merge_results", "write_report"), "report"),
    **dict.fromkeys(("TrainConfig", "evaluate_iou", "train_box_detector"), "train"),
    **dict.fromkeys(("PAPER_EPS", "VerifyConfig", "certified_box_accuracy", "check_detector",
                     "run_verification", "verify_unit"), "verify"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
