"""Exact segmentation metrics: the metric programs run with the exact operators, streamed.

Every value is a fraction in [0, 1]. Conventions (shared with the Auto Seg-Loss evaluation code,
https://github.com/fundamentalvision/Auto-Seg-Loss, ``mmseg/core/evaluation/metrics_fast.py`` and
the aggregation in ``mmseg/datasets/custom.py``; its boundary band is the ground truth's class
edges, pixels with another or an ignored label in their in-image 3x3 neighbourhood, dilated by a
``(2 tol + 1)`` square max filter):

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

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from autoloss.core.operators import ExactOps, one_hot
from autoloss.core.programs import class_mean, get_program
from autoloss.errors import InvalidTypeError, InvalidValueError

__all__ = ["MAX_CLASSES", "MAX_TOL", "METRIC_NAMES", "MetricAccumulator", "MetricOptions",
           "check_tol", "evaluate", "evaluate_per_class", "check_labels"]

#: the most classes a metric (and a dataset, :mod:`autoloss.data.dataset`) may have; ADE20K has
#: 150, COCO-Stuff 182. The confusion matrix is C x C and a one-hot target C planes per image, so
#: a stray label of 10**9 must not become a size.
MAX_CLASSES = 1024

# The largest boundary tolerance in pixels, checked wherever a tol is given (loss files, metrics,
# surrogates, --tol): a band of half-width 1024 already covers a 2048-pixel-wide image. At run time
# the dilation is also bounded by the image: a tol of at least the larger side (minus 1) selects
# the whole image, so it is computed as that side, and never allocates more than ~9 images.
MAX_TOL = 1024


def check_tol(tol: Any, *, name: str = "tol", where: str = "") -> int:
    """``tol`` if it is an int in ``[0, MAX_TOL]``, else an :class:`InvalidValueError` naming
    ``name`` (after ``where``, e.g. a file), the limit and the way out.

    >>> check_tol(5)
    5
    """
    if isinstance(tol, bool) or not isinstance(tol, (int, np.integer)) or not 0 <= tol <= MAX_TOL:
        place = f"{where}: " if where else ""
        raise InvalidValueError(f"{place}{name} must be an int in [0, {MAX_TOL}] (the boundary "
                                f"tolerance in pixels; autoloss.core.metrics.MAX_TOL), but got "
                                f"{name}={tol!r}; pass a tolerance of at most {MAX_TOL} pixels")
    return int(tol)


@dataclass(frozen=True)
class MetricOptions:
    """The options that define a boundary metric, the same for its exact form
    (:class:`MetricAccumulator`, :func:`evaluate`) and its surrogate
    (:class:`~autoloss.losses.SurrogateLoss`): ``tol``, the boundary tolerance in pixels (BIoU's
    band half-width, BF1's match distance), and ``drop_bg``, class 0 left out of the boundary
    metrics. A search builds one from the target's space and gives it to both the trial's loss
    and its reward, so the two cannot score different metrics. The defaults are those of every
    class and function that takes these options.
    """

    tol: int = 5
    drop_bg: bool = False

    def __post_init__(self) -> None:
        check_tol(self.tol)
        if not isinstance(self.drop_bg, bool):
            raise InvalidValueError(f"drop_bg must be a bool, but got drop_bg={self.drop_bg!r}")

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> MetricOptions:
        """The metric options among ``options`` (e.g. a surrogate's), defaults for the rest."""
        return cls(**{k: options[k] for k in ("tol", "drop_bg") if k in options})

    def to_dict(self) -> dict[str, Any]:
        """``{"tol": ..., "drop_bg": ...}``: keyword arguments of the metric and the surrogate."""
        return asdict(self)

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
        raise InvalidTypeError(f"{name} must hold integer class labels, but got dtype {x.dtype}; "
                               f"class indices stored as floats (as MONAI's LoadImage gives "
                               f"them) are not guessed: pass {name}.round().long()")
    return x.long()


def _squeeze_channel(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the channel of one of ``[N,1,...]`` labels when the other side has one dimension
    less (``target [N,1,H,W]`` and ``pred [N,H,W]``, or the reverse)."""
    if target.dim() == pred.dim() + 1 and target.dim() in (4, 5) and target.shape[1] == 1:
        return pred, target[:, 0]
    if pred.dim() == target.dim() + 1 and pred.dim() in (4, 5) and pred.shape[1] == 1:
        return pred[:, 0], target
    return pred, target


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


class MetricAccumulator(nn.Module):
    """Streaming exact metrics: ``update`` per batch, ``compute`` at the end.

    Memory does not grow with the dataset: only the per-class sums of each program are kept, in
    float64, on the accumulator's device (CPU until moved: ``acc.to("cuda")``, like any
    ``nn.Module``). ``update`` stays on that device and never waits for it when
    ``validate_args=False`` (no ``.item()``, no host copy), so a GPU evaluation loop is not slowed
    by it; ``compute`` copies the sums to the host once. Under ``torch.distributed``,
    :meth:`all_reduce` sums them over the ranks (every rank has the same sums from the start, so
    a rank that saw no batch takes part too).

    Args:
        num_classes: number of classes C.
        ignore_index: ground-truth value to exclude, or None.
        tol: boundary tolerance in pixels for ``biou`` and ``bf1``.
        drop_bg: leave class 0 out of the boundary band (``biou``) and of the mean (``bf1``).
        metrics: names of the metrics to compute (default: all of ``METRIC_NAMES``), or user
            programs ``file.py:name``.
        validate_args: check the label values of every batch (an error names the bad ones);
            this reads a flag back from the device. ``False`` skips it: out-of-range predictions
            are then counted nowhere.

    Example:
        >>> acc = MetricAccumulator(num_classes=3, metrics=["miou"])
        >>> logits = torch.randn(2, 3, 8, 8)  # [N,C,H,W] scores or [N,H,W] labels
        >>> acc.update(logits, torch.randint(0, 3, (2, 8, 8)))
        >>> sorted(acc.compute())
        ['miou']
    """

    def __init__(self, *, num_classes: int, ignore_index: int | None = None, tol: int = 5,
                 drop_bg: bool = False, metrics: Sequence[str] | None = None,
                 validate_args: bool = True) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or \
                not 1 <= num_classes <= MAX_CLASSES:
            raise InvalidValueError(f"num_classes must be an int in [1, {MAX_CLASSES}] "
                                    f"(MAX_CLASSES), but got {num_classes=}")
        check_tol(tol)
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, int)):
            raise InvalidValueError(f"ignore_index must be an int or None, but got {ignore_index=}")
        if not isinstance(drop_bg, bool):
            raise InvalidValueError(f"drop_bg must be a bool, but got {drop_bg=}")
        if not isinstance(validate_args, bool):
            raise InvalidValueError(f"validate_args must be a bool, but got {validate_args=}")
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
        self.validate_args = validate_args
        self._shapes = self._stat_shapes()
        self.reset()

    def _stat_shapes(self) -> dict[str, dict[str, torch.Size]]:
        """The sums each program keeps (name -> shape), found by running it on the meta device
        (no data, no compute)."""
        C = self.num_classes
        P = torch.zeros(1, C, 1, 1, device="meta")
        mask = torch.zeros(1, 1, 1, 1, device="meta")
        shapes = {}
        for name, program in self.programs.items():
            stats = program.run_stats(_EXACT, P, P, mask, tol=self.tol, drop_bg=self.drop_bg)
            shapes[name] = {key: value.shape for key, value in stats.items()}
        return shapes

    @property
    def device(self) -> torch.device:
        """Where the sums are kept (and batches are counted)."""
        return self._valid_pixels.device

    def reset(self) -> None:
        """Forget every batch seen so far (the sums stay on their device)."""
        device = self._valid_pixels.device if hasattr(self, "_valid_pixels") else None
        zeros = functools.partial(torch.zeros, dtype=torch.float64, device=device)
        self._sums: dict[str, dict[str, Tensor]] = {
            name: {key: zeros(shape) for key, shape in shapes.items()}
            for name, shapes in self._shapes.items()}
        self._valid_pixels = zeros(())
        self._images = torch.zeros((), dtype=torch.long, device=device)
        self.images = 0  # on the host: batches are counted without reading the device

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> MetricAccumulator:
        """``.to()``, ``.cuda()``, ``.cpu()`` move the sums too (they are not parameters or
        buffers, which would let ``.half()`` and ``state_dict`` touch them)."""
        super()._apply(fn, recurse)
        self._sums = {name: {key: fn(v) for key, v in sums.items()}
                      for name, sums in self._sums.items()}
        self._valid_pixels, self._images = fn(self._valid_pixels), fn(self._images)
        return self

    @property
    def valid_pixels(self) -> int:
        """Ground-truth pixels counted so far (reads the device)."""
        return int(self._valid_pixels)

    @torch.no_grad()
    def update(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> None:
        """Add a batch: ``pred`` predicted labels ``[N,H,W]`` (integers) or scores / logits
        ``[N,C,H,W]`` (floats, argmax over C), ``target`` ground-truth labels ``[N,H,W]``; tensors
        on another device than the accumulator's (and numpy arrays) are copied to it. Volumes:
        labels ``[N,D,H,W]``, scores ``[N,C,D,H,W]`` (boundaries with 3x3x3 neighbourhoods, ``tol``
        a cube).

        Labels with a channel of one (MONAI, segmentation_models_pytorch) are accepted where
        that is unambiguous: ``target [N,1,H,W]`` next to scores ``[N,C,H,W]`` or labels
        ``[N,H,W]``, and ``pred [N,1,H,W]`` (``argmax(1, keepdim=True)``) next to ``target
        [N,H,W]`` (likewise ``[N,1,D,H,W]`` for volumes). Both ``[N,1,H,W]`` read as volumes of
        depth 1. Float labels are refused (class indices stored as floats are not guessed).

        The batch is processed in chunks of about ``2**20`` one-hot elements (at least one image).
        """
        is_scores = isinstance(pred, (Tensor, np.ndarray)) and (
            pred.is_floating_point() if isinstance(pred, Tensor)
            else np.issubdtype(pred.dtype, np.floating))
        if is_scores and pred.ndim in (4, 5):
            layout = "[N,C,H,W]" if pred.ndim == 4 else "[N,C,D,H,W]"
            if pred.shape[1] != self.num_classes:
                raise InvalidValueError(
                    f"pred scores {layout} must have C=num_classes={self.num_classes} channels, "
                    f"but got pred {tuple(pred.shape)}")
            pred = torch.as_tensor(pred).argmax(dim=1)
        elif is_scores:
            raise InvalidTypeError(
                f"pred must hold integer class labels [N,H,W] ([N,D,H,W] for volumes) or float "
                f"scores [N,C,H,W] ([N,C,D,H,W]; argmax over C), but got float pred of shape "
                f"{tuple(pred.shape)}")
        pred = _as_tensor(pred, "pred").to(self.device)  # a copy only if elsewhere
        target = _as_tensor(target, "target").to(self.device)
        pred, target = _squeeze_channel(pred, target)
        if pred.dim() not in (3, 4) or pred.shape != target.shape:
            raise InvalidValueError(
                f"pred and target must both be [N,H,W] label maps of the same shape ([N,D,H,W] "
                f"for volumes; or pred [N,C,H,W] / [N,C,D,H,W] scores), but got pred "
                f"{tuple(pred.shape)} and target {tuple(target.shape)}"
            )
        if self.validate_args:
            check_labels(pred, name="pred", num_classes=self.num_classes, ignore_index=None)
            check_labels(target, name="target", num_classes=self.num_classes,
                         ignore_index=self.ignore_index)
        elements = self.num_classes * pred[0].numel() if pred.shape[0] else 1  # one image
        step = max(1, _CHUNK_ELEMENTS // max(1, elements))
        for start in range(0, pred.shape[0], step):
            self._add(pred[start:start + step], target[start:start + step])
        self.images += pred.shape[0]
        self._images += pred.shape[0]

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
            sums = self._sums[name]
            for key, value in shared[signature].items():
                sums[key] += value.detach()  # in float64, on the accumulator's device
        self._valid_pixels += valid.sum()

    def all_reduce(self, group: Any = None) -> MetricAccumulator:
        """Sum the accumulated sums over the ranks of ``torch.distributed`` (``group``: the
        process group, default the world), in place, so that ``compute`` gives the metrics of
        every rank's batches on each rank. Call it on every rank, after the last ``update``
        (once: calling it again adds the ranks' sums again). Returns ``self``."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InvalidValueError("all_reduce needs torch.distributed initialised "
                                    "(torch.distributed.init_process_group)")
        tensors = [t for sums in self._sums.values() for t in sums.values()]
        for tensor in [*tensors, self._valid_pixels, self._images]:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        self.images = int(self._images)
        return self

    def _scores(self, name: str) -> tuple[Tensor, Tensor | None]:
        if self.images == 0:
            raise RuntimeError("compute() called before any update()")
        sums = {key: value.to("cpu") for key, value in self._sums[name].items()}
        return self.programs[name].score(sums, _EXACT)

    def compute(self) -> dict[str, float]:
        """Every metric over all batches so far, as floats (NaN when undefined, e.g. no pixel)."""
        out = {}
        pixels = self.valid_pixels
        for name in self.programs:
            values, present = self._scores(name)
            undefined = pixels == 0 or (present is not None and not bool(present.any()))
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
    if pred.shape != target.shape or pred.dim() not in (2, 3, 4):
        raise InvalidValueError(
            f"pred and target must both be [N,H,W] (or [H,W]) label maps, or [N,D,H,W] volumes, "
            f"of the same shape, but got pred {tuple(pred.shape)} and target "
            f"{tuple(target.shape)}"
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
        pred: predicted labels ``[N,H,W]`` (torch or numpy integers in ``[0, C)``), or volumes
            ``[N,D,H,W]`` (a single volume as ``[1,D,H,W]``: ``[D,H,W]`` reads as D images).
        target: ground-truth labels of the same shape; ``ignore_index`` pixels are excluded.
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

