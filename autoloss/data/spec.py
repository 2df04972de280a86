"""One way to name a dataset, from the command line and from YAML: a spec string.

    KIND                    the embedded dataset: ``shapes``
    KIND:PATH               files: ``npz:data/``, ``folder:data/``, ``camvid:PATH``, ``voc:PATH``,
                            ``cityscapes:PATH``
    ...?key=value&key=value options, e.g. ``npz:data?num_classes=5&ignore_index=255``,
                            ``cityscapes:/data/cs?size=128x256``, ``shapes?n=256&seed=3``

Options (the path may not contain ``?``):

- every kind: ``size=HxW`` (or ``size=S`` for SxS; images bilinear, labels nearest; for
  ``shapes`` the generated size), ``mean=a,b,c`` and ``std=a,b,c`` (normalisation statistics of
  images in [0, 1]; default: computed from the train split);
- ``shapes``: ``n`` (train images; val gets n/4, test n/2; default 512), ``seed`` (default 0),
  ``ignore_index`` (default 255, ``none`` for no ignored pixels);
- ``npz``, ``folder``: ``num_classes`` (default: largest label + 1 over all splits, refused
  when most of those classes would never occur, e.g. a void label 255) and ``ignore_index``
  (default: none, or the npz's ``ignore_index`` array); ``val_fraction``, ``test_fraction``
  and ``split_seed`` carve ``val`` / ``test`` out of the ``train`` split of a dataset that has
  none (a flat ``images/`` + ``masks/`` folder; :mod:`autoloss.data.carve`). Nothing is carved
  by default: without them, a flat folder is the one split ``train``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from autoloss.data.carve import CARVE_OPTIONS, carve_indices
from autoloss.data.dataset import SegmentationDataset, Stats, channel_stats, check_image_size
from autoloss.data.embedded import SHAPES_SPLITS, shapes_dataset
from autoloss.data.formats import (
    folder_dataset,
    folder_splits,
    no_split,
    npz_dataset,
    npz_splits,
    split_order,
)
from autoloss.data.layouts import (
    camvid_dataset,
    camvid_splits,
    cityscapes_dataset,
    cityscapes_splits,
    voc_dataset,
    voc_splits,
)
from autoloss.errors import InvalidValueError, did_you_mean
from autoloss.utils.typed_fields import parse_size, reject_unknown

__all__ = ["DATASET_KINDS", "DatasetSpec", "data_slug", "dataset_splits", "load_dataset", "parse_spec",
           "split_hint", "train_stats"]

_COMMON_OPTIONS = ("size", "mean", "std")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec string: ``kind``, ``path`` (None for ``shapes``) and raw ``options``."""

    text: str
    kind: str
    path: Path | None
    options: dict[str, str]

    def error(self, key: str, expected: str) -> ValueError:
        return InvalidValueError(f"dataset spec {self.text!r}: option {key}={self.options[key]!r} "
                          f"is invalid; expected {expected}")

    def get_int(self, key: str, default: int | None, *, minimum: int) -> int | None:
        if key not in self.options:
            return default
        try:
            value = int(self.options[key])
        except ValueError:
            raise self.error(key, f"an integer >= {minimum}") from None
        if value < minimum:
            raise self.error(key, f"an integer >= {minimum}")
        return value

    def get_ignore(self, default: int | None | str) -> int | None | str:
        if "ignore_index" not in self.options:
            return default
        if self.options["ignore_index"].lower() in ("none", "null"):
            return None
        try:
            return int(self.options["ignore_index"])
        except ValueError:
            raise self.error("ignore_index", "an integer or 'none'") from None

    def get_size(self) -> tuple[int, int] | None:
        if "size" not in self.options:
            return None
        try:
            height, width = parse_size(self.options["size"])
        except ValueError:
            raise self.error("size", "HxW (e.g. 128x256) or a single side S for SxS") from None
        check_image_size(height, width, where=f"dataset spec {self.text!r}: option size")
        return (height, width)

    def get_fraction(self, key: str) -> float:
        """A share in ``[0, 1)`` (default 0)."""
        if key not in self.options:
            return 0.0
        try:
            value = float(self.options[key])
        except ValueError:
            value = -1.0
        if not 0 <= value < 1:
            raise self.error(key, "a number in [0, 1), e.g. 0.2")
        return value

    def carved(self) -> dict[str, float]:
        """The splits to carve out of ``train``: ``{"val": fraction, "test": fraction}`` (only
        those with a positive fraction)."""
        fractions = {name: self.get_fraction(f"{name}_fraction") for name in ("val", "test")}
        if "split_seed" in self.options and not any(fractions.values()):
            raise InvalidValueError(f"dataset spec {self.text!r}: split_seed has nothing to seed; "
                                    f"add val_fraction (e.g. '&val_fraction=0.2')")
        return {name: value for name, value in fractions.items() if value > 0}

    def get_floats(self, key: str) -> list[float] | None:
        if key not in self.options:
            return None
        try:
            return [float(v) for v in self.options[key].split(",")]
        except ValueError:
            raise self.error(key, "comma-separated numbers, one per channel, e.g. 0.5,0.5,0.5") \
                from None


