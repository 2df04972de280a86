"""The three curves, :class:`IdentityCurve`, :class:`BezierCurve` and :class:`LinearCurve`: their
checks, the cumulative transform from raw search numbers, and their fused elementwise kernels.

Evaluation is shared (:mod:`autoloss.core._curve_eval`); import the curves from
:mod:`autoloss.core.relaxations`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import torch
from torch import Tensor

from autoloss.core._curve_eval import Coef, Curve, _check_x, _Plan
from autoloss.errors import InvalidValueError


def _floats(name: str, values: Sequence[float], size: int | None = None) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InvalidValueError(f"{name} must be a sequence of numbers, but got {values!r}") from None
    if size is not None and len(out) != size:
        raise InvalidValueError(f"{name} must have {size} numbers, but got len({name})={len(out)}")
    for i, v in enumerate(out):
        if not 0.0 <= v <= 1.0:  # also rejects NaN
            raise InvalidValueError(f"{name} must hold numbers in [0, 1], but got {name}[{i}]={v!r}")
    return out


def _non_decreasing(name: str, values: Sequence[float], *, strict: bool = False) -> None:
    for i in range(1, len(values)):
        if values[i] < values[i - 1] or (strict and values[i] == values[i - 1]):
            kind = "strictly increasing" if strict else "non-decreasing"
            raise InvalidValueError(f"{name} must be {kind}, but got {values[i - 1]!r} then "
                             f"{values[i]!r} (entries {i - 1} and {i})")


def _cumulative(raw: Sequence[float]) -> list[float]:
    """``c_1 = s_1, c_k = c_{k-1} + s_k (1 - c_{k-1})``: maps ``[0,1]^k`` onto non-decreasing
    sequences in ``[0, 1]`` (``1 - c_k = prod_{j<=k} (1 - s_j)``)."""
    return list(accumulate(raw, lambda prev, s: prev + s * (1.0 - prev), initial=0.0))[1:]


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidValueError(f"{name} must be an int >= {minimum}, but got {name}={value!r}")
    return int(value)


def _rise(y0: Tensor, y1: Tensor) -> Tensor:
    """``y1 - y0``, nudged so ``y0 + rise`` rounds to ``y1``, never above (rounding ties)."""
    rise, up = y1 - y0, torch.tensor(float("inf"), dtype=y0.dtype)
    while y0 + rise > y1:
        rise = torch.nextafter(rise, torch.zeros_like(rise))
    while y0 + rise < y1 and y0 + torch.nextafter(rise, up) <= y1:
        rise = torch.nextafter(rise, up)
    return rise


def _axpy(buf: Tensor, v: Tensor, c: Coef) -> None:
    """``buf += v * c`` for a float or tensor ``c``."""
    if isinstance(c, Tensor):
        buf.addcmul_(v, c)
    elif c != 0:
        buf.add_(v, alpha=c)


def _bezier_kernel(x: Tensor, out: Tensor, dout: Tensor | None, co: dict[str, Coef],
                   work: Sequence[Tensor]) -> None:
    """One quadratic piece, elementwise (see :class:`BezierCurve` for the formulas)."""
    v, sq, t, s, tmp = work
    one = co["one"]
    torch.sub(x, co["a"], out=v).div_(co["w"])                    # v in [0, 1]
    torch.sub(one, v, out=sq).mul_(co["slope"]).add_(co["base"]).sqrt_()   # S
    torch.add(sq, co["c"], out=t)
    torch.div(v, t, out=t).clamp_max_(1.0)                        # z = v / (c + S)
    if isinstance(co["q"], Tensor):                               # t = p + q z, s = 1 - t
        torch.sub(one, t.mul_(co["q"]).add_(co["p"]), out=s)
    elif co["q"] < 0:
        t, s = s, t
        torch.sub(one, s, out=t)
    else:
        torch.sub(one, t, out=s)
    torch.mul(s, s, out=tmp).mul_(co["lam"])
    torch.sub(co["lam"], tmp, out=tmp)                            # lam (1 - s^2)
    _axpy(tmp, torch.mul(t, t, out=v), co["mu"])                  # + mu t^2
    if isinstance(co["dy"], Tensor) and isinstance(co["y0"], Tensor):
        torch.addcmul(co["y0"], tmp, co["dy"], out=out)           # h = y0 + dy g(t)
    else:
        torch.mul(tmp, co["dy"], out=out).add_(co["y0"])
    if dout is not None:
        torch.mul(s, co["k1"], out=dout)
        _axpy(dout, t, co["k2"])
        dout.div_(sq.clamp_min_(co["smin"]))                      # (k1 s + k2 t) / S


def _linear_kernel(x: Tensor, out: Tensor, dout: Tensor | None, co: dict[str, Coef],
                   work: Sequence[Tensor]) -> None:
    torch.sub(x, co["a"], out=out).div_(co["w"]).mul_(co["dy"]).add_(co["y0"])  # y0 + dy u
    if dout is not None:
        dout.zero_().add_(co["slope"])


class IdentityCurve(Curve):
    """``h(x) = clamp(x, 0, 1)``: the plain (un-bent) operand."""

    kind = "identity"

    def __call__(self, x: Tensor) -> Tensor:
        _check_x(x)
        return x.clamp(0.0, 1.0)

    def _value_and_slope(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach()
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return x.clamp(0.0, 1.0), ((x >= 0) & (x <= 1)).to(cdtype)  # clamp's gradient

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "identity"}

    def control_points(self) -> list[tuple[float, float]]:
        return [(0.0, 0.0), (1.0, 1.0)]

    def num_params(self) -> int:
        return 0


class BezierCurve(Curve):
    """Piecewise quadratic Bezier through ``(0,0)`` and ``(1,1)`` (Auto Seg-Loss, sec. 3.2).

    Args:
        points: absolute control-point coordinates ``[x1, y1, ..., xK, yK]`` (the reference's
            ``theta``), ``K`` odd, in ``[0, 1]``, x and y each non-decreasing. With ``P_0 = (0,0)``
            and ``P_{K+1} = (1,1)`` the points are read in groups ``(P_0,P_1,P_2), (P_2,P_3,P_4),
            ...``: ``(K+1)/2`` quadratic pieces through the even (junction) points.

    For ``x`` in a piece ``(a, b]`` (the first also holds ``x <= b``), ``u = (x-a)/(b-a)`` and
    ``m = (x_1-a)/(b-a)``, ``x(t) = 2t(1-t) m + t^2 = u`` is solved by the stable root ``t = u /
    (m+S)``, ``S = sqrt(m^2 + (1-2m) u)`` (the reference's equal ``(m-S)/(2m-1)`` cancels near
    ``m = 1/2``), as ``1-t = (1-u)/(1-m+S)`` if ``m < 1/2``; then ``h = y0 + (y2-y0) (lam (1 -
    (1-t)^2) + (1-lam) t^2)``, ``lam = (y1-y0)/(y2-y0)`` (the Bernstein form). Every step is
    monotone in ``x`` and exact at the piece ends (``S`` a few ulp low, ``t`` clamped to 1).
    ``h'(x) = ((y1-y0)(1-t) + (y2-y1) t) / ((b-a) S)`` with ``S >= eps``: vertical tangents
    (``m`` = 0 or 1) get a large, finite gradient. Zero-width pieces (jumps) get only x = 0, 1.
    """

    kind = "bezier"

    def __init__(self, points: Sequence[float]) -> None:
        super().__init__()
        values = _floats("points", points)
        if len(values) % 4 != 2:
            raise InvalidValueError("points must have an even length 2K with K odd (K=1: 1 piece, K=3: "
                             f"2 pieces, K=2p-1: p pieces), but got len(points)={len(values)}")
        _non_decreasing("points (x coordinates)", values[0::2])
        _non_decreasing("points (y coordinates)", values[1::2])
        self._points = tuple(values)

    points = property(lambda self: list(self._points), doc="The absolute control points.")
    pieces = property(lambda self: (len(self._points) + 2) // 4, doc="Number of pieces.")

    @staticmethod
    def raw_size(pieces: int) -> int:
        """Number of raw search parameters of a ``pieces``-piece curve: ``2 (2 pieces - 1)``."""
        return 2 * (2 * _count("pieces", pieces, 1) - 1)

    @classmethod
    def from_raw(cls, raw: Sequence[float], *, pieces: int) -> BezierCurve:
        """Curve from raw search parameters ``s in [0,1]^{2(2 pieces - 1)}``, laid out like
        ``points``, by the cumulative transform per coordinate (the Auto Seg-Loss search script):
        ``P_1 = s_1``, ``P_k = P_{k-1} + s_k (1 - P_{k-1})``."""
        values = _floats("raw", raw, cls.raw_size(pieces))
        xs, ys = _cumulative(values[0::2]), _cumulative(values[1::2])
        return cls([c for xy in zip(xs, ys) for c in xy])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bezier", "points": list(self._points)}

    def control_points(self) -> list[tuple[float, float]]:
        inner = list(zip(self._points[0::2], self._points[1::2]))
        return [(0.0, 0.0), *inner, (1.0, 1.0)]

    def num_params(self) -> int:
        return len(self._points)

    def _plan(self, dtype: torch.dtype, device: torch.device) -> _Plan:
        xs, ys = torch.tensor(self.control_points(), dtype=dtype).T  # rounded to dtype
        one = torch.ones((), dtype=dtype)
        eps = torch.finfo(dtype).eps
        shrink = one - 8 * eps  # S a few ulp low, so the far end gives t >= 1
        kmax = torch.finfo(dtype).max * eps / 8  # slope cap: h' <= 2 kmax / eps stays finite
        columns = []
        for j in range(self.pieces):
            (x0, x1, x2), (y0, y1, y2) = xs[2 * j:2 * j + 3], ys[2 * j:2 * j + 3]
            dy, d1, d2 = _rise(y0, y2), y1 - y0, y2 - y1
            lam = (d1 / dy).clamp(0, 1) if dy > 0 else one / 2
            w = x2 - x0
            if w > 0:
                m = ((x1 - x0) / w).clamp(0, 1)
                cm = one - m
                sq_m, sq_cm = m * m, cm * cm
                if m >= 0.5:  # t = u / (m + S), u = (x - x0) / w
                    geo = [x0, w, sq_cm * shrink, (sq_m - sq_cm) * shrink, m, 0.0, 1.0]
                else:  # 1 - t = (1 - u) / (1 - m + S), 1 - u = (x - x2) / (-w)
                    geo = [x2, -w, sq_m * shrink, (sq_cm - sq_m) * shrink, cm, 1.0, -1.0]
                k1, k2 = ((d / w).clamp_max(kmax) for d in (d1, d2))
            else:  # vertical jump: only x = 0 or x = 1 land here; t = x
                geo = [0.0, 1.0, 0.25 * shrink, 0.0, 0.5, 0.0, 1.0]
                k1 = k2 = 0.0
            columns.append([float(v) for v in (*geo, lam, one - lam, dy, y0, k1, k2)])
        names = ("a", "w", "base", "slope", "c", "p", "q", "lam", "mu", "dy", "y0", "k1", "k2")
        return _Plan(names, columns, _bezier_kernel, bounds=xs[2:-1:2].tolist(),
                     constants={"smin": torch.finfo(dtype).eps}, dtype=dtype, device=device)


class LinearCurve(Curve):
    """Monotone piecewise-linear curve through ``(0,0)``, the interior knots and ``(1,1)``.

    Args:
        knots_x: interior knot x-coordinates, strictly increasing in the open interval (0, 1).
        knots_y: their y-coordinates, non-decreasing in [0, 1] (same length).
        fixed_x: the knots' x were fixed in the search (only the y are parameters); this only
            changes :meth:`num_params`.

    ``h(x) = y_j + (y_{j+1} - y_j) (x - x_j)/(x_{j+1} - x_j)`` on ``(x_j, x_{j+1}]``.
    """

    kind = "linear"

    def __init__(self, knots_x: Sequence[float], knots_y: Sequence[float], *,
                 fixed_x: bool = False) -> None:
        super().__init__()
        xs, ys = _floats("knots_x", knots_x), _floats("knots_y", knots_y)
        if len(xs) != len(ys):
            raise InvalidValueError(f"knots_x and knots_y must have the same length, but got "
                             f"{len(xs)} and {len(ys)}")
        if xs and not (0.0 < xs[0] and xs[-1] < 1.0):
            raise InvalidValueError(f"knots_x must lie in the open interval (0, 1), but got {xs}")
        _non_decreasing("knots_x", xs, strict=True)
        _non_decreasing("knots_y", ys)
        self._xs, self._ys, self._fixed_x = tuple(xs), tuple(ys), bool(fixed_x)

    knots_x = property(lambda self: list(self._xs), doc="Interior knot x-coordinates.")
    knots_y = property(lambda self: list(self._ys), doc="Interior knot y-coordinates.")

    @staticmethod
    def raw_size(knots: int, *, fixed_x: bool) -> int:
        """``knots`` raw parameters with fixed knot positions, ``2 knots`` with searched ones."""
        return _count("knots", knots, 0) * (1 if fixed_x else 2)

    @classmethod
    def from_raw(cls, raw: Sequence[float], *, knots: int,
                 knots_x: Sequence[float] | None = None) -> LinearCurve:
        """Curve from raw search parameters in ``[0, 1]``.

        With ``knots_x`` given (fixed knots), ``raw`` holds ``knots`` y-parameters mapped by the
        cumulative transform ``y_k = y_{k-1} + s_k (1 - y_{k-1})``. Without, ``raw`` is ``[s^x_1..
        s^x_k, s^y_1..s^y_k]``: the y as above, the x as ``x_i = i g + (1 - (k+1) g) c_i`` with
        ``c`` the cumulative transform of ``s^x`` and ``g = 1e-3/(k+1)``, so knots are strictly
        increasing in (0, 1), at least ``g`` apart, for every ``raw``.
        """
        fixed = knots_x is not None
        values = _floats("raw", raw, cls.raw_size(knots, fixed_x=fixed))
        if fixed:
            return cls(_floats("knots_x", knots_x, knots), _cumulative(values), fixed_x=True)
        gap = 1e-3 / (knots + 1)
        cx = _cumulative(values[:knots])
        xs = [(i + 1) * gap + (1.0 - (knots + 1) * gap) * c for i, c in enumerate(cx)]
        return cls(xs, _cumulative(values[knots:]))

    def to_dict(self) -> dict[str, Any]:
        fixed = {"fixed_x": True} if self._fixed_x else {}
        return {"kind": "linear", "knots_x": list(self._xs), "knots_y": list(self._ys), **fixed}

    def control_points(self) -> list[tuple[float, float]]:
        return [(0.0, 0.0), *zip(self._xs, self._ys), (1.0, 1.0)]

    def num_params(self) -> int:
        return self.raw_size(len(self._xs), fixed_x=self._fixed_x)

    def _plan(self, dtype: torch.dtype, device: torch.device) -> _Plan:
        xs, ys = torch.tensor(self.control_points(), dtype=dtype).T  # rounded to dtype
        columns = []
        for j in range(len(xs) - 1):
            w, dy = xs[j + 1] - xs[j], _rise(ys[j], ys[j + 1])
            if w > 0:
                slope = (dy / w).clamp_max(torch.finfo(dtype).max)
                columns.append([float(v) for v in (xs[j], w, dy, ys[j], slope)])
            else:  # knots merged by rounding to this dtype: only x = 0 or 1 land here
                columns.append([0.0, 1.0, float(dy), float(ys[j]), 0.0])
        return _Plan(("a", "w", "dy", "y0", "slope"), columns, _linear_kernel,
                     bounds=xs[1:-1].tolist(), constants={}, dtype=dtype, device=device)


def cumulative_inverse(values: Sequence[float]) -> list[float]:
    """Inverse of the cumulative transform ``c_k = c_{k-1} + s_k (1 - c_{k-1})``:
    ``s_k = (c_k - c_{k-1}) / (1 - c_{k-1})`` (``s_k = 0`` once ``c_{k-1} = 1``, where any ``s_k``
    gives the same point)."""
    out, prev = [], 0.0
    for c in values:
        out.append(0.0 if prev >= 1.0 else min(max((c - prev) / (1.0 - prev), 0.0), 1.0))
        prev = c
    return out
