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
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

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


def _fast_path(x: Tensor) -> bool:
    """Use the shift-and-compare filters (same values as max-pooling, about 15x faster on CPU)
    unless autograd needs max-pooling's gradient (all to one arg-max, where torch.maximum would
    split ties)."""
    return x.is_floating_point() and not (x.requires_grad and torch.is_grad_enabled())


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


def erode(x: Tensor) -> Tensor:
    """3x3 min-filter of ``x [N,C,H,W]`` over in-image neighbours (border padded with +inf)."""
    if _fast_path(x):
        return _square_filter(x, 1, torch.minimum, float("inf"))
    return -dilate(-x, 1)


def dilate(x: Tensor, radius: int) -> Tensor:
    """Square ``(2r+1)^2`` max-filter of ``x [N,C,H,W]`` over in-image neighbours.

    Computed as a row pass then a column pass (the square max-filter is separable), so the cost
    grows with ``r`` and not ``r^2``. ``radius = 0`` returns ``x`` unchanged.
    """
    if radius <= 0:
        return x
    if _fast_path(x):
        return _square_filter(x, radius, torch.maximum, float("-inf"))
    k = 2 * radius + 1
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = F.max_pool2d(flat, (1, k), stride=1, padding=(0, radius))
    flat = F.max_pool2d(flat, (k, 1), stride=1, padding=(radius, 0))
    return flat.reshape(n, c, h, w)


def exact_edge(x: Tensor) -> Tensor:
    """Inner boundary of a binary map ``x [N,C,H,W]``: pixels of ``x`` with a 0 among their
    in-image 3x3 neighbours (``x AND NOT erode(x)``)."""
    return x - erode(x)


def total(x: Tensor, valid: Tensor | None = None, *, per_image: bool = False) -> Tensor:
    """Per-class sum of ``x [N,C,H,W]`` over valid pixels.

    ``valid`` is ``[N,1,H,W]`` (0/1) or None. Returns ``[C]`` (summed over the batch too) or
    ``[N,C]`` with ``per_image``.
    """
    if valid is not None:
        x = x * valid
    dims = (2, 3) if per_image else (0, 2, 3)
    return x.sum(dim=dims)


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
