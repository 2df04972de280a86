"""Exact segmentation metrics: the metric programs run with the exact operators, streamed.

Every value is a fraction in [0, 1]. Conventions (shared with the Auto Seg-Loss evaluation code,
``shared/golden`` README 5.3):

- pixels whose ground truth is ``ignore_index`` are excluded (labels outside ``[0, C)`` that are
  not the ignore index are an error);
- a class absent from both ground truth and prediction has no value (NaN per class) and is left
  out of the means; mAcc leaves out classes absent from the ground truth;
- ``fwiou`` is the textbook ``sum_c freq_c * IoU_c`` (``freq_c`` = share of valid ground-truth
  pixels), not the reference's ``nanmean(freq * IoU) * C``;
- ``biou``: IoU over the pixels within ``tol`` pixels (Chebyshev distance) of a ground-truth class
  boundary; ``drop_bg`` leaves class 0's boundaries out of that band (every class still averaged);
- ``bf1``: per class, boundary precision and recall with tolerance ``tol``, summed over the
  dataset, ``F1 = 2PR/(P+R)``; ``drop_bg`` leaves class 0 out of the mean;
- ``miou_image``: per image, the mean IoU over the classes present in that image's ground truth or
  prediction, then the mean over images (images with no valid pixel are skipped).

Example:
    >>> import torch
    >>> pred = torch.tensor([[[0, 1], [1, 1]]]); target = torch.tensor([[[0, 1], [0, 1]]])
    >>> round(evaluate(pred, target, num_classes=2)["miou"], 4)
    0.5833
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from autoloss.errors import InvalidTypeError, InvalidValueError
from autoloss.operators import ExactOps, one_hot
from autoloss.programs import class_mean, get_program

__all__ = ["METRIC_NAMES", "MetricAccumulator", "evaluate", "evaluate_per_class", "check_labels"]

METRIC_NAMES: tuple[str, ...] = (
    "miou", "fwiou", "macc", "gacc", "mdice", "biou", "bf1", "miou_image",
)

_EXACT = ExactOps()
# One-hot elements per chunk of an update: small tensors stay in cache and are recycled by the
# allocator (CamVid, 1 thread: 16 images [16,11,180,240] per chunk took ~1.7x the CPU time of
# 2 images, and 32 images ~7x, as every large temporary is a fresh page-faulted mapping).
_CHUNK_ELEMENTS = 1 << 20


def _as_tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor or numpy array, but got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise InvalidTypeError(f"{name} must hold integer class labels, but got dtype {x.dtype}")
    return x.long()


def check_labels(labels: Tensor, *, name: str, num_classes: int, ignore_index: int | None) -> None:
    """Raise if ``labels`` has values outside ``[0, num_classes)`` that are not ``ignore_index``."""
    if labels.numel() == 0:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        values = torch.unique(labels[bad])[:5].tolist()
        raise InvalidValueError(
            f"{name} has values {values} outside [0, {num_classes}) that are not the ignore index "
            f"({ignore_index=})"
        )


class MetricAccumulator:
    """Streaming exact metrics: ``update`` per batch, ``compute`` at the end.

    Memory does not grow with the dataset: only the per-class sums of each program are kept.

    Args:
        num_classes: number of classes C.
        ignore_index: ground-truth value to exclude, or None.
        tol: boundary tolerance in pixels for ``biou`` and ``bf1``.
        drop_bg: leave class 0 out of the boundary band (``biou``) and of the mean (``bf1``).
        metrics: names of the metrics to compute (default: all of ``METRIC_NAMES``), or user
            programs ``file.py:name``.
    """

    def __init__(self, *, num_classes: int, ignore_index: int | None = None, tol: int = 5,
                 drop_bg: bool = False, metrics: Sequence[str] | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise InvalidValueError(f"num_classes must be a positive int, but got {num_classes=}")
        if isinstance(tol, bool) or not isinstance(tol, int) or tol < 0:
            raise InvalidValueError(f"tol must be a non-negative int, but got {tol=}")
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, int)):
            raise InvalidValueError(f"ignore_index must be an int or None, but got {ignore_index=}")
        if not isinstance(drop_bg, bool):
            raise InvalidValueError(f"drop_bg must be a bool, but got {drop_bg=}")
        # one name as a string is one metric (not its letters)
        names = [metrics] if isinstance(metrics, str) else list(
            METRIC_NAMES if metrics is None else metrics)
        if not names:
            raise InvalidValueError("metrics must name at least one metric, but got an empty list")
        self.programs = {name: get_program(name) for name in names}
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.tol = tol
        self.drop_bg = drop_bg
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._sums: dict[str, dict[str, Tensor]] = {name: {} for name in self.programs}
        self.images = 0
        self.valid_pixels = 0

    @torch.no_grad()
    def update(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> None:
        """Add a batch of predicted and ground-truth label maps, both ``[N,H,W]`` integers.

        The batch is processed in chunks of about ``2**20`` one-hot elements (at least one image).
        """
        pred = _as_tensor(pred, "pred")
        target = _as_tensor(target, "target").to(pred.device)
        if pred.dim() != 3 or pred.shape != target.shape:
            raise InvalidValueError(
                f"pred and target must both be [N,H,W] label maps of the same shape, but got "
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)}"
            )
        check_labels(pred, name="pred", num_classes=self.num_classes, ignore_index=None)
        check_labels(target, name="target", num_classes=self.num_classes,
                     ignore_index=self.ignore_index)
        elements = self.num_classes * pred.shape[1] * pred.shape[2]  # one-hot size of one image
        step = max(1, _CHUNK_ELEMENTS // max(1, elements))
        for start in range(0, pred.shape[0], step):
            self._add(pred[start:start + step], target[start:start + step])
        self.images += pred.shape[0]

    def _add(self, pred: Tensor, target: Tensor) -> None:
        valid = (target >= 0) & (target < self.num_classes)
        # float32 counts are exact up to 2**24 pixels per chunk; larger images count in float64
        dtype = torch.float32 if pred[0].numel() <= 2**24 else torch.float64
        G = one_hot(target, self.num_classes, valid=valid, dtype=dtype)
        P = one_hot(pred, self.num_classes, dtype=dtype)
        mask = valid.unsqueeze(1).to(dtype)
        shared: dict[tuple, dict[str, Tensor]] = {}  # miou/fwiou/mdice (macc/gacc) share sums
        for name, program in self.programs.items():
            signature = (program.stats, program.options)
            if signature not in shared:
                shared[signature] = program.run_stats(_EXACT, P, G, mask, tol=self.tol,
                                                      drop_bg=self.drop_bg)
            stats = shared[signature]
            sums = self._sums[name]
            for key, value in stats.items():
                value = value.detach().to("cpu", torch.float64)
                sums[key] = sums[key] + value if key in sums else value
        self.valid_pixels += int(valid.sum())

    def _scores(self, name: str) -> tuple[Tensor, Tensor | None]:
        sums = self._sums[name]
        if not sums:
            raise RuntimeError("compute() called before any update()")
        return self.programs[name].score(sums, _EXACT)

    def compute(self) -> dict[str, float]:
        """Every metric over all batches so far, as floats (NaN when undefined, e.g. no pixel)."""
        out = {}
        for name in self.programs:
            values, present = self._scores(name)
            undefined = self.valid_pixels == 0 or (present is not None and not bool(present.any()))
            out[name] = float("nan") if undefined else float(class_mean(values, present))
        return out

    def compute_per_class(self) -> dict[str, np.ndarray]:
        """Per-class values ``[C]`` of the per-class metrics (NaN where a class has no value)."""
        out = {}
        for name in self.programs:
            values, present = self._scores(name)
            if present is not None:
                out[name] = torch.where(present, values, torch.nan).numpy()
        return out


def _accumulate(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, *, num_classes: int,
                ignore_index: int | None, tol: int, drop_bg: bool,
                metrics: Sequence[str] | None, batch_size: int) -> MetricAccumulator:
    acc = MetricAccumulator(num_classes=num_classes, ignore_index=ignore_index, tol=tol,
                            drop_bg=drop_bg, metrics=metrics)
    pred, target = _as_tensor(pred, "pred"), _as_tensor(target, "target")
    if pred.shape != target.shape or pred.dim() not in (2, 3):
        raise InvalidValueError(
            f"pred and target must both be [N,H,W] (or [H,W]) label maps of the same shape, but "
            f"got pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    if pred.dim() == 2:
        pred, target = pred[None], target[None]
    if pred.shape[0] == 0:
        raise InvalidValueError(f"pred and target hold no images (shape {tuple(pred.shape)}): nothing "
                         "to evaluate")
    for start in range(0, pred.shape[0], batch_size):
        acc.update(pred[start:start + batch_size], target[start:start + batch_size])
    return acc


def evaluate(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, *, num_classes: int,
             ignore_index: int | None = None, tol: int = 5, drop_bg: bool = False,
             metrics: Sequence[str] | None = None, batch_size: int = 16) -> dict[str, float]:
    """Exact metrics of predicted label maps against ground truth.

    Args:
        pred: predicted labels ``[N,H,W]`` (torch or numpy integers in ``[0, C)``).
        target: ground-truth labels ``[N,H,W]``; ``ignore_index`` pixels are excluded.
        num_classes: C. ignore_index: excluded label or None. tol: boundary tolerance (pixels).
        drop_bg: see :class:`MetricAccumulator`. metrics: subset of ``METRIC_NAMES`` (default all).
        batch_size: images per chunk (bounds memory).

    Returns:
        metric name -> value in [0, 1] (NaN if undefined).
    """
    return _accumulate(pred, target, num_classes=num_classes, ignore_index=ignore_index, tol=tol,
                       drop_bg=drop_bg, metrics=metrics, batch_size=batch_size).compute()


def evaluate_per_class(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, *,
                       num_classes: int, ignore_index: int | None = None, tol: int = 5,
                       drop_bg: bool = False, metrics: Sequence[str] | None = None,
                       batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-class values ``[C]`` (NaN where undefined) of the per-class metrics; see :func:`evaluate`."""
    return _accumulate(pred, target, num_classes=num_classes, ignore_index=ignore_index, tol=tol,
                       drop_bg=drop_bg, metrics=metrics, batch_size=batch_size).compute_per_class()

