"""``autoloss info DATA``: splits, sizes, classes and per-class pixel frequencies of a dataset."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from autoloss.data.dataset import ArrayStore, SegmentationDataset, count_labels
from autoloss.data.spec import dataset_splits, load_dataset

__all__ = ["describe_dataset", "format_description"]


def _split_stats(dataset: SegmentationDataset) -> dict[str, Any]:
    """Image count, sizes and per-class pixel counts of one split (bincount over all labels)."""
    c, ignore = dataset.num_classes, dataset.ignore_index
    sizes: Counter[str] = Counter()
    if isinstance(dataset.store, ArrayStore):  # labels already checked when loaded
        labels = dataset.store.labels
        counts, ignored, _ = count_labels(labels, num_classes=c, ignore_index=ignore)
        if len(labels):
            sizes[f"{labels.shape[1]}x{labels.shape[2]}"] = len(labels)
    else:  # read masks only (image headers are read to check their sizes)
        counts, ignored = np.zeros(c, dtype=np.int64), 0
        for i in range(len(dataset)):
            label = dataset.load_label(i)
            more, more_ignored, _ = count_labels(label, num_classes=c, ignore_index=ignore)
            counts += more
            ignored += more_ignored
            sizes[f"{label.shape[0]}x{label.shape[1]}"] += 1
    pixels = int(counts.sum()) + ignored
    labelled = int(counts.sum())
    return {
        "images": len(dataset),
        "image_sizes": dict(sizes.most_common()),
        "pixels": pixels,
        "labelled_pixels": labelled,
        "ignored_pixels": ignored,
        "class_pixels": [int(v) for v in counts],
        "class_percent": [100.0 * v / pixels if pixels else 0.0 for v in counts.tolist()],
        "class_percent_labelled": [100.0 * v / labelled if labelled else 0.0
                                   for v in counts.tolist()],
        "ignored_percent": 100.0 * ignored / pixels if pixels else 0.0,
    }


def describe_dataset(spec: str) -> dict[str, Any]:
    """Summarise every split of a dataset (plain JSON-able dict).

    Keys: ``spec``, ``name``, ``num_classes``, ``ignore_index``, ``class_names``, ``in_channels``
    and ``splits``: ``{split: {images, image_sizes {"HxW": count}, pixels, labelled_pixels,
    ignored_pixels, class_pixels [C], class_percent [C] (% of all pixels),
    class_percent_labelled [C] (% of pixels that are not ignore_index), ignored_percent}}``.
    """
    out: dict[str, Any] = {"spec": spec, "splits": {}}
    for split in dataset_splits(spec):
        dataset = load_dataset(spec, split)
        if "name" not in out:
            out.update(name=dataset.name, num_classes=dataset.num_classes,
                       ignore_index=dataset.ignore_index, class_names=dataset.class_names,
                       in_channels=dataset.in_channels)
        out["splits"][split] = _split_stats(dataset)
    return out


def format_description(desc: dict[str, Any]) -> str:
    """The human-readable table of ``describe_dataset``'s result."""
    splits: dict[str, dict[str, Any]] = desc["splits"]
    names = list(splits)
    ignore = desc["ignore_index"]
    lines = [f"{desc['spec']}: {desc['name']}, {desc['in_channels']} channel(s), "
             f"{desc['num_classes']} classes, ignore index {ignore}", ""]
    lines.append(f"{'split':<10} {'images':>7}  image size (HxW)")
    for split, stats in splits.items():
        sizes = ", ".join(f"{k}" + (f" ({v})" if len(stats["image_sizes"]) > 1 else "")
                          for k, v in list(stats["image_sizes"].items())[:4])
        more = " ..." if len(stats["image_sizes"]) > 4 else ""
        lines.append(f"{split:<10} {stats['images']:>7}  {sizes}{more}")
    width = max([len(c) for c in desc["class_names"]] + [len(f"ignore ({ignore})"), 5])
    col = max([len(s) for s in names] + [6])
    block = " ".join(f"{s:>{col}}" for s in names)
    lines += ["", " " * (width + 7) + "% of all pixels".ljust(len(block) + 4)
              + "% of labelled pixels",
              f"{'idx':<4} {'class':<{width}}  {block}    {block}"]
    for c, cname in enumerate(desc["class_names"]):
        left = " ".join(f"{splits[s]['class_percent'][c]:>{col}.2f}" for s in names)
        right = " ".join(f"{splits[s]['class_percent_labelled'][c]:>{col}.2f}" for s in names)
        lines.append(f"{c:<4} {cname:<{width}}  {left}    {right}")
    if ignore is not None:
        left = " ".join(f"{splits[s]['ignored_percent']:>{col}.2f}" for s in names)
        right = " ".join(f"{'-':>{col}}" for _ in names)
        lines.append(f"{ignore:<4} {f'ignore ({ignore})':<{width}}  {left}    {right}")
    return "\n".join(lines)
