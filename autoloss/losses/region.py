"""Soft region losses: soft Jaccard (IoU), soft Dice and (focal) Tversky.

Counts per image ``b`` and class ``c`` over non-ignored pixels ``i`` (Wang & Blaschko, "Jaccard
Metric Losses", NeurIPS 2023; "Dice Semimetric Losses", MICCAI 2023), for probabilities
``p = softmax(x)`` and a label distribution ``q`` (one-hot for hard labels)::

    tp = (|p|_1 + |q|_1 - |p - q|_1) / 2 = sum_i min(p_ic, q_ic)   (sum_i p_ic q_ic if q is hard)
    fp = |p|_1 - tp,  fn = |q|_1 - tp
    T  = (tp + smooth) / (tp + alpha fp + beta fn + smooth)          (Tversky index)
    L  = (1 - T)^gamma                                                (focal Tversky for gamma != 1)

``alpha = beta = 1`` is the soft Jaccard loss, ``alpha = beta = 1/2`` the soft Dice loss,
``alpha = 0.3, beta = 0.7`` the Tversky loss of Salehi et al. (MLMI 2017) and ``gamma`` the focal
Tversky loss of Abraham & Khan (ISBI 2019; their exponent ``1/gamma``). On hard labels these are
the usual ``sum p q`` soft losses; with soft labels the ``min`` form makes them vanish exactly
when ``p = q`` (and only then, for ``classes="all"``).
Ignored pixels are removed from both ``p`` and ``q`` (numerator and denominator alike).

Options of every loss here: ``resize="bilinear"`` upsamples logits at the decoder's resolution
to the labels' size (:func:`~autoloss.losses._validate.resize_logits`); ``sync="global"`` sums
the counts over the processes of a ``torch.distributed`` group, so under DDP every rank computes
the full batch's loss (:mod:`autoloss.losses._global`, which states the gradient scaling).

Reductions: batch level (``per_image=False``; counts summed over the batch, one ``L_c`` per
class, the mean over active classes) or image level (``per_image=True``; per image the mean over
its active classes, then the mean over images with an active class). A class is active if
``classes="all"``, if it is listed (``classes=[...]``), or for ``"present"`` if its label mass
peaks above 0.01 (any pixel of the class for hard labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from autoloss.errors import InvalidValueError
from autoloss.losses._global import Sync, check_sync, processes, sync_entry
from autoloss.losses._precision import float32_compute
from autoloss.losses._validate import (
    Reduction,
    check_class_weights,
    check_classes,
    check_ignore_index,
    check_logits_and_target,
    check_number,
    check_resize,
    class_weights_tensor,
    empty_batch,
    resize_entry,
    resize_logits,
    squeeze_label_channel,
    weights_buffer,
)
from autoloss.losses.binary import apply_mode, check_mode, mode_entry

__all__ = [
    "DiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "active_mask",
    "batch_max",
    "dice_loss",
    "jaccard_loss",
    "masked_mean",
    "soft_counts",
    "tversky_loss",
    "tversky_loss_matrix",
]

PRESENT_THRESHOLD = 0.01


def soft_counts(probs: Tensor, target: Tensor, *, mode: str, ignore_index: int | None,
                norm: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft ``tp, fp, fn`` and the label peak, each ``[N,C]``.

    Args:
        probs: ``[N,C,H,W]`` probabilities.
        target: hard ``[N,H,W]`` labels (``mode="hard"``; clamped to ``[0, C-1]``, pixels equal to
            ``ignore_index`` removed) or soft ``[N,C,H,W]`` labels (``mode="soft"``, not masked).
        norm: ``k >= 1``; the counts use ``|v|_k^k`` in place of ``|v|_1``.

    Returns:
        ``tp, fp, fn, peak`` where ``peak[b, c] = max_i q_bic`` over kept pixels.
    """
    n, c = probs.shape[:2]
    p = probs.flatten(2)  # (flatten, unlike reshape(n, c, -1), takes an empty batch)
    if mode == "hard":
        labels = target.flatten(1).long().clamp(0, c - 1)
        valid = None if ignore_index is None else target.flatten(1) != ignore_index
        if norm == 1:
            keep = None if valid is None else valid.to(p.dtype)
            p_sum = (p.sum(dim=2) if keep is None
                     else torch.bmm(p, keep.unsqueeze(2)).squeeze(2))
            on_label = p.gather(1, labels.unsqueeze(1)).squeeze(1)
            ones = torch.ones_like(on_label) if keep is None else keep
            if keep is not None:
                on_label = on_label * keep
            tp = p.new_zeros(n, c).scatter_add(1, labels, on_label)
            q_sum = p.new_zeros(n, c).scatter_add(1, labels, ones)
            return tp, p_sum - tp, q_sum - tp, (q_sum > 0).to(p.dtype)
        q = torch.zeros_like(p).scatter_(1, labels.unsqueeze(1), 1.0)
        if valid is not None:
            keep = valid.unsqueeze(1).to(p.dtype)
            p, q = p * keep, q * keep
    else:
        q = target.flatten(2).to(p.dtype)
    p_card = p.abs().pow(norm).sum(dim=2)
    q_card = q.abs().pow(norm).sum(dim=2)
    d_card = (p - q).abs().pow(norm).sum(dim=2)
    tp = (p_card + q_card - d_card) / 2
    peak = q.amax(dim=2) if q.shape[2] > 0 else q.new_zeros(n, c)
    return tp, p_card - tp, q_card - tp, peak


