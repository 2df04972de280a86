"""``autoloss check``: constraint checks catch broken curves and pass on presets."""

from __future__ import annotations

import torch

from autoloss.cli.app import main
from autoloss.core.metrics import evaluate
from autoloss.losses import SurrogateLoss, load_loss
from autoloss.losses.check import check_loss


class WavyCurve:
    """Keeps h(0)=0 and h(1)=1 but decreases in the middle: breaks monotonicity."""

    kind = "wavy"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * torch.sin(2 * torch.pi * x)


class LeakyCurve:
    """Monotone but h(0) = 0.1: breaks the truth table."""

    kind = "leaky"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return 0.1 + 0.9 * x


def _by_name(results):
    return {r.name: r for r in results}


def test_presets_pass() -> None:
    for preset in ("asl-voc-miou", "asl-voc-macc", "asl-voc-biou", "soft-mdice"):
        results = check_loss(load_loss(preset))
        assert all(r.passed for r in results), [(r.name, r.detail) for r in results]


def test_non_monotone_curve_fails() -> None:
    results = _by_name(check_loss(SurrogateLoss("miou", curves={"inter": WavyCurve()})))
    assert not results["curves"].passed
    assert "decreases" in results["curves"].detail
    # in mAcc the curve acts alone, so the surrogate itself dips too
    results = _by_name(check_loss(SurrogateLoss("macc", curves={"acc": WavyCurve()})))
    assert not results["curves"].passed
    assert not results["monotonicity"].passed


def test_curve_not_through_origin_fails_truth_table() -> None:
    results = _by_name(check_loss(SurrogateLoss("miou", curves={"union": LeakyCurve()})))
    assert not results["curves"].passed
    assert not results["truth table"].passed


def test_bf1_monotonicity_is_skipped_because_exact_bf1_is_not_monotone() -> None:
    """Correcting one pixel inside a wrongly predicted region adds predicted edges: BF1 drops."""
    target = torch.zeros(1, 9, 12, dtype=torch.long)
    target[0, :, 6:] = 1
    pred = target.clone()
    pred[0, 2:5, 1:4] = 1  # a wrong 3x3 block inside the class-0 region
    better = pred.clone()
    better[0, 3, 2] = 0  # correct its centre: an isolated class-0 pixel, a new false edge
    before = evaluate(pred, target, num_classes=2, tol=0, metrics=["bf1"])["bf1"]
    after = evaluate(better, target, num_classes=2, tol=0, metrics=["bf1"])["bf1"]
    assert after < before
    result = _by_name(check_loss(load_loss("asl-voc-bf1")))["monotonicity"]
    assert result.skipped and result.passed


def test_cli_exit_codes(tmp_path, capsys) -> None:
    assert main(["check", "asl-voc-miou"]) == 0
    assert "all checks passed" in capsys.readouterr().out
    assert main(["check", "no-such-loss"]) == 2
