"""Lovasz-Softmax and Lovasz hinge: golden parity, an independent loop reference, edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss.losses.lovasz import (
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
    lovasz_hinge,
    lovasz_softmax,
)

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
SOFTMAX_FILES = sorted(GOLDEN.glob("lovasz_softmax_*.npz")) if GOLDEN.is_dir() else []
HINGE_FILES = sorted(GOLDEN.glob("lovasz_hinge_*.npz")) if GOLDEN.is_dir() else []


# ---------------------------------------------------------------- independent loop reference
def _lovasz_1d(errors: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """sum_k e_(k) w_k for one set and class, straight from the definition."""
    order = torch.argsort(errors.detach(), descending=True)
    e, g = errors[order], fg[order].double()
    total = g.sum()
    jac = 1 - (total - torch.cumsum(g, 0)) / (total + torch.cumsum(1 - g, 0))
    w = torch.cat([jac[:1], jac[1:] - jac[:-1]]).to(e.dtype)
    return (e * w).sum()


def _ref_softmax(logits, labels, *, per_image, classes, ignore):
    probs = torch.softmax(logits, dim=1)
    c = logits.shape[1]
    sets = ([(probs[i:i + 1], labels[i:i + 1]) for i in range(len(labels))] if per_image
            else [(probs, labels)])
    out = []
    for p, y in sets:
        p = p.permute(0, 2, 3, 1).reshape(-1, c)
        y = y.reshape(-1)
        if ignore is not None:
            p, y = p[y != ignore], y[y != ignore]
        if len(y) == 0:
            out.append(logits.sum() * 0)
            continue
        chosen = list(range(c)) if isinstance(classes, str) else classes
        losses = []
        for k in chosen:
            fg = y == k
            if classes == "present" and not bool(fg.any()):
                continue
            losses.append(_lovasz_1d((fg.to(p.dtype) - p[:, k]).abs(), fg))
        out.append(torch.stack(losses).mean() if losses else logits.sum() * 0)
    return torch.stack(out).mean()


def _ref_hinge(logits, labels, *, per_image, ignore):
    sets = ([(logits[i], labels[i]) for i in range(len(labels))] if per_image
            else [(logits, labels)])
    out = []
    for x, y in sets:
        x, y = x.reshape(-1), y.reshape(-1)
        if ignore is not None:
            x, y = x[y != ignore], y[y != ignore]
        if len(y) == 0:
            out.append(logits.sum() * 0)
            continue
        errors = 1 - x * (2 * y.to(x.dtype) - 1)
        order = torch.argsort(errors.detach(), descending=True)
        g = y[order].double()
        total = g.sum()
        jac = 1 - (total - torch.cumsum(g, 0)) / (total + torch.cumsum(1 - g, 0))
        w = torch.cat([jac[:1], jac[1:] - jac[:-1]]).to(x.dtype)
        out.append((torch.relu(errors[order]) * w).sum())
    return torch.stack(out).mean()


def _case(seed=0, n=3, c=5, h=7, w=9, ignore=None, ignore_frac=0.15):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, c, (n, h, w), generator=gen)
    labels[labels == 1] = 2  # class 1 absent
    if ignore is not None:
        labels[torch.rand(n, h, w, generator=gen) < ignore_frac] = ignore
    return logits, labels


# ---------------------------------------------------------------- golden parity
def _golden_cases(files):
    for path in files:
        data = np.load(path)
        for key in data.files:
            if key.startswith("cfg_"):
                yield pytest.param(path, key[4:], id=f"{path.stem}-{key[4:]}")


@pytest.mark.parametrize(("path", "cfg"), list(_golden_cases(SOFTMAX_FILES + HINGE_FILES)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_golden(path: Path, cfg: str, dtype: torch.dtype) -> None:
    data = np.load(path)
    kwargs = json.loads(str(data[f"cfg_{cfg}"]))
    options = {"per_image": kwargs["per_image"], "ignore_index": kwargs["ignore"]}
    if "classes" in kwargs:
        options["classes"] = kwargs["classes"]
    fn = lovasz_softmax if "softmax" in path.stem else lovasz_hinge
    logits = torch.tensor(data["logits"], dtype=dtype, requires_grad=True)
    loss = fn(logits, torch.tensor(data["labels"]), **options)
    loss.backward()
    ref_loss, ref_grad = float(data[f"loss_{cfg}"]), data[f"grad_{cfg}"]
    scale = float(np.abs(ref_grad).max())
    assert loss.dtype == dtype
    if dtype == torch.float64:
        assert abs(loss.item() - ref_loss) <= 5e-7
        np.testing.assert_allclose(logits.grad.numpy(), ref_grad, rtol=0, atol=1e-7 + 1e-5 * scale)
    else:
        assert loss.item() == pytest.approx(ref_loss, rel=2e-6)
        np.testing.assert_allclose(logits.grad.numpy(), ref_grad, rtol=0, atol=2e-6 * scale)


# ---------------------------------------------------------------- against the loop reference
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", [0, 1, 3]])
@pytest.mark.parametrize("ignore", [None, 4, 255])
def test_softmax_matches_loop_reference(per_image, classes, ignore) -> None:
    logits, labels = _case(seed=3, ignore=ignore)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    loss = lovasz_softmax(x1, labels, per_image=per_image, classes=classes, ignore_index=ignore)
    ref = _ref_softmax(x2, labels, per_image=per_image, classes=classes, ignore=ignore)
    loss.backward()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-14)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-13)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("ignore", [None, 255, -1])
def test_hinge_matches_loop_reference(per_image, ignore) -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 6, 7, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 2, (3, 6, 7), generator=gen)
    if ignore is not None:
        labels[torch.rand(3, 6, 7, generator=gen) < 0.2] = ignore
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    lovasz_hinge(x1, labels, per_image=per_image, ignore_index=ignore).backward()
    _ref_hinge(x2, labels, per_image=per_image, ignore=ignore).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-13)
    assert float(lovasz_hinge(logits, labels, per_image=per_image, ignore_index=ignore)) == \
        pytest.approx(float(_ref_hinge(logits, labels, per_image=per_image, ignore=ignore)))


def test_hinge_accepts_channel_dim() -> None:
    logits, labels = torch.randn(2, 5, 5), torch.randint(0, 2, (2, 5, 5))
    assert float(lovasz_hinge(logits.unsqueeze(1), labels)) == float(lovasz_hinge(logits, labels))


# ---------------------------------------------------------------- semantics and edge cases
def test_absent_class_with_all_gives_max_probability() -> None:
    logits, labels = _case(seed=1, n=1)
    probs = torch.softmax(logits, dim=1)
    loss = lovasz_softmax(logits, labels, classes=[1])  # class 1 is absent
    assert loss.item() == pytest.approx(float(probs[:, 1].max()), rel=1e-14)


def test_ignored_class_index_counts_under_all() -> None:
    logits, labels = _case(seed=2, n=2, c=4, ignore=3, ignore_frac=0.3)
    valid = labels != 3
    expected_c3 = float(torch.softmax(logits, 1)[:, 3][valid].max())
    every = lovasz_softmax(logits, labels, classes="all", ignore_index=3)
    others = lovasz_softmax(logits, labels, classes=[0, 1, 2], ignore_index=3)
    assert float(every) == pytest.approx((3 * float(others) + expected_c3) / 4, rel=1e-12)


def test_perfect_prediction_gives_zero() -> None:
    labels = torch.randint(0, 3, (2, 6, 6))
    logits = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double() * 60.0
    assert float(lovasz_softmax(logits, labels)) < 1e-20
    assert float(lovasz_hinge(torch.where(labels > 0, 5.0, -5.0), (labels > 0).long())) == 0.0


@pytest.mark.parametrize("per_image", [False, True])
def test_all_ignored_gives_zero_with_zero_grad(per_image) -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 4, 4), 255)
    loss = lovasz_softmax(logits, labels, ignore_index=255, per_image=per_image, classes="all")
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    binary = torch.randn(2, 4, 4, requires_grad=True)
    loss = lovasz_hinge(binary, labels, ignore_index=255, per_image=per_image)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(binary.grad) == 0


def test_empty_image_counts_as_zero_in_per_image_mean() -> None:
    logits, labels = _case(seed=4, n=2)
    labels[1] = 255
    both = lovasz_softmax(logits, labels, per_image=True, ignore_index=255)
    first = lovasz_softmax(logits[:1], labels[:1], per_image=True, ignore_index=255)
    assert float(both) == pytest.approx(float(first) / 2, rel=1e-14)


def test_single_class_batch_and_extreme_logits_have_finite_grads() -> None:
    labels = torch.zeros(2, 5, 5, dtype=torch.long)
    logits = (torch.randn(2, 3, 5, 5).sign() * 1e4).requires_grad_(True)
    for kwargs in ({}, {"classes": "all"}, {"per_image": True}):
        logits.grad = None
        lovasz_softmax(logits, labels, **kwargs).backward()
        assert torch.isfinite(logits.grad).all()
    binary = (torch.randn(2, 5, 5).sign() * 1e4).requires_grad_(True)
    lovasz_hinge(binary, labels).backward()
    assert torch.isfinite(binary.grad).all()


def test_gradcheck_float64(single_thread) -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 3, 4), generator=gen)
    labels[0, 0, 0] = 9
    logits = torch.randn(2, 3, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    for kwargs in ({"per_image": False}, {"per_image": True, "classes": "all"}):
        assert torch.autograd.gradcheck(
            lambda x, kw=kwargs: lovasz_softmax(x, labels, ignore_index=9, **kw), (logits,))
    binary = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: lovasz_hinge(x, labels.clamp(0, 1)), (binary,))


# ---------------------------------------------------------------- modules and errors
def test_modules_match_functions_and_round_trip() -> None:
    logits, labels = _case(seed=6, ignore=255)
    module = LovaszSoftmaxLoss(per_image=True, classes=[0, 2], ignore_index=255)
    assert float(module(logits, labels)) == float(
        lovasz_softmax(logits, labels, per_image=True, classes=[0, 2], ignore_index=255))
    spec = module.to_dict()
    assert spec == {"name": "lovasz_softmax", "per_image": True, "classes": [0, 2],
                    "ignore_index": 255}
    assert LovaszSoftmaxLoss(**{k: v for k, v in spec.items() if k != "name"}).to_dict() == spec
    hinge = LovaszHingeLoss(per_image=False)
    assert hinge.to_dict() == {"name": "lovasz_hinge", "per_image": False, "ignore_index": None}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"classes": "presnt"}, "did you mean 'present'"),
    ({"classes": []}, "classes"),
    ({"classes": [0, 0]}, "repeat"),
    ({"per_image": 1}, "per_image"),
    ({"ignore_index": 2.5}, "ignore_index"),
])
def test_bad_options(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        LovaszSoftmaxLoss(**kwargs)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"\[N,C,H,W\]"):
        lovasz_softmax(torch.randn(3, 4, 4), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        lovasz_softmax(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 3))
    with pytest.raises(ValueError, match="only C=3"):
        lovasz_softmax(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long),
                       classes=[0, 5])
    with pytest.raises(ValueError, match="outside"):
        lovasz_hinge(torch.randn(1, 4, 4), torch.full((1, 4, 4), 2))
    with pytest.raises(ValueError, match=r"\[N,H,W\] or \[N,1,H,W\]"):
        lovasz_hinge(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_row_chunks_give_the_same_result(monkeypatch) -> None:
    import autoloss.losses._lovasz_rows as lovasz_module

    gen = torch.Generator().manual_seed(7)
    errors = torch.rand(7, 50, generator=gen, dtype=torch.float64)
    fg = torch.rand(7, 50, generator=gen) < 0.3
    e1, e2 = errors.clone().requires_grad_(True), errors.clone().requires_grad_(True)
    whole = lovasz_module.lovasz_rows(e1, fg)
    whole.sum().backward()
    monkeypatch.setattr(lovasz_module, "CHUNK_ELEMENTS", 100)  # 2 rows per chunk here
    chunked = lovasz_module.lovasz_rows(e2, fg)
    chunked.sum().backward()
    assert torch.equal(chunked, whole)
    assert torch.equal(e1.grad, e2.grad)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", [0, 1, 4]])
def test_only_present_classes_are_sorted(monkeypatch, per_image, classes) -> None:
    """A class absent from a set (class 1, and the ignore label's channel 4) is never sorted:
    under "present" it is skipped, otherwise its loss is the largest probability (argmax)."""
    import autoloss.losses._lovasz_rows as lovasz_module

    logits, labels = _case(seed=9, n=2, c=5, ignore=4)
    assert not bool((labels == 1).any())
    sorted_rows = []

    def spy(values, *, nonnegative):
        sorted_rows.append(values.numel())
        return real(values, nonnegative=nonnegative)

    real = lovasz_module.stable_descending
    monkeypatch.setattr(lovasz_module, "stable_descending", spy)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    lovasz_softmax(x1, labels, per_image=per_image, classes=classes, ignore_index=4).backward()
    _ref_softmax(x2, labels, per_image=per_image, classes=classes, ignore=4).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-13)
    chosen = [0, 1, 2, 3, 4] if isinstance(classes, str) else classes
    sets = [labels[i] for i in range(len(labels))] if per_image else [labels]
    expected = [int((y != 4).sum()) for y in sets for k in chosen if k != 4 and bool((y == k).any())]
    assert sorted_rows == expected  # one row per (set, present class), over its kept pixels


def test_backward_twice_with_retained_graph() -> None:
    logits, labels = _case(seed=10, ignore=255)
    x = logits.clone().requires_grad_(True)
    loss = lovasz_softmax(x, labels, ignore_index=255)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nonnegative", [True, False])
def test_descending_order_with_ties(dtype, nonnegative) -> None:
    from autoloss.losses._lovasz_rows import descending_order

    gen = torch.Generator().manual_seed(8)
    values = torch.randint(-20, 21, (5, 300), generator=gen).to(dtype) / 7
    values[0, :3] = -0.0 if not nonnegative else 0.0
    if nonnegative:
        values = values.abs()
    stable = descending_order(values, nonnegative=nonnegative, stable=True)
    assert torch.equal(stable, torch.sort(values, dim=1, descending=True, stable=True).indices)
    default = descending_order(values, nonnegative=nonnegative, stable=False)
    assert torch.equal(default, torch.sort(values, dim=1, descending=True).indices)
