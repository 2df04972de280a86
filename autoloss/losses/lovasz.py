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

Implementation: every (set, class) pair is one row of a ``[R, P]`` matrix, sorted by one
``torch.sort``; ``w`` comes from integer cumulative sums and is scattered back to the pixels, so
``loss = sum_i e_i w_rank(i)`` and the backward pass is elementwise (the permutation is constant,
as in the reference). Ignored pixels are removed before sorting (then, with ``per_image``, each
image is sorted on its own). Ties: Lovasz-Softmax breaks ties between equal errors by pixel
position (a stable sort; for float32 one radix sort of packed integer keys, the fast path), so
where errors tie its gradient may spread differently over the tied pixels than the reference's,
whose tie order is an artifact of ``torch.sort`` (the loss value is the same, and both are valid
subgradients). The hinge, whose errors tie often (equal logits), orders ties as the reference.
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


def _sort_key(values: Tensor, *, nonnegative: bool) -> Tensor:
    """Integer keys ordered like the float ``values``, with the same ties."""
    if not nonnegative:
        values = values + 0.0  # -0.0 becomes +0.0 (they compare equal)
    if values.dtype == torch.float32:
        bits, flip = values.view(torch.int32), 0x7FFFFFFF
    elif values.dtype == torch.float64:
        bits, flip = values.view(torch.int64), 0x7FFFFFFFFFFFFFFF
    else:
        return values
    if nonnegative:  # +0.0 and positive floats order like their bit patterns
        return bits
    return torch.where(bits < 0, bits ^ flip, bits)  # negative floats order in reverse


def _descending_order(values: Tensor, *, nonnegative: bool, stable: bool) -> Tensor:
    """Indices sorting each row of ``values [R, P]`` in decreasing order.

    ``stable=True`` breaks ties by position. For float32 this is one stable sort of 1-D int64
    keys ``row << 32 | rank key``, a radix sort on CPU (~2.5x faster than sorting the rows).
    ``stable=False`` is ``torch.sort(dim=1, descending=True)``, whose tie order (an artifact of
    the sort algorithm) is the reference's.
    """
    rows, size = values.shape
    key = _sort_key(values, nonnegative=nonnegative)
    if not stable:
        return torch.sort(key, dim=1, descending=True).indices
    if values.dtype != torch.float32 or rows >= 2**30:
        return torch.sort(key, dim=1, descending=True, stable=True).indices
    descending = 0x7FFFFFFF - key.long()  # in [0, 2^32), smaller for larger values
    row = torch.arange(rows, device=values.device, dtype=torch.int64).view(rows, 1)
    order = torch.sort(((row << 32) | descending).flatten(), stable=True).indices
    return order.view(rows, size) - row * size


_CHUNK_ELEMENTS = 2**21  # rows are processed in chunks of about this many entries


