"""The two operator sets a metric program runs on.

A metric is written once (``autoloss.programs``) over a handful of operators. Running it with
:class:`ExactOps` on one-hot predictions gives the evaluation metric; running it with
:class:`RelaxedOps` on softmax probabilities gives a differentiable surrogate (Li et al.,
"Auto Seg-Loss", ICLR 2021). The relaxed logical operators are, for a probability ``a``, a
second operand ``b`` and monotone curves ``h`` with ``h(0) = 0``, ``h(1) = 1``::

    AND(a, b) = h_a(a) * h_b(b)
    OR(a, b)  = h_a(a) + h_b(b) - h_a(a) * h_b(b)

so on binary inputs they equal the logical operators (the truth-table constraint), and they are
non-decreasing in every input (the monotonicity constraint). A curve name of ``None`` means the
operand is used as it is (the ground truth is never bent).

Morphology is shared by both sets: erosion is a 3x3 min-filter over in-image neighbours (so the
image border is not an edge) and dilation a square ``(2r+1) x (2r+1)`` max-filter, computed as two
separable 1-D passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "CurveFn",
    "ExactOps",
    "RelaxedOps",
    "dilate",
    "erode",
    "exact_edge",
    "one_hot",
    "total",
]


class CurveFn(Protocol):
    """Anything that maps a tensor of values in [0, 1] to a tensor of the same shape."""

    def __call__(self, x: Tensor) -> Tensor: ...


def one_hot(labels: Tensor, num_classes: int, *, valid: Tensor | None = None,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encode ``labels [N,H,W]`` into ``[N,C,H,W]``; pixels where ``valid`` is False are
    all zero (so an ignored pixel belongs to no class)."""
    safe = labels.long()
    if valid is not None:
        safe = torch.where(valid, safe, torch.zeros_like(safe))
    out = torch.zeros((labels.shape[0], num_classes, *labels.shape[1:]), dtype=dtype,
                      device=labels.device)
    out.scatter_(1, safe.unsqueeze(1), 1.0)
    if valid is not None:
        out.mul_(valid.unsqueeze(1).to(dtype))
    return out


def _square_filter(x: Tensor, radius: int, pick: Callable[[Tensor, Tensor], Tensor],
                   fill: float) -> Tensor:
    """``pick``-filter (torch.maximum or torch.minimum) of ``x [N,C,H,W]`` over the in-image
    ``(2r+1)^2`` square, by window doubling: after padding by ``r`` with ``fill``,
    windows of width 1, 2, 4, ... are merged by shifted comparisons (about 2 log2(2r+1) calls
    instead of a ``2r+1``-wide pooling kernel)."""
    width = 2 * radius + 1
    n, c, h, w = x.shape
    out = x.new_full((n, c, h + 2 * radius, w + 2 * radius), fill)  # faster than F.pad on CPU
    out[:, :, radius:radius + h, radius:radius + w] = x
    for dim in (3, 2):
        step = 1
        while step < width:
            shift = min(step, width - step)  # the window grows from ``step`` to ``step + shift``
            size = out.shape[dim] - shift
            out = pick(out.narrow(dim, 0, size), out.narrow(dim, shift, size))
            step += shift
    return out


def _square_filter_with_index(x: Tensor, radius: int, largest: bool) -> tuple[Tensor, Tensor]:
    """Like :func:`_square_filter`, plus the ``[N,C,H,W]`` flat in-plane index ``row * W + col``
    of the element each output was taken from (held exactly as float32, or float64 for float64
    ``x`` or planes over ``2^24`` pixels): the **first** extreme of its window in row-major
    order, as ``F.max_pool2d`` picks it. Merging two windows keeps the earlier one unless the
    later one is strictly better, and rows are merged after columns, so the earliest row wins,
    then its earliest column. Padding carries the index of the nearest in-image pixel, so even a
    window of only ``-inf`` points inside the image. (``torch.lerp`` with a 0/1 weight selects
    exactly and is about 5x faster than ``torch.where`` on CPU.)"""
    width = 2 * radius + 1
    n, c, h, w = x.shape
    fill = float("-inf") if largest else float("inf")
    pick, better = (torch.maximum, torch.gt) if largest else (torch.minimum, torch.lt)
    out = x.new_full((n, c, h + 2 * radius, w + 2 * radius), fill)
    out[:, :, radius:radius + h, radius:radius + w] = x
    rows = torch.arange(-radius, h + radius, device=x.device).clamp_(0, h - 1)
    cols = torch.arange(-radius, w + radius, device=x.device).clamp_(0, w - 1)
    exact32 = x.dtype != torch.float64 and h * w <= 2 ** 24
    index = (rows.unsqueeze(1) * w + cols).to(torch.float32 if exact32 else torch.float64)
    index = index.expand(out.shape)  # a view
    for dim in (3, 2):
        step = 1
        while step < width:
            shift = min(step, width - step)
            size = out.shape[dim] - shift
            early, late = out.narrow(dim, 0, size), out.narrow(dim, shift, size)
            take_late = better(late, early, out=torch.empty(early.shape, dtype=index.dtype,
                                                            device=x.device))
            index = torch.lerp(index.narrow(dim, 0, size), index.narrow(dim, shift, size), take_late)
            out = pick(early, late)
            step += shift
    return out, index


