"""Datasets on disk: npz arrays and folders of images with index masks.

``npz``: a folder with ``train.npz`` / ``val.npz`` / ``test.npz`` (any ``*.npz``: one split per
file, named by its stem) or a single ``.npz`` file (one split, named by the file's stem). Arrays:
``images`` uint8 ``[N,H,W,3]`` / ``[N,H,W,1]`` / grey ``[N,H,W]`` (or float in [0, 1]), ``labels``
integer ``[N,H,W]``; optional ``names`` ``[N]`` and, overriding inference, ``num_classes``,
``ignore_index`` (negative = none) and ``class_names``. Without them, ``num_classes`` is the
largest label (other than ``ignore_index``) over all splits + 1 and ``ignore_index`` is None;
nothing is printed.

``folder``: ``PATH/images`` + ``PATH/masks`` (or ``PATH/labels``) with matching file stems
(png/jpg/jpeg/bmp/tif) form the split ``train`` (``?val_fraction=0.2`` carves a ``val`` split
out of it, :mod:`autoloss.data.carve`); or split folders ``PATH/<split>/images`` and
``PATH/<split>/masks``. Masks are single-channel index images (mode L or P). Images are read
lazily; every mask is scanned once when the dataset is opened: ``num_classes`` (if not given) is
the largest label + 1, and a label outside ``[0, num_classes)`` that is not ``ignore_index`` is an
error there and then.

Inferring ``num_classes`` refuses a void label stored without ``ignore_index`` (masks holding
``{0, 1, 2, 255}`` would be a 256-class dataset): the error names the values and the spec
options that say what they are (``?ignore_index=255``, or ``?num_classes=256`` if meant).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from autoloss.data.dataset import (
    ArrayStore,
    FileStore,
    SegmentationDataset,
    check_image_size,
    check_num_classes,
    image_mode,
    infer_num_classes,
    label_range_error,
    read_mask,
    resize_label,
)
from autoloss.errors import InvalidValueError, MissingFileError

__all__ = ["IMAGE_EXTENSIONS", "folder_dataset", "folder_splits", "npz_arrays", "npz_dataset",
           "npz_splits", "pair_files", "split_order"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_SPLIT_ORDER = ("train", "val", "test")


def split_order(names: Sequence[str]) -> list[str]:
    """``train``, ``val``, ``test`` first, then the rest alphabetically."""
    rank = {name: i for i, name in enumerate(_SPLIT_ORDER)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise MissingFileError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise InvalidValueError(f"{what} {path} is not a folder")


def no_split(spec: str, split: str, splits: Sequence[str], *, hint: str = "") -> ValueError:
    """The error for a split the dataset lacks; ``hint`` (starting with "; ") says how to get it."""
    return InvalidValueError(f"{spec}: no split {split!r}; available splits: {list(splits)}{hint}")


# ---- npz --------------------------------------------------------------------------------------

def _npz_files(path: Path) -> dict[str, Path]:
    if not path.exists():
        raise MissingFileError(f"npz dataset path {path} does not exist")
    if path.is_file():
        if path.suffix != ".npz":
            raise InvalidValueError(f"expected a .npz file or a folder of .npz files, but got {path}")
        return {path.stem: path}
    files = {p.stem: p for p in path.glob("*.npz")}
    if not files:
        raise MissingFileError(f"no .npz files in {path} (expected train.npz, val.npz, ...)")
    return files


def npz_splits(path: Path) -> list[str]:
    """The splits of an npz dataset: one per file."""
    return split_order(_npz_files(path))


def memory_budget() -> int:
    """The most bytes one npz file may unpack to: half the machine's memory (8 GB where it
    cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):
        return 8 * 10**9


