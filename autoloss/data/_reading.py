"""Checks and readers of one split's pieces, apart from the dataset class: class counts and label
ranges, the image size limit, image and mask files (header checked before decoding), resizing a
label, label histograms.

Import these from :mod:`autoloss.data.dataset`, the public face.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autoloss.core.metrics import MAX_CLASSES
from autoloss.errors import InvalidValueError, MissingFileError

#: the most pixels of one image (4096 x 4096), read from a file's header or a spec's ``size=``
#: before any pixel is decoded or generated; crop or resize larger images (``?size=HxW``)
MAX_IMAGE_PIXELS = 4096 * 4096


def check_num_classes(num_classes: int, *, where: str) -> int:
    """``num_classes`` if it is at most :data:`MAX_CLASSES`, else an error naming ``where``."""
    if num_classes > MAX_CLASSES:
        raise InvalidValueError(
            f"{where}: {num_classes} classes, more than the {MAX_CLASSES} a dataset may have "
            f"(autoloss.core.metrics.MAX_CLASSES); if that is the largest label + 1, mark the void "
            f"label with ignore_index (e.g. '?ignore_index=255') or pass '?num_classes=N'")
    return num_classes


def label_range_error(bad: Sequence[int], *, where: str, num_classes: int,
                      ignore_index: int | None) -> InvalidValueError:
    """The error for label values ``bad`` outside ``[0, num_classes)`` that are not
    ``ignore_index``, found in ``where``; it names the values and the spec options that fix it."""
    bad = sorted(int(v) for v in bad)
    shown = f"{bad[:10]}" + (f" (and {len(bad) - 10} more)" if len(bad) > 10 else "")
    void = bad[-1]
    fix = (f"if {void} marks void or unlabelled pixels, add '?ignore_index={void}' to the dataset "
           f"spec (e.g. 'folder:PATH?ignore_index={void}')" if void >= num_classes else
           "label values must be class indices >= 0")
    more = (f"; if they are classes, raise '?num_classes=' to at least {void + 1}"
            if void >= num_classes else "")
    return InvalidValueError(
        f"{where} has label values {shown} outside the classes [0, {num_classes}) that are not "
        f"the ignore index ({ignore_index=}): {fix}{more}")


def infer_num_classes(values: Sequence[int], *, where: str, ignore_index: int | None) -> int:
    """``num_classes`` of a dataset that does not state it: the largest label + 1.

    Args:
        values: the distinct label values found in every mask of every split.
        where: the dataset, for the error message.
        ignore_index: a value left out of the count (the void label), or None.

    The rule refuses the silent trap of a void label stored as 255 without ``ignore_index``: when
    more than half of the ``[0, largest]`` labels never occur (``{0, 1, 2, 255}`` would make 256
    classes, 252 of them empty), inferring is an error that names the values and the options that
    say what they are (``?ignore_index=255`` or ``?num_classes=N``).
    """
    found = sorted({int(v) for v in values} - ({ignore_index} if ignore_index is not None else set()))
    if not found:
        return 1
    if found[0] < 0:
        raise label_range_error([v for v in found if v < 0], where=where,
                                num_classes=found[-1] + 1, ignore_index=ignore_index)
    top = found[-1] + 1
    absent = top - len(found)
    if top > 2 and absent > top / 2:
        shown = found if len(found) <= 12 else [*found[:10], "...", found[-1]]
        void = found[-1]
        raise InvalidValueError(
            f"{where}: the masks hold the label values {shown} (ignore_index={ignore_index}); "
            f"inferring num_classes as the largest + 1 would make {top} classes, {absent} of "
            f"which never occur. If {void} marks void or unlabelled pixels, add "
            f"'?ignore_index={void}' to the dataset spec (e.g. 'folder:PATH?ignore_index={void}'); "
            f"if the classes really are 0..{void}, say so with '?num_classes={top}'; binary masks "
            f"saved as 0/{void} must be re-saved as 0/1")
    return top


def check_image_size(height: int, width: int, *, where: str) -> None:
    """An error naming ``where`` if an image of ``height x width`` exceeds
    :data:`MAX_IMAGE_PIXELS` (checked before it is decoded, generated or resized)."""
    if height * width > MAX_IMAGE_PIXELS:
        raise InvalidValueError(
            f"{where}: an image of {height}x{width} pixels is more than the {MAX_IMAGE_PIXELS} "
            f"(4096x4096) an image may have (autoloss.data.dataset.MAX_IMAGE_PIXELS); resize it "
            f"with '?size=HxW' or crop the files")

_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_MASK_MODES = frozenset({"1", "L", "P", "I", "I;16"})


@contextlib.contextmanager
def _open(path: Path, what: str) -> Iterator[Image.Image]:
    """``Image.open`` (header only; its size checked against :data:`MAX_IMAGE_PIXELS`) with every
    error of opening or decoding it naming the file (a missing file stays FileNotFoundError)."""
    try:
        with Image.open(path) as im:
            check_image_size(im.size[1], im.size[0], where=f"{what} {path}")
            yield im
    except FileNotFoundError:
        raise MissingFileError(f"{what} {path} does not exist") from None
    except (OSError, Image.DecompressionBombError) as err:  # truncated, corrupt, a bomb
        raise InvalidValueError(f"cannot read {what} {path}: {err}") from None


def read_image(path: Path, *, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as uint8 ``[H, W, channels]``; resize (bilinear, antialiased) to ``size``.

    Grey images are replicated to RGB when ``channels == 3``; a colour image in a grey dataset is
    an error (converting it silently would lose information).
    """
    with _open(path, "image") as im:
        if channels == 1:
            if im.mode not in _GREY_MODES:
                raise InvalidValueError(f"image {path} has mode {im.mode}, but this dataset is grey "
                                 f"(1 channel, set by its first image); convert it to mode L")
            im = im.convert("L")
        else:
            im = im.convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.array(im, dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)
    return array[..., None] if array.ndim == 2 else array


