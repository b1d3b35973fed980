"""Keypoint data: the seeded synthetic generator, COCO keypoint JSON I/O and torch datasets."""
from .coco import from_coco_dict, load_coco, save_coco, to_coco_dict
from .dataset import (
    KeypointCropDataset,
    KeypointImageDataset,
    KeypointLayout,
    apply_affine,
    crop_affine,
    invert_affine,
    warp_crop,
)
from .synth import (
    CATEGORIES,
    Annotation,
    Category,
    KeypointData,
    Sample,
    SynthConfig,
    category_by_id,
    generate_dataset,
    generate_sample,
)

__all__ = ["CATEGORIES", "Annotation", "Category", "KeypointCropDataset", "KeypointData",
           "KeypointImageDataset", "KeypointLayout", "Sample", "SynthConfig", "apply_affine",
           "category_by_id", "crop_affine", "from_coco_dict", "generate_dataset", "generate_sample",
           "invert_affine", "load_coco", "save_coco", "to_coco_dict", "warp_crop"]
