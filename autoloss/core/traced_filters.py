"""Square max- and min-filters written for ``torch.compile`` (inductor), with max-pooling's
gradient.

:mod:`autoloss.core.morphology` filters eagerly by window doubling with in-place ``out=`` calls and a
custom autograd node that scatters gradients by a saved index; neither traces well. This is the
same filter as inductor compiles it fast: a ``(2r+1)^2`` square filter is a width scan then a
height scan, and each scan reads ``2r+1`` shifted views of a padded copy (one vectorised loop,
everything in registers), keeping the offset of each window's **first** extreme. The backward
gathers: input ``j`` receives the gradient of every output whose window's first extreme it is,
so each output's gradient goes to its window's first arg-max (arg-min) in row-major order, the
arg-max of ``F.max_pool2d(x, 2r+1, stride=1, padding=r)`` and of the eager kernel. Values are
bit-identical to the eager filter; gradients too (up to the order of a sum where one input is
the extreme of several windows).

One opaque custom op, ``autoloss::pad``, keeps inductor from inlining the padded copy (inlined,
every shifted read becomes a masked load, measured 2-7x slower). The offsets need none: each is
read by ``2r+1`` gathers, so inductor materialises it once. (Issue #28: copying them through a
second custom op, ``autoloss::keep``, as before, cost compiled ``asl-voc-bf1`` about 5 % of its
CPU time per call, one thread; for ``asl-voc-biou`` no difference showed beyond the noise.) In
BF1's compiled graph the forward computes the filter's values only and saves the padded copy;
the backward computes the offsets from it. Windows of
only ``-inf`` (``+inf``) entries send their gradient to the padding, where the eager kernel
picks the nearest image pixel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["pad", "traced_filter"]


@torch.library.custom_op("autoloss::pad", mutates_args=())
def pad(x: Tensor, radius: int, value: float) -> Tensor:
    """``x [N,C,H,W]`` padded by ``radius`` entries of ``value`` on every side
    (``[N,C,H+2r,W+2r]``). Each entry is written once (``F.pad`` fills all of its output, then
    copies ``x`` over the middle)."""
    n, c, h, w = x.shape
    out = x.new_empty((n, c, h + 2 * radius, w + 2 * radius))
    out[:, :, :radius].fill_(value)
    out[:, :, radius + h:].fill_(value)
    middle = out[:, :, radius:radius + h]
    middle[..., :radius].fill_(value)
    middle[..., radius + w:].fill_(value)
    middle[..., radius:radius + w].copy_(x)
    return out


@pad.register_fake
def _(x: Tensor, radius: int, value: float) -> Tensor:
    n, c, h, w = x.shape
    return x.new_empty((n, c, h + 2 * radius, w + 2 * radius))


def _scan(x: Tensor, dim: int, size: int, radius: int, *, largest: bool,
          with_offset: bool) -> tuple[Tensor, Tensor | None]:
    """1-D max- (min-) filter of width ``2r+1`` along ``dim``: output ``o`` (``size`` of them)
    is the extreme of ``x[o : o + 2r + 1]``; with ``with_offset``, also the offset ``k`` in
    ``[0, 2r]`` of the window's first extreme, as a float tensor (the values' vector width;
    int8 offsets measured 20x slower)."""
    views = [x.narrow(dim, k, size) for k in range(2 * radius + 1)]
    pick = torch.maximum if largest else torch.minimum
    values = views[0]
    for view in views[1:]:
        values = pick(values, view)
    if not with_offset:
        return values, None
    offset = torch.full_like(values, 2 * radius)
    for k in reversed(range(2 * radius)):
        offset = torch.where(views[k] == values, float(k), offset)
    return values, offset


def _gather(grad: Tensor, offset: Tensor, dim: int, size: int, radius: int) -> Tensor:
    """The backward of :func:`_scan`, ``grad`` and ``offset`` indexed like its output: input
    ``j`` (``size`` of them) receives the gradient of every output ``o = j + 2r - k`` whose
    offset is ``k``."""
    total = grad.new_zeros(())
    for k in range(2 * radius + 1):
        start = 2 * radius - k
        total = total + torch.where(offset.narrow(dim, start, size) == k,
                                    grad.narrow(dim, start, size), 0.0)
    return total


class _TracedFilterFunction(torch.autograd.Function):
    """The filter with its gradient. Both scans of the forward also cover ``r`` pixels beyond
    the image (``x`` is padded by ``2r``), so the backward reads the offsets as they are and
    pads only the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, radius: int, largest: bool) -> Tensor:
        h, w, r = x.shape[2], x.shape[3], radius
        padded = pad(x, 2 * r, float("-inf") if largest else float("inf"))
        rows, by_width = _scan(padded, 3, w + 2 * r, r, largest=largest, with_offset=True)
        out, by_height = _scan(rows, 2, h + 2 * r, r, largest=largest, with_offset=True)
        ctx.save_for_backward(by_width.narrow(2, 2 * r, h), by_height)
        ctx.radius = r
        return out[:, :, r:r + h, r:r + w]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        by_width, by_height = ctx.saved_tensors  # [N,C,H,W+2r], [N,C,H+2r,W+2r]
        h, w, r = grad.shape[2], grad.shape[3], ctx.radius
        rows = _gather(pad(grad, r, 0.0), by_height, 2, h, r)  # [N,C,H,W+2r]
        return _gather(rows, by_width, 3, w, r), None, None


def traced_filter(x: Tensor, radius: int, *, largest: bool) -> Tensor:
    """Square ``(2r+1)^2`` max- (``largest``) or min-filter of float ``x [N,C,H,W]`` over
    in-image neighbours, ``radius >= 1``, for code that ``torch.compile`` traces."""
    if x.requires_grad and torch.is_grad_enabled():
        return _TracedFilterFunction.apply(x, radius, largest)
    h, w = x.shape[2], x.shape[3]
    padded = pad(x, radius, float("-inf") if largest else float("inf"))
    rows = _scan(padded, 3, w, radius, largest=largest, with_offset=False)[0]
    return _scan(rows, 2, h, radius, largest=largest, with_offset=False)[0]
