"""The two operator sets a metric program runs on.

A metric is written once (``autoloss.core.programs``) over a handful of operators. Running it with
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
separable 1-D passes of shifted comparisons, with max-pooling's gradient (to the first arg-max).
Volumes ``[N,C,D,H,W]`` (3-D segmentation) use cubes: erosion a 3x3x3 min-filter, dilation a
``(2r+1)^3`` max-filter, each the square filter of every slice followed by a ``2r+1`` window
along the depth (max-pooling's values and gradient), and per-class sums run over ``D, H, W``.
The relaxed operators fuse the common cases (a curve of the prediction with the ground truth, the
soft edge) into single autograd nodes that keep one gradient factor instead of every curve value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from autoloss.core.relaxations import Curve, IdentityCurve
from autoloss.core.traced_filters import traced_filter
from autoloss.errors import InvalidValueError

__all__ = [
    "CurveFn",
    "ExactOps",
    "OperatorSet",
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


@runtime_checkable
class OperatorSet(Protocol):
    """What a metric program may call on its ``ops`` argument; :class:`ExactOps` (the metric),
    :class:`RelaxedOps` (the surrogate) and :class:`autoloss.core.tensor_ops.TensorOps` (the compiled
    surrogate) implement it. Shapes: maps are ``[N,C,H,W]`` (``N`` images, ``C`` classes; the
    prediction ``P`` and the one-hot ground truth ``G`` of the program, or maps derived from
    them), per-class sums are ``[C]`` (or ``[N,C]`` per image). A curve name says which curve
    bends an operand (``None``: the operand as it is; :class:`ExactOps` ignores the names)."""

    #: True for the differentiable operators (probabilities in, soft values out)
    relaxed: ClassVar[bool]

    def and_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        """Logical / relaxed AND of ``a`` and ``b`` (same shape ``[N,C,H,W]``): ``a * b``, or
        ``h_a(a) * h_b(b)``; the result has their shape."""
        ...

    def or_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        """Logical / relaxed OR of ``a`` and ``b`` (same shape ``[N,C,H,W]``): ``max(a, b)``,
        or ``h_a(a) + h_b(b) - h_a(a) h_b(b)``; the result has their shape."""
        ...

    def edge(self, x: Tensor, curves: tuple[str, str, str, str]) -> Tensor:
        """The boundary map of ``x [N,C,H,W]`` (same shape): ``x XOR erode(x)``; ``curves``
        bend (AND on x, AND on erode x, OR on x, OR on erode x)."""
        ...

    def dilate(self, x: Tensor, radius: int) -> Tensor:
        """Square ``(2r+1)^2`` max-filter of ``x [N,C,H,W]`` over in-image neighbours (same
        shape)."""
        ...

    def ratio(self, num: Tensor, den: Tensor) -> Tensor:
        """``num / den`` elementwise (``[C]`` or ``[N,C]``) where the denominator depends on the
        prediction: exact with 0 for a zero denominator, or ``num / (den + eps)``."""
        ...

    def count_ratio(self, num: Tensor, count: Tensor) -> Tensor:
        """``num / count`` where ``count`` counts ground-truth pixels only (a zero count gives
        0, or is clamped to ``eps``)."""
        ...

    def present(self, gt_count: Tensor, pred_count: Tensor) -> Tensor:
        """Bool mask of the classes averaged over, from per-class counts (``[C]`` or
        ``[N,C]``): in the ground truth or the prediction (exact), in the ground truth
        (relaxed)."""
        ...


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


def _merge_steps(radius: int) -> list[tuple[int, int]]:
    """``(dim, shift)`` of each window-doubling merge of a ``(2r+1)^2`` square filter: along the
    width (dim 3) first, then the height; the window grows from ``step`` to ``step + shift``."""
    width, steps = 2 * radius + 1, []
    for dim in (3, 2):
        step = 1
        while step < width:
            shift = min(step, width - step)
            steps.append((dim, shift))
            step += shift
    return steps


def _square_filter(x: Tensor, radius: int, *, largest: bool,
                   with_index: bool = False) -> tuple[Tensor, Tensor | None]:
    """Max- (min-) filter of ``x [N,C,H,W]`` over the in-image ``(2r+1)^2`` square, by window
    doubling: after padding by ``r`` with ``-inf`` (``+inf``), windows of width 1, 2, 4, ... are
    merged by shifted comparisons (about ``2 log2(2r+1)`` elementwise calls instead of a
    ``2r+1``-wide pooling kernel). Intermediate merges alternate between two buffers, so the
    filter allocates about three full-size tensors whatever ``r``.

    With ``with_index``, also returns the ``[N,C,H,W]`` flat in-plane index ``row * W + col`` of
    the element each output was taken from (exact in float32, float64 for float64 ``x`` or
    planes over ``2^24`` pixels): the **first** extreme of its window in row-major order, as
    ``F.max_pool2d`` picks it. A merge keeps the earlier window unless the later one is strictly
    better, and rows are merged after columns, so the earliest row wins, then its earliest
    column. Padding carries the index of the nearest in-image pixel, so even a window of only
    ``-inf`` points inside the image. (``torch.lerp`` with a 0/1 weight selects exactly and is
    about 5x faster than ``torch.where`` on CPU.)
    """
    n, c, h, w = x.shape
    pick, better = (torch.maximum, torch.gt) if largest else (torch.minimum, torch.lt)
    values = x.new_full((n, c, h + 2 * radius, w + 2 * radius), float("-inf" if largest else "inf"))
    values[:, :, radius:radius + h, radius:radius + w] = x
    buffers = (values, torch.empty_like(values))  # merge k reads buffers[k % 2]
    index = None
    if with_index:
        exact32 = x.dtype != torch.float64 and h * w <= 2 ** 24
        idtype = torch.float32 if exact32 else torch.float64
        rows = torch.arange(-radius, h + radius, device=x.device).clamp_(0, h - 1)
        cols = torch.arange(-radius, w + radius, device=x.device).clamp_(0, w - 1)
        index = (rows.unsqueeze(1) * w + cols).to(idtype).expand(values.shape)  # a view
        ibuffers = (torch.empty(values.shape, dtype=idtype, device=x.device),
                    torch.empty(values.shape, dtype=idtype, device=x.device))  # merge k writes [k % 2]
        mask = torch.empty(values.numel(), dtype=idtype, device=x.device)
    steps = _merge_steps(radius)
    for k, (dim, shift) in enumerate(steps):
        size = values.shape[dim] - shift
        early, late = values.narrow(dim, 0, size), values.narrow(dim, shift, size)
        last = k == len(steps) - 1  # the last merge writes fresh, contiguous [N,C,H,W] tensors
        rows_, cols_ = early.shape[2], early.shape[3]
        if index is not None:
            take_late = better(late, early, out=mask[:early.numel()].view(early.shape))
            itarget = None if last else ibuffers[k % 2][:, :, :rows_, :cols_]
            index = torch.lerp(index.narrow(dim, 0, size), index.narrow(dim, shift, size),
                               take_late, out=itarget)
        values = pick(early, late, out=None if last else buffers[(k + 1) % 2][:, :, :rows_, :cols_])
    return values, index


class _SquareFilterFunction(torch.autograd.Function):
    """Square max- (min-) filter whose gradient is max-pooling's: each output's gradient goes to
    its window's first arg-max (arg-min) in row-major order, the arg-max of
    ``F.max_pool2d(x, 2r+1, stride=1, padding=r)``. Same values as :func:`_square_filter`;
    the backward is one ``scatter_add_`` per image plane."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, radius: int, largest: bool) -> Tensor:
        out, index = _square_filter(x.detach(), radius, largest=largest, with_index=True)
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
    gradient when autograd needs one. Non-floating inputs use max-pooling; while
    ``torch.compile`` traces, :func:`autoloss.core.traced_filters.traced_filter` (same values and
    gradient). A volume ``[N,C,D,H,W]`` gets the cube filter (:func:`_volume_filter`)."""
    if x.dim() == 5:
        return _volume_filter(x, radius, largest=largest)
    if not x.is_floating_point():
        return _pool_filter(x, radius) if largest else -_pool_filter(-x, radius)
    if torch.compiler.is_compiling():
        return traced_filter(x, radius, largest=largest)
    if x.requires_grad and torch.is_grad_enabled():
        return _SquareFilterFunction.apply(x, radius, largest)
    return _square_filter(x, radius, largest=largest)[0]


def _volume_filter(x: Tensor, radius: int, *, largest: bool) -> Tensor:
    """Cube ``(2r+1)^3`` max- or min-filter of ``x [N,C,D,H,W]`` over in-volume neighbours: the
    square filter of every depth slice, then a window of ``2r+1`` slices along the depth
    (max-pooling, padded with -inf: only in-volume slices count)."""
    n, c, d, h, w = x.shape
    planes = _filter(x.transpose(1, 2).reshape(n * d, c, h, w), radius, largest=largest)
    planes = planes.reshape(n, d, c, h, w).transpose(1, 2)
    if d == 1:
        return planes.contiguous()
    k = 2 * radius + 1
    flat = planes.reshape(n * c, 1, d, h * w)
    if not largest:
        flat = -flat
    out = F.max_pool2d(flat, (k, 1), stride=1, padding=(radius, 0))
    return (out if largest else -out).reshape(n, c, d, h, w)


def _pool_filter(x: Tensor, radius: int) -> Tensor:
    """The reference square max-filter: a ``1 x k`` then a ``k x 1`` max-pooling, ``k = 2r+1``."""
    k = 2 * radius + 1
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = F.max_pool2d(flat, (1, k), stride=1, padding=(0, radius))
    flat = F.max_pool2d(flat, (k, 1), stride=1, padding=(radius, 0))
    return flat.reshape(n, c, h, w)


def erode(x: Tensor) -> Tensor:
    """3x3 min-filter of ``x [N,C,H,W]`` over in-image neighbours (border padded with +inf);
    3x3x3 for a volume ``[N,C,D,H,W]``."""
    return _filter(x, 1, largest=False)


def dilate(x: Tensor, radius: int) -> Tensor:
    """Square ``(2r+1)^2`` max-filter of ``x [N,C,H,W]`` over in-image neighbours (a ``(2r+1)^3``
    cube for a volume ``[N,C,D,H,W]``).

    Computed by separable shifted comparisons, so the cost grows with ``log r`` and not ``r^2``;
    the gradient is max-pooling's (see :class:`_SquareFilterFunction`). ``radius = 0`` returns
    ``x`` unchanged. A radius of at least ``max(H, W) - 1`` puts the whole image in every window,
    so it is computed as that radius (the same values and gradient, memory bounded by the image).
    """
    radius = min(radius, max(x.shape[-2:]) - 1)
    if radius <= 0:
        return x
    return _filter(x, radius, largest=True)


def exact_edge(x: Tensor) -> Tensor:
    """Inner boundary of a binary map ``x [N,C,H,W]``: pixels of ``x`` with a 0 among their
    in-image 3x3 neighbours (``x AND NOT erode(x)``; 3x3x3 voxels for ``[N,C,D,H,W]``)."""
    return x - erode(x)


def total(x: Tensor, valid: Tensor | None = None, *, per_image: bool = False) -> Tensor:
    """Per-class sum of ``x [N,C,H,W]`` (or ``[N,C,D,H,W]``) over valid pixels.

    ``valid`` is ``[N,1,H,W]`` (0/1) or None. Returns ``[C]`` (summed over the batch too) or
    ``[N,C]`` with ``per_image``.
    """
    if valid is not None:
        x = x * valid
    spatial = (2, 3) if x.dim() == 4 else tuple(range(2, x.dim()))
    if per_image:
        return x.sum(dim=spatial)
    if torch.compiler.is_compiling():  # per image first: inductor fuses that sum with x's ops
        return x.sum(dim=spatial).sum(dim=0)
    return x.sum(dim=(0, *spatial))


def _in_unit_interval(x: Tensor) -> bool:
    """Whether every entry of ``x`` is in ``[0, 1]`` (False for NaN or an empty tensor)."""
    if x.numel() == 0:
        return False
    lo, hi = torch.aminmax(x.detach())
    return bool(lo >= 0) and bool(hi <= 1)


class _CurveTruthFunction(torch.autograd.Function):
    """``AND(a, b) = h(a) b`` or ``OR(a, b) = h(a) + b - h(a) b`` for ``a [N,C,H,W]`` and a
    constant ``b`` of the same shape (no gradient), in one node: ``h(a)`` and ``h'(a)`` come
    from one curve evaluation and are updated in place, and only the gradient factor
    ``d out / d a`` (``h'(a) b``, or ``h'(a) - h'(a) b``) is kept for the backward, which is one
    product. The values are bit-identical to the unfused operators; the gradient too for a
    binary ``b`` (otherwise within a rounding)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, curve: Curve, kind: str) -> Tensor:
        ctx.in_dtype = a.dtype
        if isinstance(curve, IdentityCurve) and _in_unit_interval(a):
            value, slope = a.detach(), None  # h(a) = a: read only, h' = 1
        else:
            value, slope = curve._value_and_slope(a)
        if kind == "and":
            out = value.mul_(b) if slope is not None else value * b
            factor = slope.mul_(b) if slope is not None else b
        else:
            prod = value * b
            out = (value if slope is not None else value.clone()).add_(b).sub_(prod)
            if slope is not None:
                factor = slope.sub_(torch.mul(slope, b, out=prod))
            else:
                factor = torch.sub(1, b, out=prod)
        ctx.save_for_backward(factor)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (factor,) = ctx.saved_tensors
        return (grad * factor).to(ctx.in_dtype), None, None, None


