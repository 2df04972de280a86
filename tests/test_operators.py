"""Operators: the fast paths (shift-and-compare filters with max-pooling's gradient, masked
totals, fused relaxed AND / OR) against the plain reference computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoloss.core.morphology import dilate, erode
from autoloss.core.operators import RelaxedOps, total
from autoloss.core.relaxations import BezierCurve, IdentityCurve, LinearCurve


def _pool_dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Reference: one square max-pooling (its gradient goes to the first arg-max, row-major)."""
    if radius == 0:
        return x
    n, c, h, w = x.shape
    out = F.max_pool2d(x.reshape(n * c, 1, h, w), 2 * radius + 1, stride=1, padding=radius)
    return out.reshape(n, c, h, w)


def _pool_erode(x: torch.Tensor) -> torch.Tensor:
    return -_pool_dilate(-x, 1)


def _inputs(kind: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 13, 17, generator=gen, dtype=dtype)
    if kind == "binary":  # many ties: the gradient must pick max-pooling's arg-max
        return (x > 0.6).to(dtype)
    if kind == "levels":
        return (x * 4).floor() / 4
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["random", "binary", "levels"])
@pytest.mark.parametrize("op", ["erode", "dilate0", "dilate1", "dilate2", "dilate5"])
def test_filters_match_max_pooling_values_and_gradients(dtype, kind, op) -> None:
    if op == "erode":
        fast, ref = erode, _pool_erode
    else:
        radius = int(op[-1])
        fast, ref = (lambda x: dilate(x, radius)), (lambda x: _pool_dilate(x, radius))
    base = _inputs(kind, dtype)
    weight = torch.randn(base.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    x_fast, x_ref = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    y_fast, y_ref = fast(x_fast), ref(x_ref)
    assert torch.equal(y_fast, y_ref)
    (y_fast * weight).sum().backward()
    (y_ref * weight).sum().backward()
    atol = 1e-12 if dtype == torch.float64 else 1e-5  # only the order of the sums differs
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=0, atol=atol)
    with torch.no_grad():
        assert torch.equal(fast(base), y_ref)


def test_filter_gradient_stays_inside_the_image_for_infinite_windows() -> None:
    x = torch.full((1, 1, 6, 7), float("-inf"))
    x[0, 0, 4, 5] = 0.5
    x.requires_grad_(True)
    y = dilate(x, 2)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert float(x.grad.sum()) == y.numel()  # every output's gradient lands on some pixel


def test_filter_gradient_is_finite_and_float32_for_half_precision_inputs() -> None:
    x = torch.rand(1, 2, 9, 9).to(torch.bfloat16).requires_grad_(True)
    y = dilate(x, 2)
    assert y.dtype == torch.bfloat16
    y.sum().backward()
    ref = x.detach().clone().requires_grad_(True)
    _pool_dilate(ref, 2).sum().backward()
    assert torch.equal(x.grad, ref.grad)


@pytest.mark.parametrize("per_image", [False, True])
def test_total_equals_the_masked_sum_with_its_gradient(per_image: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    valid = (torch.rand(3, 1, 5, 6, generator=gen) > 0.3).double()
    dims = (2, 3) if per_image else (0, 2, 3)
    got = total(x, valid, per_image=per_image)
    want = (x * valid).sum(dim=dims)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0)
    weight = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    (grad_got,) = torch.autograd.grad((got * weight).sum(), x)
    (grad_want,) = torch.autograd.grad((want * weight).sum(), x)
    assert torch.equal(grad_got, grad_want)
    with torch.no_grad():
        torch.testing.assert_close(total(x, valid, per_image=per_image), want, rtol=1e-15, atol=0)
    empty = total(x[:0], valid[:0], per_image=per_image)
    assert empty.shape == (0, 4) if per_image else torch.equal(empty, torch.zeros(4, dtype=torch.float64))


CURVES = {
    "bezier2": BezierCurve([0.00056972844, 0.64372045, 0.338589169, 0.70554336, 0.625281252, 0.779551927]),
    "bezier1": BezierCurve([0.8113003373146057, 0.8526162505149841]),
    "linear": LinearCurve([0.3, 0.6], [0.1, 0.8]),
    "identity": IdentityCurve(),
}


