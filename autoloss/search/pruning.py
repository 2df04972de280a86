"""``BottomQuantilePruner``: stop a trial whose score at an evaluation is in the bottom quantile
of every score reported at that evaluation so far.

optuna's ``PercentilePruner`` compares a trial only with the *completed* trials. Those are the
survivors of earlier pruning, better than average at every step, so the bar rises as the study
goes on and far more than the intended share is stopped (in the search efficiency benchmark a
"bottom quarter" pruner stopped half of the trials). This pruner compares with every trial that
reported at the step, pruned ones included, so it stops about ``quantile`` of the trials at each
evaluation however long the study runs.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autoloss.errors import InvalidValueError

__all__ = ["BottomQuantilePruner"]


class BottomQuantilePruner(optuna.pruners.BasePruner):
    """Prune at step ``t >= n_warmup_steps`` when the trial's value there is strictly worse than
    the ``quantile`` of the values reported at ``t`` by the earlier COMPLETE and PRUNED trials.

    Args:
        quantile: share of the trials to stop at each evaluation, in (0, 1).
        n_startup_trials: no pruning until this many trials have reported at the step.
        n_warmup_steps: no pruning before this step (the first evaluation of a short run is
            mostly noise).
    Single-objective studies only; the direction (maximize / minimize) is the study's.
    """

    def __init__(self, quantile: float = 0.25, *, n_startup_trials: int = 5,
                 n_warmup_steps: int = 0) -> None:
        if not 0.0 < quantile < 1.0:
            raise InvalidValueError(f"quantile must be in (0, 1), but got {quantile}")
        if n_startup_trials < 1 or n_warmup_steps < 0:
            raise InvalidValueError(f"n_startup_trials must be >= 1 and n_warmup_steps >= 0, but got "
                             f"{n_startup_trials} and {n_warmup_steps}")
        self.quantile, self.n_startup_trials = quantile, n_startup_trials
        self.n_warmup_steps = n_warmup_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        reported = [t.intermediate_values[step] for t in others
                    if step in t.intermediate_values and t.number != trial.number]
        reported = [v for v in reported if not math.isnan(v)]
        if len(reported) < self.n_startup_trials:
            return False
        if study.direction == StudyDirection.MAXIMIZE:
            return value < float(np.quantile(reported, self.quantile))
        return value > float(np.quantile(reported, 1.0 - self.quantile))
