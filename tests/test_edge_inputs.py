"""Inputs at the edges: empty batches, non-finite weights, a metric named by a string, booleans
where integers are expected. Each gives a finite value or one clear error naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autoloss import evaluate
from autoloss.losses import load_loss
from autoloss.losses.loader import loss_names

BINARY = {"lovasz_hinge", "binary_cross_entropy", "paddleseg-lovasz-hinge-bce"}


def _names() -> list[str]:
    names = loss_names()
    return sorted(set(names["presets"]) | set(names["baselines"]) - {"surrogate"})


@pytest.mark.parametrize("name", _names())
@pytest.mark.parametrize("shape", [(0, 8, 8), (2, 0, 8)], ids=["no images", "no pixels"])
def test_every_loss_gives_a_finite_zero_on_an_empty_batch(name, shape):
    loss = load_loss(name)
    channels = 1 if name in BINARY else 3
    logits = torch.zeros(shape[0], channels, *shape[1:], requires_grad=True)
    out = loss(logits, torch.zeros(shape, dtype=torch.long))
    out.backward()
    assert out.item() == 0.0 and logits.grad is not None and logits.grad.shape == logits.shape


@pytest.mark.parametrize("name", _names())
def test_every_loss_gives_a_finite_zero_on_an_all_ignore_batch(name):
    """Every pixel ignored: nothing to learn from, 0 with zero gradients (RMI gave -5.70)."""
    loss = load_loss(name, ignore_index=255)
    channels = 1 if name in BINARY else 3
    logits = torch.randn(2, channels, 12, 12, generator=torch.Generator().manual_seed(0),
                         requires_grad=True)
    out = loss(logits, torch.full((2, 12, 12), 255))
    out.backward()
    assert out.item() == 0.0 and not logits.grad.any()


@pytest.mark.parametrize("weight", [math.nan, math.inf, -1.0, True])
def test_combine_rejects_weights_that_are_not_finite_non_negative_numbers(weight):
    with pytest.raises(ValueError, match="combine weight #0 must be a finite non-negative number"):
        load_loss({"combine": [{"name": "cross_entropy", "weight": weight}]})


def test_a_metric_named_by_a_string_is_that_metric():
    labels = np.zeros((1, 4, 4), dtype=np.int64)
    assert evaluate(labels, labels, num_classes=2, metrics="miou") == {"miou": 1.0}


@pytest.mark.parametrize("option", [{"num_classes": True}, {"tol": True}, {"ignore_index": False},
                                    {"drop_bg": 1}])
def test_booleans_and_integers_are_not_confused(option):
    labels = np.zeros((1, 4, 4), dtype=np.int64)
    name = next(iter(option))
    with pytest.raises(ValueError, match=name):
        evaluate(labels, labels, **{"num_classes": 2, **option})
