"""The samplers and the pruner of a search, and the points a new study starts with.

:data:`SAMPLER_BUILDERS` is the one table of sampler names (:data:`SAMPLERS`, what the CLI and
files accept). Every sampler's randomness is keyed by the trial number
(:mod:`autoloss.search.trial_seeds`): processes and workers sharing a study never sample the
same stream, and trial ``k`` of a seed is the same however many of them there are. optuna is
imported when a sampler is built, not with this module (``autoloss.search.config`` reads the
names).

The pruner is :class:`~autoloss.search.pruning.BottomQuantilePruner` (0.25): a trial is stopped
at an evaluation only when it is in the bottom quarter of all trials that reported at that step
(pruned ones included, after 5 of them; optuna's ``PercentilePruner`` compares with completed
trials only, survivors of earlier pruning, and stopped half of the trials in the efficiency
benchmark). Proxy scores are noisy and early ranks only loosely predict final ones, so the
median rule wastes good losses; the bottom quarter catches the broken ones (collapsed
predictions) early. The last evaluation never prunes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autoloss.errors import MissingDependencyError
from autoloss.search.space_types import Space

if TYPE_CHECKING:
    import optuna

__all__ = ["SAMPLERS", "SAMPLER_BUILDERS", "SamplerSettings", "make_pruner", "make_sampler",
           "prior_points", "tpe_startup_trials"]


@dataclass(frozen=True)
class SamplerSettings:
    """What a sampler builder reads of a search: its ``seed``, ``trials`` (budget), ``workers``,
    the ``start`` point (PPO's first mean) and the ``ppo`` options
    (:class:`~autoloss.search.ppo.PPOOptions` as a dict)."""

    seed: int
    trials: int
    workers: int
    start: Mapping[str, float]
    ppo: Mapping[str, Any]


def tpe_startup_trials(trials: int) -> int:
    """Trials before TPE models the results (random ones; references and ``prior`` points
    included): a quarter of the budget ``trials``, 3 to 10."""
    return min(10, max(3, trials // 4))


def prior_points(space: Space, n: int, *, seed: int, sigma: float = 0.2,
                 center: Mapping[str, float] | None = None) -> list[dict[str, float]]:
    """``n`` points drawn like PPO's first generation: every parameter from a normal with std
    ``sigma`` around ``center`` (default ``space.initial_params()``), truncated to its bounds
    (seeded)."""
    from scipy.stats import truncnorm

    rng = np.random.default_rng([seed, 20211])
    center, bounds = (space.initial_params() if center is None else center), space.bounds()
    points = []
    for _ in range(n):
        point = {}
        for name, (low, high) in bounds.items():
            mean = min(max(center[name], low), high)
            a, b = (low - mean) / sigma, (high - mean) / sigma
            point[name] = float(truncnorm.rvs(a, b, loc=mean, scale=sigma, random_state=rng))
        points.append(point)
    return points


def _tpe(s: SamplerSettings) -> optuna.samplers.BaseSampler:
    import optuna

    from autoloss.search.trial_seeds import TrialSeededSampler

    startup, liar = tpe_startup_trials(s.trials), s.workers > 1
    return TrialSeededSampler(lambda k: optuna.samplers.TPESampler(
        seed=k, multivariate=True, n_startup_trials=startup, constant_liar=liar), s.seed)


def _cmaes(s: SamplerSettings) -> optuna.samplers.BaseSampler:
    import optuna

    from autoloss.search.trial_seeds import TrialSeededSampler

    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise MissingDependencyError("sampler 'cmaes' needs the cmaes package: "
                                     "pip install cmaes") from None
    # starts at the centre of the box (x0/sigma0 are deprecated in optuna 4.9); the enqueued
    # reference points are evaluated first all the same
    return TrialSeededSampler(lambda k: optuna.samplers.CmaEsSampler(seed=k), s.seed)


def _random(s: SamplerSettings) -> optuna.samplers.BaseSampler:
    import optuna

    from autoloss.search.trial_seeds import TrialSeededSampler

    return TrialSeededSampler(lambda k: optuna.samplers.RandomSampler(seed=k), s.seed)


def _qmc(s: SamplerSettings) -> optuna.samplers.BaseSampler:
    import optuna

    with warnings.catch_warnings():  # one shared sequence, indexed by the trial number
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=s.seed, scramble=True,
                                          warn_asynchronous_seeding=False)


def _ppo(s: SamplerSettings) -> optuna.samplers.BaseSampler:
    from autoloss.search.ppo import PPOSampler  # draws with a generator seeded by the trial number

    return PPOSampler(initial_params=dict(s.start), seed=s.seed, **s.ppo)


#: sampler name -> its builder; the names are :data:`SAMPLERS`
SAMPLER_BUILDERS: dict[str, Callable[[SamplerSettings], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "cmaes": _cmaes, "random": _random, "qmc": _qmc, "ppo": _ppo}
SAMPLERS = tuple(SAMPLER_BUILDERS)


def make_sampler(sampler: Any, settings: SamplerSettings) -> optuna.samplers.BaseSampler:
    """The sampler named ``sampler`` (:data:`SAMPLER_BUILDERS`); a sampler instance is used as
    it is."""
    if not isinstance(sampler, str):
        return sampler
    return SAMPLER_BUILDERS[sampler](settings)


def make_pruner(*, prune: bool, eval_steps: list[int]) -> optuna.pruners.BasePruner:
    """The pruner (see the module docstring), or none without ``prune`` or evaluations."""
    import optuna

    from autoloss.search.pruning import BottomQuantilePruner

    if not prune or not eval_steps:
        return optuna.pruners.NopPruner()
    return BottomQuantilePruner(0.25, n_startup_trials=5, n_warmup_steps=min(eval_steps))
