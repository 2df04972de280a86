"""Lovasz-Softmax and Lovasz hinge losses (Berman, Rannen Triki & Blaschko, "The Lovasz-Softmax
loss: A tractable surrogate for the optimization of the intersection-over-union measure in neural
networks", CVPR 2018; reference: bermanmaxim/LovaszSoftmax).

For one set of pixels (the batch, or one image with ``per_image``) with ignored pixels removed,
and one class with foreground ``fg_i`` and errors ``e_i``, sort the errors in decreasing order
(``e_(1) >= e_(2) >= ...``, carrying ``fg`` along) and with ``G = sum fg``::

    J_k = 1 - (G - sum_{j<=k} fg_(j)) / (G + sum_{j<=k} (1 - fg_(j)))
    w_1 = J_1,  w_k = J_k - J_{k-1}                (gradient of the Lovasz extension of Jaccard)
    loss = sum_k e_(k) w_k

Softmax: ``e_i = |fg_i - p_ic|`` per class ``c``, the mean over classes (``"present"``: those
with ``G > 0`` in the set; ``"all"``: every class, an absent one giving ``max_i p_ic``, an
ignored class index included; a list: those classes). Hinge: ``e_i = 1 - x_i (2 y_i - 1)`` on
raw logits, ``loss = sum_k relu(e_(k)) w_k``. With ``per_image`` the loss is the plain mean of the
per-image losses; an empty set (all pixels ignored) counts as 0.

Implementation: each (set, class) row is sorted on its own by a stable 1-D radix sort of integer
keys (32-bit for float32 errors); ``w`` comes from integer cumulative sums, so ``loss = sum_i
e_i w_rank(i)`` and the backward pass is elementwise (the permutation is constant, as in the
reference). Lovasz-Softmax sorts only the classes present in a set: under ``"present"`` the others
are skipped, and otherwise an absent class's weights are ``(1, 0, ...)``, its loss the largest
error (an argmax, no sort; an ignore label's channel is such a class). Its forward pass takes the
softmax one image at a time and keeps, per row, only ``d loss / d p`` at the set's kept pixels;
the backward pass rebuilds the softmax one image at a time and applies its Jacobian, so the peak
extra memory is about three logits-sized buffers (46 MiB for logits [8,12,180,240], 11 classes
and an ignore label; the reference: 106 MiB). Ignored pixels
are removed before sorting. Ties: Lovasz-Softmax breaks ties between equal errors by pixel
position (a stable sort, the fast path), so where errors tie its gradient may spread differently
over the tied pixels than the reference's, whose tie order is an artifact of ``torch.sort`` (the
loss value is the same, and both are valid subgradients). The hinge, whose errors tie often
(equal logits), orders ties as the reference.

Global statistics (``sync="global"``, DDP): the Lovasz extension is not a function of per-class
sums, since its weights come from the rank of every pixel's error in the whole set. With
``per_image=False`` every rank therefore all-gathers the (non-ignored) errors' inputs, the
class probabilities ``[K, P]`` and labels of every rank (``torch.distributed.nn.functional.
all_gather``, with autograd), and sorts the full batch: each rank computes the full batch's loss
at ``world_size`` times the sorting work and memory of one rank's. With ``per_image=True`` the
sets are images, so only the mean over images is summed across ranks. Gradients follow
:mod:`autoloss.losses._global`'s convention. ``resize="bilinear"`` upsamples logits at the
decoder's resolution to the labels' size first.

Any float dtype works (the reference is float32 only): half-precision logits are computed in
float32 (:mod:`autoloss.losses._precision`), and :func:`lovasz_rows` computes its weights in
float32 for half-precision errors (integer ranks above 65,504 overflow float16).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from autoloss.errors import InvalidValueError
from autoloss.losses._global import Processes, Sync, check_sync, processes, sync_entry
from autoloss.losses._lovasz_rows import SoftmaxRows, lovasz_rows
from autoloss.losses._precision import float32_compute
from autoloss.losses._validate import (
    check_binary_logits_and_target,
    check_classes,
    check_ignore_index,
    check_logits_and_target,
    check_resize,
    empty_batch,
    resize_entry,
    resize_logits,
    squeeze_label_channel,
)

__all__ = ["LovaszHingeLoss", "LovaszSoftmaxLoss", "lovasz_hinge", "lovasz_softmax"]


def _softmax_sets(probs: Tensor, labels: Tensor, class_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Class losses ``[K]`` and presence ``[K]`` of one set: ``probs [K, P]`` (with autograd,
    as all-gathered), ``labels [P]``."""
    fg = labels.view(1, -1) == class_ids.view(-1, 1)
    errors = (fg.to(probs.dtype) - probs).abs()
    return lovasz_rows(errors, fg), fg.any(dim=1)


