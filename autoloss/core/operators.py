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

Morphology (erosion, dilation, the exact edge) is shared by both sets and lives in
:mod:`autoloss.core.morphology`; per-class sums of a volume ``[N,C,D,H,W]`` run over ``D, H, W``.
The relaxed operators fuse the common cases (a curve of the prediction with the ground truth, the
soft edge) into single autograd nodes that keep one gradient factor instead of every curve value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from autoloss.core.morphology import dilate, erode, exact_edge
from autoloss.core.relaxations import Curve, IdentityCurve
from autoloss.errors import InvalidValueError

__all__ = [
    "CurveFn",
    "ExactOps",
    "OperatorSet",
    "RelaxedOps",
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
