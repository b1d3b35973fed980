"""keypoint.box — single-box detectors and their IoU stability verification (IBP-IoU paper reproduction).

Stage 1 of a pose pipeline: a detector maps an image to one box (x1, y1, x2, y2); the verifier bounds the
box over a perturbation set (``geo_rs.output_bounds``) and then the IoU with the ground truth
(``geo_rs.iou_bounds``); the box is certified stable when the IoU lower bound is >= t.
"""
from .attack import AttackResult, attack_min_iou
from .data import load_coco_folder, mnist_canvas, save_coco_folder
from .model import MnistBoxCNN, load_detector, save_detector
from .report import merge_results, write_report
from .train import TrainConfig, evaluate_iou, train_box_detector
from .verify import (
    PAPER_EPS,
    VerifyConfig,
    certified_box_accuracy,
    check_detector,
    run_verification,
    verify_unit,
)

__all__ = [
    "AttackResult", "MnistBoxCNN", "PAPER_EPS", "TrainConfig", "VerifyConfig", "attack_min_iou",
    "certified_box_accuracy", "check_detector", "evaluate_iou", "load_coco_folder", "load_detector",
    "merge_results", "mnist_canvas", "run_verification", "save_coco_folder", "save_detector",
    "train_box_detector", "verify_unit", "write_report",
]
