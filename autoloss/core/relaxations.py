"""Monotone curves ``h: [0,1] -> [0,1]`` with ``h(0) = 0``, ``h(1) = 1``: the relaxations.

Auto Seg-Loss (Li et al., "Auto Seg-Loss: Searching Metric Surrogates for Semantic
Segmentation", ICLR 2021, sec. 3) relaxes a metric's logical operators with parameterised curves,
e.g. ``AND(p, g) = h(p) * g``. Two constraints keep the search sane, and here both hold **by
construction** for every parameter value (never by rejection), in floating point too: the truth
table (``h(0) = 0``, ``h(1) = 1``) and monotonicity (``h`` non-decreasing).

- :class:`BezierCurve`: piecewise quadratic Bezier through ``(0,0)`` and ``(1,1)`` (the paper's
  choice); the search maps raw ``s in [0,1]^k`` to control points by a cumulative transform.
- :class:`LinearCurve`: monotone piecewise linear on fixed or searched interior knots.
- :class:`IdentityCurve`: ``h(x) = x``.

A curve maps a tensor of any shape (clamped to ``[0, 1]``) to one of the same shape, dtype and
device, differentiably in the input (curve parameters are constants). Curves are immutable;
``to_dict`` / :func:`curve_from_dict` round-trip exactly.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean

__all__ = ["FAMILIES", "BezierCurve", "BezierFamily", "Curve", "IdentityCurve", "IdentityFamily",
           "LinearCurve", "LinearFamily", "RelaxationFamily", "cumulative_inverse",
           "curve_from_dict", "curve_from_raw", "family", "family_of"]

# Elements per chunk: on CPU the ~20 temporaries of a chunk stay in cache (measured best at 64K).
_CHUNK, _CHUNK_GPU = 1 << 16, 1 << 22

Coef = float | Tensor  # a coefficient: a python float (same in every piece) or a per-element row


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


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise InvalidTypeError(f"x must be a floating-point tensor, but got {got}")


def _rise(y0: Tensor, y1: Tensor) -> Tensor:
    """``y1 - y0``, nudged so ``y0 + rise`` rounds to ``y1``, never above (rounding ties)."""
    rise, up = y1 - y0, torch.tensor(float("inf"), dtype=y0.dtype)
    while y0 + rise > y1:
        rise = torch.nextafter(rise, torch.zeros_like(rise))
    while y0 + rise < y1 and y0 + torch.nextafter(rise, up) <= y1:
        rise = torch.nextafter(rise, up)
    return rise


class Curve:
    """A monotone curve on ``[0, 1]`` with ``h(0) = 0`` and ``h(1) = 1``. Subclasses define
    ``kind``, ``to_dict``, ``control_points``, ``num_params`` and ``_plan`` (per-piece
    coefficients and an elementwise kernel); evaluation is shared."""

    kind: str = ""

    def __init__(self) -> None:
        self._plans: dict[tuple[torch.dtype, torch.device], _Plan] = {}

    def __call__(self, x: Tensor) -> Tensor:
        """``h(x)`` for ``x`` of any shape (clamped to ``[0, 1]``); same shape, dtype, device.
        The gradient w.r.t. ``x`` is the analytic ``h'(x)`` (finite everywhere; 0 where ``x`` was
        clamped), first order only. Subclasses provide ``_plan(dtype, device) -> _Plan``."""
        _check_x(x)
        if x.requires_grad and torch.is_grad_enabled():
            return _CurveFunction.apply(x, self)
        return self._evaluate(x, need_grad=False)[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain python types only; :func:`curve_from_dict` inverts it exactly."""
        raise NotImplementedError

    def control_points(self) -> list[tuple[float, float]]:
        """The points that define the curve, ``(0, 0)`` and ``(1, 1)`` included (for plots)."""
        raise NotImplementedError

    def num_params(self) -> int:
        """Number of raw search parameters (0 for the identity)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def _value_and_slope(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(h(x), h'(x))`` for ``x`` of any shape, outside autograd, as new tensors the caller
        may change in place: ``h`` in ``x``'s dtype, ``h'`` in the compute dtype (float64 for
        float64 ``x``, else float32) and 0 where ``x`` was clamped, exactly what ``__call__``'s
        backward multiplies by. (Lets fused operators keep one gradient factor.)"""
        _check_x(x)
        out, dout = self._evaluate(x.detach(), need_grad=True)
        return out, dout  # need_grad=True, so dout is a tensor

    def _cached_plan(self, dtype: torch.dtype, device: torch.device) -> _Plan:
        plan = self._plans.get((dtype, device)) or self._plan(dtype, device)
        return self._plans.setdefault((dtype, device), plan)

    def coefficients(self, dtype: torch.dtype, device: torch.device | str = "cpu"
                     ) -> tuple[tuple[str, ...], Tensor, Tensor]:
        """The curve as data: ``(names, table [pieces, len(names)], bounds [pieces - 1])``, the
        per-piece coefficients and interior piece bounds of the eager kernel in ``dtype``
        (what :mod:`autoloss.core.tensor_curves` evaluates under ``torch.compile``). Curves of one
        ``kind`` and number of pieces give tensors of the same shapes."""
        plan = self._cached_plan(dtype, torch.device(device))
        table = torch.tensor(plan.all_columns, dtype=dtype, device=device)
        return plan.names, table, torch.tensor(plan.bounds, dtype=dtype, device=device)

    def _evaluate(self, x: Tensor, *, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        """``(h(x), h'(x) or None)``, computed in float64 for float64 ``x``, else float32."""
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        flat = x.detach().reshape(-1).to(cdtype)
        out, dout = self._cached_plan(cdtype, x.device).run(flat, need_grad=need_grad)
        return out.view(x.shape).to(x.dtype), (None if dout is None else dout.view(x.shape))


class _Plan:
    """Evaluation of a piecewise curve for one (dtype, device): piece ``j`` (coefficients
    ``columns[j]``) is ``(b_j, b_{j+1}]`` of the interior ``bounds`` (the first also holds
    ``x <= b_1``; a bound of 1 moves one ulp down so ``x = 1`` lands in the last piece).
    Coefficients equal in all pieces are floats, the others are picked per element by
    ``sum_j column_j * onehot_j`` (exact), then ``kernel`` runs; chunked so temporaries stay in
    cache. (``torch.bucketize`` + ``index_select`` measured 20-50x slower per element.)"""

    def __init__(self, names: Sequence[str], columns: list[list[float]],
                 kernel: Callable[..., None], *, bounds: list[float], constants: dict[str, float],
                 dtype: torch.dtype, device: torch.device) -> None:
        self.kernel, self.dtype, self.device = kernel, dtype, device
        self.pieces = len(columns)
        self.names, self.all_columns = tuple(names), columns  # Curve.coefficients
        by_name = dict(zip(names, zip(*columns)))
        self.scalars: dict[str, Coef] = {**constants, **{
            k: v[0] for k, v in by_name.items() if all(c == v[0] for c in v)}}
        self.scalars["one"] = torch.ones((), dtype=dtype, device=device)
        self.varying = [k for k in names if k not in self.scalars]
        table = torch.tensor([by_name[k] for k in self.varying] or [[0.0] * self.pieces],
                             dtype=dtype, device=device)
        self.columns = table.T.unsqueeze(-1).unbind(0)  # per piece: [rows, 1]
        below_one = torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
        self.bounds = [min(b, below_one.item()) for b in bounds]

    def run(self, flat: Tensor, *, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        """``(h, h' or None)`` of a flat tensor (computation dtype), chunk by chunk."""
        n = flat.numel()
        out = torch.empty_like(flat)
        dout = torch.empty_like(flat) if need_grad else None
        if n == 0:
            return out, dout
        lo, hi = torch.aminmax(flat) if need_grad else (0, 1)
        outside = not (bool(lo >= 0) and bool(hi <= 1))  # NaN counts as outside
        chunk = min(n, _CHUNK if flat.device.type == "cpu" else _CHUNK_GPU)
        work = torch.empty((6 + self.pieces + len(self.varying), chunk), dtype=self.dtype,
                           device=self.device)
        slots = self._slots(work, chunk)
        for start in range(0, n, chunk):
            c = min(chunk, n - start)
            if c < chunk:  # the last, shorter chunk
                slots = self._slots(work, c)
            stop, src = start + c, flat[start:start + c]
            d = dout[start:stop] if dout is not None else None
            self._chunk(src, out[start:stop], d, slots, outside)
        return out, dout

    def _slots(self, work: Tensor, c: int) -> dict[str, Any]:
        """Views of the ``work [6 + pieces + rows, chunk]`` buffer for a chunk of ``c`` elements
        (made once per chunk size: the per-chunk loop then only calls kernels)."""
        p = self.pieces
        selected = work[6 + p:, :c]
        coefs = dict(self.scalars)
        coefs.update(zip(self.varying, selected.unbind(0)))
        return {"x": work[0, :c], "temps": work[1:6, :c].unbind(0), "onehot": work[6:6 + p, :c].unbind(0),
                "selected": selected, "coefs": coefs, "same": work[1, :c]}

    def _chunk(self, src: Tensor, out: Tensor, dout: Tensor | None, slots: dict[str, Any],
               outside: bool) -> None:
        """Evaluate one chunk: clamp into ``slots["x"]``, pick the per-piece coefficient rows
        (``sum_j column_j * onehot_j``, exact), run the kernel."""
        xb, onehot = slots["x"], slots["onehot"]
        torch.clamp(src, 0.0, 1.0, out=xb)
        if self.varying:
            p = self.pieces
            torch.le(xb, self.bounds[0], out=onehot[0])
            for j in range(1, p):  # cumulative [x > b_j], then differences -> one-hot
                torch.gt(xb, self.bounds[j - 1], out=onehot[j])
            for j in range(1, p - 1):
                onehot[j].sub_(onehot[j + 1])
            selected = slots["selected"]  # = table @ onehot, exact; faster than mm here
            torch.mul(self.columns[0], onehot[0], out=selected)
            for j in range(1, p):
                selected.addcmul_(self.columns[j], onehot[j])
        self.kernel(xb, out, dout, slots["coefs"], slots["temps"])
        if outside and dout is not None:
            dout.mul_(torch.eq(src, xb, out=slots["same"]))  # clamped (or NaN) input: no gradient


class _CurveFunction(torch.autograd.Function):
    """``h(x)`` with the analytic derivative saved in the forward (one multiply in backward)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, curve: Curve) -> Tensor:
        out, dout = curve._evaluate(x, need_grad=True)
        ctx.save_for_backward(dout)
        ctx.in_dtype = x.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (dout,) = ctx.saved_tensors
        return (grad * dout).to(ctx.in_dtype), None


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


class RelaxationFamily:
    """One kind of curve, and all the rest of autoloss needs to know of it: the ``kind`` its
    files and search spaces name it by, its class, the keys of its file form
    (:meth:`from_dict`), and for a search its raw numbers in ``[0, 1]``: how many
    (:meth:`raw_size`), the curve they give (:meth:`from_raw`) and those of the identity
    (:meth:`identity_raw`). A curve's *shape* is what fixes its number of parameters: ``pieces``
    (bezier), ``knots`` and ``knots_x`` (linear; ``knots_x`` given: fixed knot positions); a
    family ignores the shape options of the others. Every family is in :data:`FAMILIES`."""

    kind: ClassVar[str]
    curve_type: ClassVar[type[Curve]]
    file_keys: ClassVar[tuple[str, ...]] = ()  # required keys of to_dict, besides "kind"
    optional_file_keys: ClassVar[tuple[str, ...]] = ()
    shape_keys: ClassVar[tuple[str, ...]] = ()  # the shape options of a search-space entry

    @property
    def searchable(self) -> bool:
        """Whether a search space can tune it (it has raw numbers)."""
        return bool(self.shape_keys)

    def raw_size(self, *, pieces: int | None = None, knots: int | None = None,
                 knots_x: Sequence[float] | None = None) -> int:
        """Number of raw search numbers of a curve of this shape."""
        raise NotImplementedError

    def from_raw(self, raw: Sequence[float], *, pieces: int | None = None,
                 knots: int | None = None, knots_x: Sequence[float] | None = None) -> Curve:
        """The curve of raw search numbers ``raw`` (``raw_size`` of them, in ``[0, 1]``)."""
        raise NotImplementedError

    def identity_raw(self, *, pieces: int | None = None, knots: int | None = None,
                     knots_x: Sequence[float] | None = None) -> list[float]:
        """The raw numbers whose curve is the identity ``h(x) = x``."""
        raise NotImplementedError

    def graph_size(self, curve: Curve) -> int:
        """What, beside the kind, a compiled graph of this curve depends on (its pieces)."""
        return 0

    def from_dict(self, fields: Mapping[str, Any]) -> Curve:
        """The curve of its file form without ``kind``; unknown or missing keys are errors."""
        allowed = self.file_keys + self.optional_file_keys
        if unknown := sorted(set(fields) - set(allowed)):
            raise InvalidValueError(f"unknown keys {unknown} for a {self.kind!r} curve, which "
                                    f"takes {list(allowed)}" + did_you_mean(unknown[0], allowed))
        if missing := [k for k in self.file_keys if k not in fields]:
            raise InvalidValueError(f"a {self.kind!r} curve needs keys {list(self.file_keys)}, "
                                    f"but {missing} are missing in {dict(fields)!r}")
        return self.curve_type(**fields)


class BezierFamily(RelaxationFamily):
    """Piecewise quadratic Bezier curves (:class:`BezierCurve`), shaped by ``pieces``."""

    kind, curve_type, file_keys, shape_keys = "bezier", BezierCurve, ("points",), ("pieces",)

    def raw_size(self, *, pieces: int | None = None, knots: int | None = None,
                 knots_x: Sequence[float] | None = None) -> int:
        return BezierCurve.raw_size(pieces)

    def from_raw(self, raw: Sequence[float], *, pieces: int | None = None,
                 knots: int | None = None, knots_x: Sequence[float] | None = None) -> Curve:
        return BezierCurve.from_raw(list(raw), pieces=pieces)

    def identity_raw(self, *, pieces: int | None = None, knots: int | None = None,
                     knots_x: Sequence[float] | None = None) -> list[float]:
        """Control points ``P_k = (k/2p, k/2p)`` give ``s_k = 1 / (2p - k + 1)``."""
        p = _count("pieces", pieces, 1)
        return [v for k in range(1, 2 * p) for v in (1 / (2 * p - k + 1),) * 2]

    def graph_size(self, curve: Curve) -> int:
        return curve.pieces


class LinearFamily(RelaxationFamily):
    """Monotone piecewise linear curves (:class:`LinearCurve`), shaped by ``knots`` (searched
    positions) or ``knots_x`` (fixed positions)."""

    kind, curve_type = "linear", LinearCurve
    file_keys, optional_file_keys = ("knots_x", "knots_y"), ("fixed_x",)
    shape_keys = ("knots", "knots_x")

    def raw_size(self, *, pieces: int | None = None, knots: int | None = None,
                 knots_x: Sequence[float] | None = None) -> int:
        return LinearCurve.raw_size(len(knots_x) if knots_x is not None else knots,
                                    fixed_x=knots_x is not None)

    def from_raw(self, raw: Sequence[float], *, pieces: int | None = None,
                 knots: int | None = None, knots_x: Sequence[float] | None = None) -> Curve:
        raw = list(raw)
        if knots_x is not None:
            return LinearCurve.from_raw(raw, knots=len(knots_x), knots_x=list(knots_x))
        return LinearCurve.from_raw(raw, knots=knots if knots is not None
                                    else (len(raw) + 1) // 2)  # odd length: an error

    def identity_raw(self, *, pieces: int | None = None, knots: int | None = None,
                     knots_x: Sequence[float] | None = None) -> list[float]:
        """Knots on the diagonal: fixed ones get ``y = x``; ``k`` searched ones, raw ``[s^x...,
        s^y...]``, sit at ``x_i = y_i = (i+1)/(k+1)``."""
        if knots_x is not None:
            return cumulative_inverse(list(knots_x))
        steps = cumulative_inverse([(i + 1) / (knots + 1) for i in range(knots)])
        return steps + steps

    def graph_size(self, curve: Curve) -> int:
        return len(curve.knots_x) + 1


class IdentityFamily(RelaxationFamily):
    """The identity ``h(x) = x`` (:class:`IdentityCurve`): no parameters, not searched."""

    kind, curve_type = "identity", IdentityCurve

    def raw_size(self, *, pieces: int | None = None, knots: int | None = None,
                 knots_x: Sequence[float] | None = None) -> int:
        return 0

    def from_raw(self, raw: Sequence[float], *, pieces: int | None = None,
                 knots: int | None = None, knots_x: Sequence[float] | None = None) -> Curve:
        if list(raw):
            raise InvalidValueError(f"an identity curve has no parameters, but got "
                                    f"len(raw)={len(list(raw))}")
        return IdentityCurve()

    def identity_raw(self, *, pieces: int | None = None, knots: int | None = None,
                     knots_x: Sequence[float] | None = None) -> list[float]:
        return []


#: every curve family, by the ``kind`` its files and search spaces name it by
FAMILIES: dict[str, RelaxationFamily] = {
    "bezier": BezierFamily(), "linear": LinearFamily(), "identity": IdentityFamily()}


def family(kind: Any) -> RelaxationFamily:
    """The family named ``kind``, or an error naming the known kinds."""
    if kind not in FAMILIES:
        raise InvalidValueError(f"kind must be one of {sorted(FAMILIES)}, but got {kind!r}"
                                + did_you_mean(str(kind), list(FAMILIES)))
    return FAMILIES[kind]


def family_of(curve: Curve) -> RelaxationFamily:
    """The family of a curve object (a :class:`Curve` subclass outside :data:`FAMILIES` is an
    error)."""
    for fam in FAMILIES.values():
        if isinstance(curve, fam.curve_type):
            return fam
    raise InvalidTypeError(f"curve must be one of "
                           f"{[f.curve_type.__name__ for f in FAMILIES.values()]}, but got "
                           f"{type(curve).__name__}")


def curve_from_dict(d: Mapping[str, Any]) -> Curve:
    """Inverse of ``Curve.to_dict``: ``{"kind": "bezier", "points": [...]}``,
    ``{"kind": "linear", "knots_x": [...], "knots_y": [...]}`` or ``{"kind": "identity"}``."""
    if not isinstance(d, Mapping) or "kind" not in d:
        raise InvalidValueError(f"d must be a mapping with a 'kind' entry, but got {d!r}")
    return family(d["kind"]).from_dict({k: v for k, v in d.items() if k != "kind"})


def curve_from_raw(kind: str, raw: Sequence[float], *, pieces: int = 2,
                   knots_x: Sequence[float] | None = None) -> Curve:
    """Curve of ``kind`` from raw search parameters in ``[0, 1]`` (what a sampler proposes):
    ``bezier`` with ``pieces`` pieces; ``linear`` with fixed ``knots_x`` (``len(raw)`` of them)
    or ``len(raw) / 2`` searched knots (``pieces`` unused); ``identity`` with empty ``raw``."""
    return family(kind).from_raw(raw, pieces=pieces, knots_x=knots_x)