def _path(spec: DatasetSpec) -> Path:
    if spec.path is None:
        raise InvalidValueError(f"dataset spec {spec.text!r} needs a path: '{spec.kind}:PATH'")
    return spec.path


def _shapes_open(spec: DatasetSpec, split: str) -> SegmentationDataset:
    ignore = spec.get_ignore(255)
    return shapes_dataset(split, n=spec.get_int("n", 512, minimum=1) or 512,
                          seed=spec.get_int("seed", 0, minimum=0) or 0,
                          size=spec.get_size() or (64, 64),
                          ignore_index=ignore if isinstance(ignore, int) else None,
                          spec=spec.text)


def _npz_open(spec: DatasetSpec, split: str) -> SegmentationDataset:
    return npz_dataset(_path(spec), split, spec=spec.text, size=spec.get_size(),
                       num_classes=spec.get_int("num_classes", None, minimum=1),
                       ignore_index=spec.get_ignore("auto"))


def _folder_open(spec: DatasetSpec, split: str) -> SegmentationDataset:
    ignore = spec.get_ignore(None)
    return folder_dataset(_path(spec), split, spec=spec.text, size=spec.get_size(),
                          num_classes=spec.get_int("num_classes", None, minimum=1),
                          ignore_index=ignore if isinstance(ignore, int) else None)


def _camvid_open(spec: DatasetSpec, split: str) -> SegmentationDataset:
    return camvid_dataset(_path(spec), split, spec=spec.text, size=spec.get_size())


def _voc_open(spec: DatasetSpec, split: str) -> SegmentationDataset:
    return voc_dataset(_path(spec), split, spec=spec.text, size=spec.get_size())


def _cityscapes_open(spec: DatasetSpec, split: str) -> SegmentationDataset:
    return cityscapes_dataset(_path(spec), split, spec=spec.text, size=spec.get_size())


@dataclass(frozen=True)
class _Kind:
    summary: str
    needs_path: bool
    options: tuple[str, ...]
    splits: Callable[[Path], list[str]] | None  # None: the fixed shapes splits
    open: Callable[[DatasetSpec, str], SegmentationDataset]


#: Dataset kind -> how to list and open its splits.
DATASET_KINDS: dict[str, _Kind] = {
    "shapes": _Kind("embedded procedural shapes (6 classes, no files)", False,
                    ("n", "seed", "ignore_index"), None, _shapes_open),
    "npz": _Kind("npz arrays: a folder of <split>.npz or one .npz file", True,
                 ("num_classes", "ignore_index", *CARVE_OPTIONS), npz_splits, _npz_open),
    "folder": _Kind("images/ + masks/ folders (flat, or one pair per split)", True,
                    ("num_classes", "ignore_index", *CARVE_OPTIONS), folder_splits,
                    _folder_open),
    "camvid": _Kind("CamVid, 11 classes + void (npz files or SegNet PNG folders)", True, (),
                    camvid_splits, _camvid_open),
    "voc": _Kind("Pascal VOC 2012 segmentation, 21 classes + border", True, (), voc_splits,
                 _voc_open),
    "cityscapes": _Kind("Cityscapes fine annotations, 19 train ids", True, (),
                        cityscapes_splits, _cityscapes_open),
}


