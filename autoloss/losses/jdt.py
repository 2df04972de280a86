"""JDT losses: Jaccard Metric Loss, Dice Semimetric Loss and the compatible Tversky loss.

Wang & Blaschko, "Jaccard Metric Losses: Optimizing the Jaccard Index with Soft Labels",
NeurIPS 2023; Wang, Popordanoska, Bertels, Lemmens & Blaschko, "Dice Semimetric Losses:
Optimizing the Dice Score with Soft Labels", MICCAI 2023 (reference: zifuwanggg/JDTLosses).

With the soft counts of :mod:`autoloss.losses.region` (``tp = (|p|_k^k + |q|_k^k - |p-q|_k^k)/2``,
``fp = |p|_k^k - tp``, ``fn = |q|_k^k - tp``, per image ``b`` and class ``c``; ``p = softmax(x)``,
``q`` the one-hot or soft label)::

    T = (tp + s) / (tp + alpha fp + beta fn + s)        L = (1 - T)^gamma  or  (-log T)^gamma
    loss = miou_d * L_D + miou_i * L_I + miou_c * L_C

- ``L_D`` (dataset level, the paper's mIoU^D): counts summed over the batch, the mean of ``L_c``
  over active classes (a class is active for ``"present"`` if the peak of its label over the
  batch's kept pixels exceeds ``threshold``; ``"all"``: every class; a list: those classes).
- ``L_I`` (image level, mIoU^I): per image the mean of ``L_bc`` over its active classes, then the
  mean over images with an active class. ``L_C`` (class level, mIoU^C): per class the mean over
  images where it is active, then the mean over classes active somewhere.
- ``class_weights`` multiply ``L`` per class before the means. No active entry gives 0.

Hard labels are clamped to ``[0, C-1]`` and one-hot encoded; pixels equal to ``ignore_index``
are removed from ``p`` and ``q`` (an ignored class index then takes part only through
``classes="all"``, where it has ``T = s / s = 1``). Soft labels ``[N,C,H,W]`` are used as given
(``ignore_index`` does not apply). ``classes`` selects active classes for hard labels and
``soft_classes`` for soft labels (reference defaults ``"present"`` and ``"all"``).
``gamma`` must be ``>= 1`` (the reference applies it only when ``> 1``).

``resize="bilinear"`` upsamples logits at the decoder's resolution to the labels' size;
``sync="global"`` sums the counts (and the image- and class-level means' sums) over the
processes of ``torch.distributed``, so under DDP every rank computes the full batch's loss
(:mod:`autoloss.losses._global` states the gradient scaling).

Parity: float64 results equal the reference ``JDTLoss`` (https://github.com/zifuwanggg/JDTLosses,
``losses/jdt_loss.py``) to ~1e-16 on its stored outputs (tests/test_loss_jdt.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from autoloss.errors import InvalidValueError
from autoloss.losses._global import Sync, check_sync, processes, sync_entry
from autoloss.losses._precision import float32_compute
from autoloss.losses._validate import (
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
from autoloss.losses.region import (
    active_mask,
    batch_max,
    masked_mean,
    soft_counts,
    tversky_loss_matrix,
)

__all__ = [
    "CompatibleTverskyLoss",
    "DiceSemimetricLoss",
    "JaccardMetricLoss",
    "compatible_tversky_loss",
    "dice_semimetric_loss",
    "jaccard_metric_loss",
    "jdt_loss",
]


def _check_options(*, alpha: float, beta: float, gamma: float, miou_d: float, miou_i: float,
                   miou_c: float, smooth: float, threshold: float, norm: int, log_loss: bool,
                   classes: Any, soft_classes: Any) -> dict[str, Any]:
    weights = {name: check_number(name, value, low=0.0)
               for name, value in (("miou_d", miou_d), ("miou_i", miou_i), ("miou_c", miou_c))}
    if not any(w > 0 for w in weights.values()):
        raise InvalidValueError(
            f"at least one of miou_d, miou_i, miou_c must be > 0, but got {miou_d=}, {miou_i=}, "
            f"{miou_c=}"
        )
    if not isinstance(log_loss, bool):
        raise InvalidValueError(f"log_loss must be a bool, but got {log_loss=!r}")
    return {
        "alpha": check_number("alpha", alpha, low=0.0),
        "beta": check_number("beta", beta, low=0.0),
        "gamma": check_number("gamma", gamma, low=1.0),
        **weights,
        "smooth": check_number("smooth", smooth, low=0.0, low_open=True),
        "threshold": check_number("threshold", threshold, low=0.0, high=1.0),
        "norm": check_number("norm", norm, low=1, integer=True),
        "log_loss": log_loss,
        "classes": check_classes(classes),
        "soft_classes": check_classes(soft_classes, name="soft_classes"),
    }


@float32_compute
def jdt_loss(logits: Tensor, target: Tensor, *, alpha: float = 1.0, beta: float = 1.0,
             gamma: float = 1.0, miou_d: float = 1.0, miou_i: float = 0.0, miou_c: float = 0.0,
             smooth: float = 1e-3, threshold: float = 0.01, norm: int = 1,
             log_loss: bool = False, ignore_index: int | None = None,
             class_weights: Sequence[float] | Tensor | None = None,
             classes: str | Sequence[int] = "present",
             soft_classes: str | Sequence[int] = "all", resize: str | None = None,
             sync: Sync = "local") -> Tensor:
    """The JDT loss (see the module docstring); defaults are the reference constructor's.

    Args:
        logits: ``[N,C,H,W]``, or a 3-D volume ``[N,C,D,H,W]`` (the labels then ``[N,D,H,W]``).
        target: hard labels ``[N,H,W]`` (integer) or soft labels ``[N,C,H,W]`` (float).
        alpha, beta: Tversky weights of false positives / negatives (1, 1: Jaccard; 1/2: Dice).
        gamma: exponent ``>= 1`` on the per-entry loss.
        miou_d, miou_i, miou_c: weights ``>= 0`` of the dataset-, image- and class-level terms.
        smooth: ``> 0``, added to the Tversky numerator and denominator.
        threshold: a class is present where its label peaks above this value.
        norm: ``k >= 1`` of the ``|.|_k^k`` cardinalities.
        log_loss: ``-log T`` instead of ``1 - T``.
        ignore_index: hard label value removed from the counts, or None.
        class_weights: ``[C]`` factors on the per-class losses.
        classes, soft_classes: active classes for hard / soft labels (``"present"``, ``"all"`` or
            a list of class indices).
        resize: ``"bilinear"``: upsample logits ``[N,C,h,w]`` to the labels' ``H x W`` first.
        sync: ``"global"``: sums over the processes of ``torch.distributed`` (module docstring).

    Returns:
        a scalar.
    """
    opts = _check_options(alpha=alpha, beta=beta, gamma=gamma, miou_d=miou_d, miou_i=miou_i,
                          miou_c=miou_c, smooth=smooth, threshold=threshold, norm=norm,
                          log_loss=log_loss, classes=classes, soft_classes=soft_classes)
    logits = resize_logits(logits, target, check_resize(resize))
    target = squeeze_label_channel(logits, target)
    mode = check_logits_and_target(logits, target, ignore_index=ignore_index, allow_soft=True,
                                   volumes=True)
    world = processes(check_sync(sync))
    if not world and (empty := empty_batch(logits)) is not None:
        return empty
    probs = torch.softmax(logits, dim=1)
    tp, fp, fn, peak = soft_counts(probs, target, mode=mode, ignore_index=ignore_index,
                                   norm=opts["norm"])
    select = opts["classes"] if mode == "hard" else opts["soft_classes"]
    weight = class_weights_tensor(class_weights, logits.shape[1], tp)
    shape = {"alpha": opts["alpha"], "beta": opts["beta"], "gamma": opts["gamma"],
             "smooth": opts["smooth"], "log_loss": opts["log_loss"]}
    batch_sum = world.sums if world else None
    terms = []
    if opts["miou_d"] > 0:
        tp_d, fp_d, fn_d, peak_d = tp.sum(0), fp.sum(0), fn.sum(0), batch_max(peak)
        if world:
            tp_d, fp_d, fn_d = world.sums(tp_d, fp_d, fn_d)
            peak_d = world.max(peak_d)
        loss_d = tversky_loss_matrix(tp_d, fp_d, fn_d, **shape)
        if weight is not None:
            loss_d = loss_d * weight
        active = active_mask(peak_d, select, threshold=opts["threshold"])
        terms.append(opts["miou_d"] * masked_mean(loss_d, active))
    if opts["miou_i"] > 0 or opts["miou_c"] > 0:
        loss_bc = tversky_loss_matrix(tp, fp, fn, **shape)
        if weight is not None:
            loss_bc = loss_bc * weight
        active = active_mask(peak, select, threshold=opts["threshold"])
        if opts["miou_i"] > 0:
            terms.append(opts["miou_i"] * masked_mean(loss_bc, active, dim=1,
                                                      batch_sum=batch_sum))
        if opts["miou_c"] > 0:
            terms.append(opts["miou_c"] * masked_mean(loss_bc, active, dim=0,
                                                      batch_sum=batch_sum))
    return sum(terms[1:], terms[0])


def jaccard_metric_loss(
        logits: Tensor, target: Tensor, *, gamma: float = 1.0, miou_d: float = 1.0,
        miou_i: float = 0.0, miou_c: float = 0.0, smooth: float = 1e-3, threshold: float = 0.01,
        norm: int = 1, log_loss: bool = False, ignore_index: int | None = None,
        class_weights: Sequence[float] | Tensor | None = None,
        classes: str | Sequence[int] = "present",
        soft_classes: str | Sequence[int] = "all", resize: str | None = None,
        sync: Sync = "local") -> Tensor:
    """Jaccard Metric Loss: :func:`jdt_loss` with ``alpha = beta = 1`` (other options as there)."""
    return jdt_loss(logits, target, alpha=1.0, beta=1.0, gamma=gamma, miou_d=miou_d,
                    miou_i=miou_i, miou_c=miou_c, smooth=smooth, threshold=threshold, norm=norm,
                    log_loss=log_loss, ignore_index=ignore_index, class_weights=class_weights,
                    classes=classes, soft_classes=soft_classes, resize=resize, sync=sync)


def dice_semimetric_loss(
        logits: Tensor, target: Tensor, *, gamma: float = 1.0, miou_d: float = 1.0,
        miou_i: float = 0.0, miou_c: float = 0.0, smooth: float = 1e-3, threshold: float = 0.01,
        norm: int = 1, log_loss: bool = False, ignore_index: int | None = None,
        class_weights: Sequence[float] | Tensor | None = None,
        classes: str | Sequence[int] = "present",
        soft_classes: str | Sequence[int] = "all", resize: str | None = None,
        sync: Sync = "local") -> Tensor:
    """Dice Semimetric Loss: :func:`jdt_loss` with ``alpha = beta = 1/2`` (other options as
    there)."""
    return jdt_loss(logits, target, alpha=0.5, beta=0.5, gamma=gamma, miou_d=miou_d,
                    miou_i=miou_i, miou_c=miou_c, smooth=smooth, threshold=threshold, norm=norm,
                    log_loss=log_loss, ignore_index=ignore_index, class_weights=class_weights,
                    classes=classes, soft_classes=soft_classes, resize=resize, sync=sync)


def compatible_tversky_loss(
        logits: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7,
        gamma: float = 1.0, miou_d: float = 1.0, miou_i: float = 0.0, miou_c: float = 0.0,
        smooth: float = 1e-3, threshold: float = 0.01,
        norm: int = 1, log_loss: bool = False, ignore_index: int | None = None,
        class_weights: Sequence[float] | Tensor | None = None,
        classes: str | Sequence[int] = "present",
        soft_classes: str | Sequence[int] = "all", resize: str | None = None,
        sync: Sync = "local") -> Tensor:
    """Compatible Tversky loss: :func:`jdt_loss` with free ``alpha``, ``beta`` (defaults 0.3, 0.7,
    Salehi et al. 2017; other options as there)."""
    return jdt_loss(logits, target, alpha=alpha, beta=beta, gamma=gamma, miou_d=miou_d,
                    miou_i=miou_i, miou_c=miou_c, smooth=smooth, threshold=threshold, norm=norm,
                    log_loss=log_loss, ignore_index=ignore_index, class_weights=class_weights,
                    classes=classes, soft_classes=soft_classes, resize=resize, sync=sync)


class _JDTModule(nn.Module):
    """Options shared by the three JDT loss modules (``class_weights`` is a buffer)."""

    name: ClassVar[str]
    alpha: float
    beta: float

    def __init__(self, *, alpha: float, beta: float, gamma: float, miou_d: float, miou_i: float,
                 miou_c: float, smooth: float, threshold: float, norm: int, log_loss: bool,
                 ignore_index: int | None, class_weights: Sequence[float] | None,
                 classes: str | Sequence[int], soft_classes: str | Sequence[int],
                 mode: str = "multiclass", resize: str | None = None,
                 sync: Sync = "local") -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.resize = check_resize(resize)
        self.sync = check_sync(sync)
        opts = _check_options(alpha=alpha, beta=beta, gamma=gamma, miou_d=miou_d, miou_i=miou_i,
                              miou_c=miou_c, smooth=smooth, threshold=threshold, norm=norm,
                              log_loss=log_loss, classes=classes, soft_classes=soft_classes)
        for key, value in opts.items():
            setattr(self, key, value)
        self.ignore_index = check_ignore_index(ignore_index)
        self._class_weights = check_class_weights(class_weights)
        self.register_buffer("class_weights", weights_buffer(self._class_weights))

    def _options(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "miou_d": self.miou_d, "miou_i": self.miou_i,
                "miou_c": self.miou_c, "smooth": self.smooth, "threshold": self.threshold,
                "norm": self.norm, "log_loss": self.log_loss, "ignore_index": self.ignore_index,
                "class_weights": self._class_weights, "classes": self.classes,
                "soft_classes": self.soft_classes}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, C, H, W]`` (``[N, 1, H, W]`` with ``mode="binary"``), ``target [N, H, W]``
        long (or soft ``[N, C, H, W]``) -> :func:`jdt_loss`: a scalar."""
        return apply_mode(self.mode, self._loss, logits, target)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        options = {**self._options(), "class_weights": self.class_weights}
        return jdt_loss(logits, target, alpha=self.alpha, beta=self.beta, **options,
                        resize=self.resize, sync=self.sync)

    def to_dict(self) -> dict[str, Any]:
        """The loss spec ``{"name": ..., **options}``; ``cls(**options)`` rebuilds it."""
        return {"name": self.name, **self._options(), **mode_entry(self.mode),
                **resize_entry(self.resize), **sync_entry(self.sync)}


