"""Keypoint data: the seeded synthetic generator, COCO keypoint JSON I/O, torch datasets, cached
train/val splits. Names resolve lazily (no torch until a dataset is used)."""
from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("from_coco_dict", "load_coco", "save_coco", "to_coco_dict"), "coco"),
    **dict.fromkeys(("KeypointCropDataset", "KeypointImageDataset", "KeypointLayout", "apply_affine",
                     "crop_affine", "invert_affine", "warp_crop"), "dataset"),
    **dict.fromkeys(("CATEGORIES", "PRESETS", "Annotation", "Category", "KeypointData", "Sample",
                     "SynthConfig", "category_by_id", "generate_dataset", "generate_sample"), "synth"),
    **dict.fromkeys(("load_split", "split_cache_dir"), "splits"),
    "materialize": "tensors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
