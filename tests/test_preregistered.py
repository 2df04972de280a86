"""The registered rule of ``benchmarks/preregistered.py`` on hand-made numbers (no training):
the middle-ranked trial and the verdicts of a paired test."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest

from autoloss.utils.stats import paired_difference

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "preregistered.py"
_SPEC = importlib.util.spec_from_file_location("preregistered", _PATH)
pr = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pr)


def _study(values: list[float | None], references: dict[int, str]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate(values):
        trial = study.ask()
        if number in references:
            trial.set_user_attr("reference", references[number])
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return study


def test_the_middle_trial_skips_references_and_unfinished_trials():
    # searched complete trials by value: 4 (0.9), 1 (0.8), 5 (0.7), 2 (0.6), 6 (0.5): n = 5,
    # rank ceil(5/2) = 3 -> trial 5; trial 0 (the identity, best of all) and 3 (pruned) left out
    study = _study([0.95, 0.8, 0.6, None, 0.9, 0.7, 0.5], {0: "identity"})
    assert pr.middle_trial(study) == 5
    # an even count: n = 4 -> rank 2; ties keep the lower trial number first
    assert pr.middle_trial(_study([0.5, 0.7, 0.7, 0.4], {})) == 2


def test_a_study_without_searched_trials_is_refused():
    with pytest.raises(ValueError, match="no complete searched trial"):
        pr.middle_trial(_study([0.5, None], {0: "identity"}))


@pytest.mark.parametrize("diffs, verdict", [
    ([0.6, 0.7, 0.8, 0.6, 0.7], "**met**"),
    ([0.2, 0.3, 0.25, 0.3, 0.2], "positive, below the target"),
    ([1.0, -0.8, 0.9, -0.7, 0.5], "not shown"),
    ([-0.6, -0.7, -0.8, -0.6, -0.7], "reversed"),
])
def test_the_registered_verdict(diffs, verdict):
    d = paired_difference({s: 50 + x for s, x in enumerate(diffs)},
                          {s: 50.0 for s in range(len(diffs))})
    assert pr.verdict(d, 0.5).startswith(verdict)


def test_the_report_pairs_by_seed_in_points():
    runs = [{"loss": loss, "seed": s, "metrics": {"miou": base + 0.001 * s}}
            for loss, base in (("S", 0.52), ("C", 0.51), ("cross_entropy", 0.50)) for s in range(4)]
    text = pr.report({"runs": runs, "losses": ["S", "C", "cross_entropy"]}, metric="miou",
                     searched="S", control="C", ce="cross_entropy", hand=None, middle=None,
                     target=0.5, target_ce=1.0)
    assert "| searched - plain soft metric (primary) | +1.00 [+1.00, +1.00], wins 4/4 | **met**" in text
    assert "| searched - cross-entropy | +2.00 [+2.00, +2.00], wins 4/4 | **met**" in text
    assert "| `C` | plain soft metric (control) | 4 | 51.15 ± 0.13 |" in text
    with pytest.raises(ValueError, match="no run of loss 'X'"):
        pr.report({"runs": runs, "losses": []}, metric="miou", searched="X", control="C",
                  ce="cross_entropy", hand=None, middle=None, target=0.5, target_ce=None)