def lovasz_rows(errors: Tensor, fg: Tensor, *, hinge: bool = False,
                stable: bool = True) -> Tensor:
    """Lovasz extension of the Jaccard loss for each row.

    Args:
        errors: ``[R, P]`` errors (differentiable), sorted on their values; ``>= 0`` (as
            ``|fg - p|``) unless ``hinge``.
        fg: ``[R, P]`` bool foreground.
        hinge: weigh ``relu(errors)`` instead of ``errors`` (sorting still uses ``errors``).
        stable: break ties in the errors by position (fast); else as ``torch.sort`` does.

    Returns:
        ``[R]`` losses ``sum_k e_(k) w_k``; ``P = 0`` gives zeros.
    """
    rows, size = errors.shape
    if size == 0:
        return errors.sum(dim=1) * 0.0
    # Chunks of rows keep the temporaries small (faster allocation, lower peak memory).
    step = max(1, _CHUNK_ELEMENTS // size)
    if rows > step:
        return torch.cat([lovasz_rows(errors[i:i + step], fg[i:i + step], hinge=hinge,
                                      stable=stable) for i in range(0, rows, step)])
    perm = _descending_order(errors.detach(), nonnegative=not hinge, stable=stable)
    count = torch.int32 if size < 2**31 else torch.int64
    fg_cum = fg.gather(1, perm).cumsum(dim=1, dtype=count)
    inter = fg_cum[:, -1:] - fg_cum  # G - sum_{j<=k} fg_(j)
    rank = torch.arange(1, size + 1, device=fg.device, dtype=count)
    # ranks and counts reach P: exact in float32 up to 2^24 (float16 overflows at 65,504,
    # bfloat16 rounds above 256), so the weights are float32 (float64 for float64 errors)
    wdtype = torch.promote_types(errors.dtype, torch.float32)
    inter_f = inter.to(wdtype)
    jaccard = 1.0 - inter_f / (inter + rank).to(wdtype)  # union = G + k - cumsum(fg)
    weights = torch.diff(jaccard, dim=1, prepend=jaccard.new_zeros(rows, 1))
    weights = torch.empty_like(weights).scatter_(1, perm, weights)
    return ((torch.relu(errors) if hinge else errors) * weights).sum(dim=1)


def _softmax_sets(probs: Tensor, labels: Tensor, class_ids: Tensor,
                  keep: list[Tensor] | None) -> tuple[Tensor, Tensor]:
    """Per-set class losses ``[S, K]`` and presence ``[S, K]`` for ``probs [S, K, P]`` and
    ``labels [S, P]``; ``keep[s]`` indexes the non-ignored pixels of set ``s`` (sorted one set at
    a time, since their sizes differ)."""
    sets, k, size = probs.shape
    fg = labels.unsqueeze(1) == class_ids.view(1, k, 1)
    errors = (fg.to(probs.dtype) - probs).abs()
    if keep is None:
        losses = lovasz_rows(errors.reshape(sets * k, size), fg.reshape(sets * k, size))
        return losses.view(sets, k), fg.any(dim=2)
    losses = torch.stack([lovasz_rows(errors[s].index_select(1, keep[s]),
                                      fg[s].index_select(1, keep[s])) for s in range(sets)])
    present = torch.stack([fg[s].index_select(1, keep[s]).any(dim=1) for s in range(sets)])
    return losses, present


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
    probs = torch.softmax(logits, dim=1)
    if isinstance(classes, list):
        bad = [k for k in classes if k >= c]
        if bad:
            raise InvalidValueError(f"classes lists {bad}, but the logits have only C={c} classes")
        probs = probs[:, classes]
        class_ids = torch.tensor(classes, device=logits.device)
    else:
        class_ids = torch.arange(c, device=logits.device)
    k = class_ids.numel()
    labels = target.long().reshape(n, pixels)
    valid = _valid_mask(labels, ignore_index)
    if world and not per_image:
        return _gathered_softmax(logits, probs.reshape(n, k, pixels), labels, valid, class_ids,
                                 classes, world)
    if valid is not None and not bool(valid.any()) and not world:
        return logits.sum() * 0.0
    if per_image:  # rows (image, class)
        keep = None if valid is None else [torch.nonzero(v).squeeze(1) for v in valid]
        losses, present = _softmax_sets(probs.reshape(n, k, pixels), labels, class_ids, keep)
    else:  # rows (class) over the whole batch
        flat = probs.transpose(0, 1).reshape(1, k, n * pixels)
        keep_all = None if valid is None else [torch.nonzero(valid.reshape(-1)).squeeze(1)]
        losses, present = _softmax_sets(flat, labels.reshape(1, n * pixels), class_ids, keep_all)
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
    losses, present = _softmax_sets(flat.unsqueeze(0), flat_labels, class_ids, None)
    keep_class = present.to(losses.dtype) if classes == "present" else torch.ones_like(losses)
    return ((losses * keep_class).sum(dim=1) / keep_class.sum(dim=1).clamp_min(1)).mean()


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
