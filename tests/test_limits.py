"""Documented limits, checked before anything is allocated, and refused in one line that names
the input, the limit and the way out (README "Errors"; issue 26)."""

from __future__ import annotations

import pytest
import torch

import autoloss.core.operators as operators
from autoloss.cli import app as cli
from autoloss.core.metrics import MAX_TOL, MetricAccumulator, MetricOptions, evaluate
from autoloss.errors import InvalidValueError
from autoloss.losses import SurrogateLoss, load_loss
from autoloss.retrain.experiment import experiment_from_dict
from autoloss.train.proxy import ProxyConfig

# ---- tol: at most MAX_TOL pixels; at run time no wider than the image ------------------------


@pytest.mark.parametrize("make", [
    lambda tol: MetricOptions(tol=tol),
    lambda tol: MetricAccumulator(num_classes=3, tol=tol),
    lambda tol: SurrogateLoss(metric="bf1", tol=tol),
    lambda tol: load_loss({"name": "surrogate", "metric": "biou", "tol": tol}),
    lambda tol: ProxyConfig(tol=tol),
    lambda tol: experiment_from_dict({"tol": tol}),
])
def test_tol_above_the_maximum_is_refused_by_every_constructor(make):
    make(MAX_TOL)
    for tol in (MAX_TOL + 1, 10**9, -1):
        with pytest.raises(InvalidValueError, match=rf"tol must be an int in \[0, {MAX_TOL}\].*"
                           rf"but got .*tol={tol}; pass a tolerance of at most {MAX_TOL}"):
            make(tol)


def test_a_loss_file_with_a_huge_tol_is_one_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "big_tol.yaml"
    path.write_text("name: surrogate\nmetric: bf1\ntol: 1000000000\n")
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and f"at most {MAX_TOL}" in err


def test_evaluate_refuses_a_huge_tol_before_loading_anything(tmp_path, capsys):
    """The checkpoint does not even exist: the tolerance is checked first."""
    code = cli.main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", "shapes",
                     "--tol", "100000"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--tol must be an int in [0, 1024]" in err


def test_a_tol_wider_than_the_image_is_computed_as_the_image(monkeypatch):
    """A tol at least the larger image side (minus 1) selects the whole image: the same scores and
    gradients as that side, and the dilation never pads by more than the image."""
    radii = []
    real_filter = operators._filter
    monkeypatch.setattr(operators, "_filter",
                        lambda x, radius, **kw: radii.append(radius) or real_filter(x, radius, **kw))
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randint(0, 3, (2, 6, 9), generator=gen), torch.randint(0, 3, (2, 6, 9),
                                                                               generator=gen)
    wide = evaluate(pred, target, num_classes=3, tol=MAX_TOL, metrics=["biou", "bf1"])
    assert radii and max(radii) == 8
    assert wide == evaluate(pred, target, num_classes=3, tol=8, metrics=["biou", "bf1"])
    logits = torch.randn(2, 3, 6, 9, generator=gen, requires_grad=True)
    grads = []
    for tol in (MAX_TOL, 8):
        loss = SurrogateLoss(metric="bf1", tol=tol, compile=False)(logits, target)
        grads.append((loss.detach(), torch.autograd.grad(loss, logits)[0]))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