def parse_spec(spec: str) -> DatasetSpec:
    """Parse ``KIND[:PATH][?key=value&...]``; raise ``ValueError`` naming what is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidValueError(f"dataset spec must be a non-empty string like 'shapes' or "
                         f"'npz:PATH', but got {spec!r}")
    text = spec.strip()
    head, has_query, query = text.partition("?")
    kind, _, path = head.partition(":")
    kind = kind.strip().lower()
    if kind not in DATASET_KINDS:
        hint = ""
        if Path(head).expanduser().exists() or "/" in head or "\\" in head:
            hint = f"; to load files, prefix the path with its kind, e.g. 'npz:{head}'"
        raise InvalidValueError(
            f"unknown dataset kind {kind!r} in spec {text!r}"
            f"{did_you_mean(kind, list(DATASET_KINDS))}; known kinds: "
            f"{', '.join(DATASET_KINDS)}{hint}")
    options: dict[str, str] = {}
    for part in query.split("&") if has_query else []:
        key, eq, value = (p.strip() for p in part.partition("="))
        if not eq or not key or not value:
            raise InvalidValueError(f"malformed option {part!r} in dataset spec {text!r}: expected "
                             f"key=value pairs joined by '&', e.g. "
                             f"'npz:data?num_classes=5&ignore_index=255'")
        if key in options:
            raise InvalidValueError(f"option {key!r} is given twice in dataset spec {text!r}")
        options[key] = value
    reject_unknown(options, DATASET_KINDS[kind].options + _COMMON_OPTIONS,
                   where=f"dataset spec {text!r} (kind {kind!r}): ")
    path = path.strip()
    if DATASET_KINDS[kind].needs_path and not path:
        raise InvalidValueError(f"dataset kind {kind!r} needs a path: '{kind}:PATH', but got {text!r}")
    if not DATASET_KINDS[kind].needs_path and path:
        raise InvalidValueError(f"dataset kind {kind!r} takes no path, but got {text!r}; options go "
                         f"after '?', e.g. 'shapes?n=256&seed=1'")
    return DatasetSpec(text, kind, Path(path).expanduser() if path else None, options)


def data_slug(data: str) -> str:
    """A folder name for a dataset spec: ``camvid:/x/camvid?size=90x120`` -> ``camvid-size-90x120``."""
    spec = parse_spec(data)
    parts = [spec.kind]
    if spec.path is not None and spec.path.name not in ("", spec.kind):
        parts.append(spec.path.name)
    parts += [f"{k}-{v}" for k, v in spec.options.items()]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-.")


def dataset_splits(spec: str) -> list[str]:
    """The splits a dataset offers (``train``, ``val``, ``test`` first)."""
    return _splits(parse_spec(spec))


def _splits(spec: DatasetSpec) -> list[str]:
    list_splits = DATASET_KINDS[spec.kind].splits
    splits = list(SHAPES_SPLITS) if list_splits is None else list_splits(_path(spec))
    carved = spec.carved()
    if carved and "train" not in splits:
        raise InvalidValueError(
            f"dataset spec {spec.text!r}: val_fraction/test_fraction carve splits out of 'train', "
            f"but this dataset has no 'train' split (it has {splits}); name the file train.npz "
            f"or the folder train/")
    for name in carved:
        if name in splits:
            raise InvalidValueError(
                f"dataset spec {spec.text!r}: the dataset already has a {name!r} split, so "
                f"{name}_fraction would replace it; drop {name}_fraction from the spec")
    return split_order([*splits, *carved])


def split_hint(spec: str, split: str) -> str:
    """How to get ``split`` from the dataset ``spec`` that lacks it ("" if there is no way
    but another dataset): for a flat folder or npz, the option that carves it from ``train``
    and the per-split layout."""
    parsed = parse_spec(spec)
    if parsed.kind not in ("folder", "npz") or split not in ("val", "test"):
        return ""
    sep = "&" if "?" in parsed.text else "?"
    layout = ("PATH/train/{images,masks} and PATH/" + split + "/{images,masks}"
              if parsed.kind == "folder" else f"PATH/train.npz and PATH/{split}.npz")
    return (f"; carve it out of 'train' with '{parsed.text}{sep}{split}_fraction=0.2' "
            f"(deterministic; '&split_seed=N' draws another), or lay the files out per split: "
            f"{layout}")


def load_dataset(spec: str, split: str = "train", *, subset: int | None = None,
                 subset_seed: int | None = None) -> SegmentationDataset:
    """Load one split of the dataset named by ``spec`` (see the module docstring).

    Args:
        spec: ``KIND[:PATH][?key=value&...]``.
        split: e.g. ``train``, ``val`` (the proxy-validation split), ``test``.
        subset: keep ``subset`` images: the first ones if ``subset_seed`` is None, else a random
            choice (without replacement, in dataset order) drawn with ``subset_seed``.

    The dataset's ``mean`` / ``std`` come from the ``mean=`` / ``std=`` options or, on first use,
    from the whole train split (the split itself if the dataset has no ``train``; with
    ``val_fraction``, the carved train split).
    """
    parsed = parse_spec(spec)
    splits = _splits(parsed)
    if split not in splits:
        raise no_split(parsed.text, split, splits, hint=split_hint(parsed.text, split))
    dataset = _open(parsed, split)
    if "train" in splits and (split != "train" or subset is not None):
        dataset.stats_source = partial(train_stats, parsed.text)
    for key in ("mean", "std"):
        values = parsed.get_floats(key)
        if values is not None:
            setattr(dataset, key, values)
    if subset_seed is not None and subset is None:
        raise InvalidValueError(f"subset_seed={subset_seed} needs subset (the number of images)")
    if subset is not None:
        if len(dataset) == 0:
            raise InvalidValueError(f"split {split!r} of {parsed.text!r} has no images, so there "
                                    f"is no subset of {subset} to take; add images to it")
        if isinstance(subset, bool) or not isinstance(subset, int) or \
                not 1 <= subset <= len(dataset):
            raise InvalidValueError(f"subset must be an int in [1, {len(dataset)}] (the size of split "
                             f"{split!r} of {parsed.text!r}), but got {subset=}")
        if subset_seed is None:
            indices = np.arange(subset)
        else:
            rng = np.random.default_rng(subset_seed)
            indices = np.sort(rng.choice(len(dataset), size=subset, replace=False))
        dataset = dataset.subset(indices)
    return dataset


def _open(spec: DatasetSpec, split: str) -> SegmentationDataset:
    """Open ``split``, carving it out of ``train`` when the spec asks to."""
    carved = spec.carved()
    if not carved or split not in ("train", *carved):
        return DATASET_KINDS[spec.kind].open(spec, split)
    base = DATASET_KINDS[spec.kind].open(spec, "train")
    parts = carve_indices(len(base), val_fraction=carved.get("val", 0.0),
                          test_fraction=carved.get("test", 0.0),
                          seed=spec.get_int("split_seed", 0, minimum=0) or 0,
                          where=f"dataset spec {spec.text!r}")
    return base.subset(parts[split], split=split)


@lru_cache(maxsize=8)
def train_stats(spec: str) -> tuple[Stats, Stats]:
    """Per-channel ``(mean, std)`` of the whole train split of ``spec`` (cached per spec)."""
    return channel_stats(load_dataset(spec, "train"))
