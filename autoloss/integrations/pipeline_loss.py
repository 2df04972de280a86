"""An autoloss loss as other training pipelines call one: :class:`PipelineLoss`.

Frameworks hand a loss what their models produce, not what autoloss's losses take:

- logits at the decoder's resolution (SegFormer and most mmseg heads: 1/4 of the labels');
- labels with a channel of one, ``[N,1,H,W]`` (MONAI, segmentation_models_pytorch);
- a loss given by name or file in a config, not a built module.

:class:`PipelineLoss` takes care of the three and nothing else: it upsamples the logits to the
labels' size (bilinear, ``align_corners=False``, as mmseg and Hugging Face do before their own
losses; trilinear for volumes), reads integer ``[N,1,...]`` labels as ``[N,...]`` and calls the
loss. Float labels are never guessed into class indices (the loss's error says how to convert).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from autoloss.errors import InvalidTypeError, InvalidValueError
from autoloss.losses import load_loss
from autoloss.losses._validate import check_ignore_index, resize_logits, squeeze_label_channel

__all__ = ["LossLike", "PipelineLoss", "build_loss", "match_labels"]

#: what names a loss: a preset or baseline name, an exported loss file, a spec dict, or a module
LossLike = str | Path | Mapping[str, Any] | nn.Module

_MISSING = object()


def build_loss(loss: LossLike, *, ignore_index: int | None, trust_code: bool = False) -> nn.Module:
    """The loss module named by ``loss`` for data whose void label is ``ignore_index``.

    A spec (name, path, dict) is loaded with ``load_loss(loss, ignore_index=ignore_index)``; a
    module is used as it is, and its own ``ignore_index`` (where it has one) must be
    ``ignore_index``: a mismatch would silently train on the void pixels or skip a class.
    """
    ignore_index = check_ignore_index(ignore_index)
    if isinstance(loss, nn.Module):
        own = getattr(loss, "ignore_index", _MISSING)
        if own is not _MISSING and own != ignore_index:
            raise InvalidValueError(
                f"the loss module has ignore_index={own!r}, but the data's is {ignore_index=}; "
                f"build it with the data's (load_loss(spec, ignore_index={ignore_index!r})) or "
                f"pass the spec instead of the module")
        return loss
    if isinstance(loss, (str, Path, Mapping)):
        return load_loss(loss, trust_code=trust_code, ignore_index=ignore_index)
    raise InvalidTypeError(f"loss must be a loss name, a loss file path, a spec dict or an "
                           f"nn.Module, but got {type(loss).__name__}: {loss!r}")


def match_labels(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(logits, labels)`` as the losses take them.

    Args:
        logits: ``[N,C,h,w]`` (``[N,C,d,h,w]``) at any resolution.
        labels: integer ``[N,H,W]`` or ``[N,1,H,W]`` (``[N,D,H,W]`` / ``[N,1,D,H,W]``), or soft
            ``[N,C,H,W]`` probabilities.

    Returns:
        logits ``[N,C,H,W]`` upsampled to the labels' size (bilinear, ``align_corners=False``;
        trilinear for volumes; unchanged if the sizes agree) and labels ``[N,H,W]`` (soft ones
        unchanged).
    """
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise InvalidTypeError(f"logits and labels must be torch.Tensors, but got "
                               f"{type(logits).__name__} and {type(labels).__name__}")
    labels = squeeze_label_channel(logits, labels)
    return resize_logits(logits, labels, "bilinear"), labels


class PipelineLoss(nn.Module):
    """An autoloss loss for logits at any resolution and ``[N,1,H,W]`` labels.

    Args:
        loss: a preset or baseline name (``"asl-voc-miou"``, ``"lovasz_softmax"``), an exported
            loss file (``autoloss search``'s YAML), a spec dict, or a built loss module.
        ignore_index: the void label of the data (255 for SegFormer's and mmseg's defaults), or
            None when every pixel is labelled.
        trust_code: let a loss file's user metric (``metric: file.py:name``) run.

    ``forward(logits, labels)``: logits ``[N,C,h,w]`` (any resolution), labels integer
    ``[N,H,W]`` or ``[N,1,H,W]`` (or volumes ``[N,C,d,h,w]`` and ``[N,(1,)D,H,W]``) -> scalar.

    Example:
        >>> import torch
        >>> loss = PipelineLoss("asl-voc-miou", ignore_index=255)
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)   # 1/4 of the labels' size
        >>> loss(logits, torch.randint(0, 3, (2, 1, 32, 32))).backward()
    """

    def __init__(self, loss: LossLike, *, ignore_index: int | None, trust_code: bool = False
                 ) -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        self.loss = build_loss(loss, ignore_index=self.ignore_index, trust_code=trust_code)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        logits, labels = match_labels(logits, labels)
        return self.loss.to(logits.device)(logits, labels)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