def tversky_loss_matrix(tp: Tensor, fp: Tensor, fn: Tensor, *, alpha: float, beta: float,
                        gamma: float, smooth: float, log_loss: bool = False) -> Tensor:
    """``L = (1 - T)^gamma`` (or ``(-log T)^gamma``) entrywise, ``T`` the Tversky index."""
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    loss = -torch.log(index) if log_loss else 1.0 - index
    if gamma == 1:
        return loss
    if float(gamma).is_integer():
        return loss ** gamma
    return loss.clamp_min(torch.finfo(loss.dtype).tiny) ** gamma  # keep the base positive


def active_mask(peak: Tensor, classes: str | Sequence[int], *,
                threshold: float = PRESENT_THRESHOLD) -> Tensor:
    """Boolean mask of active entries, same shape as ``peak`` (``[..., C]``)."""
    if classes == "all":
        return torch.ones_like(peak, dtype=torch.bool)
    if classes == "present":
        return peak > threshold
    num_classes = peak.shape[-1]
    bad = [k for k in classes if k >= num_classes]
    if bad:
        raise InvalidValueError(
            f"classes lists {bad}, but the logits have only C={num_classes} classes"
        )
    mask = torch.zeros(num_classes, dtype=torch.bool, device=peak.device)
    mask[list(classes)] = True
    return mask.expand_as(peak)


def batch_max(peak: Tensor) -> Tensor:
    """``peak [N,C]`` -> ``[C]``, the maximum over the images (zeros for an empty batch)."""
    return peak.amax(0) if peak.shape[0] > 0 else peak.new_zeros(peak.shape[1:])


def masked_mean(loss: Tensor, active: Tensor, dim: int | None = None, *,
                batch_sum: Callable[..., tuple[Tensor, ...]] | None = None) -> Tensor:
    """Mean of ``loss`` over ``active`` entries (0 with a zero gradient if none is active).

    With ``dim``: the mean over ``dim`` for each row, then the mean over rows that have an active
    entry (the image-level / class-level means of Wang & Blaschko); ``loss [N,C]``.
    ``batch_sum`` (e.g. :meth:`~autoloss.losses._global.Processes.sums`) sums the sums over the
    images (dim 0) across processes before they are divided.
    """
    weight = active.to(loss.dtype)
    if dim is None:
        count = weight.sum()
        return (loss * weight).sum() / count.clamp_min(1)
    count = weight.sum(dim=dim)
    total = (loss * weight).sum(dim=dim)
    if batch_sum is not None and dim == 0:  # per class, over the images of every process
        total, count = batch_sum(total, count)
    rows = total / count.clamp_min(1)
    has = (count > 0).to(loss.dtype)
    num, den = (rows * has).sum(), has.sum()
    if batch_sum is not None and dim != 0:  # over the images of every process
        num, den = batch_sum(num, den)
    return num / den.clamp_min(1)


