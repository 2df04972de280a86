"""PPOSampler: argument checks, truncated-normal samples, learning on a toy objective, the
stateless replay from storage, pruned / failed / enqueued trials."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch
from fake_proxy import fast_tmp_dir
from optuna.trial import TrialState
from scipy.stats import truncnorm

from autoloss.search.ppo import GENERATION_ATTR, PPOSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"sigma": 0.0}, "sigma"), ({"generation_size": 1}, "generation_size"),
    ({"clip": 1.5}, "clip"), ({"lr": -1.0}, "lr"), ({"update_steps": 0}, "update_steps"),
    ({"seed": 1.5}, "seed"), ({"initial_params": {"x": "a"}}, "initial_params"),
])
def test_arguments_are_validated(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PPOSampler(**kwargs)


def toy(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    y = trial.suggest_float("y", 0.2, 0.9)
    return -((x - 0.8) ** 2) - (y - 0.3) ** 2


def test_samples_stay_inside_bounds_and_are_seeded():
    values = []
    for _ in range(2):
        study = optuna.create_study(direction="maximize",
                                    sampler=PPOSampler(seed=3, generation_size=8))
        study.optimize(toy, n_trials=20)
        values.append([(t.params["x"], t.params["y"]) for t in study.trials])
        assert all(0.0 <= x <= 1.0 and 0.2 <= y <= 0.9 for x, y in values[-1])
    assert values[0] == values[1]


def test_first_generation_is_the_truncated_normal_at_the_initial_mean():
    sampler = PPOSampler(initial_params={"x": 0.3}, sigma=0.1, generation_size=400, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=300)
    xs = np.array([t.params["x"] for t in study.trials])
    dist = truncnorm(-3.0, 7.0, loc=0.3, scale=0.1)  # (0 - 0.3)/0.1, (1 - 0.3)/0.1
    assert xs.mean() == pytest.approx(dist.mean(), abs=0.015)
    assert xs.std() == pytest.approx(dist.std(), abs=0.015)
    assert {t.system_attrs[GENERATION_ATTR] for t in study.trials} == {0}


def test_policy_mean_moves_toward_high_reward():
    sampler = PPOSampler(generation_size=16, seed=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    bounds = {"x": (0.0, 1.0), "y": (0.2, 0.9)}
    means = [sampler.means(study, bounds)]
    assert means[0]["x"] == pytest.approx(0.5) and means[0]["y"] == pytest.approx(0.55)
    for _ in range(5):
        study.optimize(toy, n_trials=16)
        means.append(sampler.means(study, bounds))
    xs = [m["x"] for m in means]
    ys = [m["y"] for m in means]
    assert xs[-1] > 0.68 and ys[-1] < 0.42, (xs, ys)
    assert abs(xs[-1] - 0.8) < abs(xs[0] - 0.8) and abs(ys[-1] - 0.3) < abs(ys[0] - 0.3)
    # what is sampled: the truncated normal's own mean moved from 0.5 to near the optimum 0.8
    sampled = truncnorm.mean(-xs[-1] / 0.2, (1 - xs[-1]) / 0.2, loc=xs[-1], scale=0.2)
    assert abs(sampled - 0.8) < 0.1, sampled
    assert sampler.policy_state(study).generation == 5


def test_update_matches_an_independent_ppo_step():
    """One generation, one Adam step: the mean logit moves by lr * sign(gradient) (Adam's
    first step), and the gradient's sign is the one of the advantage-weighted score."""
    sampler = PPOSampler(generation_size=4, update_steps=1, lr=0.1, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=4)  # reward = x
    xs = torch.tensor([t.params["x"] for t in study.trials], dtype=torch.float64)
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    mean = torch.sigmoid(z)
    mass = torch.special.ndtr((1 - mean) / 0.2) - torch.special.ndtr((0 - mean) / 0.2)
    logp = -0.5 * ((xs - mean) / 0.2) ** 2 - torch.log(mass)
    advantage = xs - xs.mean()
    (logp * advantage).mean().backward()  # ratio = 1 at the first step: PPO = policy gradient
    expected = 0.1 * math.copysign(1.0, float(z.grad))
    assert sampler.policy_state(study).logits["x"] == pytest.approx(expected, rel=1e-6)
    assert expected > 0  # rewarding x pushes the mean up


@pytest.fixture
def fast_tmp():
    yield from fast_tmp_dir()


def test_state_is_replayed_identically_from_storage(fast_tmp):
    url = f"sqlite:///{fast_tmp / 'ppo.db'}"
    sampler = PPOSampler(generation_size=6, seed=2)
    study = optuna.create_study(study_name="ppo", storage=url, direction="maximize",
                                sampler=sampler)
    study.optimize(toy, n_trials=15)
    state = sampler.policy_state(study)
    assert state.generation == 2 and set(state.logits) == {"x", "y"}
    reloaded = optuna.load_study(study_name="ppo", storage=url,
                                 sampler=PPOSampler(generation_size=6, seed=2))
    again = reloaded.sampler.policy_state(reloaded)
    assert again == state
    # a resumed study continues the same sequence as an uninterrupted one
    reloaded.optimize(toy, n_trials=3)
    straight = optuna.create_study(direction="maximize", sampler=PPOSampler(generation_size=6,
                                                                             seed=2))
    straight.optimize(toy, n_trials=18)
    assert [t.params for t in reloaded.trials] == [t.params for t in straight.trials]


def test_pruned_failed_and_enqueued_trials():
    sampler = PPOSampler(generation_size=4, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"x": 0.9})

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number in (1, 2):
            trial.report(x - 1.0, step=1)
            raise optuna.TrialPruned()
        if trial.number == 3:
            raise RuntimeError("boom")
        return x

    study.optimize(objective, n_trials=6, catch=(RuntimeError,))
    tags = {t.number: t.system_attrs.get(GENERATION_ATTR) for t in study.trials}
    assert tags[0] is None  # enqueued: not a policy sample
    assert all(tags[n] == 0 for n in range(1, 6))
    # generation 0: trials 1, 2 (pruned, reward = last report), 4, 5 -- trial 3 failed
    state = sampler.policy_state(study)
    assert state.generation == 1
    assert [t.state for t in study.trials[1:4]] == [TrialState.PRUNED, TrialState.PRUNED,
                                                     TrialState.FAIL]
    excluded = PPOSampler(generation_size=4, include_pruned=False, seed=0)
    assert excluded.policy_state(study).generation == 0  # only 2 usable rewards


def test_multi_objective_is_refused():
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=PPOSampler())
    with pytest.raises(ValueError, match="single-objective"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 0.0), n_trials=1)


def test_non_float_parameters_fall_back_to_random():
    study = optuna.create_study(direction="maximize", sampler=PPOSampler(seed=0))
    study.optimize(lambda t: float(t.suggest_int("n", 1, 3)) + t.suggest_float("x", 0, 1),
                   n_trials=5)
    assert all(t.params["n"] in (1, 2, 3) for t in study.trials)


def test_ppo_warns_when_the_budget_is_less_than_one_generation():
    import warnings

    from autoloss.search.config import SearchConfig, resolve_config

    with pytest.warns(UserWarning, match=r"trials=12 is less than one generation "
                                         r"\(generation_size=32\)"):
        resolve_config(SearchConfig(sampler="ppo", trials=12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_config(SearchConfig(sampler="ppo", trials=12, ppo={"generation_size": 4}))
        resolve_config(SearchConfig(sampler="tpe", trials=12))
