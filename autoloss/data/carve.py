"""Validation and test splits carved out of a dataset that has only a ``train`` split.

A flat ``folder:PATH`` (``images/`` + ``masks/``) is one split, ``train``; a search needs a
held-out ``val`` split and ``compare`` a ``test`` split. ``?val_fraction=F`` (and
``?test_fraction=F``) carve them from ``train``, without touching the files::

    folder:data/?val_fraction=0.2                    # train 80 %, val 20 %, split_seed 0
    folder:data/?val_fraction=0.2&test_fraction=0.2  # train 60 %, val 20 %, test 20 %

The carving is a function of the number of images (in file-name order) and ``split_seed``
(default 0) alone: the same spec gives the same splits in every process and on every machine,
and the splits are disjoint and cover every image. ``test`` is drawn first, so changing
``val_fraction`` leaves the test images where they were. Adding or removing images changes the
draw. Nothing is carved unless asked for.
"""

from __future__ import annotations

import numpy as np

from autoloss.errors import InvalidValueError

__all__ = ["CARVE_OPTIONS", "carve_indices"]

#: spec options that carve splits out of ``train``
CARVE_OPTIONS = ("val_fraction", "test_fraction", "split_seed")


def carve_indices(n: int, *, val_fraction: float = 0.0, test_fraction: float = 0.0,
                  seed: int = 0, where: str = "dataset") -> dict[str, np.ndarray]:
    """Split ``n`` images into ``train`` / ``val`` / ``test`` positions.

    Args:
        n: number of images of the split that is carved (``train``).
        val_fraction: share of the images that go to ``val``, in ``[0, 1)``; 0 carves no
            ``val``. A positive share is rounded to whole images, at least one.
        test_fraction: the same for ``test`` (drawn first).
        seed: the seed of the permutation (``split_seed``).
        where: the dataset, for error messages.

    Returns:
        ``{"train": [n_train], "val": [n_val], "test": [n_test]}`` int64 positions in ascending
        order (``val`` / ``test`` only when their fraction is positive); disjoint, covering
        ``range(n)``.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise InvalidValueError(f"{where}: {name} must be a number in [0, 1), but got "
                                    f"{name}={value!r}")
    if val_fraction + test_fraction >= 1:
        raise InvalidValueError(f"{where}: val_fraction + test_fraction must be < 1 (some images "
                                f"must stay in train), but got {val_fraction} + {test_fraction}")
    counts = {name: max(1, round(fraction * n)) if fraction > 0 else 0
              for name, fraction in (("test", test_fraction), ("val", val_fraction))}
    if n - sum(counts.values()) < 1:
        raise InvalidValueError(
            f"{where}: carving val_fraction={val_fraction}, test_fraction={test_fraction} out of "
            f"{n} image(s) leaves no image to train on ({counts['val']} val, {counts['test']} "
            f"test); add images or lower the fractions")
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, np.ndarray] = {}
    start = 0
    for name in ("test", "val"):
        if counts[name]:
            out[name] = np.sort(order[start:start + counts[name]])
            start += counts[name]
    out["train"] = np.sort(order[start:])
    return out