class _SquareFilterFunction(torch.autograd.Function):
    """Square max- (min-) filter whose gradient is max-pooling's: each output's gradient goes to
    its window's first arg-max (arg-min) in row-major order, the arg-max of
    ``F.max_pool2d(x, 2r+1, stride=1, padding=r)``. Same values as :func:`_square_filter`;
    the backward is one ``scatter_add_`` per image plane."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, radius: int, largest: bool) -> Tensor:
        out, index = _square_filter_with_index(x.detach(), radius, largest)
        ctx.save_for_backward(index)
        ctx.in_shape = x.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (index,) = ctx.saved_tensors
        n, c, h, w = ctx.in_shape
        planes = grad.new_zeros((n * c, h * w))
        planes.scatter_add_(1, index.reshape(n * c, h * w).long(), grad.reshape(n * c, h * w))
        return planes.view(n, c, h, w), None, None


def _filter(x: Tensor, radius: int, *, largest: bool) -> Tensor:
    """Square ``(2r+1)^2`` max- or min-filter of ``x [N,C,H,W]`` over in-image neighbours: the
    shift-and-compare filter (about 15x faster than max-pooling on CPU), with max-pooling's
    gradient when autograd needs one. Non-floating inputs use max-pooling."""
    if not x.is_floating_point():
        return _pool_filter(x, radius) if largest else -_pool_filter(-x, radius)
    if x.requires_grad and torch.is_grad_enabled():
        return _SquareFilterFunction.apply(x, radius, largest)
    if largest:
        return _square_filter(x, radius, torch.maximum, float("-inf"))
    return _square_filter(x, radius, torch.minimum, float("inf"))


def _pool_filter(x: Tensor, radius: int) -> Tensor:
    """The reference square max-filter: a ``1 x k`` then a ``k x 1`` max-pooling, ``k = 2r+1``."""
    k = 2 * radius + 1
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = F.max_pool2d(flat, (1, k), stride=1, padding=(0, radius))
    flat = F.max_pool2d(flat, (k, 1), stride=1, padding=(radius, 0))
    return flat.reshape(n, c, h, w)


def erode(x: Tensor) -> Tensor:
    """3x3 min-filter of ``x [N,C,H,W]`` over in-image neighbours (border padded with +inf)."""
    return _filter(x, 1, largest=False)


def dilate(x: Tensor, radius: int) -> Tensor:
    """Square ``(2r+1)^2`` max-filter of ``x [N,C,H,W]`` over in-image neighbours.

    Computed by separable shifted comparisons, so the cost grows with ``log r`` and not ``r^2``;
    the gradient is max-pooling's (see :class:`_SquareFilterFunction`). ``radius = 0`` returns
    ``x`` unchanged.
    """
    if radius <= 0:
        return x
    return _filter(x, radius, largest=True)


def exact_edge(x: Tensor) -> Tensor:
    """Inner boundary of a binary map ``x [N,C,H,W]``: pixels of ``x`` with a 0 among their
    in-image 3x3 neighbours (``x AND NOT erode(x)``)."""
    return x - erode(x)


def _masked_sums(x: Tensor, valid: Tensor) -> Tensor:
    """``[N,C]`` sums of ``x [N,C,H,W] * valid [N,1,H,W]`` over pixels, one image at a time (so
    the product never exists at full size)."""
    if x.shape[0] == 0:
        return (x * valid).sum(dim=(2, 3))
    return torch.stack([(x[i] * valid[i]).sum(dim=(1, 2)) for i in range(x.shape[0])])


class _MaskedTotalFunction(torch.autograd.Function):
    """``(x * valid).sum(pixels)`` without the full-size product in the forward; the backward is
    the product's, ``grad * valid`` (``valid`` is a constant)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, valid: Tensor) -> Tensor:
        ctx.save_for_backward(valid)
        return _masked_sums(x.detach(), valid)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (valid,) = ctx.saved_tensors
        return grad[:, :, None, None] * valid, None