def _class_counts(labels: Tensor, valid: Tensor | None, classes: int,
                  per_image: bool) -> Tensor:
    """Kept pixels of each class per set: ``[N, C]`` per image, else ``[1, C]``."""
    if per_image:
        offsets = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1) * classes
        labels = labels + offsets
    kept = labels.reshape(-1) if valid is None else labels[valid]
    sets = labels.shape[0] if per_image else 1
    return torch.bincount(kept, minlength=sets * classes).view(sets, classes)


@float32_compute
def lovasz_softmax(logits: Tensor, target: Tensor, *, per_image: bool = False,
                   classes: str | Sequence[int] = "present",
                   ignore_index: int | None = None, resize: str | None = None,
                   sync: Sync = "local") -> Tensor:
    """Lovasz-Softmax loss on ``softmax(logits)`` (see the module docstring).

    Args:
        logits: ``[N,C,H,W]`` (softmax over C is applied here), or a volume ``[N,C,D,H,W]``.
        target: ``[N,H,W]`` (``[N,D,H,W]``) integer labels in ``[0, C)`` or ``ignore_index``.
        per_image: one set per image (mean over images) instead of the whole batch.
        classes: ``"present"``, ``"all"`` or a list of class indices.
        ignore_index: label value removed from the sets, or None.
        resize: ``"bilinear"``: upsample logits ``[N,C,h,w]`` to the labels' ``H x W`` first.
        sync: ``"global"``: the full batch of every process of ``torch.distributed`` (all-gathered
            for ``per_image=False``; see the module docstring).

    Returns:
        a scalar; 0 (zero gradient) when every pixel is ignored.

    Example:
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> lovasz_softmax(logits, torch.randint(0, 3, (2, 8, 8)), per_image=True).backward()
    """
    logits = resize_logits(logits, target, check_resize(resize))
    target = squeeze_label_channel(logits, target)
    check_logits_and_target(logits, target, ignore_index=ignore_index, allow_soft=False,
                            volumes=True)
    classes = check_classes(classes)
    world = processes(check_sync(sync))
    n, c = logits.shape[:2]
    pixels = math.prod(logits.shape[2:])  # H*W, or D*H*W for a volume
    if isinstance(classes, list):
        bad = [k for k in classes if k >= c]
        if bad:
            raise InvalidValueError(f"classes lists {bad}, but the logits have only C={c} classes")
        class_ids = torch.tensor(classes, device=logits.device)
    else:
        class_ids = torch.arange(c, device=logits.device)
    labels = target.long().reshape(n, pixels)
    valid = _valid_mask(labels, ignore_index)
    if world and not per_image:
        probs = torch.softmax(logits, dim=1).reshape(n, c, pixels).index_select(1, class_ids)
        return _gathered_softmax(logits, probs, labels, valid, class_ids, classes, world)
    if valid is not None and not bool(valid.any()) and not world:
        return logits.sum() * 0.0
    if (empty := empty_batch(logits)) is not None:
        return empty
    sets = [range(i, i + 1) for i in range(n)] if per_image else [range(n)]
    keep = None if valid is None else [torch.nonzero(v).squeeze(1) for v in valid]
    counts = _class_counts(labels, valid, c, per_image).index_select(1, class_ids)
    present = counts > 0
    rows = present.clone() if classes == "present" else torch.ones_like(present)
    if valid is not None:  # a set without kept pixels has no rows
        rows &= (valid.any(dim=1) if per_image else valid.any()).view(-1, 1)
    losses = SoftmaxRows.apply(logits.reshape(n, c, pixels), labels, class_ids, rows, counts,
                                keep, sets)
    keep_class = present.to(losses.dtype) if classes == "present" else torch.ones_like(losses)
    per_set = (losses * keep_class).sum(dim=1) / keep_class.sum(dim=1).clamp_min(1)
    if valid is not None and per_image:
        per_set = per_set * valid.any(dim=1).to(per_set.dtype)  # an empty image counts as 0
    if world:  # the mean over the images of every process
        total, count = world.sums(per_set.sum(), per_set.new_tensor(float(per_set.numel())))
        return total / count.clamp_min(1)
    return per_set.mean()


