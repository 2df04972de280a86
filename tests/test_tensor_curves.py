"""The traceable forms the compiled surrogates run on, checked eagerly (no compilation): curves
as tensors, the scan/gather filters and the tensor operator set against the eager kernels."""

from __future__ import annotations

import pytest
import torch

from autoloss.core.morphology import _square_filter, _SquareFilterFunction
from autoloss.core.operators import RelaxedOps, one_hot
from autoloss.core.programs import BUILTIN_PROGRAMS
from autoloss.core.relaxations import BezierCurve, IdentityCurve, LinearCurve, curve_from_raw
from autoloss.core.tensor_curves import apply_curve, curve_signature, curve_tensors
from autoloss.core.tensor_ops import TensorOps
from autoloss.core.traced_filters import _TracedFilterFunction, traced_filter

DTYPES = [torch.float32, torch.float64]


def curves() -> list:
    gen = torch.Generator().manual_seed(0)
    return [
        BezierCurve([0.00056972844, 0.64372045, 0.338589169, 0.70554336, 0.625281252, 0.779551927]),
        BezierCurve([0.69037557, 0.01306289, 0.834170515, 0.962431815, 0.942998269, 0.980038125]),
        BezierCurve([0.8113003373146057, 0.8526162505149841]),
        BezierCurve([0.25, 0.25, 0.5, 0.5, 0.75, 0.75]),
        BezierCurve([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]),  # a vertical jump: zero-width pieces
        curve_from_raw("bezier", torch.rand(10, generator=gen).tolist(), pieces=3),
        LinearCurve([0.3, 0.7], [0.1, 0.9]),
        LinearCurve([0.2], [0.6], fixed_x=True),
        IdentityCurve(),
    ]


def with_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_curve_tensors_match_the_eager_kernel(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.rand(5000, generator=gen), torch.tensor([0.0, 1.0, -0.5, 1.5, 0.5])])
    x = x.to(dtype)
    ulp = torch.finfo(dtype).eps
    for curve in curves():
        value, grad = with_grad(curve, x)
        value_t, grad_t = with_grad(lambda v, c=curve: apply_curve(v, curve_tensors(c, dtype, "cpu")), x)
        assert value_t.dtype == dtype
        assert float((value - value_t).abs().max()) <= 4 * ulp, curve
        assert torch.allclose(grad_t, grad, rtol=64 * ulp, atol=0), curve  # analytic slope
        assert float(grad_t[-3]) == 0.0 and float(grad_t[-2]) == 0.0  # clamped inputs


def test_curves_of_one_kind_and_pieces_have_tensors_of_one_shape() -> None:
    gen = torch.Generator().manual_seed(2)
    made = [curve_from_raw("bezier", torch.rand(6, generator=gen).tolist()) for _ in range(3)]
    shapes = {tuple(curve_tensors(c, torch.float32, "cpu").table.shape) for c in made}
    assert shapes == {(2, 13)} and {curve_signature(c) for c in made} == {("bezier", 2)}
    assert curve_signature(LinearCurve([0.5], [0.5])) == ("linear", 2)
    assert curve_signature(IdentityCurve()) == ("identity", 0)
    with pytest.raises(TypeError, match="curve must be"):
        curve_signature(lambda v: v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("radius", "largest"), [(1, False), (2, True), (5, True)])
def test_traced_filter_equals_the_eager_filter(dtype: torch.dtype, radius: int,
                                               largest: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 13, 17, generator=gen, dtype=dtype)
    x[:, :, 4:9, 2:12] = 0.5  # plateaus: ties go to the first extreme in row-major order
    x[0, 1] = torch.round(x[0, 1] * 3) / 3
    weight = torch.rand(2, 3, 13, 17, generator=gen, dtype=dtype)
    expected, expected_grad = with_grad(
        lambda v: _SquareFilterFunction.apply(v, radius, largest) * weight, x)
    got, got_grad = with_grad(lambda v: _TracedFilterFunction.apply(v, radius, largest) * weight, x)
    assert torch.equal(got, expected)
    assert torch.allclose(got_grad, expected_grad, rtol=8 * torch.finfo(dtype).eps, atol=0)
    assert torch.equal(traced_filter(x, radius, largest=largest),
                       _square_filter(x, radius, largest=largest)[0])  # no grad: values only


@pytest.mark.parametrize("metric", sorted(BUILTIN_PROGRAMS))
def test_tensor_ops_give_the_relaxed_statistics(metric: str) -> None:
    """Every program's statistics and gradients on the tensor operator set (as the compiled
    graph computes them, here run eagerly) equal those of the eager operators."""
    gen = torch.Generator().manual_seed(4)
    program = BUILTIN_PROGRAMS[metric]
    given = {name: curve_from_raw("bezier", torch.rand(6, generator=gen).tolist())
             for name in program.curves}
    logits = torch.randn(2, 4, 12, 12, dtype=torch.float64, generator=gen)
    labels = torch.randint(0, 4, (2, 12, 12), generator=gen)
    valid = torch.rand(2, 12, 12, generator=gen) > 0.1
    gt = one_hot(labels, 4, valid=valid, dtype=torch.float64)
    mask = valid.unsqueeze(1).double()
    tensors = {n: curve_tensors(c, torch.float64, "cpu") for n, c in given.items()}

    def stats(ops, x):
        out = program.run_stats(ops, torch.softmax(x, 1), gt, mask, tol=2, drop_bg=False)
        return torch.stack([v.sum() for v in out.values()])

    expected, expected_grad = with_grad(lambda x: stats(RelaxedOps(given), x), logits)
    got, got_grad = with_grad(lambda x: stats(TensorOps(tensors), x), logits)
    assert torch.allclose(got, expected, rtol=1e-13, atol=0)
    assert torch.allclose(got_grad, expected_grad, rtol=1e-10, atol=1e-15)