def _unfused(curve, a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    ha = curve(a)
    return ha * b if kind == "and" else ha + b - ha * b


@pytest.mark.parametrize("name", sorted(CURVES))
@pytest.mark.parametrize("kind", ["and", "or"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spread", [1.0, 1.4])  # 1.4: some inputs outside [0, 1] (clamped)
def test_fused_and_or_match_the_plain_formula(name, kind, dtype, spread) -> None:
    """On a binary ground truth the fused node gives the same bits, value and gradient."""
    gen = torch.Generator().manual_seed(0)
    base = (torch.rand(2, 3, 8, 9, generator=gen, dtype=dtype) - 0.5) * spread + 0.5
    b = (torch.rand(2, 3, 8, 9, generator=gen) > 0.5).to(dtype)
    weight = torch.randn(base.shape, generator=gen, dtype=dtype)
    ops = RelaxedOps({"h": CURVES[name]})
    a_fused, a_ref = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    op = ops.and_ if kind == "and" else ops.or_
    got = op(a_fused, b, ("h", None))
    want = _unfused(CURVES[name], a_ref, b, kind)
    assert got.dtype == want.dtype and torch.equal(got, want)
    (got * weight).sum().backward()
    (want * weight).sum().backward()
    assert torch.equal(a_fused.grad, a_ref.grad)


def test_fused_or_with_a_soft_truth_is_within_rounding() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 8, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 3, 8, 9, generator=gen, dtype=torch.float64)
    curve = CURVES["bezier2"]
    got = RelaxedOps({"h": curve}).or_(a, b, ("h", None))
    (grad_got,) = torch.autograd.grad(got.sum(), a)
    want = _unfused(curve, a, b, "or")
    (grad_want,) = torch.autograd.grad(want.sum(), a)
    assert torch.equal(got, want)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-14, atol=1e-15)
    assert torch.isfinite(grad_got).all()


def test_identity_curve_passes_unit_inputs_through_with_the_clamp_gradient() -> None:
    ops = RelaxedOps({"h": IdentityCurve()})
    inside = torch.rand(2, 3, 4, 4, requires_grad=True)
    assert ops._h("h", inside) is inside
    outside = (torch.rand(2, 3, 4, 4) * 2 - 0.5).requires_grad_(True)
    out = ops._h("h", outside)
    assert torch.equal(out, outside.detach().clamp(0, 1))
    out.sum().backward()
    assert torch.equal(outside.grad, ((outside >= 0) & (outside <= 1)).float())


@pytest.mark.parametrize("name", sorted(CURVES))
def test_value_and_slope_equal_the_curve_and_its_autograd_gradient(name: str) -> None:
    curve = CURVES[name]
    x = (torch.rand(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 1.2 - 0.1)
    value, slope = curve._value_and_slope(x)
    xg = x.clone().requires_grad_(True)
    out = curve(xg)
    out.sum().backward()
    assert torch.equal(value, out.detach())
    assert torch.equal(slope.to(x.dtype), xg.grad)


@pytest.mark.parametrize("curved", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_soft_edge_matches_the_plain_formula(curved: bool, dtype: torch.dtype) -> None:
    names = ("edge_and_x", "edge_and_eroded", "edge_or_x", "edge_or_eroded")
    points = ([0.81, 0.85], [0.17, 0.03], [0.21, 0.45], [0.08, 0.88])
    curves = {n: BezierCurve(p) if curved else IdentityCurve() for n, p in zip(names, points)}
    gen = torch.Generator().manual_seed(0)
    base = torch.softmax(torch.randn(2, 3, 9, 11, generator=gen, dtype=dtype), dim=1)
    weight = torch.randn(base.shape, generator=gen, dtype=dtype)
    x_fused, x_ref = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    got = RelaxedOps(curves).edge(x_fused, names)
    e = erode(x_ref)
    h1, h2, h3, h4 = (curves[n](arg) for n, arg in zip(names, (x_ref, e, x_ref, e)))
    want = (h3 + h4 - h3 * h4) - h1 * h2
    assert torch.equal(got, want)
    (got * weight).sum().backward()
    (want * weight).sum().backward()
    atol = 1e-14 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(x_fused.grad, x_ref.grad, rtol=0, atol=atol)


def _operator_sets():
    from autoloss.core.operators import ExactOps
    from autoloss.core.tensor_curves import curve_tensors
    from autoloss.core.tensor_ops import TensorOps

    names = ("inter", "union", "e0", "e1", "e2", "e3")
    curve = BezierCurve.from_raw([0.2, 0.7, 0.4, 0.6, 0.3, 0.5], pieces=2)
    return {
        "exact": ExactOps(),
        "relaxed": RelaxedOps(dict.fromkeys(names, curve)),
        "tensor": TensorOps({n: curve_tensors(curve, torch.float64, "cpu") for n in names}),
    }


@pytest.mark.parametrize("name", ["exact", "relaxed", "tensor"])
def test_every_operator_set_keeps_the_documented_contract(name: str) -> None:
    """Contract of :class:`autoloss.core.operators.OperatorSet` for each implementation: the protocol
    holds, maps keep their ``[N,C,H,W]`` shape, per-class ratios and masks keep ``[C]``, and on
    binary maps every set agrees with the logical operators."""
    from autoloss.core.morphology import exact_edge
    from autoloss.core.operators import OperatorSet

    ops = _operator_sets()[name]
    assert isinstance(ops, OperatorSet) and ops.relaxed == (name != "exact")
    gen = torch.Generator().manual_seed(0)
    a = (torch.rand(2, 3, 9, 11, generator=gen, dtype=torch.float64) > 0.5).double()
    b = (torch.rand(2, 3, 9, 11, generator=gen, dtype=torch.float64) > 0.5).double()
    soft = torch.rand(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    for x in (a, soft):
        for out in (ops.and_(x, b, ("inter", None)), ops.or_(x, b, ("union", None)),
                    ops.edge(x, ("e0", "e1", "e2", "e3")), ops.dilate(x, 2)):
            assert out.shape == x.shape and out.dtype == x.dtype
    # on binary maps, every set is the logical operator set
    assert torch.equal(ops.and_(a, b, ("inter", None)), a * b)
    assert torch.equal(ops.or_(a, b, ("union", None)), torch.maximum(a, b))
    assert torch.equal(ops.edge(a, ("e0", "e1", "e2", "e3")), exact_edge(a))
    num, den = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([2.0, 4.0, 0.0])
    for fn in (ops.ratio, ops.count_ratio):
        out = fn(num, den)
        assert out.shape == (3,) and torch.isfinite(out).all()
        assert out[:2].tolist() == pytest.approx([0.5, 0.5])
    present = ops.present(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.5, 0.0]))
    assert present.dtype == torch.bool and present.shape == (3,)
    assert present.tolist() == ([True, True, False] if name == "exact" else [True, False, False])
