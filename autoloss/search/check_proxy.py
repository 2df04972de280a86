"""A contract test for a proxy of your own: :func:`check_proxy` runs it the way the search does
and raises, naming what is wrong, where it breaks the :class:`~autoloss.search.config.ProxyLike`
protocol.

    from autoloss.search import check_proxy
    proxy = my_factory({"data": "folder:data"}, cache_dir=Path("cache"))
    report = check_proxy(proxy)          # raises ProxyContractError on the first broken rule
    print(report.metrics, report.evals)

What it checks, in order (each rule is what the search relies on):

1. attributes: ``num_classes`` an int >= 1, ``ignore_index`` an int or None, ``eval_steps`` a
   non-empty list of increasing positive ints (the pruner compares trials at these steps);
2. ``prepare()`` (or ``prepare(progress=False)``) runs;
3. ``run(loss, seed=..., on_eval=...)`` accepts those arguments, trains with a small loss (the
   plain soft metric of ``metric``, built for ``num_classes`` and ``ignore_index``) and calls
   ``on_eval(step, scores)`` once at each of ``eval_steps``, in order, with the target among
   the scores;
4. it returns a mapping of metric names to numbers, the target finite;
5. an exception raised by ``on_eval`` (the search's pruning signal) propagates out of ``run``
   unchanged, at the first evaluation.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autoloss.errors import AutoLossError

__all__ = ["ProxyCheck", "ProxyContractError", "check_proxy"]


class ProxyContractError(AutoLossError, TypeError):
    """A proxy breaks the :class:`~autoloss.search.config.ProxyLike` protocol; the message names the
    attribute or call and what was expected."""


@dataclass
class ProxyCheck:
    """What a passing :func:`check_proxy` saw: the final ``metrics`` of the run, its ``evals``
    (``(step, scores)`` per ``on_eval`` call) and the ``seconds`` both runs took."""

    metrics: dict[str, float]
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0


class _PruneSignal(Exception):
    """Raised from ``on_eval`` by the pruning check; must reach :func:`check_proxy` unchanged."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _attribute_problems(proxy: Any) -> list[str]:
    problems = []
    for name in ("num_classes", "ignore_index", "eval_steps", "prepare", "run"):
        if not hasattr(proxy, name):
            problems.append(f"it has no attribute {name!r}")
    if problems:
        return problems
    if not _is_int(proxy.num_classes) or proxy.num_classes < 1:
        problems.append(f"num_classes must be an int >= 1, but got {proxy.num_classes!r}")
    if proxy.ignore_index is not None and not _is_int(proxy.ignore_index):
        problems.append(f"ignore_index must be an int or None, but got {proxy.ignore_index!r}")
    steps = proxy.eval_steps
    if (not isinstance(steps, (list, tuple)) or not steps
            or not all(_is_int(s) and s >= 1 for s in steps)
            or any(a >= b for a, b in zip(steps, steps[1:]))):
        problems.append(f"eval_steps must be a non-empty list of increasing positive ints, but "
                        f"got {steps!r}")
    for name in ("prepare", "run"):
        if not callable(getattr(proxy, name)):
            problems.append(f"{name} must be a method, but got "
                            f"{type(getattr(proxy, name)).__name__}")
    if callable(proxy.run):
        try:
            inspect.signature(proxy.run).bind(nn.Identity(), seed=0, on_eval=None)
        except TypeError as err:
            problems.append(f"run must accept run(loss, *, seed, on_eval), but {err}")
        except ValueError:  # no signature to read: the call will tell
            pass
    return problems


