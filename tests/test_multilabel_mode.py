"""mode="multilabel": independent sigmoid channels [N,L,H,W] with 0/1 targets per label, for the
region, focal, JDT and surrogate losses: checked against independent per-label formulas, the
binary mode, gradcheck and the shape errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoloss.losses import load_loss

MULTILABEL = ["dice", "jaccard", "tversky", "focal", "jaccard_metric", "dice_semimetric",
              "compatible_tversky", "asl-voc-miou", "soft-miou", "soft-bf1"]


def data(n=2, labels=3, h=6, w=7, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, labels, h, w, dtype=dtype, generator=gen).requires_grad_(True)
    y = torch.randint(0, 2, (n, labels, h, w), generator=gen)
    return x, y


def spec(name: str) -> dict | str:
    return name if name.startswith(("asl-", "soft-")) else {"name": name}


def _multilabel(name: str, **options):
    if isinstance(spec(name), str):
        return load_loss(name, mode="multilabel", **options)
    return load_loss({**spec(name), "mode": "multilabel", **options})


def test_foreground_dice_is_the_mean_over_labels_of_the_sigmoid_dice():
    x, y = data()
    loss = load_loss({"name": "dice", "mode": "multilabel", "classes": [1], "smooth": 1.0})
    p, g = torch.sigmoid(x), y.double()
    dims = (0, 2, 3)
    tp, fp, fn = (p * g).sum(dims), (p * (1 - g)).sum(dims), ((1 - p) * g).sum(dims)
    by_hand = 1 - (tp + 1.0) / (tp + 0.5 * fp + 0.5 * fn + 1.0)  # per label, smooth 1
    torch.testing.assert_close(loss(x, y), by_hand.mean())


def test_focal_with_gamma_0_is_the_mean_bce():
    x, y = data()
    loss = load_loss({"name": "focal", "gamma": 0.0, "mode": "multilabel"})
    torch.testing.assert_close(loss(x, y), F.binary_cross_entropy_with_logits(x, y.double()))


@pytest.mark.parametrize("name", MULTILABEL)
def test_one_label_is_the_binary_mode_and_labels_are_averaged(name):
    x, y = data()
    multi = _multilabel(name)
    binary = (load_loss(name, mode="binary") if isinstance(spec(name), str)
              else load_loss({**spec(name), "mode": "binary"}))
    torch.testing.assert_close(multi(x[:, :1], y[:, :1]), binary(x[:, :1], y[:, 0]))
    per_label = torch.stack([binary(x[:, k:k + 1], y[:, k]) for k in range(3)]).mean()
    torch.testing.assert_close(multi(x, y), per_label)


@pytest.mark.parametrize("name", MULTILABEL)
def test_multilabel_gradients_are_finite_and_pass_gradcheck(name):
    x, y = data(n=1, labels=2, h=4, w=5)
    loss = _multilabel(name)
    value = loss(x, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    if name not in ("soft-bf1",):  # max-pooling edges: not differentiable at ties
        assert torch.autograd.gradcheck(lambda t: loss(t, y), (x.detach().requires_grad_(),))


def test_multilabel_ignore_index_and_overlapping_labels():
    x, y = data()
    y[:, 1, :2] = 255  # label 1 unknown in the first two rows
    loss = load_loss({"name": "dice", "mode": "multilabel", "ignore_index": 255})
    assert torch.isfinite(loss(x, y))
    both = torch.ones_like(y)  # every pixel carries every label: allowed, unlike multiclass
    perfect = torch.full_like(x, 30.0)
    assert float(load_loss({"name": "dice", "mode": "multilabel", "classes": [1]})(
        perfect, both)) == pytest.approx(0.0, abs=1e-6)


def test_multilabel_shape_errors_name_the_shapes():
    x, y = data()
    loss = load_loss({"name": "dice", "mode": "multilabel"})
    with pytest.raises(ValueError, match=r"target \[N,L,H,W\].*\(2, 3, 6, 7\).*\(2, 6, 7\)"):
        loss(x, y[:, 0])
    with pytest.raises(ValueError, match=r"logits \[N,L,H,W\].*\(3, 6, 7\)"):
        loss(x[0], y[0])
    with pytest.raises(ValueError, match="mode must be one of"):
        load_loss({"name": "dice", "mode": "multi-label"})


def test_multilabel_round_trips_through_the_spec():
    loss = load_loss({"name": "tversky", "mode": "multilabel", "alpha": 0.4, "beta": 0.6})
    assert loss.to_dict()["mode"] == "multilabel"
    assert load_loss(loss.to_dict()).to_dict() == loss.to_dict()
