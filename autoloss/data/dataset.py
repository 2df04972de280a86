"""The segmentation dataset interface and its two storages (arrays in memory, files on disk).

A dataset yields ``(image, label)``: ``image`` float32 ``[C_in, H, W]`` with values in ``[0, 1]``
(uint8 / 255), ``label`` int64 ``[H, W]`` holding class indices in ``[0, num_classes)`` or
``ignore_index``. ``arrays()`` returns the whole split at once (``images`` uint8 ``[N, H, W, C_in]``
or float32 in ``[0, 1]``, ``labels`` integer ``[N, H, W]``) so a trainer can index batches without
per-item Python overhead.

The checks and readers of single files and labels (:func:`read_image`, :func:`read_mask`,
:func:`count_labels`, :data:`MAX_IMAGE_PIXELS`, ...) are in :mod:`autoloss.data._reading`;
import them from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from autoloss.core.metrics import MAX_CLASSES
from autoloss.data._reading import (
    MAX_IMAGE_PIXELS,
    _bincount,
    _open,
    check_image_size,
    check_num_classes,
    count_labels,
    image_mode,
    infer_num_classes,
    label_range_error,
    read_image,
    read_mask,
    resize_label,
)
from autoloss.errors import InvalidValueError

__all__ = ["MAX_CLASSES", "MAX_IMAGE_PIXELS", "ArrayStore", "FileStore", "SegmentationDataset",
           "check_image_size", "check_num_classes", "count_labels", "image_mode",
           "infer_num_classes", "label_range_error", "read_image", "read_mask", "resize_label"]

_STATS_MAX_FILES = 100  # lazily loaded datasets: mean/std from this many evenly spaced images
Stats = tuple[float, ...]  # one value per channel


@dataclass(frozen=True)
class ArrayStore:
    """A split in memory: ``images`` uint8 or float32 ``[N,H,W,C]``, ``labels`` ``[N,H,W]``."""

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    source: str  # the file (or "generated") the arrays came from, for error messages

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def item(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]

    def label(self, index: int) -> np.ndarray:
        return self.labels[index]

    def select(self, indices: np.ndarray) -> ArrayStore:
        return ArrayStore(self.images[indices], self.labels[indices],
                          tuple(self.names[i] for i in indices), self.source)


@dataclass(frozen=True)
class FileStore:
    """A split as image/mask file pairs, read on demand.

    ``label_map`` (optional, integer ``[256]``) maps stored mask values to labels (Cityscapes ids to
    train ids); ``max_stored`` is the largest stored value the map accepts.
    """

    images: tuple[Path, ...]
    masks: tuple[Path, ...]
    channels: int
    size: tuple[int, int] | None = None
    label_map: np.ndarray | None = None
    max_stored: int = 255

    def __len__(self) -> int:
        return len(self.images)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.stem for p in self.images)

    def label(self, index: int, *, check_image: bool = True) -> np.ndarray:
        """The label map of item ``index``; with ``check_image`` also compare the image's size."""
        mask_path = self.masks[index]
        mask = read_mask(mask_path)
        if check_image:
            with _open(self.images[index], "image") as im:
                width, height = im.size
            if (height, width) != mask.shape:
                raise InvalidValueError(
                    f"image and mask sizes differ: image {self.images[index]} is {height}x{width} "
                    f"(HxW), mask {mask_path} is {mask.shape[0]}x{mask.shape[1]}")
        if self.label_map is not None:
            top = int(mask.max(initial=0))
            if top > self.max_stored:
                raise InvalidValueError(f"mask {mask_path} has value {top}, but the label ids of this "
                                 f"layout are 0..{self.max_stored}")
            mask = self.label_map[mask]
        return resize_label(mask, self.size) if self.size is not None else mask

    def image(self, index: int) -> np.ndarray:
        return read_image(self.images[index], channels=self.channels, size=self.size)

    def select(self, indices: np.ndarray) -> FileStore:
        return FileStore(tuple(self.images[i] for i in indices),
                         tuple(self.masks[i] for i in indices), self.channels, self.size,
                         self.label_map, self.max_stored)