def _gathered_softmax(logits: Tensor, probs: Tensor, labels: Tensor, valid: Tensor | None,
                      class_ids: Tensor, classes: str | list[int], world: Processes) -> Tensor:
    """Batch-level Lovasz-Softmax over the non-ignored pixels of every process: ``probs
    [N,K,P]`` and ``labels [N,P]`` all-gathered (rank order, then image and pixel order, as in
    the concatenated full batch, so ties sort the same), then one sort per class."""
    k = probs.shape[1]
    flat = probs.transpose(0, 1).reshape(k, -1)
    flat_labels = labels.reshape(1, -1)
    if valid is not None:
        keep = torch.nonzero(valid.reshape(-1)).squeeze(1)
        flat, flat_labels = flat.index_select(1, keep), flat_labels.index_select(1, keep)
    flat, flat_labels = world.gather(flat), world.gather(flat_labels)
    if flat.shape[1] == 0:  # every pixel of every process is ignored
        return logits.sum() * 0.0
    losses, present = _softmax_sets(flat, flat_labels.view(-1), class_ids)
    keep_class = present.to(losses.dtype) if classes == "present" else torch.ones_like(losses)
    return (losses * keep_class).sum() / keep_class.sum().clamp_min(1)


def _valid_mask(labels: Tensor, ignore_index: int | None) -> Tensor | None:
    """``labels != ignore_index``, or None when nothing is ignored."""
    if ignore_index is None:
        return None
    valid = labels != ignore_index
    return None if bool(valid.all()) else valid


@float32_compute
def lovasz_hinge(logits: Tensor, target: Tensor, *, per_image: bool = True,
                 ignore_index: int | None = None, resize: str | None = None,
                 sync: Sync = "local") -> Tensor:
    """Binary Lovasz hinge loss on raw logits (see the module docstring).

    Args:
        logits: ``[N,H,W]`` or ``[N,1,H,W]`` raw scores (no sigmoid).
        target: ``[N,H,W]`` integer labels in {0, 1} or ``ignore_index``.
        per_image: one set per image (mean over images; the reference default) or the batch.
        ignore_index: label value removed from the sets, or None.
        resize: ``"bilinear"``: upsample logits ``[N,h,w]`` to the labels' ``H x W`` first.
        sync: ``"global"``: the full batch of every process of ``torch.distributed`` (the errors
            all-gathered for ``per_image=False``; see the module docstring).

    Returns:
        a scalar; 0 (zero gradient) when every pixel is ignored.

    Example:
        >>> logits = torch.randn(2, 8, 8, requires_grad=True)
        >>> lovasz_hinge(logits, torch.randint(0, 2, (2, 8, 8))).backward()
    """
    logits = resize_logits(logits, target, check_resize(resize))
    logits, target = check_binary_logits_and_target(logits, target,
                                                    ignore_index=ignore_index)
    world = processes(check_sync(sync))
    if world:
        return _global_hinge(logits, target, per_image=per_image, ignore_index=ignore_index,
                             world=world)
    if (empty := empty_batch(logits)) is not None:
        return empty
    rows = logits.shape[0] if per_image else 1
    scores = logits.reshape(rows, -1)
    labels = target.reshape(rows, -1)
    valid = _valid_mask(labels, ignore_index)
    if valid is not None and not bool(valid.any()):
        return logits.sum() * 0.0
    fg = labels == 1
    errors = 1.0 - scores * (2.0 * fg.to(scores.dtype) - 1.0)
    if valid is None:
        return lovasz_rows(errors, fg, hinge=True, stable=False).mean()
    # sets of different sizes: one sort per set (an empty set counts as 0)
    losses = [lovasz_rows(errors[i:i + 1, valid[i]], fg[i:i + 1, valid[i]], hinge=True,
                          stable=False) for i in range(rows)]
    return torch.cat(losses).mean()


