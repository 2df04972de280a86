"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), multi-class.

    FL_i = -alpha * w_{y_i} * (1 - p_{i,y_i})^gamma * log p_{i,y_i},   p = softmax(x) over C

With soft labels q: ``FL_i = -alpha * sum_c w_c q_ic (1 - p_ic)^gamma log p_ic``. ``gamma = 0``
and ``alpha = None`` give exactly :func:`~autoloss.losses.cross_entropy.cross_entropy`
(same weighting and mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from autoloss.losses._precision import float32_compute
from autoloss.losses._validate import (
    Reduction,
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
from autoloss.losses.binary import apply_mode, check_mode, mode_entry

__all__ = ["FocalLoss", "focal_loss"]


def _modulate(log_p: Tensor, gamma: float) -> Tensor:
    """``-(1 - p)^gamma * log p`` from ``log p``, with ``1 - p = -expm1(log p)`` (accurate near
    p = 1, finite gradient for any gamma >= 0 even when p rounds to 1)."""
    if gamma == 0:
        return -log_p
    one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
    return -(one_minus_p ** gamma) * log_p


@float32_compute
def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: float | None = None,
               class_weights: Sequence[float] | Tensor | None = None,
               ignore_index: int | None = None, reduction: str = "mean",
               resize: str | None = None) -> Tensor:
    """Multi-class focal loss over softmax probabilities.

    Args:
        logits: ``[N,C,H,W]``, or a 3-D volume ``[N,C,D,H,W]`` (the labels then ``[N,D,H,W]``).
        target: hard labels ``[N,H,W]`` (integer) or soft labels ``[N,C,H,W]`` (float; the ignore
            index does not apply to them).
        gamma: focusing parameter ``>= 0`` (2 in the paper).
        alpha: constant factor (the paper's ``alpha``; 0.25 there), or None for 1. Per-class
            ``alpha_t`` is ``class_weights``.
        class_weights: ``[C]`` weights ``w_c``.
        ignore_index: hard label value that contributes nothing, or None.
        reduction: ``"mean"`` (hard: ``sum_i FL_i / sum_i w_{y_i}`` over non-ignored pixels, like
            cross-entropy; soft: mean over pixels), ``"sum"``, or ``"none"`` (``[N,H,W]``).
        resize: ``"bilinear"``: upsample logits at the decoder's resolution to the labels'
            ``H x W`` first (``align_corners=False``).

    Returns:
        a scalar, or ``[N,H,W]`` for ``reduction="none"``. All pixels ignored -> 0.

    Example:
        >>> logits = torch.randn(2, 3, 4, 4, requires_grad=True)
        >>> focal_loss(logits, torch.randint(0, 3, (2, 4, 4)), gamma=2.0).backward()
    """
    red = Reduction.parse(reduction)
    logits = resize_logits(logits, target, check_resize(resize))
    target = squeeze_label_channel(logits, target)
    mode = check_logits_and_target(logits, target, ignore_index=ignore_index, allow_soft=True,
                                   volumes=True)
    gamma = check_number("gamma", gamma, low=0.0)
    scale = 1.0 if alpha is None else check_number("alpha", alpha, low=0.0)
    weight = class_weights_tensor(class_weights, logits.shape[1], logits)
    log_p = torch.log_softmax(logits, dim=1)
    if mode == "soft":
        q = target.to(logits.dtype)
        if weight is not None:
            q = q * weight.view(1, -1, 1, 1)
        per_pixel = (q * _modulate(log_p, gamma)).sum(dim=1)
        return scale * red.apply(per_pixel)
    labels = target.long()
    valid = None if ignore_index is None else labels != ignore_index
    safe = labels if valid is None else torch.where(valid, labels, 0)
    per_pixel = _modulate(log_p.gather(1, safe.unsqueeze(1)).squeeze(1), gamma)
    pixel_weight = None if weight is None else weight[safe]
    if valid is not None:
        mask = valid.to(logits.dtype)
        pixel_weight = mask if pixel_weight is None else pixel_weight * mask
    return scale * red.apply(per_pixel, weights=pixel_weight)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss` (``class_weights`` is a buffer).

    Example:
        >>> loss = FocalLoss(gamma=2.0, ignore_index=255)
        >>> loss(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))).shape  # a scalar
        torch.Size([])
    """

    name: ClassVar[str] = "focal"

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = None,
                 class_weights: Sequence[float] | None = None, ignore_index: int | None = None,
                 reduction: str = "mean", mode: str = "multiclass",
                 resize: str | None = None) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.resize = check_resize(resize)
        self.gamma = check_number("gamma", gamma, low=0.0)
        self.alpha = None if alpha is None else check_number("alpha", alpha, low=0.0)
        self._class_weights = check_class_weights(class_weights)
        self.register_buffer("class_weights", weights_buffer(self._class_weights))
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = Reduction.parse(reduction).value

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, C, H, W]`` (``[N, 1, H, W]`` with ``mode="binary"``), ``target [N, H, W]``
        long (or soft ``[N, C, H, W]``) -> :func:`focal_loss` (its ``reduction``)."""
        return apply_mode(self.mode, self._loss, logits, target)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha,
                          class_weights=self.class_weights, ignore_index=self.ignore_index,
                          reduction=self.reduction, resize=self.resize)

    def to_dict(self) -> dict[str, Any]:
        """The loss spec ``{"name": ..., **options}``; ``FocalLoss(**options)`` rebuilds it."""
        return {"name": self.name, "gamma": self.gamma, "alpha": self.alpha,
                "class_weights": self._class_weights, "ignore_index": self.ignore_index,
                "reduction": self.reduction, **mode_entry(self.mode),
                **resize_entry(self.resize)}
