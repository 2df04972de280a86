"""Curves as tensors: a pure-functional ``h(x)`` that ``torch.compile`` can trace and fuse.

The eager curve kernel (:mod:`autoloss.core.relaxations`) is hand-fused, chunked and written with
in-place ``out=`` calls; here the same formulas are plain differentiable torch ops on a
coefficient table, so inductor fuses a curve into the kernels around it (softmax, the relaxed
operators, the per-class sums). A curve enters as **data** (:class:`CurveTensors`: a ``table
[pieces, K]`` of per-piece coefficients and the interior ``bounds [pieces - 1]``), never as
Python constants, so one compiled graph serves every curve of the same kind and number of
pieces: every trial of a search.

Per element ``x`` (clamped to ``[0, 1]``), the piece is the number of bounds below ``x`` (the
first piece also holds ``x <= b_1``), its coefficients are picked with ``torch.where``, and the
piece kernel of :class:`~autoloss.core.relaxations.BezierCurve` /
:class:`~autoloss.core.relaxations.LinearCurve`
gives ``h(x)`` and the analytic ``h'(x)`` (0 where ``x`` was clamped). The value returned is
``h + (x - x.detach()) * h'``: numerically ``h`` (the second term is an exact 0 for finite
``x``) with gradient ``h'`` exactly, the derivative the eager kernel's backward uses, rather than
autograd's derivative of the root formula (which would differ where ``t`` is clamped at a
piece end). Values agree with the eager kernel to a few ulp (the eager kernel specialises
coefficients that are equal in every piece, which changes the rounding of ``1 - t``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from autoloss.core.relaxations import Curve, family_of

__all__ = ["CurveTensors", "apply_curve", "curve_signature", "curve_tensors", "value_and_slope"]

_KERNEL_NAMES = {
    "bezier": ("a", "w", "base", "slope", "c", "p", "q", "lam", "mu", "dy", "y0", "k1", "k2"),
    "linear": ("a", "w", "dy", "y0", "slope"),
}


@dataclass(frozen=True)
class CurveTensors:
    """A curve as data: ``kind`` (``"bezier"``, ``"linear"`` or ``"identity"``), ``table
    [pieces, K]`` (the coefficients of :data:`_KERNEL_NAMES[kind]`, one row per piece) and
    ``bounds [pieces - 1]`` (interior piece bounds, non-decreasing). The identity has empty
    tensors."""

    kind: str
    table: Tensor
    bounds: Tensor


def curve_signature(curve: Curve) -> tuple[str, int]:
    """``(kind, pieces)``: what a compiled graph depends on (curves with the same signature
    share one graph; their control points are inputs)."""
    fam = family_of(curve)
    return (fam.kind, fam.graph_size(curve))


def curve_tensors(curve: Curve, dtype: torch.dtype, device: torch.device | str) -> CurveTensors:
    """The :class:`CurveTensors` of ``curve`` in the compute ``dtype`` (float32 or float64)."""
    kind, _ = curve_signature(curve)
    if kind == "identity":
        empty = torch.empty(0, dtype=dtype, device=device)
        return CurveTensors(kind, empty.view(0, 0), empty)
    names, table, bounds = curve.coefficients(dtype, device)
    if names != _KERNEL_NAMES[kind]:  # the eager kernel changed: keep the two in step
        raise RuntimeError(f"{kind} coefficients are {names}, expected {_KERNEL_NAMES[kind]}")
    return CurveTensors(kind, table, bounds)


def _select(x: Tensor, table: Tensor, bounds: Tensor) -> list[Tensor]:
    """Per-element coefficient columns for ``x``: piece ``j`` where ``b_j < x <= b_{j+1}``."""
    columns = list(table[0].unbind(0))
    for j in range(1, table.shape[0]):
        above = x > bounds[j - 1]
        columns = [torch.where(above, row_j, col) for row_j, col in zip(table[j].unbind(0), columns)]
    return columns


def _bezier(x: Tensor, co: list[Tensor]) -> tuple[Tensor, Tensor]:
    """One quadratic piece (formulas in :class:`~autoloss.core.relaxations.BezierCurve`)."""
    a, w, base, slope, c, _p, q, lam, mu, dy, y0, k1, k2 = co
    v = (x - a) / w
    root = ((1 - v) * slope + base).sqrt()                   # S
    z = (v / (root + c)).clamp_max(1.0)
    forward = q > 0                                          # t = z, else 1 - t = z
    t = torch.where(forward, z, 1 - z)
    s = torch.where(forward, 1 - z, z)
    value = y0 + (lam - (s * s) * lam + (t * t) * mu) * dy
    slope_x = (s * k1 + t * k2) / root.clamp_min(torch.finfo(x.dtype).eps)
    return value, slope_x


def _linear(x: Tensor, co: list[Tensor]) -> tuple[Tensor, Tensor]:
    a, w, dy, y0, slope = co
    return ((x - a) / w) * dy + y0, slope.expand_as(x)


def value_and_slope(x: Tensor, curve: CurveTensors) -> tuple[Tensor, Tensor]:
    """``(h(x), h'(x))`` of ``x`` (no gradient), ``h'`` 0 where ``x`` was clamped to ``[0, 1]``."""
    flat = x.detach()
    inside = flat.clamp(0.0, 1.0)
    if curve.kind == "identity":
        return inside, (flat == inside).to(flat.dtype)
    columns = _select(inside, curve.table, curve.bounds)
    value, slope = (_bezier if curve.kind == "bezier" else _linear)(inside, columns)
    return value, slope * (flat == inside)


def apply_curve(x: Tensor, curve: CurveTensors) -> Tensor:
    """``h(x)`` for ``x`` of any shape (float32 or float64, matching the curve's tensors),
    with gradient ``h'(x)`` (0 where ``x`` was clamped to ``[0, 1]``)."""
    if curve.kind == "identity":
        return x.clamp(0.0, 1.0)
    value, slope = value_and_slope(x, curve)
    return value + (x - x.detach()) * slope