def image_mode(path: Path) -> str:
    """The PIL mode of an image file (reads the header only)."""
    with _open(path, "image") as im:
        return im.mode


def read_mask(path: Path) -> np.ndarray:
    """Read a single-channel index mask as an integer ``[H, W]`` array (palette PNGs: the index)."""
    with _open(path, "mask") as im:
        if im.mode not in _MASK_MODES:
            raise InvalidValueError(
                f"mask {path} has mode {im.mode}, but masks must be single-channel index images "
                f"(mode L or P, one class index per pixel); convert colour-coded masks to indices"
            )
        array = np.array(im)
    return array.astype(np.uint8) if array.dtype == bool else array


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``[..., H, W]`` to ``size`` (pixel-centre rule, keeps values)."""
    h0, w0 = label.shape[-2:]
    if (h0, w0) == tuple(size):
        return label
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h0 / size[0]).astype(np.int64), h0 - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w0 / size[1]).astype(np.int64), w0 - 1)
    return label[..., rows[:, None], cols[None, :]]


def count_labels(labels: np.ndarray, *, num_classes: int,
                 ignore_index: int | None) -> tuple[np.ndarray, int, list[int]]:
    """Per-class pixel counts of an integer label array (bincount).

    Returns ``(counts int64 [num_classes], ignored pixels, bad values)``; bad values are those
    outside ``[0, num_classes)`` that are not ``ignore_index`` (at most 10 are listed).
    """
    flat = np.ascontiguousarray(labels).ravel()
    if flat.dtype == np.uint8 or (flat.size and 0 <= int(flat.min()) and int(flat.max()) < 4096):
        full = _bincount(flat, max(num_classes, 256))
        values = np.flatnonzero(full)
        freq = full[values]
    else:  # negative or very large values: no dense bincount
        values, freq = np.unique(flat, return_counts=True)
    counts = np.zeros(num_classes, dtype=np.int64)
    inside = (values >= 0) & (values < num_classes)
    counts[values[inside]] = freq[inside]
    ignored = int(freq[values == ignore_index].sum()) if ignore_index is not None else 0
    bad = [int(v) for v in values[~inside] if v != ignore_index]
    return counts, ignored, bad[:10]


def _bincount(values: np.ndarray, minlength: int) -> np.ndarray:
    """``np.bincount`` of non-negative integers (torch's is ~7x faster on uint8)."""
    if values.dtype != np.uint8 or not values.flags.writeable:
        values = values.astype(np.int64 if values.dtype != np.uint8 else np.uint8)
    tensor = torch.from_numpy(values)
    return torch.bincount(tensor, minlength=minlength).numpy()
