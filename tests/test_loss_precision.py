"""Mixed precision contract: every loss name, on bfloat16 / float16 logits and under
``torch.autocast``, gives the float32 loss and gradient (cosine >= 0.999), with no NaN, at
2x3x256x512: 524,288 pixels, about 170,000 per class (float16 overflows at 65,504)."""

from __future__ import annotations

import pytest
import torch
from loss_cases import all_names, build, inputs

from autoloss.losses.lovasz import lovasz_rows

SHAPE = (2, 3, 256, 512)
#: float16 gradients need loss scaling like any float16 training (GradScaler's initial scale):
#: a mean over 524,288 pixels has entries below float16's smallest normal number
FP16_SCALE = 2.0 ** 16


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def _run(loss, logits, labels, *, scale=1.0, autocast=False):
    leaf = logits.detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        value = loss(leaf, labels)
    (value * scale).backward()
    return value.detach(), leaf.grad.float() / scale


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("precision")


@pytest.mark.parametrize("name", all_names())
def test_half_precision_gives_the_float32_loss(name, folder, single_thread) -> None:
    loss = build(name, folder)
    logits, labels = inputs(name, SHAPE)
    cases = {"bfloat16": (torch.bfloat16, 1.0, False), "float16": (torch.float16, FP16_SCALE, False),
             "autocast bfloat16": (torch.bfloat16, 1.0, True),
             "autocast float32 logits": (torch.float32, 1.0, True)}
    for case, (dtype, scale, autocast) in cases.items():
        half = logits.to(dtype)
        # the reference: the same (rounded) logits in float32, outside autocast
        ref_value, ref_grad = _run(loss, half.float(), labels)
        value, grad = _run(loss, half, labels, scale=scale, autocast=autocast)
        assert value.dtype == torch.float32, (case, value.dtype)
        assert torch.isfinite(value), case
        assert bool(torch.isfinite(grad).all()), case
        assert float(value) == pytest.approx(float(ref_value), rel=1e-3, abs=1e-5), case
        assert _cosine(grad, ref_grad) >= 0.999, (case, _cosine(grad, ref_grad))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lovasz_weights_are_float32_for_half_errors(dtype) -> None:
    """More than 65,504 pixels in one row: the integer ranks no longer fit float16."""
    gen = torch.Generator().manual_seed(0)
    errors = torch.rand(2, 70_000, generator=gen)
    fg = torch.rand(2, 70_000, generator=gen) < 0.3
    ref = lovasz_rows(errors.to(dtype).float(), fg)
    half = errors.to(dtype).requires_grad_(True)
    value = lovasz_rows(half, fg)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-5)
    value.sum().backward()
    assert bool(torch.isfinite(half.grad.float()).all())


@pytest.mark.compiled
def test_half_precision_runs_the_compiled_path_in_float32(folder, monkeypatch) -> None:
    """bfloat16 logits (and autocast) reach the compiled graph as float32 (it takes only float32
    / float64) and give the eager float32 loss and gradient."""
    from autoloss.losses.compiled import compile_report, compiler_problem

    problem = compiler_problem()
    if problem is not None:
        pytest.skip(problem)
    monkeypatch.delenv("AUTOLOSS_COMPILE", raising=False)
    logits, labels = inputs("asl-voc-miou", (2, 3, 64, 96))
    half = logits.to(torch.bfloat16)
    ref_value, ref_grad = _run(build("asl-voc-miou", folder, compile=False), half.float(), labels)
    loss = build("asl-voc-miou", folder, compile=True)
    before = sum(r["calls"] for r in compile_report())
    for autocast in (False, True):
        value, grad = _run(loss, half, labels, autocast=autocast)
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6)
        assert _cosine(grad, ref_grad) >= 0.9999
    assert sum(r["calls"] for r in compile_report()) > before  # the compiled graph ran
