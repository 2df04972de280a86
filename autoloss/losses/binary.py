"""Binary segmentation with one logit channel (``mode="binary"``): roads, membranes, lesions;
and multi-label segmentation (``mode="multilabel"``): one independent sigmoid channel per label.

A binary model outputs one foreground logit ``x`` per pixel (``[N,1,H,W]``, read through a
sigmoid) rather than two softmax channels. The two-class logits ``[0, x]`` have exactly
``softmax([0, x]) = (1 - sigmoid(x), sigmoid(x))``, so every multi-class loss is, on them, the
binary loss of the single logit, with exact gradients. ``mode="binary"`` on a loss does that
conversion first; the loss's ``classes`` option still chooses which of the two classes are
averaged (``classes=[1]`` is the foreground-only Dice / IoU of binary libraries). Targets are
``[N,H,W]`` or ``[N,1,H,W]`` labels in ``{0, 1}`` (or the loss's ``ignore_index``).

``mode="multilabel"`` takes logits ``[N,L,H,W]`` and targets ``[N,L,H,W]`` in ``{0, 1}`` (or
``ignore_index``), labels that may overlap (a pixel can be both "road" and "wet"): the loss is
the binary loss of each label channel, averaged over the labels (``reduction="none"``: the
per-image or per-pixel values averaged over the labels).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from autoloss.errors import InvalidValueError

__all__ = ["MODES", "apply_mode", "check_mode", "mode_entry", "per_label", "two_class"]

MODES = ("multiclass", "binary", "multilabel")


def check_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`MODES`, else a ValueError naming it."""
    if mode not in MODES:
        raise InvalidValueError(f"mode must be one of {list(MODES)}, but got mode={mode!r}")
    return str(mode)


def mode_entry(mode: str) -> dict[str, str]:
    """``{"mode": mode}`` for a loss spec, or ``{}`` for the default ``"multiclass"`` (so the
    specs of multi-class losses, and the identity of runs stored with them, do not change)."""
    return {} if mode == "multiclass" else {"mode": mode}


def two_class(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Single-logit inputs as the equivalent two-class problem.

    Args:
        logits: ``[N,1,H,W]`` foreground logits.
        target: ``[N,H,W]`` or ``[N,1,H,W]`` labels in ``{0, 1}`` (other values are kept, so
            that an ``ignore_index`` still applies).

    Returns:
        ``([N,2,H,W]`` logits ``[0, x]``, ``[N,H,W]`` target``)``.
    """
    if logits.dim() not in (4, 5) or logits.shape[1] != 1:
        raise InvalidValueError(f"mode='binary' takes logits [N,1,H,W] (one foreground logit per "
                         f"pixel; [N,1,D,H,W] for volumes), but got shape {tuple(logits.shape)}; "
                         f"use mode='multiclass' for [N,C,H,W] logits")
    if target.dim() == logits.dim() and target.shape[1] == 1:
        target = target[:, 0]
    if target.is_floating_point():
        # 0./1. masks (float images) are labels; a fraction is a soft label, which rounding
        # would misread silently
        fractional = target != target.round()
        if bool(fractional.any()):
            shown = torch.unique(target[fractional])[:3].tolist()
            raise InvalidValueError(
                f"mode='binary' takes labels 0/1 (or the ignore index), but got a float target "
                f"with fractional values {shown}; soft binary labels are not supported here: "
                f"pass target.round().long() if hard labels are meant, or the two-class soft "
                f"target [N,2,H,W] with mode='multiclass'")
        target = target.long()
    return torch.cat([torch.zeros_like(logits), logits], dim=1), target


def per_label(loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor, target: Tensor) -> Tensor:
    """``mode="multilabel"``: ``loss`` (a multi-class loss) of each label channel as a binary
    problem (:func:`two_class`), averaged over the labels.

    Args:
        loss: ``f(logits [N,2,H,W], target [N,H,W]) -> Tensor``.
        logits: ``[N,L,H,W]``, one independent logit per label and pixel.
        target: ``[N,L,H,W]`` in ``{0, 1}`` (or the loss's ignore index), the same shape.
    """
    if logits.dim() not in (4, 5) or logits.shape[1] < 1:
        raise InvalidValueError(f"mode='multilabel' takes logits [N,L,H,W] (one logit per label "
                                f"and pixel), but got shape {tuple(logits.shape)}")
    if target.dim() != logits.dim() or tuple(target.shape[:2]) != tuple(logits.shape[:2]):
        # (the spatial sizes are checked per label: with resize they may differ)
        raise InvalidValueError(f"mode='multilabel' takes a target [N,L,H,W] of 0/1 per label, "
                                f"the shape of the logits {tuple(logits.shape)}, but got "
                                f"{tuple(target.shape)}")
    values = [loss(*two_class(logits[:, k:k + 1], target[:, k])) for k in range(logits.shape[1])]
    return torch.stack(values).mean(dim=0)


def apply_mode(mode: str, loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor,
               target: Tensor) -> Tensor:
    """``loss`` (written for multi-class logits ``[N,C,H,W]`` and labels ``[N,H,W]``) applied in
    ``mode``: as it is, on the two-class form of one logit (``binary``) or per label
    (``multilabel``)."""
    if mode == "multilabel":
        return per_label(loss, logits, target)
    if mode == "binary":
        logits, target = two_class(logits, target)
    return loss(logits, target)
