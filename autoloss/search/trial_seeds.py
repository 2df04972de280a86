"""Sampler randomness keyed by the trial number, so that many processes can share one study.

Optuna's samplers draw from one random stream per sampler object. Two processes that start a
search with the same seed on one study (the way to use several machines) hold the same stream
and, seeing the same history, sample the same parameters. :class:`TrialSeededSampler` instead
builds its inner sampler afresh for every trial with the seed ``trial_seed(seed, number)``. The
storage hands out each trial number once, so every trial gets its own stream whichever process
or worker runs it, and a search is reproducible from its seed alone: the parameters of trial
``k`` depend only on the seed, ``k`` and the trials before it (with one process, not on how
many workers or restarts there were in between).

Wrapped: the TPE, random and CMA-ES samplers, whose state between trials lives in the study
(CMA-ES keeps its optimizer in trial attributes). QMC and autoloss's PPO already draw by trial
number and need no wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["TrialSeededSampler", "trial_seed"]


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` of a search seeded ``seed`` (a 32-bit integer)."""
    return int(np.random.SeedSequence([seed, number, 0x5EED]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Delegates to ``make(trial_seed(seed, trial.number))``, built once per trial.

    Args:
        make: builds the inner sampler from a seed, e.g.
            ``lambda s: optuna.samplers.TPESampler(seed=s)``.
        seed: the search's seed.
    """

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._inner: tuple[int, BaseSampler] | None = None  # (trial number, its sampler)

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if self._inner is None or self._inner[0] != trial.number:
            self._inner = (trial.number, self._make(trial_seed(self._seed, trial.number)))
        return self._inner[1]

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial is seeded by its number."""
