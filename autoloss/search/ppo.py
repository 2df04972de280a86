"""``PPOSampler``: the Auto Seg-Loss search policy as an optuna sampler.

Li et al., "Auto Seg-Loss", ICLR 2021, section 3.3: every raw parameter ``x_d`` is drawn from an
independent normal truncated to ``[low_d, high_d]``, with a learnt mean and a fixed std ``sigma``;
the policy samples generations of ``G`` candidate losses, and after each generation its means take
``update_steps`` Adam steps on the PPO clipped objective (Schulman et al., 2017)::

    mean_d = low_d + (high_d - low_d) * sigmoid(z_d)
    log pi(x) = sum_d log N(x_d; mean_d, sigma) - log(Phi((high_d - mean_d)/sigma)
                                                      - Phi((low_d - mean_d)/sigma))
    ratio_i = exp(log pi(x_i) - log pi_old(x_i)),   A_i = R_i - mean_j R_j
    maximise  mean_i min(ratio_i A_i, clip(ratio_i, 1 - eps, 1 + eps) A_i)

**Stateless**: nothing lives in the sampler between trials. Before each trial the policy is
replayed from the study's finished trials, so it works with any storage, several workers and
resumed studies, and gives the same state after reloading the study. Each trial the sampler
starts is tagged with its generation (system attr ``ppo:generation``); generation ``g`` is
complete once ``G`` of its trials are finished with a reward, and the update uses the first ``G``
to finish (by completion time, then number), so later finishers never change a past update.

Sampling is per parameter (``sample_independent``: the policy factorises, so there is no relative
search space); each draw comes from a random stream seeded by ``(seed, trial number, parameter
name)``, so a replayed or resumed study draws the same values. ``mean_d`` is the location of the
truncated normal (near a bound, the samples' own mean lies further inside).

Rewards: a COMPLETE trial's value; a PRUNED trial's last reported value (``include_pruned``,
default: pruned losses were bad early, and the policy should learn to avoid them); FAILED trials
are excluded (the generation waits for a replacement). Enqueued trials (fixed parameters) and
parameters that are not plain float ranges are not part of the policy: the latter are sampled
uniformly (optuna's ``RandomSampler``). Single-objective studies only.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import truncnorm

from autoloss.errors import InvalidValueError
from autoloss.utils.typed_fields import at_least, check_fields, from_mapping, in_range, positive

__all__ = ["GENERATION_ATTR", "GENERATION_SIZE", "PPOOptions", "PPOSampler", "PolicyState"]


@dataclass(frozen=True)
class PPOOptions:
    """The options of :class:`PPOSampler` (its defaults are these; a search config's ``ppo``):
    ``sigma`` (std of the truncated normals), ``generation_size`` (trials per policy update),
    ``clip`` (PPO ratio clip), ``lr`` and ``update_steps`` (of each update), ``include_pruned``
    (pruned trials count, at their last reported value)."""

    sigma: float = field(default=0.2, metadata=positive())
    generation_size: int = field(default=32, metadata=at_least(2))
    clip: float = field(default=0.2, metadata=in_range(0, 1, low_open=True, high_open=True))
    lr: float = field(default=0.2, metadata=positive())
    update_steps: int = field(default=60, metadata=at_least(1))
    include_pruned: bool = True

    def __post_init__(self) -> None:
        check_fields(self, where="ppo option ")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> PPOOptions:
        """From a mapping of its fields (an unknown key is an error with a did-you-mean)."""
        return from_mapping(cls, options, what="ppo option")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


GENERATION_ATTR = "ppo:generation"


@dataclass(frozen=True)
class PolicyState:
    """The replayed policy: the ``generation`` new trials join and the mean logits ``z`` by
    parameter name (parameters not seen yet start at the initial mean)."""

    generation: int
    logits: dict[str, float]


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


#: trials per generation by default (the paper's G)
GENERATION_SIZE = PPOOptions.generation_size  # the defaults: PPOOptions


class PPOSampler(BaseSampler):
    """Truncated-normal policy updated by PPO after each generation (see the module docstring).

    Args:
        initial_params: initial mean per parameter name (absolute values inside the bounds);
            parameters not given start at the middle of their range.
        sigma: std of every truncated normal (in parameter units; the paper: 0.2).
        generation_size: trials per generation ``G`` (the paper: 32).
        clip: PPO clip range ``eps``.
        lr: Adam learning rate on the mean logits.
        update_steps: Adam steps per generation.
        include_pruned: use a pruned trial's last reported value as its reward.
        seed: seed of the per-trial random streams (each trial draws from a stream derived from
            ``(seed, trial number, parameter name)``, so workers never repeat a sample).
    """

    def __init__(self, *, initial_params: Mapping[str, float] | None = None,
                 sigma: float = PPOOptions.sigma, generation_size: int = GENERATION_SIZE,
                 clip: float = PPOOptions.clip, lr: float = PPOOptions.lr,
                 update_steps: int = PPOOptions.update_steps,
                 include_pruned: bool = PPOOptions.include_pruned,
                 seed: int | None = None) -> None:
        PPOOptions(sigma=sigma, generation_size=generation_size, clip=clip, lr=lr,
                   update_steps=update_steps, include_pruned=include_pruned)  # the checks
        if seed is not None and not isinstance(seed, int):
            raise InvalidValueError(f"seed must be an int or None, but got {seed=}")
        initial = dict(initial_params or {})
        for name, value in initial.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidValueError(f"initial_params[{name!r}] must be a number, but got {value!r}")
        self._initial = {k: float(v) for k, v in initial.items()}
        self._sigma = float(sigma)
        self._size = generation_size
        self._clip = float(clip)
        self._lr = float(lr)
        self._steps = update_steps
        self._include_pruned = include_pruned
        self._seed = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        self._fallback = RandomSampler(seed=self._seed)
        self._states: dict[int, PolicyState] = {}
        self._memo: dict[tuple[Any, ...], dict[str, float]] = {}

    # -- optuna sampler interface ---------------------------------------------------------------
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return {}  # independent per-parameter sampling: the policy factorises over parameters

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if len(study.directions) > 1:
            raise InvalidValueError("PPOSampler supports single-objective studies only, but the study "
                             f"has {len(study.directions)} objectives")
        if "fixed_params" in trial.system_attrs or trial.params:
            return  # enqueued or retried trial: not drawn from the current policy
        state = self.policy_state(study)
        self._states[trial.number] = state
        study._storage.set_trial_system_attr(trial._trial_id, GENERATION_ATTR, state.generation)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        dist = param_distribution
        if not isinstance(dist, FloatDistribution) or dist.log or dist.step is not None:
            return self._fallback.sample_independent(study, trial, param_name, dist)
        state = self._states.get(trial.number)
        if state is None:
            state = self._states[trial.number] = self.policy_state(study)
        mean = self._mean(state, param_name, dist.low, dist.high)
        rng = np.random.default_rng([self._seed, trial.number, zlib.crc32(param_name.encode())])
        a, b = (dist.low - mean) / self._sigma, (dist.high - mean) / self._sigma
        value = float(truncnorm.rvs(a, b, loc=mean, scale=self._sigma, random_state=rng))
        return min(max(value, dist.low), dist.high)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._states.pop(trial.number, None)

    # -- the policy -----------------------------------------------------------------------------
    def _initial_logit(self, name: str, low: float, high: float) -> float:
        if high <= low:
            return 0.0
        value = self._initial.get(name, 0.5 * (low + high))
        return _logit((value - low) / (high - low))

    def _mean(self, state: PolicyState, name: str, low: float, high: float) -> float:
        z = state.logits.get(name)
        z = self._initial_logit(name, low, high) if z is None else z
        return low + (high - low) * _sigmoid(z)

    def _reward(self, trial: FrozenTrial, sign: float) -> float | None:
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            return sign * trial.value
        if (trial.state == TrialState.PRUNED and self._include_pruned
                and trial.intermediate_values):
            return sign * trial.intermediate_values[max(trial.intermediate_values)]
        return None

    def policy_state(self, study: Study) -> PolicyState:
        """Replay the policy from the study's finished trials (see the module docstring)."""
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        groups: dict[int, list[tuple[FrozenTrial, float]]] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            g = t.system_attrs.get(GENERATION_ATTR)
            reward = self._reward(t, sign)
            if isinstance(g, int) and reward is not None and math.isfinite(reward):
                groups.setdefault(g, []).append((t, reward))
        logits: dict[str, float] = {}
        key: tuple[Any, ...] = ()
        generation = 0
        while True:
            members = sorted(groups.get(generation, []),
                             key=lambda tr: (tr[0].datetime_complete is None,
                                             tr[0].datetime_complete, tr[0].number))
            if len(members) < self._size:
                return PolicyState(generation, dict(logits))
            members = members[:self._size]
            key = (*key, tuple((t.number, r) for t, r in members))
            if key not in self._memo:
                self._memo[key] = self._update(logits, members)
            logits = dict(self._memo[key])
            generation += 1

    def _update(self, logits: Mapping[str, float], members: Sequence[tuple[FrozenTrial, float]]
                ) -> dict[str, float]:
        """One PPO update of the mean logits on one generation's samples and rewards."""
        names = sorted({n for t, _ in members for n, d in t.distributions.items()
                        if isinstance(d, FloatDistribution) and not d.log and d.step is None
                        and d.high > d.low})
        out = dict(logits)
        if not names:
            return out
        kept = [(t, r) for t, r in members if all(n in t.params for n in names)]
        if len(kept) < 2:
            return out
        dists = {n: kept[0][0].distributions[n] for n in names}
        low = torch.tensor([dists[n].low for n in names], dtype=torch.float64)
        high = torch.tensor([dists[n].high for n in names], dtype=torch.float64)
        x = torch.tensor([[t.params[n] for n in names] for t, _ in kept], dtype=torch.float64)
        rewards = torch.tensor([r for _, r in kept], dtype=torch.float64)
        advantage = rewards - rewards.mean()
        z0 = [out.get(n, self._initial_logit(n, dists[n].low, dists[n].high)) for n in names]
        z = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
        sigma = self._sigma

        def log_prob(z: torch.Tensor) -> torch.Tensor:
            mean = low + (high - low) * torch.sigmoid(z)
            ndtr = torch.special.ndtr
            mass = ndtr((high - mean) / sigma) - ndtr((low - mean) / sigma)
            per = -0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - torch.log(mass)
            return per.sum(dim=1)  # the constant -log(2 pi)/2 cancels in the ratio

        with torch.no_grad():
            old = log_prob(z)
        # Adam (Kingma & Ba, 2015; betas 0.9, 0.999, eps 1e-8) written out: torch.optim's first
        # step imports torch._dynamo, seconds per process for a dozen numbers
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        for step in range(1, self._steps + 1):
            ratio = torch.exp(log_prob(z) - old)
            clipped = ratio.clamp(1 - self._clip, 1 + self._clip)
            objective = torch.minimum(ratio * advantage, clipped * advantage).mean()
            (grad,) = torch.autograd.grad(-objective, z)
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad * grad
            m_hat, v_hat = m / (1 - 0.9 ** step), v / (1 - 0.999 ** step)
            with torch.no_grad():
                z -= self._lr * m_hat / (v_hat.sqrt() + 1e-8)
        out.update(zip(names, z.detach().tolist()))
        return out

    def means(self, study: Study, bounds: Mapping[str, tuple[float, float]]) -> dict[str, float]:
        """Current policy means of the parameters in ``bounds`` (for reports and tests)."""
        state = self.policy_state(study)
        return {n: self._mean(state, n, lo, hi) for n, (lo, hi) in bounds.items()}