@float32_compute
def tversky_loss(logits: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                 gamma: float = 1.0, smooth: float = 1.0, per_image: bool = False,
                 classes: str | Sequence[int] = "present", ignore_index: int | None = None,
                 class_weights: Sequence[float] | Tensor | None = None,
                 reduction: str = "mean", resize: str | None = None,
                 sync: Sync = "local") -> Tensor:
    """(Focal) Tversky loss, see the module docstring for the formulas.

    Args:
        logits: ``[N,C,H,W]``, or a 3-D volume ``[N,C,D,H,W]`` (the labels then ``[N,D,H,W]``).
        target: hard labels ``[N,H,W]`` or soft labels ``[N,C,H,W]`` (``ignore_index`` does not
            apply to soft labels).
        alpha, beta: weights of false positives and false negatives (``>= 0``).
        gamma: focal exponent ``> 0`` on ``1 - T``.
        smooth: ``> 0``, added to numerator and denominator.
        per_image: image-level instead of batch-level counts (see the module docstring).
        classes: ``"present"``, ``"all"`` or a list of class indices.
        ignore_index: hard label value excluded from the counts, or None.
        class_weights: ``[C]`` factors on the per-class losses (before the mean).
        reduction: ``"mean"``, ``"sum"`` (over active entries) or ``"none"`` (the per-class loss
            ``[C]``, or ``[N,C]`` with ``per_image``; inactive entries are 0).
        resize: ``"bilinear"``: upsample logits ``[N,C,h,w]`` to the labels' ``H x W`` first.
        sync: ``"global"`` (or a process group): counts (and, with ``per_image``, the mean over
            images) summed over the processes of ``torch.distributed``
            (:mod:`autoloss.losses._global`).

    Returns:
        a scalar (or ``[C]`` / ``[N,C]`` for ``reduction="none"``).

    Example:
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> tversky_loss(logits, torch.randint(0, 3, (2, 8, 8)), alpha=0.3, beta=0.7).backward()
    """
    red = Reduction.parse(reduction)
    logits = resize_logits(logits, target, check_resize(resize))
    target = squeeze_label_channel(logits, target)
    mode = check_logits_and_target(logits, target, ignore_index=ignore_index, allow_soft=True,
                                   volumes=True)
    world = processes(check_sync(sync))
    alpha = check_number("alpha", alpha, low=0.0)
    beta = check_number("beta", beta, low=0.0)
    gamma = check_number("gamma", gamma, low=0.0, low_open=True)
    smooth = check_number("smooth", smooth, low=0.0, low_open=True)
    classes = check_classes(classes)
    if not world and (empty := empty_batch(logits)) is not None:
        return empty
    probs = torch.softmax(logits, dim=1)
    tp, fp, fn, peak = soft_counts(probs, target, mode=mode, ignore_index=ignore_index)
    if not per_image:
        tp, fp, fn, peak = tp.sum(0), fp.sum(0), fn.sum(0), batch_max(peak)
        if world:
            tp, fp, fn = world.sums(tp, fp, fn)
            peak = world.max(peak)
    loss = tversky_loss_matrix(tp, fp, fn, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth)
    weight = class_weights_tensor(class_weights, logits.shape[1], loss)
    if weight is not None:
        loss = loss * weight
    active = active_mask(peak, classes)
    if red is Reduction.NONE:
        return loss * active.to(loss.dtype)
    if red is Reduction.SUM:
        total = (loss * active.to(loss.dtype)).sum()
        return world.sums(total)[0] if world and per_image else total
    if not per_image:
        return masked_mean(loss, active)
    return masked_mean(loss, active, dim=1, batch_sum=world.sums if world else None)


def dice_loss(logits: Tensor, target: Tensor, *, gamma: float = 1.0, smooth: float = 1.0,
              per_image: bool = False, classes: str | Sequence[int] = "present",
              ignore_index: int | None = None,
              class_weights: Sequence[float] | Tensor | None = None,
              reduction: str = "mean", resize: str | None = None,
              sync: Sync = "local") -> Tensor:
    """Soft Dice loss ``1 - (2 tp + 2s) / (2 tp + fp + fn + 2s)``: :func:`tversky_loss` with
    ``alpha = beta = 1/2`` (same options)."""
    return tversky_loss(logits, target, alpha=0.5, beta=0.5, gamma=gamma, smooth=smooth,
                        per_image=per_image, classes=classes, ignore_index=ignore_index,
                        class_weights=class_weights, reduction=reduction, resize=resize,
                        sync=sync)


def jaccard_loss(logits: Tensor, target: Tensor, *, gamma: float = 1.0, smooth: float = 1.0,
                 per_image: bool = False, classes: str | Sequence[int] = "present",
                 ignore_index: int | None = None,
                 class_weights: Sequence[float] | Tensor | None = None,
                 reduction: str = "mean", resize: str | None = None,
                 sync: Sync = "local") -> Tensor:
    """Soft Jaccard (IoU) loss ``1 - (tp + s) / (tp + fp + fn + s)``: :func:`tversky_loss` with
    ``alpha = beta = 1`` (same options)."""
    return tversky_loss(logits, target, alpha=1.0, beta=1.0, gamma=gamma, smooth=smooth,
                        per_image=per_image, classes=classes, ignore_index=ignore_index,
                        class_weights=class_weights, reduction=reduction, resize=resize,
                        sync=sync)


