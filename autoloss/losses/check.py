"""Numerical checks of a surrogate loss's constraints (``autoloss check LOSS``).

Three properties (Li et al., ICLR 2021, section 3.3):

1. **curves**: every curve has ``h(0) = 0``, ``h(1) = 1``, values in [0, 1] and is
   non-decreasing (on a grid of 10,001 points);
2. **truth table**: on binary (one-hot) predictions the relaxed program gives exactly the
   statistics of the exact program, i.e. every relaxed operator equals its logical one;
3. **monotonicity**: on random probability maps ``P0`` moved toward the ground truth,
   ``P_t = (1 - t) P0 + t G``, the surrogate never decreases in ``t``. Only for metric programs
   marked ``monotone`` (region metrics); boundary F1 is not monotone even exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autoloss.core.operators import ExactOps, RelaxedOps, one_hot
from autoloss.core.programs import class_mean
from autoloss.losses.combine import CombinedLoss
from autoloss.losses.surrogate import SurrogateLoss

__all__ = ["CheckResult", "check_loss", "surrogate_of_probs"]


@dataclass
class CheckResult:
    """Outcome of one property check."""

    name: str
    passed: bool
    detail: str
    skipped: bool = False

    @property
    def verdict(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")


def surrogate_of_probs(loss: SurrogateLoss, probs: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """Surrogate metric of probabilities ``probs [N,C,H,W]`` against one-hot ``gt [N,C,H,W]``
    with ``valid [N,1,H,W]`` (no softmax, no ``1 -``)."""
    ops = RelaxedOps(loss.curves, eps=loss.eps, float32_dilation=loss.float32_dilation)
    stats = loss.program.run_stats(ops, probs, gt, valid, tol=loss.tol, drop_bg=loss.drop_bg)
    values, present = loss.program.score(stats, ops)
    return class_mean(values, present, loss.classes)


def _check_curves(loss: SurrogateLoss) -> CheckResult:
    x = torch.linspace(0, 1, 10_001, dtype=torch.float64)
    problems = []
    for name, curve in loss.curves.items():
        y = curve(x)
        ends = curve(torch.tensor([0.0, 1.0], dtype=torch.float64))
        if abs(float(ends[0])) > 1e-12 or abs(float(ends[1]) - 1) > 1e-12:
            problems.append(f"{name}: h(0)={float(ends[0]):.3g}, h(1)={float(ends[1]):.6g}")
        drop = float((y[:-1] - y[1:]).max())
        if drop > 1e-12:
            where = float(x[int((y[:-1] - y[1:]).argmax())])
            problems.append(f"{name}: decreases by {drop:.3g} near x={where:.4f}")
        if float(y.min()) < -1e-12 or float(y.max()) > 1 + 1e-12:
            problems.append(f"{name}: values leave [0, 1] ({float(y.min()):.3g}..{float(y.max()):.3g})")
    detail = "; ".join(problems) if problems else f"{len(loss.curves)} curve(s) monotone, h(0)=0, h(1)=1"
    return CheckResult("curves", not problems, detail)


def _random_case(generator: torch.Generator, trial: int, *, size: int = 24,
                 batch: int = 2) -> tuple[Tensor, Tensor]:
    """Blocky random labels (so there are boundaries) and random logits. Trials cycle through
    2 and 4 classes and logit scales 0 (uniform probabilities: every pixel crosses the same
    probability levels at once, which exposes a dip in any curve), 1 and 4."""
    num_classes = (2, 4)[trial % 2]
    scale = (0.0, 1.0, 4.0)[trial % 3]
    coarse = torch.randint(0, num_classes, (batch, size // 4, size // 4), generator=generator)
    labels = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    logits = scale * torch.randn((batch, num_classes, size, size), generator=generator,
                                 dtype=torch.float64)
    return labels, logits


def _check_truth_table(loss: SurrogateLoss, generator: torch.Generator, trials: int) -> CheckResult:
    relaxed = RelaxedOps(loss.curves, eps=loss.eps)
    worst, worst_key = 0.0, ""
    for trial in range(trials):
        labels, logits = _random_case(generator, trial)
        gt = one_hot(labels, logits.shape[1], dtype=torch.float64)
        pred = one_hot(logits.argmax(1), logits.shape[1], dtype=torch.float64)
        valid = torch.ones_like(gt[:, :1])
        kwargs = {"tol": loss.tol, "drop_bg": loss.drop_bg}
        exact = loss.program.run_stats(ExactOps(), pred, gt, valid, **kwargs)
        soft = loss.program.run_stats(relaxed, pred, gt, valid, **kwargs)
        for key in exact:
            gap = float((exact[key] - soft[key]).abs().max())
            if gap > worst:
                worst, worst_key = gap, key
    passed = worst <= 1e-9
    detail = (f"relaxed = exact on one-hot inputs (max gap {worst:.2g})" if passed else
              f"statistic {worst_key!r} differs from the exact one by {worst:.3g} on one-hot inputs")
    return CheckResult("truth table", passed, detail)


def _check_monotone(loss: SurrogateLoss, generator: torch.Generator, trials: int) -> CheckResult:
    if not loss.program.monotone:
        return CheckResult(
            "monotonicity", True,
            f"{loss.program.name!r} is not a monotone metric (even the exact metric can drop "
            "when one pixel is corrected); each curve was checked non-decreasing above",
            skipped=True,
        )
    steps = torch.linspace(0, 1, 21, dtype=torch.float64)
    worst = 0.0
    for trial in range(trials):
        labels, logits = _random_case(generator, trial)
        gt = one_hot(labels, logits.shape[1], dtype=torch.float64)
        probs = torch.softmax(logits, dim=1)
        valid = torch.ones_like(gt[:, :1])
        scores = torch.stack([surrogate_of_probs(loss, (1 - t) * probs + t * gt, gt, valid)
                              for t in steps])
        worst = max(worst, float((scores[:-1] - scores[1:]).max()))
    passed = worst <= 1e-9
    detail = (f"non-decreasing toward the ground truth ({trials} random paths)" if passed else
              f"the surrogate decreases by {worst:.3g} when the prediction moves toward the "
              "ground truth")
    return CheckResult("monotonicity", passed, detail)


def check_loss(loss: nn.Module, *, trials: int = 8, seed: int = 0) -> list[CheckResult]:
    """Run the three checks on every surrogate in ``loss`` (a combination is checked part by
    part). A loss with no surrogate gives one passing result saying there is nothing to check."""
    surrogates = [loss] if isinstance(loss, SurrogateLoss) else (
        [m for m in loss.losses if isinstance(m, SurrogateLoss)]
        if isinstance(loss, CombinedLoss) else [])
    if not surrogates:
        return [CheckResult("surrogate", True, "no surrogate in this loss: nothing to check")]
    results = []
    for surrogate in surrogates:
        generator = torch.Generator().manual_seed(seed)
        for result in (_check_curves(surrogate),
                       _check_truth_table(surrogate, generator, trials),
                       _check_monotone(surrogate, generator, trials)):
            if len(surrogates) > 1:
                result.name = f"{surrogate.metric}: {result.name}"
            results.append(result)
    return results
