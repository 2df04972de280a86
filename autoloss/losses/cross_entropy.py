"""Softmax cross-entropy (hard or soft labels) and binary cross-entropy, with an ignore index.

Unlike ``torch.nn.functional.cross_entropy``, a batch whose pixels are all ignored gives 0 (with a
zero gradient) instead of NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoloss.losses._precision import float32_compute
from autoloss.losses._validate import (
    Reduction,
    check_binary_logits_and_target,
    check_class_weights,
    check_ignore_index,
    check_logits_and_target,
    check_number,
    check_resize,
    class_weights_tensor,
    resize_entry,
    resize_logits,
    squeeze_label_channel,
    weights_buffer,
)

__all__ = ["BinaryCrossEntropyLoss", "CrossEntropyLoss", "binary_cross_entropy", "cross_entropy"]

_NO_IGNORE = -100  # passed to torch when ignore_index is None (validated labels never hold it)


@float32_compute
def cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int | None = None,
                  class_weights: Sequence[float] | Tensor | None = None,
                  label_smoothing: float = 0.0, reduction: str = "mean",
                  resize: str | None = None) -> Tensor:
    """Softmax cross-entropy ``-sum_c q_ic log softmax(x_i)_c``.

    Args:
        logits: ``[N,C,H,W]``, or a 3-D volume ``[N,C,D,H,W]`` (the labels then ``[N,D,H,W]``).
        target: hard labels ``[N,H,W]`` (integer) or soft labels ``[N,C,H,W]`` (float, rows sum
            to 1; ``ignore_index`` does not apply to them).
        ignore_index: hard label value that contributes nothing, or None.
        class_weights: ``[C]`` weights ``w_c`` (the true class's weight scales each pixel).
        label_smoothing: ``eps`` in ``[0, 1)``; the target becomes ``(1-eps) q + eps / C``.
        reduction: ``"mean"`` (hard: ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` over non-ignored
            pixels, as torch does; soft: mean over all pixels), ``"sum"``, or ``"none"``
            (``[N,H,W]``, ignored pixels 0).
        resize: ``"bilinear"``: upsample logits at the decoder's resolution to the labels'
            ``H x W`` first (``align_corners=False``).

    Returns:
        a scalar, or ``[N,H,W]`` for ``reduction="none"``. All pixels ignored -> 0.

    Example:
        >>> logits = torch.randn(2, 3, 4, 4, requires_grad=True)
        >>> cross_entropy(logits, torch.randint(0, 3, (2, 4, 4))).backward()
    """
    red = Reduction.parse(reduction)
    logits = resize_logits(logits, target, check_resize(resize))
    target = squeeze_label_channel(logits, target)
    mode = check_logits_and_target(logits, target, ignore_index=ignore_index, allow_soft=True,
                                   volumes=True)
    check_number("label_smoothing", label_smoothing, low=0.0, high=1.0)
    weight = class_weights_tensor(class_weights, logits.shape[1], logits)
    if mode == "soft":
        return F.cross_entropy(logits, target.to(logits.dtype), weight=weight,
                               label_smoothing=label_smoothing, reduction=red.value)
    target = target.long()
    ignore = _NO_IGNORE if ignore_index is None else ignore_index
    if red is not Reduction.MEAN:
        return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore,
                               label_smoothing=label_smoothing, reduction=red.value)
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore,
                            label_smoothing=label_smoothing, reduction="sum")
    valid = None if ignore_index is None else target != ignore_index
    if weight is None:
        count = target.numel() if valid is None else valid.sum()
    else:
        safe = target if valid is None else torch.where(valid, target, 0)
        per_pixel = weight[safe]
        count = per_pixel.sum() if valid is None else (per_pixel * valid).sum()
    count = torch.as_tensor(count, dtype=total.dtype, device=total.device)
    return total / torch.where(count > 0, count, torch.ones_like(count))


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`cross_entropy` (``class_weights`` is a buffer, moved by ``.to``).

    Example:
        >>> loss = CrossEntropyLoss(ignore_index=255, label_smoothing=0.1)
        >>> loss(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))).shape  # a scalar
        torch.Size([])
    """

    name: ClassVar[str] = "cross_entropy"

    def __init__(self, *, ignore_index: int | None = None,
                 class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0,
                 reduction: str = "mean", resize: str | None = None) -> None:
        super().__init__()
        self.resize = check_resize(resize)
        self.ignore_index = check_ignore_index(ignore_index)
        self._class_weights = check_class_weights(class_weights)
        self.register_buffer("class_weights", weights_buffer(self._class_weights))
        self.label_smoothing = check_number("label_smoothing", label_smoothing, low=0.0, high=1.0)
        self.reduction = Reduction.parse(reduction).value

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, C, H, W]``, ``target [N, H, W]`` long (or soft ``[N, C, H, W]``) ->
        :func:`cross_entropy`: a scalar, ``[N, H, W]`` with ``reduction="none"``."""
        return cross_entropy(logits, target, ignore_index=self.ignore_index,
                             class_weights=self.class_weights,
                             label_smoothing=self.label_smoothing, reduction=self.reduction,
                             resize=self.resize)

    def to_dict(self) -> dict[str, Any]:
        """The loss spec ``{"name": ..., **options}``; ``cls(**options)`` rebuilds it."""
        return {"name": self.name, "ignore_index": self.ignore_index,
                "class_weights": self._class_weights,
                "label_smoothing": self.label_smoothing, "reduction": self.reduction,
                **resize_entry(self.resize)}


@float32_compute
def binary_cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int | None = None,
                         pos_weight: float | None = None, reduction: str = "mean",
                         resize: str | None = None) -> Tensor:
    """Sigmoid binary cross-entropy ``-[y log s(x) + (1-y) log(1-s(x))]`` per pixel.

    Args:
        logits: ``[N,H,W]`` or ``[N,1,H,W]`` raw scores.
        target: ``[N,H,W]`` integer labels in {0, 1} (or ``ignore_index``).
        ignore_index: label value that contributes nothing, or None.
        pos_weight: weight of the positive term (``torch``'s ``pos_weight``), or None.
        reduction: ``"mean"`` over non-ignored pixels, ``"sum"``, or ``"none"`` (``[N,H,W]``,
            ignored pixels 0).
        resize: ``"bilinear"``: upsample logits at the decoder's resolution to the labels'
            ``H x W`` first (``align_corners=False``).
    """
    red = Reduction.parse(reduction)
    logits = resize_logits(logits, target, check_resize(resize))
    logits, target = check_binary_logits_and_target(logits, target,
                                                    ignore_index=ignore_index)
    if pos_weight is not None:
        check_number("pos_weight", pos_weight, low=0.0)
    valid = None if ignore_index is None else target != ignore_index
    y = target.to(logits.dtype) if valid is None else (target == 1).to(logits.dtype)
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=logits.dtype,
                                                      device=logits.device)
    per_pixel = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw, reduction="none")
    return red.apply(per_pixel, weights=None if valid is None else valid.to(logits.dtype))


class BinaryCrossEntropyLoss(nn.Module):
    """Module form of :func:`binary_cross_entropy` (the partner of Lovasz hinge)."""

    name: ClassVar[str] = "binary_cross_entropy"

    def __init__(self, *, ignore_index: int | None = None, pos_weight: float | None = None,
                 reduction: str = "mean", resize: str | None = None) -> None:
        super().__init__()
        self.resize = check_resize(resize)
        self.ignore_index = check_ignore_index(ignore_index)
        self.pos_weight = (None if pos_weight is None
                           else check_number("pos_weight", pos_weight, low=0.0))
        self.reduction = Reduction.parse(reduction).value

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, 1, H, W]`` (or ``[N, H, W]``), ``target [N, H, W]`` in {0, 1} ->
        :func:`binary_cross_entropy`: a scalar, ``[N, H, W]`` with ``reduction="none"``."""
        return binary_cross_entropy(logits, target, ignore_index=self.ignore_index,
                                    pos_weight=self.pos_weight, reduction=self.reduction,
                                    resize=self.resize)

    def to_dict(self) -> dict[str, Any]:
        """The loss spec ``{"name": ..., **options}``."""
        return {"name": self.name, "ignore_index": self.ignore_index,
                "pos_weight": self.pos_weight, "reduction": self.reduction,
                **resize_entry(self.resize)}