def _global_hinge(logits: Tensor, target: Tensor, *, per_image: bool,
                  ignore_index: int | None, world: Processes) -> Tensor:
    """:func:`lovasz_hinge` over the images of every process (inputs checked): per image, the
    mean summed across processes; over the batch, the kept errors all-gathered and sorted."""
    n = logits.shape[0]
    scores, labels = logits.reshape(n, -1), target.reshape(n, -1)
    valid = (torch.ones_like(labels, dtype=torch.bool) if ignore_index is None
             else labels != ignore_index)
    fg = labels == 1
    errors = 1.0 - scores * (2.0 * fg.to(scores.dtype) - 1.0)
    if per_image:
        losses = [lovasz_rows(errors[i:i + 1, valid[i]], fg[i:i + 1, valid[i]], hinge=True,
                              stable=False) for i in range(n)]
        total = torch.cat(losses).sum() if losses else logits.sum() * 0.0
        total, count = world.sums(total, total.new_tensor(float(n)))
        return total / count.clamp_min(1)
    kept = valid.reshape(-1)
    errors = world.gather(errors.reshape(1, -1)[:, kept])
    fg = world.gather(fg.reshape(1, -1)[:, kept].to(torch.uint8)).bool()
    if errors.shape[1] == 0:
        return logits.sum() * 0.0
    return lovasz_rows(errors, fg, hinge=True, stable=False).mean()


class LovaszSoftmaxLoss(nn.Module):
    """Module form of :func:`lovasz_softmax`.

    Example:
        >>> loss = LovaszSoftmaxLoss(per_image=False, classes="present", ignore_index=255)
        >>> loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))).shape  # a scalar
        torch.Size([])
    """

    name: ClassVar[str] = "lovasz_softmax"

    def __init__(self, *, per_image: bool = False, classes: str | Sequence[int] = "present",
                 ignore_index: int | None = None, resize: str | None = None,
                 sync: Sync = "local") -> None:
        super().__init__()
        self.resize = check_resize(resize)
        self.sync = check_sync(sync)
        if not isinstance(per_image, bool):
            raise InvalidValueError(f"per_image must be a bool, but got {per_image=!r}")
        self.per_image = per_image
        self.classes = check_classes(classes)
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, C, H, W]``, ``target [N, H, W]`` long -> :func:`lovasz_softmax`: a scalar."""
        return lovasz_softmax(logits, target, per_image=self.per_image, classes=self.classes,
                              ignore_index=self.ignore_index, resize=self.resize, sync=self.sync)

    def to_dict(self) -> dict[str, Any]:
        """The loss spec ``{"name": ..., **options}``; ``cls(**options)`` rebuilds it."""
        return {"name": self.name, "per_image": self.per_image, "classes": self.classes,
                "ignore_index": self.ignore_index, **resize_entry(self.resize),
                **sync_entry(self.sync)}


class LovaszHingeLoss(nn.Module):
    """Module form of :func:`lovasz_hinge` (binary logits ``[N,H,W]`` or ``[N,1,H,W]``)."""

    name: ClassVar[str] = "lovasz_hinge"

    def __init__(self, *, per_image: bool = True, ignore_index: int | None = None,
                 resize: str | None = None, sync: Sync = "local") -> None:
        super().__init__()
        self.resize = check_resize(resize)
        self.sync = check_sync(sync)
        if not isinstance(per_image, bool):
            raise InvalidValueError(f"per_image must be a bool, but got {per_image=!r}")
        self.per_image = per_image
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, 1, H, W]`` (or ``[N, H, W]``), ``target [N, H, W]`` in {0, 1} ->
        :func:`lovasz_hinge`: a scalar."""
        return lovasz_hinge(logits, target, per_image=self.per_image,
                            ignore_index=self.ignore_index, resize=self.resize, sync=self.sync)

    def to_dict(self) -> dict[str, Any]:
        """The loss spec ``{"name": ..., **options}``; ``cls(**options)`` rebuilds it."""
        return {"name": self.name, "per_image": self.per_image,
                "ignore_index": self.ignore_index, **resize_entry(self.resize),
                **sync_entry(self.sync)}
