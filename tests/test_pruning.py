"""BottomQuantilePruner: the share it stops stays at its quantile over a long study."""

from __future__ import annotations

import math
import random

import optuna
import pytest

from autoloss.search.pruning import BottomQuantilePruner


def _simulate(pruner: optuna.pruners.BasePruner, n: int = 200, *,
              direction: str = "maximize") -> float:
    """Trials with iid uniform scores at steps 20 and 40 (final = step 40); the share pruned."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, pruner=pruner)
    rng = random.Random(0)
    pruned = 0
    for _ in range(n):
        trial = study.ask()
        trial.report(rng.random(), 20)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            pruned += 1
            continue
        final = rng.random()
        trial.report(final, 40)
        study.tell(trial, final)
    return pruned / n


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_share_pruned_stays_at_the_quantile(direction):
    share = _simulate(BottomQuantilePruner(0.25, n_warmup_steps=20), direction=direction)
    assert 0.17 <= share <= 0.33
    # optuna's PercentilePruner keeping the top 75 % of the *completed* trials stops more and
    # more as the survivors' bar rises (the reason for this pruner)
    survivors = _simulate(optuna.pruners.PercentilePruner(75.0, n_warmup_steps=20,
                                                          n_min_trials=5), direction=direction)
    assert survivors > share + 0.05


def test_warmup_startup_and_nan():
    study = optuna.create_study(direction="maximize",
                                pruner=BottomQuantilePruner(0.5, n_startup_trials=3,
                                                            n_warmup_steps=10))
    for value in (1.0, 2.0):
        t = study.ask()
        t.report(value, 10)
        study.tell(t, value)
    early = study.ask()
    early.report(0.0, 10)
    assert not early.should_prune()  # only 2 trials reported at step 10
    study.tell(early, 0.0)
    warm = study.ask()
    warm.report(-5.0, 5)
    assert not warm.should_prune()  # before the warm-up step
    warm.report(-5.0, 10)
    assert warm.should_prune()
    nan = study.ask()
    nan.report(math.nan, 10)
    assert nan.should_prune()


@pytest.mark.parametrize("kwargs", [{"quantile": 0.0}, {"quantile": 1.0},
                                    {"n_startup_trials": 0}, {"n_warmup_steps": -1}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match="must be"):
        BottomQuantilePruner(**kwargs)