class SegmentationDataset(Dataset):
    """A split of a segmentation dataset (``torch.utils.data.Dataset``).

    Attributes: ``name`` (short), ``spec`` (the full spec string it was loaded from), ``split``,
    ``num_classes``, ``ignore_index`` (``None`` = every pixel labelled), ``class_names``,
    ``in_channels``, ``item_names`` and ``mean`` / ``std``: per-channel statistics of images scaled
    to ``[0, 1]``, computed on first use by ``stats_source()`` (the train split of the same source)
    or from this split if it is None, unless set explicitly (spec options ``mean=`` / ``std=``, or
    assignment).
    """

    def __init__(self, store: ArrayStore | FileStore, *, name: str, spec: str, split: str,
                 num_classes: int, ignore_index: int | None, class_names: Sequence[str],
                 stats_source: Callable[[], tuple[Stats, Stats]] | None = None) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise InvalidValueError(f"num_classes must be a positive int, but got {num_classes=}")
        check_num_classes(num_classes, where=spec)
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise InvalidValueError(f"ignore_index must not be a class index in [0, {num_classes}), "
                             f"but got {ignore_index=}")
        if len(class_names) != num_classes:
            raise InvalidValueError(f"{spec}: expected {num_classes} class names, but got "
                             f"{len(class_names)}: {list(class_names)}")
        self.store = store
        self.name = name
        self.spec = spec
        self.split = split
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = [str(c) for c in class_names]
        self.in_channels = store.channels
        self.stats_source = stats_source
        self._mean: tuple[float, ...] | None = None
        self._std: tuple[float, ...] | None = None
        if isinstance(store, ArrayStore):
            self._check_array_labels()

    def __repr__(self) -> str:
        return (f"SegmentationDataset({self.spec!r}, split={self.split!r}, images={len(self)}, "
                f"num_classes={self.num_classes}, ignore_index={self.ignore_index})")

    def __len__(self) -> int:
        return len(self.store)

    @property
    def item_names(self) -> tuple[str, ...]:
        return self.store.names

    def _where(self, index: int) -> str:
        if isinstance(self.store, FileStore):
            return f"mask {self.store.masks[index]}"
        return f"{self.store.source} split {self.split!r} image {index} ({self.item_names[index]})"

    def _bad_labels(self, bad: list[int], index: int) -> ValueError:
        return label_range_error(bad, where=self._where(index), num_classes=self.num_classes,
                                 ignore_index=self.ignore_index)

    def _check_array_labels(self) -> None:
        labels = self.store.labels
        _, _, bad = count_labels(labels, num_classes=self.num_classes,
                                 ignore_index=self.ignore_index)
        if bad:
            bad_mask = (labels < 0) | (labels >= self.num_classes)
            if self.ignore_index is not None:
                bad_mask &= labels != self.ignore_index
            first = int(np.flatnonzero(bad_mask.reshape(len(labels), -1).any(axis=1))[0])
            raise self._bad_labels(bad, first)

    def load_label(self, index: int) -> np.ndarray:
        """The label map ``[H, W]`` of item ``index`` as stored (checked against the range)."""
        label = self.store.label(index)
        if isinstance(self.store, FileStore):
            _, _, bad = count_labels(label, num_classes=self.num_classes,
                                     ignore_index=self.ignore_index)
            if bad:
                raise self._bad_labels(bad, index)
        return label

    def load_item(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image [H, W, C_in] uint8 or float32, label [H, W])`` of item ``index`` (numpy)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        if isinstance(self.store, FileStore):
            label = self.load_label(index)  # checks the label values and the image's size
            return self.store.image(index), label
        return self.store.item(index)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = self.load_item(index)
        return _image_tensor(image), torch.from_numpy(np.asarray(label, dtype=np.int64))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole split: ``images`` ``[N, H, W, C_in]`` (uint8, or float32 in [0, 1]) and
        ``labels`` ``[N, H, W]`` (smallest fitting integer dtype). In-memory splits return their
        arrays without copying; file splits are read once (all images must share one size)."""
        if isinstance(self.store, ArrayStore):
            return self.store.images, self.store.labels
        items = [self.load_item(i) for i in range(len(self))]
        if not items:
            raise InvalidValueError(f"{self.spec}: split {self.split!r} has no images")
        sizes = {im.shape[:2] for im, _ in items}
        if len(sizes) > 1:
            raise InvalidValueError(f"{self.spec}: split {self.split!r} has images of different sizes "
                             f"{sorted(sizes)[:4]}; add '?size=HxW' to the spec to resize them")
        labels = np.stack([lab for _, lab in items])
        top = max(int(labels.max(initial=0)), self.ignore_index or 0)
        if int(labels.min(initial=0)) >= 0 and top < 256:
            labels = labels.astype(np.uint8)
        return np.stack([im for im, _ in items]), labels

    def subset(self, indices: Sequence[int] | np.ndarray, *,
               split: str | None = None) -> SegmentationDataset:
        """A dataset of the items at ``indices`` (same metadata and statistics source).

        With ``split``, the subset is a split of its own under that name (a validation split
        carved out of ``train``): it does not inherit the statistics of the full split; they
        come from its ``stats_source`` or, if that is None, from its own images.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(self))):
            raise InvalidValueError(f"indices must be a 1-d list of positions in [0, {len(self)}), "
                             f"but got {idx.tolist()[:10]}")
        out = object.__new__(SegmentationDataset)
        out.__dict__.update(self.__dict__)
        out.store = self.store.select(idx)
        if split is not None:
            out.split, out._mean, out._std = split, None, None
        elif self.stats_source is None:  # statistics of the full split, not of the subset
            out._mean, out._std = self.mean, self.std
        return out

    # ---- normalisation statistics -------------------------------------------------------------

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of images in [0, 1] (from the train split unless set)."""
        if self._mean is None:
            self._compute_stats()
        return self._mean  # type: ignore[return-value]

    @mean.setter
    def mean(self, value: Sequence[float]) -> None:
        self._mean = _check_stats(value, "mean", self.in_channels)

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of images in [0, 1] (from the train split unless set)."""
        if self._std is None:
            self._compute_stats()
        return self._std  # type: ignore[return-value]

    @std.setter
    def std(self, value: Sequence[float]) -> None:
        std = _check_stats(value, "std", self.in_channels)
        if min(std) <= 0:
            raise InvalidValueError(f"std must be positive per channel, but got {std}")
        self._std = std

    def _compute_stats(self) -> None:
        if self.stats_source is not None:
            mean, std = self.stats_source()
        else:
            mean, std = channel_stats(self)
        if self._mean is None:
            self._mean = mean
        if self._std is None:
            self._std = std


