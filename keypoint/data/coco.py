"""COCO keypoint JSON export / import, so real COCO-format data plugs in like the synthetic set.

Layout written by :func:`save_coco` (``directory/``)::

    annotations.json     # {"images", "annotations", "categories"} — COCO keypoint format
    images/000000.png ...

* ``categories[i]``: ``id``, ``name``, ``keypoints`` (names), ``skeleton`` (**1-based** pairs, as
  COCO), plus ``sigmas`` (our extension: per-keypoint OKS sigmas; defaults to 0.05 if missing).
* ``annotations[i]``: ``image_id``, ``category_id``, ``keypoints`` flat ``[x1, y1, v1, ...]``,
  ``num_keypoints`` (count of ``v > 0``), ``bbox`` ``[x, y, w, h]``, ``area``, ``iscrowd`` (0), ``id``.

Coordinates: COCO stores continuous coordinates whose pixel ``j`` spans ``[j, j + 1)``; this toolkit
puts pixel centres at integers. Export adds 0.5 to keypoints and box origins; import subtracts it,
so a round trip is exact to float precision. Keypoints with ``v == 0`` are written as ``0, 0, 0``
(COCO) and read back with ``visibility 0`` and NaN locations.

Example::

    >>> save_coco(data, "out/synth")          # doctest: +SKIP
    >>> data2 = load_coco("out/synth/annotations.json")  # images resolved next to it
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geo_rs.errors import UserError

from .synth import Annotation, Category, KeypointData, Sample

_HALF = 0.5  # toolkit (pixel centre at integers) -> COCO (pixel j spans [j, j + 1))


def to_coco_dict(data: KeypointData) -> dict:
    """The COCO keypoint JSON dictionary of ``data`` (image ``file_name`` taken from each sample)."""
    images, anns = [], []
    ann_id = 1
    for s in data.samples:
        h, w = s.image.shape[:2]
        images.append({"id": int(s.image_id), "file_name": s.file_name or f"{s.image_id:06d}.png",
                       "height": int(h), "width": int(w)})
        for a in s.annotations:
            flat = []
            for (x, y), v in zip(a.keypoints, a.visibility):
                flat += [0.0, 0.0, 0] if v == 0 else [float(x) + _HALF, float(y) + _HALF, int(v)]
            box = [float(a.box[0]) + _HALF, float(a.box[1]) + _HALF, float(a.box[2]), float(a.box[3])]
            anns.append({"id": ann_id, "image_id": int(s.image_id), "category_id": int(a.category_id),
                         "keypoints": flat, "num_keypoints": a.num_keypoints, "bbox": box,
                         "area": float(a.area), "iscrowd": 0})
            ann_id += 1
    cats = [{"id": c.id, "name": c.name, "supercategory": "object", "keypoints": list(c.keypoint_names),
             "skeleton": [[a + 1, b + 1] for a, b in c.skeleton], "sigmas": list(c.sigmas)}
            for c in data.categories]
    return {"images": images, "annotations": anns, "categories": cats}


def save_coco(data: KeypointData, directory: str | Path) -> Path:
    """Write ``annotations.json`` and ``images/*.png`` under ``directory``; returns the JSON path."""
    from PIL import Image

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    for s in data.samples:
        if not s.file_name:
            s.file_name = f"{s.image_id:06d}.png"
        img = np.clip(np.round(s.image * 255), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(directory / "images" / s.file_name)
    path = directory / "annotations.json"
    path.write_text(json.dumps(to_coco_dict(data)))
    return path


def _require(d: dict, key: str, where: str):
    if key not in d:
        raise UserError(f"{where}: missing field '{key}'")
    return d[key]


def categories_from_coco(cats: list[dict], where: str = "categories") -> tuple[Category, ...]:
    """Parse COCO ``categories`` (1-based skeleton) into :class:`Category` tuples (0-based)."""
    out = []
    for i, c in enumerate(cats):
        w = f"{where}[{i}]"
        names = tuple(str(n) for n in _require(c, "keypoints", w))
        if not names:
            raise UserError(f"{w}: 'keypoints' is empty (category '{c.get('name')}' has no keypoints)")
        k = len(names)
        skeleton = []
        for pair in c.get("skeleton", []):
            if len(pair) != 2 or not all(1 <= int(p) <= k for p in pair):
                raise UserError(f"{w}.skeleton: pair {pair} is not two 1-based indices in [1, {k}]")
            skeleton.append((int(pair[0]) - 1, int(pair[1]) - 1))
        sigmas = tuple(float(s) for s in c.get("sigmas", [0.05] * k))
        if len(sigmas) != k:
            raise UserError(f"{w}.sigmas: expected {k} values, got {len(sigmas)}")
        out.append(Category(int(_require(c, "id", w)), str(c.get("name", f"cat{c['id']}")), names,
                            tuple(skeleton), sigmas))
    return tuple(out)


def from_coco_dict(coco: dict, image_root: str | Path | None = None,
                   load_images: bool = True) -> KeypointData:
    """Parse a COCO keypoint dictionary. Images are read from ``image_root / file_name`` (PNG/JPEG)."""
    for key in ("images", "annotations", "categories"):
        _require(coco, key, "COCO JSON")
    cats = categories_from_coco(coco["categories"])
    by_id = {c.id: c for c in cats}
    samples: dict[int, Sample] = {}
    for i, im in enumerate(coco["images"]):
        w = f"images[{i}]"
        image_id = int(_require(im, "id", w))
        fname = str(_require(im, "file_name", w))
        if load_images:
            if image_root is None:
                raise UserError("load_images=True needs image_root")
            path = Path(image_root) / fname
            if not path.is_file():
                raise UserError(f"{w}: image file not found: {path}")
            from PIL import Image

            arr = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        else:
            arr = np.zeros((int(_require(im, "height", w)), int(_require(im, "width", w)), 3), np.float32)
        samples[image_id] = Sample(image=arr, annotations=[], image_id=image_id, file_name=fname)
    for i, a in enumerate(coco["annotations"]):
        w = f"annotations[{i}]"
        cid = int(_require(a, "category_id", w))
        if cid not in by_id:
            raise UserError(f"{w}: category_id {cid} not in categories {sorted(by_id)}")
        k = by_id[cid].num_keypoints
        flat = np.asarray(_require(a, "keypoints", w), np.float64)
        if flat.shape != (3 * k,):
            raise UserError(f"{w}: 'keypoints' has {flat.size} numbers, expected 3*{k} for category {cid}")
        trip = flat.reshape(k, 3)
        vis = trip[:, 2].astype(np.int64)
        if not np.isin(vis, (0, 1, 2)).all():
            raise UserError(f"{w}: visibility flags must be 0, 1 or 2, got {sorted(set(vis.tolist()))}")
        kp = (trip[:, :2] - _HALF).astype(np.float32)
        kp[vis == 0] = np.nan
        box = np.asarray(a.get("bbox", [np.nan] * 4), np.float32)
        if box.shape != (4,):
            raise UserError(f"{w}: 'bbox' must have 4 numbers, got {box.size}")
        box[:2] -= _HALF
        iid = int(_require(a, "image_id", w))
        if iid not in samples:
            raise UserError(f"{w}: image_id {iid} not among images")
        samples[iid].annotations.append(Annotation(cid, kp, vis, box, float(a.get("area", box[2] * box[3]))))
    return KeypointData(samples=list(samples.values()), categories=cats)


def load_coco(json_path: str | Path, image_root: str | Path | None = None,
              load_images: bool = True) -> KeypointData:
    """Read a COCO keypoint JSON file; ``image_root`` defaults to ``<json dir>/images``."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise UserError(f"COCO annotation file not found: {json_path}")
    try:
        coco = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise UserError(f"{json_path}: not valid JSON{where}") from None
    if image_root is None:
        image_root = json_path.parent / "images"
    try:
        return from_coco_dict(coco, image_root, load_images)
    except UserError as exc:
        msg = str(exc)
        raise UserError(msg if str(json_path) in msg else f"{json_path}: {msg}") from None