class JaccardMetricLoss(_JDTModule):
    """Jaccard Metric Loss module (``alpha = beta = 1``); see the module docstring.

    Example:
        >>> loss = JaccardMetricLoss(ignore_index=255)
        >>> loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))).shape  # a scalar
        torch.Size([])
    """

    name: ClassVar[str] = "jaccard_metric"

    def __init__(self, *, gamma: float = 1.0, miou_d: float = 1.0, miou_i: float = 0.0,
                 miou_c: float = 0.0, smooth: float = 1e-3, threshold: float = 0.01,
                 norm: int = 1, log_loss: bool = False, ignore_index: int | None = None,
                 class_weights: Sequence[float] | None = None,
                 classes: str | Sequence[int] = "present",
                 soft_classes: str | Sequence[int] = "all", mode: str = "multiclass",
                 resize: str | None = None, sync: Sync = "local") -> None:
        super().__init__(alpha=1.0, beta=1.0, gamma=gamma, miou_d=miou_d, miou_i=miou_i,
                         miou_c=miou_c, smooth=smooth, threshold=threshold, norm=norm,
                         log_loss=log_loss, ignore_index=ignore_index,
                         class_weights=class_weights, classes=classes, soft_classes=soft_classes,
                         mode=mode, resize=resize, sync=sync)


