"""Curves h: golden parity with Auto Seg-Loss, independent references, constraints hold."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autoloss.core import _curve_eval
from autoloss.core.relaxations import (
    BezierCurve,
    IdentityCurve,
    LinearCurve,
    curve_from_dict,
    curve_from_raw,
)

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "asl_bezier_curves.npz"
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    if not GOLDEN.is_file():
        pytest.skip(f"golden file {GOLDEN} not found")
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


# ---------------------------------------------------------------------------------------------
# independent references (no shared code with the module)


def bezier_by_bisection(points: list[float], x: np.ndarray) -> np.ndarray:
    """h(x) of the piecewise quadratic Bezier, solving x(t) = x by bisection on t (float64)."""
    pts = [(0.0, 0.0), *zip(points[0::2], points[1::2]), (1.0, 1.0)]
    out = np.zeros_like(x)
    done = x <= 0
    for j in range(0, len(pts) - 2, 2):
        (x0, y0), (x1, y1), (x2, y2) = pts[j:j + 3]
        sel = ~done & (x <= x2)
        lo, hi = np.zeros(sel.sum()), np.ones(sel.sum())
        target = x[sel]
        for _ in range(200):
            mid = (lo + hi) / 2
            xm = (1 - mid) ** 2 * x0 + 2 * mid * (1 - mid) * x1 + mid ** 2 * x2
            below = xm < target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        t = (lo + hi) / 2
        out[sel] = (1 - t) ** 2 * y0 + 2 * t * (1 - t) * y1 + t ** 2 * y2
        done |= sel
    return out


def cumulative(s: np.ndarray) -> np.ndarray:
    """1 - P_k = prod_{j<=k} (1 - s_j)."""
    return 1.0 - np.cumprod(1.0 - s)


def eval_with_grad(curve, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    h = curve(x)
    h.sum().backward()
    return h.detach(), x.grad


# ---------------------------------------------------------------------------------------------
# golden parity: asl_bezier_curves.npz holds h(x) and dh/dx at 501 points of [0, 1] for the published
# Auto Seg-Loss curves, from the reference code (fundamentalvision/Auto-Seg-Loss,
# mmseg/models/losses/auto_seg_loss.py: piecewise quadratic Bezier through (0,0) and (1,1))


def test_golden_curves_match_reference(golden: dict[str, np.ndarray]) -> None:
    x = torch.tensor(golden["x"], dtype=torch.float64)
    names = [k[len("ctrl_"):] for k in golden if k.startswith("ctrl_")]
    assert len(names) == 12
    for name in names:
        curve = BezierCurve(golden[f"ctrl_{name}"].tolist())
        h, dh = eval_with_grad(curve, x)
        np.testing.assert_allclose(h.numpy(), golden[f"h_{name}"], rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(dh.numpy(), golden[f"dh_{name}"], rtol=0, atol=1e-9,
                                   err_msg=name)
        # float32: same curve at float32 precision
        h32, dh32 = eval_with_grad(curve, x.float())
        assert h32.dtype == torch.float32 and dh32.dtype == torch.float32
        np.testing.assert_allclose(h32.double().numpy(), golden[f"h_{name}"], atol=2e-6)
        np.testing.assert_allclose(dh32.double().numpy(), golden[f"dh_{name}"], rtol=1e-4,
                                   atol=1e-4)


def test_golden_theta_splits_into_curves(golden: dict[str, np.ndarray]) -> None:
    """The published theta of each metric is the concatenation of its curves' points."""
    for metric in ("miou", "fwiou", "macc", "gacc", "biou", "bf1"):
        parts = [golden[k] for k in golden if k.startswith(f"ctrl_{metric}_")]
        np.testing.assert_array_equal(np.concatenate(parts), golden[f"theta_{metric}"])


