"""The sorting core of :mod:`autoloss.losses.lovasz` (see its docstring): integer sort keys and
stable 1-D radix sorts, :func:`lovasz_rows` for rows with autograd (the hinge, the all-gathered
softmax), and :class:`SoftmaxRows`, the memory-lean Lovasz-Softmax of every (set, class) row."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["CHUNK_ELEMENTS", "SoftmaxRows", "descending_order", "lovasz_rows", "sort_key",
           "stable_descending"]


def sort_key(values: Tensor, *, nonnegative: bool) -> Tensor:
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


def stable_descending(values: Tensor, *, nonnegative: bool) -> Tensor:
    """Indices sorting the 1-D ``values`` in decreasing order, ties by position.

    One stable ascending sort of non-negative integer keys (``max - key``): on CPU a radix sort,
    ~6x faster than sorting the floats. Non-negative float32 values keep 32-bit keys (4 radix
    passes, half the memory of 64-bit keys); signed ones need 64 bits (``2^31 - 1 - key`` spans
    ``[0, 2^32)``).
    """
    key = sort_key(values, nonnegative=nonnegative)
    if key.dtype == torch.int32:
        descending = 0x7FFFFFFF - (key if nonnegative else key.long())
    elif key.dtype == torch.int64 and nonnegative:
        descending = 0x7FFFFFFFFFFFFFFF - key
    else:  # signed float64 (no non-negative 64-bit key), or a dtype without integer keys
        return torch.sort(key, descending=True, stable=True).indices
    return torch.sort(descending, stable=True).indices


def descending_order(values: Tensor, *, nonnegative: bool, stable: bool) -> Tensor:
    """Indices sorting each row of ``values [R, P]`` in decreasing order.

    ``stable=True`` breaks ties by position (:func:`stable_descending`, row by row).
    ``stable=False`` is ``torch.sort(dim=1, descending=True)``, whose tie order (an artifact of
    the sort algorithm) is the reference's.
    """
    if not stable:
        return torch.sort(sort_key(values, nonnegative=nonnegative), dim=1,
                          descending=True).indices
    if values.shape[0] == 1:
        return stable_descending(values[0], nonnegative=nonnegative).unsqueeze(0)
    return torch.stack([stable_descending(row, nonnegative=nonnegative) for row in values])


CHUNK_ELEMENTS = 2**21  # rows are processed in chunks of about this many entries


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
    step = max(1, CHUNK_ELEMENTS // size)
    if rows > step:
        return torch.cat([lovasz_rows(errors[i:i + step], fg[i:i + step], hinge=hinge,
                                      stable=stable) for i in range(0, rows, step)])
    perm = descending_order(errors.detach(), nonnegative=not hinge, stable=stable)
    weights = _lovasz_weights(fg.gather(1, perm), None, errors.dtype)
    weights = torch.empty_like(weights).scatter_(1, perm, weights)
    return ((torch.relu(errors) if hinge else errors) * weights).sum(dim=1)


def _lovasz_weights(fg_sorted: Tensor, total: int | None, dtype: torch.dtype) -> Tensor:
    """Lovasz weights ``w_k = J_k - J_{k-1}`` of sorted rows (``fg_sorted [..., P]`` bool;
    ``total`` = G, the foreground count, ``None``: each row's own), in float32 (float64 for
    float64 ``dtype``): ranks and counts reach P, exact in float32 up to 2^24 (float16 overflows
    at 65,504, bfloat16 rounds above 256)."""
    size = fg_sorted.shape[-1]
    count = torch.int32 if size < 2**31 else torch.int64
    fg_cum = fg_sorted.cumsum(-1, dtype=count)
    if total is None:
        total = fg_cum[..., -1:]
    rank = torch.arange(1, size + 1, device=fg_sorted.device, dtype=count)
    wdtype = torch.promote_types(dtype, torch.float32)
    # intersection G - cumsum(fg), union G + k - cumsum(fg)
    jaccard = 1.0 - (total - fg_cum).to(wdtype) / (total + rank - fg_cum).to(wdtype)
    return torch.diff(jaccard, dim=-1, prepend=jaccard.new_zeros(*jaccard.shape[:-1], 1))


def _row_loss(probs: Tensor, fg: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """Lovasz loss of one (set, class) row and its gradient with respect to the row's
    probabilities ``probs [P]`` (``fg [P]`` bool, ``total = fg.sum()``): ``sum_k e_(k) w_k`` with
    ``e = |fg - p|``, ``d/dp_i = w_rank(i) * sign(p_i - fg_i)``. A class absent from the set
    (``total = 0``) has ``w = (1, 0, 0, ...)``: its loss is ``max_i p_i``, no sort needed."""
    diff = fg.to(probs.dtype) - probs
    errors = diff.abs()
    sign = diff.sign_().neg_()  # d|fg - p| / dp, 0 where p == fg (as autograd's abs)
    if total == 0:
        top = torch.argmax(errors)  # the first maximum, as a stable sort would put first
        loss = errors[top]
        grad = torch.zeros_like(errors)
        grad[top] = sign[top]
        return loss, grad
    order = stable_descending(errors, nonnegative=True)
    weights = _lovasz_weights(fg[order], total, probs.dtype)
    del fg
    loss = torch.dot(errors[order].to(weights.dtype), weights).to(probs.dtype)
    del errors
    grad = sign.scatter_(0, order, sign[order] * weights.to(sign.dtype))
    return loss, grad


def _set_probs(logits: Tensor, images: range, class_ids: Tensor,
               keep: list[Tensor] | None) -> Tensor:
    """``softmax(logits)[images, class_ids]`` at the kept pixels: ``[K, sum of kept]``, the
    images' pixels one after the other. One image's softmax at a time (no full-size copy)."""
    parts = []
    for i in images:
        probs = torch.softmax(logits[i], dim=0).index_select(0, class_ids)
        parts.append(probs if keep is None else probs.index_select(1, keep[i]))
        del probs
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class SoftmaxRows(torch.autograd.Function):
    """Lovasz-Softmax losses ``[S, K]`` of every (set, class) row from ``logits [N, C, P]``.

    Forward keeps, per set, only ``d loss / d p`` at its kept pixels for the rows it computed
    (``[K, kept]``, the size of the class probabilities); backward rebuilds the softmax one
    image at a time and applies its Jacobian ``p (g - sum_c p g)``. Rows with ``rows[s, k]``
    False are not computed (loss 0, no gradient): absent classes under ``"present"``.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, class_ids: Tensor, rows: Tensor,
                counts: Tensor, keep: list[Tensor] | None, sets: list[range]) -> Tensor:
        k = class_ids.numel()
        losses = logits.new_zeros(len(sets), k)
        grads = []
        for s, images in enumerate(sets):
            computed = torch.nonzero(rows[s]).squeeze(1)
            probs = _set_probs(logits, images, class_ids.index_select(0, computed), keep)
            set_labels = labels[images.start:images.stop].reshape(-1)
            if keep is not None:
                set_labels = torch.cat([labels[i].index_select(0, keep[i]) for i in images])
            for j, row in enumerate(computed.tolist()):
                fg = set_labels == class_ids[row]
                losses[s, row], probs[j] = _row_loss(probs[j], fg, int(counts[s, row]))
            grads.append((computed, probs))  # probs now hold d loss_row / d p
        ctx.grads, ctx.keep, ctx.sets = grads, keep, sets
        ctx.save_for_backward(logits, class_ids)
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_losses: Tensor) -> tuple[Tensor | None, ...]:
        logits, class_ids = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for s, images in enumerate(ctx.sets):
            computed, row_grads = ctx.grads[s]
            ids = class_ids.index_select(0, computed)
            scale = grad_losses[s].index_select(0, computed).unsqueeze(1)
            start = 0
            for i in images:
                probs = torch.softmax(logits[i], dim=0)
                size = probs.shape[1] if ctx.keep is None else ctx.keep[i].numel()
                grad_p = torch.zeros_like(probs)
                part = row_grads[:, start:start + size] * scale
                if ctx.keep is None:
                    grad_p.index_copy_(0, ids, part)
                else:
                    grad_p[ids.unsqueeze(1), ctx.keep[i].unsqueeze(0)] = part
                start += size
                # softmax backward: p * (g - sum_c p g)
                grad_p.sub_((grad_p * probs).sum(dim=0, keepdim=True))
                torch.mul(grad_p, probs, out=grad[i])
        return grad, None, None, None, None, None, None