def _image_tensor(image: np.ndarray) -> Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image))
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    return x.permute(2, 0, 1).contiguous()


def _check_stats(value: Sequence[float], name: str, channels: int) -> tuple[float, ...]:
    stats = tuple(float(v) for v in value)
    if len(stats) != channels or not all(math.isfinite(v) for v in stats):
        raise InvalidValueError(f"{name} must hold {channels} finite values (one per channel), "
                         f"but got {name}={stats}")
    return stats


def _stats_images(dataset: SegmentationDataset) -> Iterator[np.ndarray]:
    store = dataset.store
    if isinstance(store, ArrayStore):
        for start in range(0, len(store), 256):
            yield store.images[start:start + 256]
    else:
        count = min(len(store), _STATS_MAX_FILES)
        for i in np.unique(np.linspace(0, len(store) - 1, count).round().astype(np.int64)):
            yield store.image(int(i))[None]


def channel_stats(dataset: SegmentationDataset) -> tuple[Stats, Stats]:
    """Per-channel mean and std over the images of ``dataset`` scaled to ``[0, 1]``.

    In-memory splits use every pixel; file splits use at most 100 evenly spaced images. A
    channel with zero spread gets std 1.
    """
    total = np.zeros(dataset.in_channels)
    total_sq = np.zeros(dataset.in_channels)
    count = 0
    levels = np.arange(256, dtype=np.float64) / 255.0
    for chunk in _stats_images(dataset):
        count += chunk.size // chunk.shape[-1]
        for c in range(chunk.shape[-1]):
            if chunk.dtype == np.uint8:  # exact sums from the histogram of the 256 levels
                hist = _bincount(np.ascontiguousarray(chunk[..., c]).ravel(), 256)
                total[c] += hist @ levels
                total_sq[c] += hist @ levels**2
            else:
                x = chunk[..., c].astype(np.float64)
                total[c] += x.sum()
                total_sq[c] += np.square(x).sum()
    if count == 0:
        raise InvalidValueError(f"{dataset.spec}: cannot compute mean/std of an empty split")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
