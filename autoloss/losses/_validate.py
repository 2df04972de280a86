"""Input and option checks shared by every loss (baselines and the searched surrogate).

Tensor checks are cheap on the happy path: one ``aminmax`` pass over the labels (a second pass
only when an ignore index lies outside ``[0, C)``), one pass for soft-label ranges and sums.
The slower work that names the offending values (``unique``) only runs when there is an error.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean

__all__ = [
    "MAX_OPTION",
    "Reduction",
    "check_binary_logits_and_target",
    "check_choice",
    "check_class_weights",
    "check_classes",
    "check_ignore_index",
    "check_logits_and_target",
    "check_number",
    "check_resize",
    "class_weights_tensor",
    "did_you_mean",
    "empty_batch",
    "resize_entry",
    "resize_logits",
    "squeeze_label_channel",
    "weights_buffer",
]

_SOFT_SUM_TOL = 1e-3
#: The largest magnitude of a real loss option (a weight, gamma, smooth, ...): a larger one
#: overflows float32 arithmetic (1e308 is inf in float32) and the loss turns NaN or inf.
MAX_OPTION = 1e6
_TOO_LARGE = (f"at most {MAX_OPTION:g} (autoloss.losses._validate.MAX_OPTION: a larger value "
              f"overflows float32 and makes the loss non-finite)")
RESIZES = (None, "bilinear")


def empty_batch(logits: Tensor) -> Tensor | None:
    """The loss of a batch without pixels (``N = 0`` or an empty image): a finite 0 connected to
    ``logits`` (so ``backward`` works and gives zero gradients); None for a non-empty batch."""
    if logits.numel() != 0:
        return None
    return logits.sum() * 0.0


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise naming ``name`` (did-you-mean)."""
    if isinstance(value, bool) or value not in allowed:
        raise InvalidValueError(
            f"{name} must be one of {list(allowed)}, but got {name}={value!r}"
            f"{did_you_mean(value, allowed)}"
        )
    return value


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False) -> float | int:
    """Check a real option: finite, of the right kind, within ``[low, high]`` and at most
    :data:`MAX_OPTION` in magnitude.

    ``low_open=True`` excludes ``low`` itself (e.g. ``smooth > 0``). Returns the value as
    ``int`` (``integer=True``) or ``float``.
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        kind = "an int" if integer else "a finite number"
        raise InvalidValueError(f"{name} must be {kind}, but got {name}={value!r}")
    if abs(value) > MAX_OPTION:
        raise InvalidValueError(f"{name} must be {_TOO_LARGE}, but got {name}={value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        op = ">" if low_open else ">="
        raise InvalidValueError(f"{name} must be {op} {low}, but got {name}={value!r}")
    if high is not None and value > high:
        raise InvalidValueError(f"{name} must be <= {high}, but got {name}={value!r}")
    return int(value) if integer else float(value)


def check_ignore_index(ignore_index: Any) -> int | None:
    """``ignore_index`` must be an int (any value, e.g. 255 or -100) or None."""
    if ignore_index is not None and (isinstance(ignore_index, bool)
                                     or not isinstance(ignore_index, int)):
        raise InvalidValueError(f"ignore_index must be an int or None, but got {ignore_index=!r}")
    return ignore_index


def check_classes(classes: Any, *, name: str = "classes") -> str | list[int]:
    """``classes`` is ``"present"``, ``"all"`` or a non-empty list of distinct class indices."""
    if isinstance(classes, str):
        return check_choice(name, classes, ("present", "all"))
    if isinstance(classes, (list, tuple)) and classes and all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes):
        if len(set(classes)) != len(classes):
            raise InvalidValueError(f"{name} must not repeat a class, but got {name}={classes!r}")
        return [int(c) for c in classes]
    raise InvalidValueError(
        f"{name} must be 'present', 'all' or a non-empty list of class indices >= 0, "
        f"but got {name}={classes!r}"
    )


def check_class_weights(class_weights: Any) -> list[float] | None:
    """``class_weights`` is None or a non-empty sequence of finite numbers in
    ``[0, MAX_OPTION]``."""
    if class_weights is None:
        return None
    if isinstance(class_weights, Tensor):
        class_weights = class_weights.detach().cpu().flatten().tolist()
    if isinstance(class_weights, (str, bytes)) or not isinstance(class_weights, Sequence):
        raise InvalidValueError(
            f"class_weights must be a sequence of numbers or None, but got {class_weights=!r}"
        )
    values = list(class_weights)
    if not values or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
            and w >= 0 for w in values):
        raise InvalidValueError(
            f"class_weights must be a non-empty sequence of finite numbers >= 0, but got "
            f"{class_weights=!r}"
        )
    if max(values) > MAX_OPTION:
        raise InvalidValueError(f"each of class_weights must be {_TOO_LARGE}, but got "
                                f"{class_weights=!r}")
    return [float(w) for w in values]


def weights_buffer(class_weights: Sequence[float] | None) -> Tensor | None:
    """A checked ``class_weights`` list as a float32 tensor for ``register_buffer`` (or None)."""
    return None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)


def class_weights_tensor(class_weights: Sequence[float] | Tensor | None, num_classes: int,
                         like: Tensor) -> Tensor | None:
    """``class_weights`` as a ``[C]`` tensor with the dtype and device of ``like``."""
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=like.dtype, device=like.device).flatten()
    if weights.numel() != num_classes:
        raise InvalidValueError(
            f"class_weights must have one weight per class (C={num_classes}), but got "
            f"{weights.numel()} weights"
        )
    return weights


def check_resize(resize: Any) -> str | None:
    """``resize`` is None (logits at the labels' size) or ``"bilinear"``."""
    return check_choice("resize", resize, RESIZES)


def resize_entry(resize: str | None) -> dict[str, str]:
    """``{"resize": resize}`` for a loss spec, ``{}`` for the default None."""
    return {} if resize is None else {"resize": resize}


def resize_logits(logits: Tensor, target: Tensor, resize: str | None) -> Tensor:
    """Logits at a decoder's resolution (``[N,C,h,w]``, e.g. 1/4 of the labels' for SegFormer and
    most mmseg heads) upsampled to the labels' ``H x W`` (``target [N,H,W]``, ``[N,1,H,W]`` or
    soft ``[N,C,H,W]``): bilinear with ``align_corners=False``, as mmseg and Hugging Face do
    before their losses (trilinear for volumes ``[N,C,d,h,w]``). Binary logits ``[N,h,w]`` come
    back as ``[N,H,W]``. Unchanged when ``resize`` is None or the sizes already agree."""
    if resize is None or not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        return logits
    squeeze = logits.dim() == 3  # binary logits [N,h,w]
    x = logits.unsqueeze(1) if squeeze else logits
    dims = x.dim() - 2
    if dims not in (2, 3) or target.dim() < dims + 1:
        return logits  # the shape checks say what is wrong
    size = tuple(target.shape[-dims:])
    if tuple(x.shape[2:]) == size or x.numel() == 0:
        return logits
    mode = "trilinear" if dims == 3 else resize  # volumes [N,C,d,h,w]: the 3-D bilinear
    x = torch.nn.functional.interpolate(x, size=size, mode=mode, align_corners=False)
    return x[:, 0] if squeeze else x


def squeeze_label_channel(logits: Tensor, target: Tensor) -> Tensor:
    """Integer labels with a channel of one, as MONAI and segmentation_models_pytorch keep them
    (``[N,1,H,W]`` for logits ``[N,C,H,W]``, ``[N,1,D,H,W]`` for volumes ``[N,C,D,H,W]``), as the
    ``[N,H,W]`` (``[N,D,H,W]``) labels the losses take; anything else is returned unchanged.

    Only integer labels are squeezed: they cannot be soft, so the extra dimension is unambiguous.
    A float ``[N,1,...]`` target is left to :func:`check_logits_and_target`, which refuses it
    (a float target is a soft ``[N,C,...]`` one; class indices stored as floats are not guessed).
    """
    if (isinstance(logits, Tensor) and isinstance(target, Tensor) and logits.dim() in (4, 5)
            and target.dim() == logits.dim() and target.shape[1] == 1
            and not target.is_floating_point() and not target.is_complex()
            and target.dtype != torch.bool):
        return target[:, 0]
    return target


def _float_labels_hint(target: Tensor, logits: Tensor) -> str:
    """For a float target ``[N,1,...]``: the likely cause (class indices stored as floats, e.g.
    by MONAI's ``LoadImage``) and the fix."""
    if target.dim() != logits.dim() or target.shape[1] != 1:
        return ""
    return (". A float [N,1,...] target reads as class indices stored as floats (as MONAI's "
            "LoadImage gives them); autoloss does not guess: pass integer labels, "
            "target.round().long() ([N,1,...] integer labels are accepted as they are), or soft "
            "labels of the logits' shape")


def _resize_hint(logits_size: Sequence[int], target_size: Sequence[int]) -> str:
    """A hint to pass ``resize="bilinear"`` when the labels are an integer multiple of the logits'
    spatial size (logits at the decoder's resolution)."""
    if len(logits_size) != len(target_size) or tuple(logits_size) == tuple(target_size):
        return ""
    if not all(a > 0 and b % a == 0 for a, b in zip(logits_size, target_size)):
        return ""
    factors = {b // a for a, b in zip(logits_size, target_size)}
    factor = "x".join(str(b // a) for a, b in zip(logits_size, target_size)) \
        if len(factors) > 1 else f"{factors.pop()}x"
    return (f". The labels are {factor} the logits' size (logits at the decoder's resolution?): "
            f"pass resize='bilinear' to the loss to upsample the logits to the labels' size "
            f"(align_corners=False, as mmseg and Hugging Face do)")


def _check_hard_values(target: Tensor, *, num_classes: int, ignore_index: int | None,
                       high_labels_ignored: bool) -> None:
    if target.numel() == 0:
        return
    low, high = torch.aminmax(target)
    low, high = int(low), int(high)
    if low >= 0 and (high < num_classes or high_labels_ignored):
        return
    bad = target < 0
    if not high_labels_ignored:
        bad |= target >= num_classes
    if ignore_index is not None:
        bad &= target != ignore_index
    if not bool(bad.any()):
        return
    values = torch.unique(target[bad])
    shown = values[:5].tolist()
    more = f" (and {values.numel() - 5} more)" if values.numel() > 5 else ""
    allowed = (f"[0, {num_classes})" if not high_labels_ignored
               else f"[0, {num_classes}) or >= {num_classes} (ignored)")
    raise InvalidValueError(
        f"target has label values {shown}{more} outside the allowed range {allowed} that are "
        f"not the ignore index ({ignore_index=}); logits have C={num_classes} channels. If "
        f"{shown[0]} marks void pixels in your data, pass it as the loss's ignore_index "
        f"(load_loss(spec, ignore_index={shown[0]}))"
    )


def _check_soft_values(target: Tensor) -> None:
    if target.numel() == 0:
        return
    low, high = torch.aminmax(target)
    if not (bool(low >= 0) and bool(high <= 1)):
        raise InvalidValueError(
            "soft target must hold probabilities in [0, 1], but got values in "
            f"[{float(low):.6g}, {float(high):.6g}]"
        )
    worst = float((target.sum(dim=1, dtype=torch.float64) - 1.0).abs().max())
    if not worst <= _SOFT_SUM_TOL:
        raise InvalidValueError(
            f"soft target must sum to 1 over the class dimension (dim 1) within {_SOFT_SUM_TOL}, "
            f"but the worst pixel deviates by {worst:.6g}"
        )


#: what the error on 3-D volumes for a 2-D-only loss names as taking them
VOLUME_LOSSES = ("dice", "jaccard", "tversky", "the JDT losses", "lovasz_softmax",
                 "cross_entropy", "focal", "the surrogates")


def check_logits_and_target(logits: Tensor, target: Tensor, *, ignore_index: int | None,
                            allow_soft: bool, high_labels_ignored: bool = False,
                            volumes: bool = False, loss: str = "this loss") -> str:
    """Check a segmentation loss's inputs and tell hard labels from soft ones.

    Args:
        logits: float ``[N,C,H,W]`` (or, with ``volumes``, a 3-D ``[N,C,D,H,W]``; the labels then
            ``[N,D,H,W]`` or soft ``[N,C,D,H,W]``).
        target: hard labels, integer ``[N,H,W]`` with values in ``[0, C)`` or ``ignore_index``;
            or (when ``allow_soft``) soft labels, float ``[N,C,H,W]`` in ``[0, 1]`` summing to 1
            over C (within 1e-3).
        ignore_index: label value excluded from the loss (hard labels only), or None.
        allow_soft: whether float ``[N,C,H,W]`` targets are accepted.
        high_labels_ignored: accept labels ``>= C`` (they count as ignored; RMI convention).
        volumes: accept 3-D volumes; else they raise an error naming ``loss``.

    Returns:
        ``"hard"`` or ``"soft"``.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise InvalidTypeError(
            "logits and target must be torch.Tensors, but got "
            f"{type(logits).__name__} and {type(target).__name__}"
        )
    if not logits.is_floating_point():
        raise InvalidTypeError(f"logits must be a float tensor, but got dtype {logits.dtype}")
    if logits.dim() == 5 and not volumes:
        raise InvalidValueError(
            f"{loss} takes 2-D logits [N,C,H,W], not 3-D volumes, but got logits of shape "
            f"{tuple(logits.shape)}; losses that take [N,C,D,H,W] volumes: "
            f"{', '.join(VOLUME_LOSSES)}"
        )
    if logits.dim() not in ((4, 5) if volumes else (4,)):
        expected = "[N,C,H,W] or [N,C,D,H,W]" if volumes else "[N,C,H,W]"
        raise InvalidValueError(f"logits must be {expected}, but got shape {tuple(logits.shape)}")
    if target.device != logits.device:
        raise InvalidValueError(
            f"target must be on the logits' device {logits.device}, but got {target.device}"
        )
    n, c, *spatial = logits.shape
    layout, labels = (("[N,C,H,W]", "[N,H,W]") if len(spatial) == 2
                      else ("[N,C,D,H,W]", "[N,D,H,W]"))
    if target.is_floating_point():
        if target.dim() == logits.dim() - 1:
            raise InvalidTypeError(
                f"target has dtype {target.dtype} and shape {tuple(target.shape)}: hard labels "
                "must have an integer dtype (use target.long())"
            )
        if not allow_soft:
            raise InvalidTypeError(
                f"this loss takes hard integer labels {labels}, but got a float target of shape "
                f"{tuple(target.shape)}"
            )
        if tuple(target.shape) != tuple(logits.shape):
            raise InvalidValueError(
                f"soft target must have the logits' shape {layout}={tuple(logits.shape)}, but "
                f"got {tuple(target.shape)}"
                f"{_float_labels_hint(target, logits) or _resize_hint(spatial, target.shape[2:])}"
            )
        _check_soft_values(target)
        return "soft"
    if target.dtype == torch.bool or target.is_complex():
        raise InvalidTypeError(f"target must hold integer class labels, but got dtype {target.dtype}")
    if tuple(target.shape) != (n, *spatial):
        expected = f"{labels} or soft {layout}" if allow_soft else labels
        raise InvalidValueError(
            f"target must be {expected} matching logits {layout}={tuple(logits.shape)}, but got "
            f"target shape {tuple(target.shape)}{_resize_hint(spatial, target.shape[1:])}"
        )
    _check_hard_values(target, num_classes=c, ignore_index=ignore_index,
                       high_labels_ignored=high_labels_ignored)
    return "hard"


def check_binary_logits_and_target(logits: Tensor, target: Tensor, *,
                                   ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Check binary logits ``[N,H,W]`` or ``[N,1,H,W]`` and integer labels ``[N,H,W]`` or
    ``[N,1,H,W]`` in {0, 1} (or ``ignore_index``); return both as ``[N,H,W]``."""
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise InvalidTypeError(
            "logits and target must be torch.Tensors, but got "
            f"{type(logits).__name__} and {type(target).__name__}"
        )
    if not logits.is_floating_point():
        raise InvalidTypeError(f"logits must be a float tensor, but got dtype {logits.dtype}")
    if logits.dim() == 5:
        raise InvalidValueError(
            f"this binary loss takes 2-D logits [N,H,W] or [N,1,H,W], not 3-D volumes, but got "
            f"shape {tuple(logits.shape)}; for volumes use mode='binary' on "
            f"{', '.join(VOLUME_LOSSES[:3])} or the surrogates"
        )
    if logits.dim() == 4 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.dim() != 3:
        raise InvalidValueError(
            f"binary logits must be [N,H,W] or [N,1,H,W], but got shape {tuple(logits.shape)}"
        )
    if target.device != logits.device:
        raise InvalidValueError(
            f"target must be on the logits' device {logits.device}, but got {target.device}"
        )
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise InvalidTypeError(
            f"binary target must hold integer labels 0/1 (use target.long()), but got dtype "
            f"{target.dtype}"
        )
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]  # [N,1,H,W] labels (MONAI, segmentation_models_pytorch)
    if tuple(target.shape) != tuple(logits.shape):
        raise InvalidValueError(
            f"binary target must be [N,H,W]={tuple(logits.shape)} (or [N,1,H,W]) like the "
            f"logits, but got target shape {tuple(target.shape)}"
            f"{_resize_hint(logits.shape[1:], target.shape[1:])}"
        )
    _check_hard_values(target, num_classes=2, ignore_index=ignore_index,
                       high_labels_ignored=False)
    return logits, target


class Reduction(str, enum.Enum):
    """How a loss reduces its per-element values: ``"mean"``, ``"sum"`` or ``"none"``."""

    MEAN = "mean"
    SUM = "sum"
    NONE = "none"

    @classmethod
    def parse(cls, value: Any) -> Reduction:
        """The member for ``value`` (a member or its string), else raise with did-you-mean."""
        if isinstance(value, cls):
            return value
        check_choice("reduction", value, [m.value for m in cls])
        return cls(value)

    def apply(self, values: Tensor, *, weights: Tensor | None = None) -> Tensor:
        """Reduce ``values`` (any shape): weighted mean ``sum(w x) / sum(w)`` (0 if the weights
        sum to 0), ``sum(w x)``, or ``w x`` unreduced. Without ``weights``, ``w = 1``."""
        weighted = values if weights is None else values * weights
        if self is Reduction.NONE:
            return weighted
        total = weighted.sum()
        if self is Reduction.SUM:
            return total
        if weights is None:
            return total / max(values.numel(), 1)
        denom = weights.sum()
        return total / torch.where(denom > 0, denom, torch.ones_like(denom))
