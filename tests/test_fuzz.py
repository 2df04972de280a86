"""Fuzzing (hypothesis): every loss and ``evaluate`` on random shapes, dtypes, label ranges,
ignore indices, logit scales, empty and single-class inputs. Each call either raises a clear
``ValueError``/``TypeError`` naming what is wrong, or returns finite values (and, for a loss,
finite gradients). Non-finite logits are not generated: NaN in gives NaN out, as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoloss import evaluate
from autoloss.losses import load_loss
from autoloss.losses.loader import loss_names

BINARY = {"lovasz_hinge", "binary_cross_entropy", "paddleseg-lovasz-hinge-bce"}
NAMES = sorted(set(loss_names()["presets"]) | set(loss_names()["baselines"]) - {"surrogate"})
# words a clear error names: the argument or the input at fault
NAMED = ("target", "logits", "ignore_index", "input", "num_classes", "pred", "label", "RMI")
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _clear(err: Exception) -> bool:
    text = str(err)
    return bool(text) and any(word in text for word in NAMED)


@SETTINGS
@given(name=st.sampled_from(NAMES), n=st.integers(0, 3), c=st.integers(2, 4),
       h=st.integers(1, 6), w=st.integers(1, 6), ignore=st.sampled_from([None, 255, -100, 0]),
       scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]), extra=st.integers(0, 2),
       all_ignored=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_every_loss_is_finite_or_says_what_is_wrong(name, n, c, h, w, ignore, scale, extra,
                                                    all_ignored, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    is_preset = name in loss_names()["presets"]
    options = {} if is_preset or ignore is None else {"ignore_index": ignore}
    loss = load_loss(name if is_preset else {"name": name, **options})
    channels = 1 if name in BINARY else c
    logits = (torch.randn(n, channels, h, w, generator=g, dtype=dtype) * scale)
    logits.requires_grad_(True)
    high = 2 if channels == 1 else c
    target = torch.randint(0, high + extra, (n, h, w), generator=g)
    if ignore is not None:
        if all_ignored:
            target[:] = ignore
        elif n and h * w > 1:
            target[..., 0] = ignore
    try:
        out = loss(logits, target)
        out.backward()
    except (ValueError, TypeError) as err:
        assert _clear(err), f"{name}: unclear error {err!r}"
        return
    assert torch.isfinite(out).all(), f"{name}: loss {out}"
    assert logits.grad is not None and torch.isfinite(logits.grad).all(), f"{name}: gradient"


@SETTINGS
@given(n=st.integers(0, 3), c=st.integers(1, 4), h=st.integers(0, 6), w=st.integers(1, 6),
       low=st.integers(-2, 0), extra=st.integers(0, 2), ignore=st.sampled_from([None, 255, -1, 0]),
       tol=st.integers(0, 3), seed=st.integers(0, 2**31 - 1))
def test_evaluate_is_in_range_or_says_what_is_wrong(n, c, h, w, low, extra, ignore, tol, seed):
    rng = np.random.default_rng(seed)
    pred = rng.integers(low, c + extra, (n, h, w))
    target = rng.integers(low, c + extra, (n, h, w))
    try:
        scores = evaluate(pred, target, num_classes=c, ignore_index=ignore, tol=tol)
    except (ValueError, TypeError) as err:
        assert _clear(err), f"unclear error {err!r}"
        return
    for metric, value in scores.items():
        assert math.isnan(value) or 0.0 <= value <= 1.0 + 1e-12, (metric, value)


@pytest.mark.parametrize("name", ["cross_entropy", "soft-miou", "lovasz_softmax"])
def test_nan_logits_give_nan_not_an_exception(name):
    """The documented behaviour for non-finite input: NaN propagates (no silent number)."""
    logits = torch.full((1, 3, 4, 4), math.nan, requires_grad=True)
    out = load_loss(name)(logits, torch.zeros(1, 4, 4, dtype=torch.long))
    assert not torch.isfinite(out)
