"""``autoloss info DATA``: splits, sizes, classes and per-class pixel frequencies of a dataset."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from autoloss.data.dataset import ArrayStore, SegmentationDataset, count_labels
from autoloss.data.spec import dataset_splits, load_dataset, parse_spec, split_hint

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

    Keys: ``spec``, ``name``, ``num_classes``, ``ignore_index``, ``class_names``, ``in_channels``,
    ``splits``: ``{split: {images, image_sizes {"HxW": count}, pixels, labelled_pixels,
    ignored_pixels, class_pixels [C], class_percent [C] (% of all pixels),
    class_percent_labelled [C] (% of pixels that are not ignore_index), ignored_percent}}``
    and ``notes``: lines on where the splits come from (carved out of ``train``) and what a
    search or comparison would lack (no ``val`` / ``test`` split, and how to get one).

    Loading checks every label (a void value without ``?ignore_index``, a value beyond
    ``?num_classes``) before anything is counted, so the table has exactly ``num_classes`` rows.
    """
    out: dict[str, Any] = {"spec": spec, "splits": {}}
    splits = dataset_splits(spec)
    for split in splits:
        dataset = load_dataset(spec, split)
        if "name" not in out:
            out.update(name=dataset.name, num_classes=dataset.num_classes,
                       ignore_index=dataset.ignore_index, class_names=dataset.class_names,
                       in_channels=dataset.in_channels)
        out["splits"][split] = _split_stats(dataset)
    out["notes"] = _notes(spec, splits)
    return out


def _notes(spec: str, splits: list[str]) -> list[str]:
    parsed = parse_spec(spec)
    carved = parsed.carved()
    notes = []
    if carved:
        parts = " and ".join(f"{name} ({100 * fraction:g} %)" for name, fraction in carved.items())
        seed = parsed.get_int("split_seed", 0, minimum=0)
        notes.append(f"{parts} carved out of train with split_seed {seed} (the same images "
                     f"on every run)")
    for split, needed_by in (("val", "a search (proxy validation)"),
                             ("test", "compare/study (the reported scores)")):
        if split not in splits:
            notes.append(f"no {split!r} split, which {needed_by} needs{split_hint(spec, split)}")
    return notes


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
    span = max(len(block), len("% of all pixels"))  # one split: the header is the wider

    def row(idx: object, cname: str, left: list[str], right: list[str]) -> str:
        return (f"{idx!s:<4} {cname:<{width}}  {' '.join(left).rjust(span)}    "
                f"{' '.join(right).rjust(span)}")

    lines += ["", " " * (width + 7) + "% of all pixels".ljust(span + 4) + "% of labelled pixels",
              row("idx", "class", [f"{s:>{col}}" for s in names], [f"{s:>{col}}" for s in names])]
    for c, cname in enumerate(desc["class_names"]):
        lines.append(row(c, cname, [f"{splits[s]['class_percent'][c]:>{col}.2f}" for s in names],
                         [f"{splits[s]['class_percent_labelled'][c]:>{col}.2f}" for s in names]))
    if ignore is not None:
        lines.append(row(ignore, f"ignore ({ignore})",
                         [f"{splits[s]['ignored_percent']:>{col}.2f}" for s in names],
                         [f"{'-':>{col}}" for _ in names]))
    notes = desc.get("notes") or []
    if notes:
        lines += ["", *(f"note: {note}" for note in notes)]
    return "\n".join(lines)