def _check_npz_headers(file: Path, keys: Sequence[str] | None) -> None:
    """Refuse, from the ``.npy`` headers alone (before anything is decompressed), an npz file
    whose arrays would unpack to more than :func:`memory_budget` bytes (a zip bomb: a few MB of
    zeros that claim many GB), or whose images exceed ``MAX_IMAGE_PIXELS``."""
    total = 0
    with zipfile.ZipFile(file) as archive:
        for name in archive.namelist():
            key = name[:-4] if name.endswith(".npy") else name
            if keys is not None and key not in keys:
                continue
            with archive.open(name) as member:
                version = np.lib.format.read_magic(member)
                read = {(1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read is None:
                    continue  # numpy's own reader judges other versions
                shape, _, dtype = read(member)
            total += math.prod(shape) * dtype.itemsize
            if key in ("images", "labels") and len(shape) >= 3:
                check_image_size(shape[1], shape[2], where=f"{file}: array {key!r} {shape}")
    if total > memory_budget():
        raise InvalidValueError(
            f"{file} unpacks to {total / 1e9:.1f} GB, more than half of this machine's memory "
            f"({memory_budget() / 1e9:.1f} GB, autoloss.data.formats.memory_budget); split it "
            f"into smaller files or resize its images")


def _load_npz(file: Path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an npz file (only ``keys`` when given, all else); a file that is not a
    readable npz archive (empty, truncated, corrupt, pickled objects) raises one clear error, and
    so does one that would unpack to more than the machine holds (:func:`_check_npz_headers`)."""
    try:
        if zipfile.is_zipfile(file):
            _check_npz_headers(file, keys)
        with np.load(file, allow_pickle=False) as z:
            return {key: z[key] for key in (z.files if keys is None else keys) if key in z.files}
    except InvalidValueError:  # a limit of _check_npz_headers, already one clear error
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        reason = ("neither a zip archive nor an .npy array; numpy would try it as a pickle, "
                  "which autoloss never loads" if "pickled" in str(err)
                  else f"{type(err).__name__}: {err}")
        raise InvalidValueError(
            f"cannot read {file}: not a valid .npz archive ({reason}); write it with "
            f"numpy.savez(path, images=..., labels=...)") from None


def _npz_keys(file: Path) -> list[str]:
    with np.load(file, allow_pickle=False) as z:
        return list(z.files)


def npz_arrays(file: Path, *, size: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(images [N,H,W,C], labels [N,H,W], other arrays)`` of one npz file, checked and resized."""
    arrays = _load_npz(file)
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise InvalidValueError(f"{file} has no array(s) {missing}; found {sorted(arrays)} "
                         f"(expected 'images' [N,H,W,3] and 'labels' [N,H,W])")
    images, labels = arrays.pop("images"), arrays.pop("labels")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or labels.ndim != 3 \
            or images.shape[:3] != labels.shape:
        raise InvalidValueError(f"{file}: expected images [N,H,W,3] or [N,H,W] and labels [N,H,W] of the "
                         f"same N,H,W, but got images {images.shape} and labels {labels.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise InvalidValueError(f"{file}: images must be uint8 (0..255) or float in [0, 1], "
                             f"but got dtype {images.dtype}")
        images = images.astype(np.float32)
        if not np.isfinite(images).all():
            raise InvalidValueError(f"{file}: images hold {np.count_nonzero(~np.isfinite(images))} "
                                    f"NaN or infinite pixel values; float images must lie in "
                                    f"[0, 1]")
        if images.size and (images.min() < 0 or images.max() > 1):
            raise InvalidValueError(f"{file}: float images must lie in [0, 1], but got values in "
                             f"[{images.min()}, {images.max()}]")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidValueError(f"{file}: labels must be integers, but got dtype {labels.dtype}")
    if size is not None and images.shape[1:3] != tuple(size):
        images = np.stack([_resize_array_image(im, size) for im in images]) if len(images) \
            else np.zeros((0, *size, images.shape[-1]), images.dtype)
        labels = resize_label(labels, size)
    return images, labels, arrays


def _resize_array_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of one ``[H,W,C]`` image via PIL."""
    channels = [image[..., c] for c in range(image.shape[-1])]
    mode = "L" if image.dtype == np.uint8 else "F"
    out = [np.asarray(Image.fromarray(ch, mode=mode).resize(
        (size[1], size[0]), Image.Resampling.BILINEAR)) for ch in channels]
    return np.stack(out, axis=-1).astype(image.dtype)


def _scalar(arrays: dict[str, np.ndarray], key: str, file: Path) -> int | None:
    if key not in arrays:
        return None
    value = arrays[key]
    if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
        raise InvalidValueError(f"{file}: array {key!r} must be a single integer, but got {value!r}")
    return int(value.reshape(()))


def npz_dataset(path: Path, split: str, *, spec: str, num_classes: int | None = None,
                ignore_index: int | None | str = "auto", size: tuple[int, int] | None = None,
                class_names: Sequence[str] | None = None, name: str | None = None,
                ) -> SegmentationDataset:
    """Load split ``split`` of an npz dataset (see the module docstring for the layout).

    ``ignore_index="auto"`` reads it from the file (``ignore_index`` array) or uses None.
    """
    files = _npz_files(path)
    if split not in files:
        raise no_split(spec, split, split_order(files))
    file = files[split]
    images, labels, extra = npz_arrays(file, size=size)
    if ignore_index == "auto":
        stored = _scalar(extra, "ignore_index", file)
        ignore_index = stored if stored is not None and stored >= 0 else None
    if num_classes is None:
        num_classes = _scalar(extra, "num_classes", file)
    if num_classes is None:
        num_classes = _infer_num_classes(files, ignore_index, where=spec)
    check_num_classes(num_classes, where=f"{spec} ({file})")
    if class_names is None and "class_names" in extra:
        class_names = [str(c) for c in extra["class_names"].reshape(-1)]
        if len(class_names) != num_classes:
            raise InvalidValueError(f"{file}: 'class_names' has {len(class_names)} entries, but "
                             f"num_classes is {num_classes}")
    if class_names is None:
        class_names = [f"class{i}" for i in range(num_classes)]
    names = extra.get("names")
    item_names = tuple(str(n) for n in names) if names is not None and len(names) == len(labels) \
        else tuple(f"{split}_{i:05d}" for i in range(len(labels)))
    store = ArrayStore(images, labels, item_names, source=str(file))
    return SegmentationDataset(store, name=name or (path.stem if path.is_file() else path.name),
                               spec=spec, split=split, num_classes=num_classes,
                               ignore_index=ignore_index, class_names=class_names)


def _infer_num_classes(files: dict[str, Path], ignore_index: int | None, *, where: str) -> int:
    """Largest label (other than ``ignore_index``) over every split's ``labels`` + 1, refused
    where that would make mostly empty classes (:func:`~autoloss.data.dataset.infer_num_classes`)."""
    found: set[int] = set()
    for file in files.values():
        arrays = _load_npz(file, ["labels"])
        if "labels" not in arrays:
            raise InvalidValueError(f"{file} has no array 'labels'; found "
                                    f"{sorted(_npz_keys(file))}")
        labels = arrays["labels"]
        values = np.unique(labels) if labels.dtype != np.uint8 \
            else np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        values = values[values != ignore_index] if ignore_index is not None else values
        if values.size:  # beyond the class limit: that error first, naming the file
            check_num_classes(int(values.max()) + 1, where=f"{where} ({file})")
        found.update(int(v) for v in values)
    return infer_num_classes(sorted(found), where=where, ignore_index=ignore_index)


# ---- folders of images and masks ----------------------------------------------------------------

def _mask_dir(folder: Path) -> Path | None:
    for name in ("masks", "labels"):
        if (folder / name).is_dir():
            return folder / name
    return None


def folder_splits(path: Path) -> list[str]:
    """``["train"]`` for a flat ``images/`` + ``masks/`` folder, else the split subfolders."""
    _require_dir(path, "folder dataset")
    if (path / "images").is_dir() and _mask_dir(path) is not None:
        return ["train"]
    splits = [p.name for p in path.iterdir()
              if p.is_dir() and (p / "images").is_dir() and _mask_dir(p) is not None]
    if not splits:
        raise MissingFileError(
            f"{path} has neither images/ + masks/ (or labels/) subfolders nor split folders "
            f"like {path}/train/images + {path}/train/masks")
    return split_order(splits)


def _index(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
            continue
        if p.stem in files:
            raise InvalidValueError(f"two files with the stem {p.stem!r} in {folder}: "
                             f"{files[p.stem].name} and {p.name}")
        files[p.stem] = p
    return files


def pair_files(image_dir: Path, mask_dir: Path, *, mask_suffix: str = ""
               ) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """Image and mask files matched by stem (a mask's stem may end with ``mask_suffix``)."""
    _require_dir(image_dir, "image folder")
    _require_dir(mask_dir, "mask folder")
    images = _index(image_dir)
    masks = {stem[:len(stem) - len(mask_suffix)] if mask_suffix and stem.endswith(mask_suffix)
             else stem: p for stem, p in _index(mask_dir).items()}
    if not images:
        raise MissingFileError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask or no_image:
        raise InvalidValueError(
            f"images in {image_dir} and masks in {mask_dir} must match by file stem, but "
            f"{len(no_mask)} image(s) have no mask {no_mask[:5]} and {len(no_image)} mask(s) "
            f"have no image {no_image[:5]}")
    stems = sorted(images)
    return tuple(images[s] for s in stems), tuple(masks[s] for s in stems)


def channels_of(path: Path) -> int:
    """1 for a grey image file, else 3."""
    return 1 if image_mode(path) in {"1", "L", "LA", "I", "I;16", "F"} else 3


def folder_dataset(path: Path, split: str, *, spec: str, num_classes: int | None = None,
                   ignore_index: int | None = None, size: tuple[int, int] | None = None,
                   ) -> SegmentationDataset:
    """Load split ``split`` of a folder dataset (see the module docstring for the layout).

    Every mask of every split is scanned once per process (cached by file and modification
    time): ``num_classes`` is inferred from the values when not given, and a value outside
    ``[0, num_classes)`` that is not ``ignore_index`` is an error here, naming the value, a mask
    that holds it and the spec option that fixes it.
    """
    splits = folder_splits(path)
    if split not in splits:
        raise no_split(spec, split, splits)
    root = _split_root(path, splits, split)
    images, masks = pair_files(root / "images", _mask_dir(root))  # type: ignore[arg-type]
    values = _folder_values(path, splits)
    if num_classes is None:
        top = max((v for v in values if v != ignore_index), default=0)
        check_num_classes(top + 1, where=f"{spec}: mask {values.get(top)}")
        num_classes = infer_num_classes(sorted(values), where=f"{spec} ({path})",
                                        ignore_index=ignore_index)
    check_num_classes(num_classes, where=f"{spec} ({path})")
    bad = sorted(v for v in values if not 0 <= v < num_classes and v != ignore_index)
    if bad:
        raise label_range_error(bad, where=f"{spec}: mask {values[bad[-1]]}",
                                num_classes=num_classes, ignore_index=ignore_index)
    store = FileStore(images, masks, channels=_scan_channels(path, splits), size=size)
    return SegmentationDataset(store, name=path.name, spec=spec, split=split,
                               num_classes=num_classes, ignore_index=ignore_index,
                               class_names=[f"class{i}" for i in range(num_classes)])


def _split_root(path: Path, splits: Sequence[str], split: str) -> Path:
    """The folder holding ``images/`` and ``masks/`` of ``split``: ``path`` itself when flat."""
    return path if list(splits) == ["train"] and (path / "images").is_dir() else path / split


def _scan_channels(path: Path, splits: Sequence[str]) -> int:
    """3 if any image of any split is in colour (grey ones are then replicated), else 1: the
    same for every split and whatever the order of the files (image headers only)."""
    for split in splits:
        root = _split_root(path, splits, split)
        if any(channels_of(image) == 3 for image in _index(root / "images").values()):
            return 3
    return 1


def _folder_values(path: Path, splits: Sequence[str]) -> dict[int, Path]:
    """Every label value in the masks of every split -> the first mask (in split and file
    order) that holds it."""
    masks = [mask for split in splits
             for mask in sorted(_index(_mask_dir(_split_root(path, splits, split))).values())]  # type: ignore[arg-type]
    stamp = tuple((str(mask), *_stat(mask)) for mask in masks)
    return dict(_mask_values(stamp))


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


@lru_cache(maxsize=16)
def _mask_values(stamp: tuple[tuple[str, int, int], ...]) -> dict[int, Path]:
    """The scan behind :func:`_folder_values`, cached by ``(file, mtime, size)`` of every mask
    (a mask rewritten in place is read again)."""
    first: dict[int, Path] = {}
    for name, _, _ in stamp:
        for value in np.unique(read_mask(Path(name))).tolist():
            first.setdefault(int(value), Path(name))
    return first
