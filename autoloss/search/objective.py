"""The trial function of a search: sample a point of the space, build its surrogate loss (valid
by construction, never rejected), fine-tune the proxy with it and return the exact target
metric on the proxy-validation split (Li et al., "Auto Seg-Loss", ICLR 2021).

Every trial trains the proxy with the same seed (common random numbers), so score differences
between trials come from the losses, not from the initialisation. A single-objective trial
reports its target at each of the proxy's evaluations, where the pruner may stop it (never at
the last one); a multi-objective trial is never pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from torch import nn

from autoloss.search.budget import (
    DISCARDED,
    OWNER,
    BudgetReached,
    first_copy,
    over_budget,
    owner,
)
from autoloss.search.config import ProxyLike
from autoloss.search.plan import SearchPlan

__all__ = ["build_objective", "cross_entropy"]


def _fail_reason(err: BaseException) -> str:
    kind = type(err).__name__
    prefix = "non-finite loss: " if kind == "NonFiniteLossError" else ""
    return f"{prefix}{kind}: {err}"[:500]


def build_objective(plan: SearchPlan, proxy: ProxyLike) -> Callable[[optuna.Trial], Any]:
    """The trial function: sample, build the loss, train the proxy, return the target (a list
    of values for a multi-objective search). A trial started once the study had its budget, or
    a second copy of a reference point, is discarded (:mod:`autoloss.search.budget`)."""
    cfg, space = plan.config, plan.space
    bounds = space.bounds()
    last_step = max(proxy.eval_steps) if proxy.eval_steps else None

    def objective(trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr(OWNER, owner())
        if over_budget(trial.study, trial.number, cfg.trials):
            trial.set_user_attr(DISCARDED, "the study had its trial budget when it started")
            trial.study.stop()
            raise BudgetReached(f"trial {trial.number} discarded: the study has its "
                                f"{cfg.trials} trials")
        first = first_copy(trial.study, trial.number, trial.user_attrs.get("reference"))
        if first is not None:
            trial.set_user_attr(DISCARDED, f"a copy of reference trial {first}")
            raise BudgetReached(f"trial {trial.number} discarded: it repeats trial {first}")
        params = {n: trial.suggest_float(n, lo, hi) for n, (lo, hi) in bounds.items()}
        history: list[list[Any]] = []
        spec: dict[str, Any] | None = None

        def record(metrics: dict[str, float] | None = None) -> None:
            # few writes per trial: each one is a storage commit
            trial.set_user_attr("loss", spec)
            trial.set_user_attr("evals", history)
            if metrics is not None or history:
                trial.set_user_attr("metrics", metrics if metrics is not None else history[-1][1])

        def on_eval(step: int, metrics: dict[str, float]) -> None:
            history.append([int(step), {k: float(v) for k, v in metrics.items()}])
            if cfg.multi_objective:
                return
            trial.report(plan.objective_values(history[-1][1])[0], step)
            if (last_step is None or step < last_step) and trial.should_prune():
                record()
                raise optuna.TrialPruned(f"pruned at step {step}")

        try:
            spec = space.loss_spec(params, ignore_index=proxy.ignore_index)
            from autoloss.losses import load_loss

            final = proxy.run(load_loss(spec), seed=cfg.seed, on_eval=on_eval)
            metrics = {k: float(v) for k, v in final.items()}
            values = plan.objective_values(metrics)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("fail_reason", _fail_reason(err))
            record()
            raise
        record(metrics)
        return values if cfg.multi_objective else values[0]

    return objective


def cross_entropy(proxy: ProxyLike) -> nn.Module:
    """The baseline: ``load_loss("cross_entropy")`` (torch's CrossEntropyLoss if that baseline is
    not available)."""
    from autoloss.losses import load_loss

    ignore = proxy.ignore_index
    try:
        return load_loss({"name": "cross_entropy",
                          **({"ignore_index": ignore} if ignore is not None else {})})
    except ValueError:
        return nn.CrossEntropyLoss(ignore_index=ignore if ignore is not None else -100)