def test_search_raw_to_ctrl_matches_reference(golden: dict[str, np.ndarray]) -> None:
    for key in [k for k in golden if k.startswith("search_mu_raw_")]:
        metric = key[len("search_mu_raw_"):]
        pieces = json.loads(str(golden[f"search_cfg_{metric}"]))["num_pieces"]
        raw, ctrl = golden[key], golden[f"search_mu_ctrl_{metric}"]
        size = BezierCurve.raw_size(pieces)
        assert len(raw) % size == 0
        for i in range(0, len(raw), size):
            curve = BezierCurve.from_raw(raw[i:i + size].tolist(), pieces=pieces)
            np.testing.assert_allclose(curve.points, ctrl[i:i + size], rtol=0, atol=1e-15)
            # and the closed form of the transform, per coordinate
            np.testing.assert_allclose(curve.points[0::2], cumulative(raw[i:i + size][0::2]),
                                       rtol=0, atol=1e-15)
            np.testing.assert_allclose(curve.points[1::2], cumulative(raw[i:i + size][1::2]),
                                       rtol=0, atol=1e-15)


def test_search_init_curves_are_identity_with_the_stable_root(golden) -> None:
    """The search initialisation maps to collinear control points, i.e. h(x) = x. The reference's
    root (m - sqrt(m^2 + (1-2m)u))/(2m-1) cancels for m = 0.500025 and is off by up to 0.186
    (``search_mu_h_reference_*``); we do not match it, the stable root gives y = x."""
    x = torch.tensor(golden["x"], dtype=torch.float64)
    for key in [k for k in golden if k.startswith("search_mu_ctrl_")]:
        metric = key[len("search_mu_ctrl_"):]
        pieces = json.loads(str(golden[f"search_cfg_{metric}"]))["num_pieces"]
        size = BezierCurve.raw_size(pieces)
        reference = golden[f"search_mu_h_reference_{metric}"]
        for j, i in enumerate(range(0, len(golden[key]), size)):
            curve = BezierCurve(golden[key][i:i + size].tolist())
            for dtype, tol in ((torch.float64, 1e-14), (torch.float32, 1e-6)):
                h, dh = eval_with_grad(curve, x.to(dtype))
                np.testing.assert_allclose(h.double().numpy(), golden["x"], atol=tol)
                np.testing.assert_allclose(dh.double().numpy(), 1.0, atol=1e3 * tol)
            if pieces == 2:  # documents the reference bug
                assert np.abs(reference[j] - golden["x"]).max() > 0.18


# ---------------------------------------------------------------------------------------------
# independent references on random curves


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_bezier_matches_bisection(pieces: int) -> None:
    rng = np.random.default_rng(pieces)
    x = np.concatenate([np.linspace(0, 1, 401), rng.random(200)])
    for _ in range(10):
        raw = rng.uniform(0.01, 0.99, BezierCurve.raw_size(pieces))
        curve = BezierCurve.from_raw(raw.tolist(), pieces=pieces)
        h = curve(torch.tensor(x)).numpy()
        np.testing.assert_allclose(h, bezier_by_bisection(curve.points, x), rtol=0, atol=1e-10)


def test_bezier_near_half_ratio_is_accurate() -> None:
    """Control x ratio m = 1/2 +- tiny, where the reference's root form loses its digits."""
    for delta in (0.0, 1e-16, 1e-12, 2.5e-5, -1e-9):
        c = 0.3 * (1 + 2 * delta)  # m = c / 0.6
        curve = BezierCurve([c, 0.1, 0.6, 0.5, 0.8, 0.9])
        x = np.linspace(0, 1, 1001)
        np.testing.assert_allclose(curve(torch.tensor(x)).numpy(),
                                   bezier_by_bisection(curve.points, x), rtol=0, atol=1e-12)


def test_linear_matches_interp() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(0, 1, 401), rng.random(100)])
    for knots in (0, 1, 3, 6):
        curve = LinearCurve.from_raw(rng.random(2 * knots).tolist(), knots=knots)
        xp = [p[0] for p in curve.control_points()]
        yp = [p[1] for p in curve.control_points()]
        for dtype, tol in ((torch.float64, 1e-14), (torch.float32, 1e-6)):
            h, dh = eval_with_grad(curve, torch.tensor(x, dtype=dtype))
            np.testing.assert_allclose(h.double().numpy(), np.interp(x, xp, yp), atol=tol)
            seg = np.clip(np.searchsorted(xp, x, side="left") - 1, 0, len(xp) - 2)
            slope = np.diff(yp) / np.diff(xp)
            np.testing.assert_allclose(dh.double().numpy(), slope[seg], rtol=1e-4)


