"""Statistics of a loss comparison: paired differences over seeds, and whether a run plateaued.

A comparison trains every loss with the same seeds (same initial weights, batch order and
augmentation per seed), so two losses are compared **paired by seed**: the difference
``d_s = value(loss, s) - value(reference, s)`` cancels what the seed does to both. Its mean with
a two-sided t-interval over the seeds (Student's t with ``n - 1`` degrees of freedom,
``scipy.stats.t``) says whether a gain is larger than the seed noise::

    mean ± t_{(1+confidence)/2, n-1} * std(d, ddof=1) / sqrt(n)

An interval that excludes zero is a difference the seeds agree on; one that contains zero is
reported as "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from autoloss.errors import InvalidValueError

__all__ = ["PairedDifference", "Plateau", "mean_std", "paired_difference", "plateau"]


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` of ``value - reference`` over the ``n`` seeds both have finite values for, its
    ``low`` / ``high`` t-interval (None below 2 seeds), ``wins``: seeds where ``value`` is
    strictly higher, ``significant``: the interval excludes zero."""

    mean: float | None
    low: float | None
    high: float | None
    wins: int
    n: int
    confidence: float

    @property
    def significant(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, float | int | bool | None]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "wins": self.wins,
                "n": self.n, "significant": self.significant}


def mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"mean", "std" (sample, n-1; None for one value), "n"}`` of the finite values."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def paired_difference(values: dict[int, float], reference: dict[int, float], *,
                      confidence: float = 0.95) -> PairedDifference:
    """Paired difference of ``values`` to ``reference``, both ``{seed: value}``.

    Only seeds present in both with finite values count. With one seed the interval is None;
    with no spread (every difference equal) it has zero width.
    """
    if not 0 < confidence < 1:
        raise InvalidValueError(f"confidence must be in (0, 1), but got {confidence=}")
    seeds = sorted(s for s in values if s in reference
                   and math.isfinite(values[s]) and math.isfinite(reference[s]))
    diffs = np.array([values[s] - reference[s] for s in seeds], dtype=float)
    n = len(diffs)
    if n == 0:
        return PairedDifference(None, None, None, 0, 0, confidence)
    mean = float(diffs.mean())
    wins = int((diffs > 0).sum())
    if n < 2:
        return PairedDifference(mean, None, None, wins, n, confidence)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
    return PairedDifference(mean, mean - half, mean + half, wins, n, confidence)


@dataclass(frozen=True)
class Plateau:
    """Over the last ``window`` evaluations (steps ``first_step`` .. ``last_step``) the metric
    ranged over ``spread`` (max - min, same unit as the values); ``reached``: spread < tol.
    ``drift``: mean of those evaluations minus the mean of the ``window`` before them (None
    when there are not that many): a trend, where the spread also holds evaluation noise."""

    window: int
    first_step: int
    last_step: int
    spread: float
    tol: float
    drift: float | None = None

    @property
    def reached(self) -> bool:
        return self.spread < self.tol


def plateau(steps: Sequence[int], values: Sequence[float], *, share: float = 0.25,
            tol: float = 0.005) -> Plateau:
    """Whether a validation curve has plateaued: over the last ``share`` of its evaluations
    (at least 2), the values move by less than ``tol`` (max - min; 0.005 = half a point for
    metrics in [0, 1]). Non-finite values count as unbounded movement."""
    if len(steps) != len(values):
        raise InvalidValueError(f"steps and values must have one length, but got {len(steps)} steps "
                         f"and {len(values)} values")
    if len(values) < 2:
        raise InvalidValueError(f"a plateau needs at least 2 evaluations, but got {len(values)}")
    if not 0 < share <= 1:
        raise InvalidValueError(f"share must be in (0, 1], but got {share=}")
    window = min(len(values), max(2, math.ceil(share * len(values))))
    tail = [float(v) for v in values[-window:]]
    spread = max(tail) - min(tail) if all(math.isfinite(v) for v in tail) else math.inf
    before = [float(v) for v in values[-2 * window:-window]]
    drift = None
    if len(before) == window and all(math.isfinite(v) for v in tail + before):
        drift = float(np.mean(tail) - np.mean(before))
    return Plateau(window, int(steps[-window]), int(steps[-1]), spread, tol, drift)
