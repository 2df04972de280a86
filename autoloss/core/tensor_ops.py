"""The relaxed operator set on curves given as tensors: what a compiled surrogate runs on.

:class:`TensorOps` is :class:`~autoloss.core.operators.RelaxedOps` with every operator written as
plain differentiable torch ops (no custom autograd nodes, no in-place ``out=`` calls) and the
curves given as :class:`~autoloss.core.tensor_curves.CurveTensors`, so ``torch.compile`` traces a
metric program through it into one graph whose inputs include the curve parameters::

    AND(a, b) = h_a(a) * h_b(b)
    OR(a, b)  = h_a(a) + h_b(b) - h_a(a) * h_b(b)
    edge(x)   = OR(x, erode x) - AND(x, erode x)

Morphology is the one of :mod:`autoloss.core.morphology` (which switches to traceable filters with
max-pooling's gradient while compiling). The values equal :class:`RelaxedOps`'s up to rounding
(the curves to a few ulp), and so do the gradients (every curve's gradient is its analytic
slope, as in the eager kernel).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from autoloss.core.morphology import erode
from autoloss.core.operators import RelaxedOps
from autoloss.core.tensor_curves import CurveTensors, apply_curve, value_and_slope
from autoloss.errors import InvalidValueError

__all__ = ["TensorOps"]


class TensorOps(RelaxedOps):
    """Relaxed operators on probabilities with curves as tensors (see the module docstring).

    Args:
        curves: curve name -> :class:`~autoloss.core.tensor_curves.CurveTensors`.
        eps, float32_dilation: as for :class:`~autoloss.core.operators.RelaxedOps` (the ratios,
            ``present`` and ``dilate`` are inherited unchanged).
    """

    def __init__(self, curves: Mapping[str, CurveTensors], *, eps: float = 1e-8,
                 float32_dilation: bool = False) -> None:
        super().__init__({}, eps=eps, float32_dilation=float32_dilation)
        self.tensors = dict(curves)

    def _h(self, name: str | None, x: Tensor) -> Tensor:
        if name is None:
            return x
        try:
            curve = self.tensors[name]
        except KeyError:
            raise InvalidValueError(f"the metric program asks for curve {name!r}, but only "
                           f"{sorted(self.tensors)} were given") from None
        return apply_curve(x, curve)

    def and_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        return self._h(curves[0], a) * self._h(curves[1], b)

    def or_(self, a: Tensor, b: Tensor, curves: tuple[str | None, str | None]) -> Tensor:
        ha, hb = self._h(curves[0], a), self._h(curves[1], b)
        return ha + hb - ha * hb

    def edge(self, x: Tensor, curves: tuple[str, str, str, str]) -> Tensor:
        """Soft ``XOR(x, e) = h3(x) + h4(e) - h3(x) h4(e) - h1(x) h2(e)``, ``e = erode x``;
        ``curves`` as for :meth:`RelaxedOps.edge`. As the eager kernel's ``_SoftEdgeFunction``:
        the value as :meth:`or_` minus :meth:`and_` form it (same bits), the gradient through
        the two factors ``h3' (1 - h4) - h1' h2`` (for ``x``) and ``h4' (1 - h3) - h2' h1``
        (for ``e``), so a compiled backward keeps (or recomputes) two tensors instead of the
        eight curve values and slopes."""
        eroded = erode(x)
        if not (x.requires_grad or eroded.requires_grad) or any(
                name is None or name not in self.tensors for name in curves):
            return self.or_(x, eroded, (curves[2], curves[3])) - self.and_(x, eroded, curves[:2])
        (h1, d1), (h2, d2), (h3, d3), (h4, d4) = (
            value_and_slope(arg, self.tensors[name]) for name, arg in zip(curves, (x, eroded, x, eroded)))
        value = (h3 + h4 - h3 * h4) - h1 * h2
        factor_x = d3 - d3 * h4 - d1 * h2
        factor_e = d4 - d4 * h3 - d2 * h1
        return value + (x - x.detach()) * factor_x + (eroded - eroded.detach()) * factor_e