class _RegionLoss(nn.Module):
    """Shared options of the region-loss modules; subclasses fix or expose ``alpha``, ``beta``."""

    name: ClassVar[str]
    alpha: float
    beta: float

    def __init__(self, *, gamma: float = 1.0, smooth: float = 1.0, per_image: bool = False,
                 classes: str | Sequence[int] = "present", ignore_index: int | None = None,
                 class_weights: Sequence[float] | None = None, reduction: str = "mean",
                 mode: str = "multiclass", resize: str | None = None,
                 sync: Sync = "local") -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.resize = check_resize(resize)
        self.sync = check_sync(sync)
        self.gamma = check_number("gamma", gamma, low=0.0, low_open=True)
        self.smooth = check_number("smooth", smooth, low=0.0, low_open=True)
        if not isinstance(per_image, bool):
            raise InvalidValueError(f"per_image must be a bool, but got {per_image=!r}")
        self.per_image = per_image
        self.classes = check_classes(classes)
        self.ignore_index = check_ignore_index(ignore_index)
        self._class_weights = check_class_weights(class_weights)
        self.register_buffer("class_weights", weights_buffer(self._class_weights))
        self.reduction = Reduction.parse(reduction).value

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, C, H, W]`` (``[N, 1, H, W]`` with ``mode="binary"``), ``target [N, H, W]``
        long (or soft ``[N, C, H, W]``) -> :func:`tversky_loss`: a scalar, the per-class or
        per-image values with ``reduction="none"``."""
        return apply_mode(self.mode, self._loss, logits, target)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return tversky_loss(logits, target, alpha=self.alpha, beta=self.beta, gamma=self.gamma,
                            smooth=self.smooth, per_image=self.per_image, classes=self.classes,
                            ignore_index=self.ignore_index, class_weights=self.class_weights,
                            reduction=self.reduction, resize=self.resize, sync=self.sync)

    def to_dict(self) -> dict[str, Any]:
        """The loss spec ``{"name": ..., **options}``; ``cls(**options)`` rebuilds it."""
        return {"name": self.name, "gamma": self.gamma, "smooth": self.smooth,
                "per_image": self.per_image, "classes": self.classes,
                "ignore_index": self.ignore_index, "class_weights": self._class_weights,
                "reduction": self.reduction, **mode_entry(self.mode),
                **resize_entry(self.resize), **sync_entry(self.sync)}


class TverskyLoss(_RegionLoss):
    """Module form of :func:`tversky_loss` (``class_weights`` is a buffer).

    Example:
        >>> loss = TverskyLoss(alpha=0.3, beta=0.7, gamma=4 / 3, ignore_index=255)
        >>> loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))).shape  # a scalar
        torch.Size([])
    """

    name: ClassVar[str] = "tversky"

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, gamma: float = 1.0,
                 smooth: float = 1.0, per_image: bool = False,
                 classes: str | Sequence[int] = "present", ignore_index: int | None = None,
                 class_weights: Sequence[float] | None = None, reduction: str = "mean",
                 mode: str = "multiclass", resize: str | None = None,
                 sync: Sync = "local") -> None:
        super().__init__(gamma=gamma, smooth=smooth, per_image=per_image, classes=classes,
                         ignore_index=ignore_index, class_weights=class_weights,
                         reduction=reduction, mode=mode, resize=resize, sync=sync)
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.beta = check_number("beta", beta, low=0.0)

    def to_dict(self) -> dict[str, Any]:
        spec = super().to_dict()
        return {"name": spec.pop("name"), "alpha": self.alpha, "beta": self.beta, **spec}


class DiceLoss(_RegionLoss):
    """Soft Dice loss module (:func:`dice_loss`, ``alpha = beta = 1/2``)."""

    name: ClassVar[str] = "dice"
    alpha = beta = 0.5


class JaccardLoss(_RegionLoss):
    """Soft Jaccard loss module (:func:`jaccard_loss`, ``alpha = beta = 1``)."""

    name: ClassVar[str] = "jaccard"
    alpha = beta = 1.0
