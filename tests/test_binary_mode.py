"""mode="binary": one foreground logit [N,1,H,W] for the region, focal, JDT and surrogate
losses, checked against independent sigmoid formulas, gradcheck and the multi-class form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoloss.losses import load_loss
from autoloss.losses.binary import two_class

torch.manual_seed(0)
BINARY = ["dice", "jaccard", "tversky", "focal", "jaccard_metric", "dice_semimetric",
          "compatible_tversky"]


def data(n=2, h=6, w=7, dtype=torch.float64):
    x = torch.randn(n, 1, h, w, dtype=dtype, requires_grad=True)
    y = torch.randint(0, 2, (n, h, w))
    return x, y


def test_two_class_softmax_is_the_sigmoid():
    x, y = data()
    logits, target = two_class(x, y[:, None])
    assert logits.shape == (2, 2, 6, 7) and target.shape == (2, 6, 7)
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(probs[:, 1:], torch.sigmoid(x))


def test_binary_focal_with_gamma_0_is_bce_and_with_gamma_2_the_sigmoid_focal_formula():
    x, y = data()
    bce = F.binary_cross_entropy_with_logits(x[:, 0], y.double())
    torch.testing.assert_close(load_loss({"name": "focal", "gamma": 0.0, "mode": "binary"})(x, y),
                               bce)
    p = torch.sigmoid(x[:, 0])
    p_t = torch.where(y == 1, p, 1 - p)
    focal = (-(1 - p_t) ** 2 * torch.log(p_t)).mean()
    torch.testing.assert_close(load_loss({"name": "focal", "mode": "binary"})(x, y), focal)


def test_binary_dice_on_the_foreground_is_the_sigmoid_dice():
    x, y = data()
    p, g = torch.sigmoid(x[:, 0]), y.double()
    tp = (p * g).sum()
    fp, fn = (p * (1 - g)).sum(), ((1 - p) * g).sum()
    want = 1 - (tp + 1.0) / (tp + 0.5 * fp + 0.5 * fn + 1.0)  # smooth 1 (the loss's default)
    got = load_loss({"name": "dice", "mode": "binary", "classes": [1]})(x, y)
    torch.testing.assert_close(got, want)


def test_ignore_index_applies_in_binary_mode():
    x, y = data()
    y[0, :2] = 255
    loss = load_loss({"name": "focal", "gamma": 0.0, "mode": "binary", "ignore_index": 255})
    keep = y != 255
    want = F.binary_cross_entropy_with_logits(x[:, 0][keep], y[keep].double())
    torch.testing.assert_close(loss(x, y), want)


@pytest.mark.parametrize("name", BINARY)
def test_binary_losses_pass_gradcheck_and_equal_their_two_class_form(name):
    x, y = data(n=1, h=4, w=5)
    binary = load_loss({"name": name, "mode": "binary"})
    multi = load_loss({"name": name})
    torch.testing.assert_close(binary(x, y), multi(*two_class(x, y)))
    assert torch.autograd.gradcheck(lambda t: binary(t, y), (x,))
    assert binary.to_dict()["mode"] == "binary" and "mode" not in multi.to_dict()
    assert load_loss(binary.to_dict()).to_dict() == binary.to_dict()  # round trip


@pytest.mark.parametrize("metric", ["miou", "bf1"])
def test_binary_surrogates(metric):
    x, y = data(n=1, h=8, w=8)
    loss = load_loss({"name": "surrogate", "metric": metric, "mode": "binary", "tol": 1})
    value = loss(x, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (x.detach().requires_grad_(),))


def test_binary_mode_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"mode must be one of \['multiclass', 'binary', "
                                         r"'multilabel'\], but got mode='sigmoid'"):
        load_loss({"name": "dice", "mode": "sigmoid"})
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"mode='binary' takes logits \[N,1,H,W\].*\(2, 3, 4, 4\)"):
        load_loss({"name": "dice", "mode": "binary"})(x, torch.zeros(2, 4, 4, dtype=torch.long))


def test_every_loss_class_is_exported():
    import autoloss.losses as losses

    for name in ["cross_entropy", "binary_cross_entropy", "focal", "dice", "jaccard", "tversky",
                 "lovasz_softmax", "lovasz_hinge", "jaccard_metric", "dice_semimetric",
                 "compatible_tversky", "rmi"]:
        cls = type(load_loss(name))
        assert cls.__name__ in losses.__all__ and getattr(losses, cls.__name__) is cls