class DiceSemimetricLoss(_JDTModule):
    """Dice Semimetric Loss module (``alpha = beta = 1/2``); see the module docstring."""

    name: ClassVar[str] = "dice_semimetric"

    def __init__(self, *, gamma: float = 1.0, miou_d: float = 1.0, miou_i: float = 0.0,
                 miou_c: float = 0.0, smooth: float = 1e-3, threshold: float = 0.01,
                 norm: int = 1, log_loss: bool = False, ignore_index: int | None = None,
                 class_weights: Sequence[float] | None = None,
                 classes: str | Sequence[int] = "present",
                 soft_classes: str | Sequence[int] = "all", mode: str = "multiclass",
                 resize: str | None = None, sync: Sync = "local") -> None:
        super().__init__(alpha=0.5, beta=0.5, gamma=gamma, miou_d=miou_d, miou_i=miou_i,
                         miou_c=miou_c, smooth=smooth, threshold=threshold, norm=norm,
                         log_loss=log_loss, ignore_index=ignore_index,
                         class_weights=class_weights, classes=classes, soft_classes=soft_classes,
                         mode=mode, resize=resize, sync=sync)


class CompatibleTverskyLoss(_JDTModule):
    """Compatible Tversky loss module (free ``alpha``, ``beta``); see the module docstring."""

    name: ClassVar[str] = "compatible_tversky"

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, gamma: float = 1.0,
                 miou_d: float = 1.0, miou_i: float = 0.0, miou_c: float = 0.0,
                 smooth: float = 1e-3, threshold: float = 0.01, norm: int = 1,
                 log_loss: bool = False, ignore_index: int | None = None,
                 class_weights: Sequence[float] | None = None,
                 classes: str | Sequence[int] = "present",
                 soft_classes: str | Sequence[int] = "all", mode: str = "multiclass",
                 resize: str | None = None, sync: Sync = "local") -> None:
        super().__init__(alpha=alpha, beta=beta, gamma=gamma, miou_d=miou_d, miou_i=miou_i,
                         miou_c=miou_c, smooth=smooth, threshold=threshold, norm=norm,
                         log_loss=log_loss, ignore_index=ignore_index,
                         class_weights=class_weights, classes=classes, soft_classes=soft_classes,
                         mode=mode, resize=resize, sync=sync)

    def to_dict(self) -> dict[str, Any]:
        spec = super().to_dict()
        return {"name": spec.pop("name"), "alpha": self.alpha, "beta": self.beta, **spec}
