"""Hugging Face ``transformers``: an autoloss loss as ``Trainer(compute_loss_func=...)``.

Segmentation models of ``transformers`` (SegFormer, UperNet, DPT, Mask2Former's semantic head
aside) return ``outputs.logits`` at a fraction of the input size (SegFormer: 1/4) and compute
their own cross-entropy when given ``labels``. ``Trainer`` replaces that loss with
``compute_loss_func(outputs, labels, num_items_in_batch)``; :class:`TrainerLoss` is such a
function, upsampling the logits to the labels as SegFormer's own loss does::

    from transformers import Trainer
    from autoloss.integrations import TrainerLoss

    trainer = Trainer(model=model, args=args, train_dataset=train,
                      compute_loss_func=TrainerLoss("searched_loss.yaml", ignore_index=255))

The dataset yields ``{"pixel_values": [3,H,W], "labels": [H,W] or [1,H,W]}`` (integers).
This module does not import ``transformers``; the outputs are read by their ``logits`` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from autoloss.errors import InvalidTypeError, InvalidValueError
from autoloss.integrations.pipeline_loss import PipelineLoss

__all__ = ["TrainerLoss"]


def _logits(outputs: Any) -> Tensor:
    """``outputs.logits`` of a ``ModelOutput`` (or a dict with ``"logits"``, or the tensor)."""
    if isinstance(outputs, Tensor):
        return outputs
    logits = outputs.get("logits") if isinstance(outputs, Mapping) else \
        getattr(outputs, "logits", None)
    if not isinstance(logits, Tensor):
        raise InvalidTypeError(f"expected model outputs with a 'logits' tensor [N,C,h,w], but "
                               f"got {type(outputs).__name__} without one")
    return logits


class TrainerLoss(PipelineLoss):
    """``compute_loss_func`` for ``transformers.Trainer``: the autoloss loss of
    ``outputs.logits`` ``[N,C,H/4,W/4]`` (upsampled) against ``labels`` ``[N,H,W]`` /
    ``[N,1,H,W]``.

    Args: as :class:`~autoloss.integrations.PipelineLoss` (``ignore_index`` defaults to 255,
    SegFormer's ``semantic_loss_ignore_index``).

    Gradient accumulation: ``Trainer`` takes the loss of a ``compute_loss_func`` as already
    normalised over the accumulated batch, and passes ``num_items_in_batch``, its count of
    labels ``!= -100`` over the accumulated micro-batches (and devices). The loss of one
    micro-batch (a mean over its pixels or classes) is therefore weighted by that batch's share
    of the count, ``labels.ne(-100).sum() / num_items_in_batch``: 1 without accumulation on one
    device, ``1/k`` for ``k`` equal micro-batches.
    """

    def __init__(self, loss: Any, *, ignore_index: int | None = 255, trust_code: bool = False
                 ) -> None:
        super().__init__(loss, ignore_index=ignore_index, trust_code=trust_code)

    def forward(self, outputs: Any, labels: Tensor | None,  # type: ignore[override]
                num_items_in_batch: Any = None) -> Tensor:
        if labels is None:
            raise InvalidValueError("Trainer passed labels=None to the loss: the dataset's items "
                                    "need a 'labels' entry ([H,W] integer class indices)")
        loss = super().forward(_logits(outputs), labels)
        if num_items_in_batch is None:
            return loss
        total = torch.as_tensor(num_items_in_batch, device=loss.device).clamp_min(1)
        return loss * (labels.ne(-100).sum() / total).to(loss.dtype)
