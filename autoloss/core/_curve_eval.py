"""How every curve is evaluated: the :class:`Curve` base, a per-(dtype, device) plan of per-piece
coefficients run chunk by chunk through one elementwise kernel (:class:`_Plan`), and the autograd
function that saves the analytic derivative (:class:`_CurveFunction`).

The curves themselves are in :mod:`autoloss.core._curves`; import both from
:mod:`autoloss.core.relaxations`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from autoloss.errors import InvalidTypeError

# Elements per chunk: on CPU the ~20 temporaries of a chunk stay in cache (measured best at 64K).
_CHUNK, _CHUNK_GPU = 1 << 16, 1 << 22

Coef = float | Tensor  # a coefficient: a python float (same in every piece) or a per-element row


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise InvalidTypeError(f"x must be a floating-point tensor, but got {got}")


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