def total(x: Tensor, valid: Tensor | None = None, *, per_image: bool = False) -> Tensor:
    """Per-class sum of ``x [N,C,H,W]`` over valid pixels.

    ``valid`` is ``[N,1,H,W]`` (0/1) or None. Returns ``[C]`` (summed over the batch too) or
    ``[N,C]`` with ``per_image``.
    """
    if valid is None:
        return x.sum(dim=(2, 3) if per_image else (0, 2, 3))
    if valid.requires_grad and torch.is_grad_enabled():
        sums = (x * valid).sum(dim=(2, 3))
    elif x.requires_grad and torch.is_grad_enabled():
        sums = _MaskedTotalFunction.apply(x, valid)
    else:
        sums = _masked_sums(x, valid)
    return sums if per_image else sums.sum(dim=0)


class ExactOps:
    """Logical operators on binary maps: the program computes the evaluation metric.

    Curve names are accepted and ignored (every curve is the identity on {0, 1}). Divisions are
    exact; a zero denominator gives 0 (such a class is excluded by the ``present`` mask).
    """

    relaxed = False

    def and_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        return a * b

    def or_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        return torch.maximum(a, b)

    def edge(self, x: Tensor, curves: tuple[str, str, str, str]) -> Tensor:
        return exact_edge(x)

    def dilate(self, x: Tensor, radius: int) -> Tensor:
        return dilate(x, radius)

    def ratio(self, num: Tensor, den: Tensor) -> Tensor:
        num, den = num.double(), den.double()  # float32 would round per-image ratios (miou_image)
        return torch.where(den > 0, num / torch.where(den > 0, den, 1), 0.0)

    def count_ratio(self, num: Tensor, count: Tensor) -> Tensor:
        return self.ratio(num, count)

    def present(self, gt_count: Tensor, pred_count: Tensor) -> Tensor:
        """A class is present if it occurs in the ground truth or in the prediction."""
        return (gt_count > 0) | (pred_count > 0)


class RelaxedOps:
    """Smooth operators on probabilities: the program computes a differentiable surrogate.

    Args:
        curves: curve name -> callable ``h`` (monotone, ``h(0)=0``, ``h(1)=1``). Every name a
            program asks for must be present.
        eps: added to denominators that depend on the prediction; denominators that count the
            (binary) ground truth are only guarded against zero (``max(count, eps)``), as in the
            Auto Seg-Loss reference.
        float32_dilation: dilate in float32 as the Auto Seg-Loss reference does for BF1 (only for
            bit-level parity with it).
    """

    relaxed = True

    def __init__(self, curves: Mapping[str, CurveFn], *, eps: float = 1e-8,
                 float32_dilation: bool = False) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0 for a relaxed (differentiable) program, but got {eps=}")
        self.curves = dict(curves)
        self.eps = float(eps)
        self.float32_dilation = bool(float32_dilation)

    def _h(self, name: str | None, x: Tensor) -> Tensor:
        if name is None:
            return x
        try:
            curve = self.curves[name]
        except KeyError:
            raise KeyError(
                f"the metric program asks for curve {name!r}, but only {sorted(self.curves)} "
                "were given"
            ) from None
        return curve(x)

    def and_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        return self._h(curves[0], a) * self._h(curves[1], b)

    def or_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        ha, hb = self._h(curves[0], a), self._h(curves[1], b)
        return ha + hb - ha * hb

    def edge(self, x: Tensor, curves: tuple[str, str, str, str]) -> Tensor:
        """Soft XOR(x, erode x) = OR(x, erode x) - AND(x, erode x); ``curves`` are the curve names
        of (AND on x, AND on erode x, OR on x, OR on erode x)."""
        eroded = erode(x)
        return self.or_(x, eroded, (curves[2], curves[3])) - self.and_(x, eroded, (curves[0], curves[1]))

    def dilate(self, x: Tensor, radius: int) -> Tensor:
        if self.float32_dilation and radius > 0:
            return dilate(x.float(), radius)
        return dilate(x, radius)

    def ratio(self, num: Tensor, den: Tensor) -> Tensor:
        return num / (den + self.eps)

    def count_ratio(self, num: Tensor, count: Tensor) -> Tensor:
        return num / count.clamp_min(self.eps)

    def present(self, gt_count: Tensor, pred_count: Tensor) -> Tensor:
        """A class is present if it occurs in the ground truth (a soft prediction is everywhere)."""
        return gt_count > 0