def test_gradcheck_float64() -> None:
    rng = np.random.default_rng(1)
    for pieces in (1, 2, 3):
        curve = BezierCurve.from_raw(rng.uniform(0.1, 0.9, 2 * (2 * pieces - 1)).tolist(),
                                     pieces=pieces)
        junctions = np.array([p[0] for p in curve.control_points()[::2]])
        x = rng.uniform(0.01, 0.99, 24)
        x = x[np.abs(x[:, None] - junctions[None]).min(1) > 1e-3]
        assert torch.autograd.gradcheck(curve, (torch.tensor(x, requires_grad=True),),
                                        eps=1e-7, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# constraints by construction, for every raw parameter (hypothesis)

unit = st.floats(min_value=0.0, max_value=1.0)


def raw_vectors(size: int):
    return st.lists(unit, min_size=size, max_size=size)


def check_constraints(curve, dtype: torch.dtype) -> None:
    finfo = torch.finfo(dtype)
    knots = torch.tensor([p[0] for p in curve.control_points()], dtype=dtype)
    near = torch.cat([knots, torch.nextafter(knots, torch.zeros_like(knots)),
                      torch.nextafter(knots, torch.ones_like(knots)),
                      torch.tensor([finfo.tiny, 1e-30, 1 - finfo.eps], dtype=dtype)])
    x = torch.cat([torch.linspace(0, 1, 1001, dtype=dtype), near]).clamp(0, 1).unique()  # sorted
    h, dh = eval_with_grad(curve, x)
    assert h.dtype == dtype and dh.dtype == dtype
    ends = curve(torch.tensor([0.0, 1.0], dtype=dtype))
    assert ends[0].item() == 0.0 and ends[1].item() == 1.0, (curve, ends)
    assert h[0].item() == 0.0 and h[-1].item() == 1.0
    assert bool((h[1:] >= h[:-1]).all()), (curve, x[1:][h[1:] < h[:-1]])
    assert bool((h >= 0).all() and (h <= 1).all())
    assert bool(torch.isfinite(dh).all()), (curve, x[~torch.isfinite(dh)])
    assert bool((dh >= 0).all())
    # outside [0, 1]: clamped, zero gradient
    out, dout = eval_with_grad(curve, torch.tensor([-0.5, -finfo.tiny, 1 + finfo.eps, 3.0],
                                                   dtype=dtype))
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert dout.tolist() == [0.0, 0.0, 0.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), pieces=st.sampled_from([1, 2, 3]), dtype=st.sampled_from(DTYPES))
def test_bezier_from_raw_satisfies_constraints(data, pieces: int, dtype: torch.dtype) -> None:
    raw = data.draw(raw_vectors(BezierCurve.raw_size(pieces)))
    curve = BezierCurve.from_raw(raw, pieces=pieces)
    assert curve.num_params() == len(raw) and curve.pieces == pieces
    check_constraints(curve, dtype)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), knots=st.integers(0, 5), dtype=st.sampled_from(DTYPES))
def test_linear_free_knots_satisfies_constraints(data, knots: int, dtype: torch.dtype) -> None:
    raw = data.draw(raw_vectors(LinearCurve.raw_size(knots, fixed_x=False)))
    curve = LinearCurve.from_raw(raw, knots=knots)
    assert curve.num_params() == 2 * knots
    xs = [0.0, *curve.knots_x, 1.0]
    assert all(a < b for a, b in zip(xs, xs[1:]))
    check_constraints(curve, dtype)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), knots_x=st.sampled_from([[0.5], [0.2, 0.4, 0.6, 0.8], [1e-9, 1 - 1e-9]]),
       dtype=st.sampled_from(DTYPES))