def _scores(value: Any, *, what: str, metric: str) -> dict[str, float]:
    """``value`` as ``{name: float}`` with ``metric`` among the names, or a contract error."""
    if not isinstance(value, Mapping):
        raise ProxyContractError(f"{what} must be a mapping of metric names to numbers, but got "
                                 f"{type(value).__name__}")
    try:
        scores = {str(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError) as err:
        raise ProxyContractError(f"{what} must map metric names to numbers, but a value is not "
                                 f"one ({err})") from None
    if metric not in scores:
        raise ProxyContractError(f"{what} must include the target {metric!r} (the search reads "
                                 f"it), but has {sorted(scores)}")
    return scores


def _small_loss(proxy: Any, metric: str) -> nn.Module:
    from autoloss.losses import load_loss

    return load_loss(f"soft-{metric}", ignore_index=proxy.ignore_index)


def _prepare(proxy: Any) -> None:
    try:
        takes_progress = "progress" in inspect.signature(proxy.prepare).parameters
    except ValueError:
        takes_progress = False
    proxy.prepare(progress=False) if takes_progress else proxy.prepare()


def check_proxy(proxy: Any, *, metric: str = "miou", seed: int = 0,
                loss: nn.Module | None = None) -> ProxyCheck:
    """Run ``proxy`` as the search does and check the :class:`~autoloss.search.config.ProxyLike`
    contract (see the module docstring); raises :class:`ProxyContractError` naming the first
    rule it breaks, else returns what the run reported.

    Args:
        proxy: the object your ``proxy_factory`` returns.
        metric: the target the search would read from the scores (``miou``, ``bf1``, ...).
        seed: the seed of both runs.
        loss: the loss to train with (default: ``soft-<metric>``, the plain soft metric, for
            ``proxy.num_classes`` classes and its ``ignore_index``).

    Cost: ``prepare()`` plus one full ``run`` and one stopped at its first evaluation; make the
    proxy small for the check (few steps, a data subset).
    """
    problems = _attribute_problems(proxy)
    if problems:
        raise ProxyContractError(f"{type(proxy).__name__} is not a proxy: "
                                 + "; ".join(problems))
    started = time.perf_counter()
    _prepare(proxy)
    loss = loss if loss is not None else _small_loss(proxy, metric)
    steps = list(proxy.eval_steps)
    evals: list[tuple[int, dict[str, float]]] = []

    def record(step: int, scores: dict[str, float]) -> None:
        evals.append((step, _scores(scores, what=f"the scores of on_eval at step {step}",
                                    metric=metric)))

    final = proxy.run(loss, seed=seed, on_eval=record)
    seen = [step for step, _ in evals]
    if seen != steps:
        raise ProxyContractError(f"run must call on_eval(step, scores) once at each of "
                                 f"eval_steps={steps}, in order, but called it at {seen}")
    metrics = _scores(final, what="the value run returns", metric=metric)
    if not math.isfinite(metrics[metric]):
        raise ProxyContractError(f"run must return a finite {metric!r}, but returned "
                                 f"{metric}={metrics[metric]}")
    _check_pruning(proxy, loss, seed, steps)
    return ProxyCheck(metrics, evals, time.perf_counter() - started)


def _check_pruning(proxy: Any, loss: nn.Module, seed: int, steps: list[int]) -> None:
    calls: list[int] = []

    def prune(step: int, scores: dict[str, float]) -> None:
        calls.append(step)
        raise _PruneSignal(f"pruned at step {step}")

    raised: BaseException | None = None
    try:
        proxy.run(loss, seed=seed, on_eval=prune)
    except _PruneSignal as err:
        raised = err
    except Exception as err:  # wrapped or replaced: the search would record a failure
        raise ProxyContractError(
            f"an exception raised by on_eval (the search's pruning signal) must propagate out "
            f"of run unchanged, but run raised {type(err).__name__}: {err}") from None
    if raised is None:
        raise ProxyContractError(
            "an exception raised by on_eval (the search's pruning signal) must propagate out of "
            f"run, but run returned normally (on_eval was called at steps {calls} and raised "
            f"each time)")
    if calls != steps[:1]:
        raise ProxyContractError(f"on_eval raised at step {calls[0]}, but run went on to call it "
                                 f"at {calls[1:]}; it must stop there")

