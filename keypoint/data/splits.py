"""The train / val :class:`~keypoint.data.synth.KeypointData` of a config's ``data`` section.

Synthetic splits are generated once and cached as COCO under ``<cache_root>/synth-<hash>`` (the
hash covers the generator settings, the image count and the seed), so every run and study reuses
the same pixels. COCO splits are read from ``data.train_json`` / ``data.val_json``.

Example::

    >>> from keypoint.config import ImageData       # doctest: +SKIP
    >>> val = load_split(ImageData(val_images=8), "val", cache_root=None)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from geo_rs.errors import UserError

from .coco import load_coco, save_coco
from .synth import KeypointData, SynthConfig, generate_dataset

CACHE_ROOT = Path("runs/keypoint/cache")

__all__ = ["CACHE_ROOT", "load_split", "split_cache_dir"]


def _field(section: Any, name: str) -> Any:
    return section[name] if isinstance(section, dict) else getattr(section, name)


def split_cache_dir(synth: SynthConfig, n: int, seed: int, cache_root: str | Path = CACHE_ROOT) -> Path:
    """Folder of the cached synthetic split (settings, count and seed hashed)."""
    key = json.dumps([synth.to_dict(), int(n), int(seed)], sort_keys=True).encode()
    return Path(cache_root) / f"synth-{hashlib.sha1(key).hexdigest()[:12]}"


def load_split(data: Any, split: str, cache_root: str | Path | None = CACHE_ROOT,
               quiet: bool = False) -> KeypointData:
    """The ``split`` (``train`` | ``val``) of a data section (a :mod:`keypoint.config` section or a
    mapping with the same keys). ``cache_root=None`` generates without caching; ``quiet`` hides the
    generator's progress bar."""
    if split not in ("train", "val"):
        raise UserError(f"split must be 'train' or 'val', got {split!r}")
    if _field(data, "source") == "coco":
        path = _field(data, f"{split}_json")
        if not path:
            raise UserError(f"config: data.{split}_json is required when data.source is 'coco'")
        return load_coco(path)
    synth = _field(data, "synth")
    synth = synth if isinstance(synth, SynthConfig) else SynthConfig.from_dict(synth or {})
    n, seed = int(_field(data, f"{split}_images")), int(_field(data, f"{split}_seed"))
    if cache_root is None:
        return generate_dataset(n, seed, synth, progress=not quiet)
    cache = split_cache_dir(synth, n, seed, cache_root)
    if not (cache / "annotations.json").is_file():
        # written beside the cache and renamed into place: concurrent runs never read half a split
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        save_coco(generate_dataset(n, seed, synth, progress=not quiet), tmp)
        try:
            os.rename(tmp, cache)
        except OSError:  # another process finished first (or a stale partial folder): keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if not (cache / "annotations.json").is_file():
                shutil.rmtree(cache, ignore_errors=True)
                save_coco(generate_dataset(n, seed, synth, progress=not quiet), cache)
    return load_coco(cache / "annotations.json")