def test_linear_fixed_knots_satisfies_constraints(data, knots_x, dtype: torch.dtype) -> None:
    raw = data.draw(raw_vectors(len(knots_x)))
    curve = LinearCurve.from_raw(raw, knots=len(knots_x), knots_x=knots_x)
    assert curve.knots_x == knots_x and curve.num_params() == len(knots_x)
    check_constraints(curve, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("points", [
    [0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 0.5],
    [0.0, 0.0, 0.0, 0.5, 0.0, 1.0],      # first piece a vertical jump at 0
    [1.0, 0.2, 1.0, 0.3, 1.0, 0.4],      # last piece a vertical jump at 1
    [0.3, 0.1, 0.3, 0.2, 0.3, 0.9],      # vertical jump inside
    [0.0, 0.5, 0.5, 0.5, 1.0, 0.5],      # m = 0 and m = 1
    [0.25, 0.0, 0.25, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    # float32: y0 + (y2 - y0) is a rounding tie at the second junction (found by a stress run)
    [0.43916968545809676, 0.18970504196057436, 0.9285129658049018, 0.4222456991669702,
     0.9624970851561236, 0.4222456991669702, 0.9624970851561236, 0.9990998207529765,
     0.9991290777622475, 0.9990998207529765],
])
def test_extreme_control_points_satisfy_constraints(points, dtype) -> None:
    check_constraints(BezierCurve(points), dtype)


# ---------------------------------------------------------------------------------------------
# API: dtypes, shapes, serialisation, errors


def test_identity_curve() -> None:
    curve = IdentityCurve()
    x = torch.linspace(-0.5, 1.5, 41, dtype=torch.float64)
    h, dh = eval_with_grad(curve, x)
    assert torch.equal(h, x.clamp(0, 1))
    assert torch.equal(dh, ((x >= 0) & (x <= 1)).double())
    assert curve.num_params() == 0 and curve.control_points() == [(0.0, 0.0), (1.0, 1.0)]
    assert curve_from_raw("identity", []) == curve


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_shape_dtype_and_layout(dtype) -> None:
    curve = BezierCurve([0.1, 0.4, 0.5, 0.6, 0.7, 0.9])
    x = torch.rand(3, 5, 4, 6, generator=torch.Generator().manual_seed(0)).to(dtype)
    h = curve(x)
    assert h.shape == x.shape and h.dtype == dtype and h.device == x.device
    ref = curve(x.double())
    assert torch.allclose(h.double(), ref, atol=1e-2 if dtype.itemsize == 2 else 1e-6)
    xt = x.transpose(1, 3)  # non-contiguous
    assert torch.equal(curve(xt), h.transpose(1, 3))
    xg = x.clone().requires_grad_(True)
    curve(xg).sum().backward()
    assert xg.grad.dtype == dtype and xg.grad.shape == x.shape
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        curve(torch.ones(3, dtype=torch.long))


def test_no_grad_values_equal_grad_values_and_plans_are_cached() -> None:
    curve = BezierCurve([0.1, 0.4, 0.5, 0.6, 0.7, 0.9])
    x = torch.rand(1000, dtype=torch.float64)
    with torch.no_grad():
        a = curve(x.clone().requires_grad_(True))
    b, _ = eval_with_grad(curve, x)
    assert torch.equal(a, b) and torch.equal(curve(x), a)
    curve(x.float())
    assert len(curve._plans) == 2  # one per (dtype, device), reused by later calls
    curve(x)
    assert len(curve._plans) == 2


def test_chunked_evaluation_equals_whole(monkeypatch) -> None:
    curves = [BezierCurve([0.1, 0.4, 0.5, 0.6, 0.7, 0.9]), BezierCurve([0.2, 0.7]),
              LinearCurve([0.2, 0.5], [0.3, 0.4])]
    x = torch.rand(5, 203, dtype=torch.float64) * 1.2 - 0.1
    whole = [eval_with_grad(c, x) for c in curves]
    monkeypatch.setattr(_curve_eval, "_CHUNK", 64)
    for c, (h, dh) in zip(curves, whole):
        h2, dh2 = eval_with_grad(c, x)
        assert torch.equal(h, h2) and torch.equal(dh, dh2)


def test_gradient_is_first_order_only() -> None:
    curve = BezierCurve([0.1, 0.4, 0.5, 0.6, 0.7, 0.9])
    x = torch.rand(10, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(curve(x).sum(), x, create_graph=True)
    assert not g.requires_grad  # no silently wrong second derivative
    h = curve(x)
    (g,) = torch.autograd.grad(h, x, torch.ones_like(h, requires_grad=True), create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_empty_input() -> None:
    curve = BezierCurve([0.1, 0.4, 0.5, 0.6, 0.7, 0.9])
    x = torch.zeros(0, 3, requires_grad=True)
    assert curve(x).shape == (0, 3)


@pytest.mark.parametrize("curve", [
    IdentityCurve(),
    BezierCurve([0.1, 0.2]),
    BezierCurve([0.1 + 1e-17, 0.2, 1 / 3, 0.5, 0.7, math.pi / 4]),
    BezierCurve.from_raw([0.123456789012345, 0.3, 0.7, 0.1, 0.9, 0.99], pieces=2),
    LinearCurve([0.2, 0.5], [0.1, 0.7]),
    LinearCurve.from_raw([0.3, 0.6, 0.1], knots=3, knots_x=[0.25, 0.5, 0.75]),
    LinearCurve.from_raw([0.3, 0.6, 0.1, 0.9], knots=2),
])
def test_dict_round_trip_is_exact(curve) -> None:
    d = curve.to_dict()
    assert d["kind"] == curve.kind
    text = json.dumps(d)  # plain python types only
    back = curve_from_dict(json.loads(text))
    assert back == curve and back.to_dict() == d and type(back) is type(curve)
    assert back.num_params() == curve.num_params()
    assert back.control_points() == curve.control_points()
    x = torch.rand(100, dtype=torch.float64)
    assert torch.equal(back(x), curve(x))


def test_control_points_and_sizes() -> None:
    curve = BezierCurve([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert curve.control_points() == [(0.0, 0.0), (0.1, 0.2), (0.3, 0.4), (0.5, 0.6), (1.0, 1.0)]
    assert BezierCurve.raw_size(1) == 2 and BezierCurve.raw_size(2) == 6
    assert BezierCurve.raw_size(3) == 10
    assert LinearCurve.raw_size(3, fixed_x=True) == 3
    assert LinearCurve.raw_size(3, fixed_x=False) == 6
    lin = LinearCurve([0.5], [0.25])
    assert lin.control_points() == [(0.0, 0.0), (0.5, 0.25), (1.0, 1.0)]


def test_curve_from_raw_dispatch() -> None:
    raw6 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert curve_from_raw("bezier", raw6) == BezierCurve.from_raw(raw6, pieces=2)
    assert curve_from_raw("bezier", raw6[:2], pieces=1) == BezierCurve.from_raw(raw6[:2], pieces=1)
    assert curve_from_raw("linear", raw6) == LinearCurve.from_raw(raw6, knots=3)
    fixed = curve_from_raw("linear", raw6[:2], knots_x=[0.3, 0.6])
    assert fixed == LinearCurve.from_raw(raw6[:2], knots=2, knots_x=[0.3, 0.6])
    assert fixed.knots_y == [0.1, 0.1 + 0.2 * 0.9]
    with pytest.raises(ValueError, match="did you mean 'bezier'"):
        curve_from_raw("bezeir", raw6)
    with pytest.raises(ValueError, match="raw must have 10"):
        curve_from_raw("bezier", raw6, pieces=3)
    with pytest.raises(ValueError, match=r"raw must have 4 numbers, but got len\(raw\)=3"):
        curve_from_raw("linear", raw6[:3])
    with pytest.raises(ValueError, match="no parameters"):
        curve_from_raw("identity", [0.5])


@pytest.mark.parametrize(("make", "match"), [
    (lambda: BezierCurve([0.1, 0.2, 0.3]), r"points must have an even length.*len\(points\)=3"),
    (lambda: BezierCurve([0.1, 0.2, 0.3, 0.4]), r"points must have an even length.*K odd"),
    (lambda: BezierCurve([]), r"points must have an even length"),
    (lambda: BezierCurve([0.5, 0.2, 0.4, 0.3, 0.6, 0.7]), r"points \(x coordinates\) must be non"),
    (lambda: BezierCurve([0.1, 0.5, 0.2, 0.3, 0.6, 0.7]), r"points \(y coordinates\) must be non"),
    (lambda: BezierCurve([0.1, 1.2]), r"points must hold numbers in \[0, 1\].*points\[1\]=1.2"),
    (lambda: BezierCurve([-0.1, 0.2]), r"points\[0\]=-0.1"),
    (lambda: BezierCurve([float("nan"), 0.2]), r"points\[0\]=nan"),
    (lambda: BezierCurve(["a", 0.2]), r"points must be a sequence of numbers"),
    (lambda: BezierCurve.from_raw([0.1, 0.2], pieces=2), r"raw must have 6 numbers"),
    (lambda: BezierCurve.from_raw([0.1, 1.5], pieces=1), r"raw must hold numbers in \[0, 1\]"),
    (lambda: BezierCurve.from_raw([0.1, 0.5], pieces=0), r"pieces must be an int >= 1"),
    (lambda: LinearCurve([0.5, 0.5], [0.1, 0.2]), r"knots_x must be strictly increasing"),
    (lambda: LinearCurve([0.6, 0.5], [0.1, 0.2]), r"knots_x must be strictly increasing"),
    (lambda: LinearCurve([0.0, 0.5], [0.1, 0.2]), r"knots_x must lie in the open interval"),
    (lambda: LinearCurve([0.5, 1.0], [0.1, 0.2]), r"knots_x must lie in the open interval"),
    (lambda: LinearCurve([0.2, 0.5], [0.3, 0.2]), r"knots_y must be non-decreasing"),
    (lambda: LinearCurve([0.2, 0.5], [0.3]), r"knots_x and knots_y must have the same length"),
    (lambda: LinearCurve([0.2], [1.1]), r"knots_y must hold numbers in \[0, 1\]"),
    (lambda: LinearCurve.from_raw([0.1], knots=2, knots_x=[0.2, 0.4]), r"raw must have 2"),
    (lambda: LinearCurve.from_raw([0.1, 0.2], knots=2, knots_x=[0.2]), r"knots_x must have"),
    (lambda: LinearCurve.from_raw([0.1], knots=-1), r"knots must be an int >= 0"),
    (lambda: curve_from_dict({"kind": "bezir", "points": [0.1, 0.2]}), r"did you mean 'bezier'"),
    (lambda: curve_from_dict({"kind": "bezier", "point": [0.1, 0.2]}), r"did you mean 'points'"),
    (lambda: curve_from_dict({"kind": "linear", "knots_x": [0.5]}), r"\['knots_y'\] are missing"),
    (lambda: curve_from_dict({"points": [0.1, 0.2]}), r"'kind' entry"),
])
def test_invalid_construction_names_the_argument(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_curves_are_immutable_views() -> None:
    pts = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    curve = BezierCurve(pts)
    pts[0] = 0.9
    curve.points[1] = 0.9
    curve.to_dict()["points"][2] = 0.9
    assert curve.points == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


FAMILY_SHAPES = [("bezier", {"pieces": 1}), ("bezier", {"pieces": 3}), ("linear", {"knots": 3}),
                 ("linear", {"knots_x": (0.25, 0.6)}), ("identity", {})]


@pytest.mark.parametrize(("kind", "shape"), FAMILY_SHAPES, ids=lambda v: str(v))
def test_every_relaxation_family_keeps_its_contract(kind, shape):
    """For each family and shape: the identity point gives h(x) = x, any raw numbers in [0, 1]
    give a curve with h(0) = 0, h(1) = 1 that never decreases, the file form round-trips, and
    the family of the curve is the family."""
    from autoloss.core.relaxations import FAMILIES, curve_from_dict, family, family_of

    fam = family(kind)
    assert FAMILIES[kind] is fam and fam.kind == kind
    size = fam.raw_size(**shape)
    identity = fam.identity_raw(**shape)
    assert len(identity) == size and fam.searchable == (size > 0)
    x = torch.linspace(0, 1, 257, dtype=torch.float64)
    assert torch.allclose(fam.from_raw(identity, **shape)(x), x, atol=1e-12)
    gen = torch.Generator().manual_seed(len(kind) + size)
    for raw in [torch.rand(size, generator=gen).tolist() for _ in range(5)] + [[0.0] * size,
                                                                              [1.0] * size]:
        curve = fam.from_raw(raw, **shape)
        y = curve(x)
        assert float(y[0]) == 0.0 and float(y[-1]) == 1.0 and bool((y[1:] >= y[:-1]).all())
        assert curve_from_dict(curve.to_dict()) == curve
        assert family_of(curve) is fam and curve.kind == kind


def test_family_errors_name_the_known_kinds():
    from autoloss.core.relaxations import curve_from_dict, family

    with pytest.raises(ValueError, match=r"kind must be one of \['bezier', 'identity', "
                                         r"'linear'\], but got 'bezeir'; did you mean 'bezier'"):
        family("bezeir")
    with pytest.raises(ValueError, match="unknown keys \\['pointz'\\] for a 'bezier' curve"):
        curve_from_dict({"kind": "bezier", "pointz": [0.5, 0.5]})