class _SoftEdgeFunction(torch.autograd.Function):
    """Soft ``XOR(x, e) = OR(x, e) - AND(x, e) = h3(x) + h4(e) - h3(x) h4(e) - h1(x) h2(e)`` of
    ``x`` and its erosion ``e`` (both ``[N,C,H,W]``) in one node: the four curves are evaluated
    with their slopes once, the value is formed as the unfused operators form it (same bits), and
    only the two gradient factors ``h3' (1 - h4) - h1' h2`` (for ``x``) and
    ``h4' (1 - h3) - h2' h1`` (for ``e``) are kept instead of eight curve tensors."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, e: Tensor, curves: tuple[Curve, Curve, Curve, Curve]) -> Tensor:
        (h1, d1), (h2, d2), (h3, d3), (h4, d4) = (
            curve._value_and_slope(arg) for curve, arg in zip(curves, (x, e, x, e)))
        tmp = h3 * h4
        out = (h3 + h4).sub_(tmp)                      # OR
        out.sub_(torch.mul(h1, h2, out=tmp))           # - AND
        factor_x = d3.sub_(torch.mul(d3, h4, out=tmp)).sub_(torch.mul(d1, h2, out=tmp))
        factor_e = d4.sub_(torch.mul(d4, h3, out=tmp)).sub_(torch.mul(d2, h1, out=tmp))
        ctx.save_for_backward(factor_x, factor_e)
        ctx.dtypes = (x.dtype, e.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        factor_x, factor_e = ctx.saved_tensors
        return (grad * factor_x).to(ctx.dtypes[0]), (grad * factor_e).to(ctx.dtypes[1]), None


class ExactOps:
    """Logical operators on binary maps: the program computes the evaluation metric (an
    :class:`OperatorSet`; the methods' shapes are documented there).

    Curve names are accepted and ignored (every curve is the identity on {0, 1}). Divisions are
    exact; a zero denominator gives 0 (such a class is excluded by the ``present`` mask).
    """

    relaxed: ClassVar[bool] = False

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
    """Smooth operators on probabilities: the program computes a differentiable surrogate (an
    :class:`OperatorSet`; the methods' shapes are documented there).

    Args:
        curves: curve name -> callable ``h`` (monotone, ``h(0)=0``, ``h(1)=1``). Every name a
            program asks for must be present.
        eps: added to denominators that depend on the prediction; denominators that count the
            (binary) ground truth are only guarded against zero (``max(count, eps)``), as in the
            Auto Seg-Loss reference.
        float32_dilation: dilate in float32 as the Auto Seg-Loss reference does for BF1 (only for
            bit-level parity with it).
    """

    relaxed: ClassVar[bool] = True

    def __init__(self, curves: Mapping[str, CurveFn], *, eps: float = 1e-8,
                 float32_dilation: bool = False) -> None:
        if not eps > 0:
            raise InvalidValueError(f"eps must be > 0 for a relaxed (differentiable) program, but got {eps=}")
        self.curves = dict(curves)
        self.eps = float(eps)
        self.float32_dilation = bool(float32_dilation)

    def _curve(self, name: str) -> CurveFn:
        try:
            return self.curves[name]
        except KeyError:
            raise InvalidValueError(
                f"the metric program asks for curve {name!r}, but only {sorted(self.curves)} "
                "were given"
            ) from None

    def _h(self, name: str | None, x: Tensor) -> Tensor:
        if name is None:
            return x
        curve = self._curve(name)
        if isinstance(curve, IdentityCurve) and _in_unit_interval(x):
            return x  # clamp would copy x, and its backward costs two comparisons and a where
        return curve(x)

    def _fused(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None],
               kind: str) -> Tensor | None:
        """``AND`` / ``OR`` of a curved ``a`` and a constant, un-curved ``b`` (the ground truth)
        as one autograd node (:class:`_CurveTruthFunction`), or None where that does not apply."""
        if curves[0] is None or curves[1] is not None or not torch.is_grad_enabled():
            return None
        if not a.requires_grad or b.requires_grad or a.shape != b.shape or a.dtype != b.dtype:
            return None
        curve = self._curve(curves[0])
        if not isinstance(curve, Curve):
            return None
        return _CurveTruthFunction.apply(a, b, curve, kind)

    def and_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        fused = self._fused(a, b, curves, "and")
        if fused is not None:
            return fused
        return self._h(curves[0], a) * self._h(curves[1], b)

    def or_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        fused = self._fused(a, b, curves, "or")
        if fused is not None:
            return fused
        ha, hb = self._h(curves[0], a), self._h(curves[1], b)
        return (ha + hb).sub_(ha * hb)  # = ha + hb - ha hb, one full-size temporary fewer

    def edge(self, x: Tensor, curves: tuple[str, str, str, str]) -> Tensor:
        """Soft XOR(x, erode x) = OR(x, erode x) - AND(x, erode x); ``curves`` are the curve names
        of (AND on x, AND on erode x, OR on x, OR on erode x)."""
        eroded = erode(x)
        fns = [self._curve(name) for name in curves]
        if x.requires_grad and torch.is_grad_enabled() and all(isinstance(f, Curve) for f in fns):
            return _SoftEdgeFunction.apply(x, eroded, tuple(fns))
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
