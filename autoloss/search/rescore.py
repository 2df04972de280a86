"""Re-score a search's top trials with fresh proxy seeds, so the export is not the luckiest draw.

Every trial of a search is scored once, with the search's proxy seed. The best of many noisy
scores is biased upward (the winner's curse): part of its lead is the noise of that one run.
:func:`rescore_top` takes the ``top`` best complete trials and scores each again with ``seeds``
*other* proxy seeds (the search's own score is left out of the mean, since it is the one they
were selected on), and the cross-entropy baseline with the same seeds; the export then takes the
trial with the best re-scored mean.

Resumable: every (trial, seed) score is stored in the study's user attribute ``rescore`` as soon
as it is known, so an interrupted re-scoring continues where it stopped. Single-objective
studies only (a Pareto front has no one best mean).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from autoloss.losses import load_loss

__all__ = ["RESCORE_ATTR", "chosen_trial", "gain_line", "rescore_seeds", "rescore_summary",
           "rescore_top", "rescored_gain"]

RESCORE_ATTR = "rescore"
BASELINE = "cross_entropy"


def rescore_seeds(search_seed: int, n: int) -> list[int]:
    """The ``n`` proxy seeds of the re-scoring: the ones after the search's own seed."""
    return [search_seed + 1 + i for i in range(n)]


def _summary(scores: dict[str, dict[str, float]], seeds: Sequence[int],
             search_values: dict[str, float], top: int) -> dict[str, Any]:
    def stats(key: str) -> dict[str, Any]:
        values = [scores.get(key, {}).get(str(s)) for s in seeds]
        done = [v for v in values if v is not None]
        return {"values": values, "mean": float(np.mean(done)) if done else None,
                "std": float(np.std(done, ddof=1)) if len(done) > 1 else None}

    trials = {key: {**stats(key), "search_value": search_values[key]} for key in search_values}
    complete = {k: t for k, t in trials.items() if None not in t["values"]}
    chosen = max(complete, key=lambda k: (complete[k]["mean"], -int(k))) if complete else None
    return {"top": top, "seeds": list(seeds), "trials": trials,
            "baseline": stats(BASELINE) if BASELINE in scores else None,
            "chosen": None if chosen is None else int(chosen)}


def rescore_top(study: Any, run_proxy: Callable[[Any, int], float], *, baseline: Any,
                top: int, seeds: Sequence[int],
                progress: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Score the ``top`` best complete trials of ``study`` (and ``baseline``, a loss module)
    with each of ``seeds``; store and return the summary (None for a multi-objective study or
    one without complete trials).

    ``run_proxy(loss, seed) -> objective value`` trains and scores one loss. The summary:
    ``{"top", "seeds", "trials": {number: {"values", "mean", "std", "search_value"}},
    "baseline": {"values", "mean", "std"}, "chosen": trial number with the best mean}``.
    """
    if len(study.directions) > 1:
        return None
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done or top < 1 or not seeds:
        return None
    ranked = sorted(done, key=lambda t: (-t.value, t.number))[:top]
    stored = study.user_attrs.get(RESCORE_ATTR) or {}
    scores: dict[str, dict[str, float]] = {k: dict(v) for k, v in
                                           (stored.get("scores") or {}).items()}
    search_values = {str(t.number): float(t.value) for t in ranked}
    jobs: list[tuple[str, Any]] = [(str(t.number), t) for t in ranked] + [(BASELINE, None)]
    for key, trial in jobs:
        for seed in seeds:
            if str(seed) in scores.get(key, {}):
                continue
            loss = baseline if trial is None else load_loss(trial.user_attrs["loss"])
            label = "cross-entropy" if trial is None else f"trial {trial.number}"
            if progress is not None:
                progress(f"re-scoring {label} with proxy seed {seed}")
            scores.setdefault(key, {})[str(seed)] = float(run_proxy(loss, seed))
            study.set_user_attr(RESCORE_ATTR, {"scores": scores,
                                               **_summary(scores, seeds, search_values, top)})
    summary = {"scores": scores, **_summary(scores, seeds, search_values, top),
               "complete_trials": len(done)}
    study.set_user_attr(RESCORE_ATTR, summary)
    return {k: v for k, v in summary.items() if k != "scores"}


def rescore_summary(study: Any) -> dict[str, Any] | None:
    """The study's finished re-scoring (without the raw scores), or None: never re-scored,
    interrupted, or stale (the study has more complete trials than when it was re-scored)."""
    stored = study.user_attrs.get(RESCORE_ATTR) or {}
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
    if stored.get("chosen") is None or stored.get("complete_trials") != done:
        return None
    return {k: v for k, v in stored.items() if k != "scores"}


def chosen_trial(study: Any) -> int | None:
    """The trial a finished, current re-scoring chose (None: see :func:`rescore_summary`)."""
    summary = rescore_summary(study)
    return None if summary is None else int(summary["chosen"])


def rescored_gain(summary: dict[str, Any]) -> Any:
    """The exported trial's re-scored values minus cross-entropy's, paired by proxy seed: an
    :class:`autoloss.utils.stats.PairedDifference` in the objective's unit (None without a baseline or
    a chosen trial). The seeds are not the search's, so the trial was not selected on them,
    except among the ``top`` re-scored trials (with ``top == 1``: not at all)."""
    from autoloss.utils.stats import paired_difference

    base, chosen = summary.get("baseline"), summary.get("chosen")
    if base is None or chosen is None:
        return None
    seeds = summary["seeds"]
    values = summary["trials"][str(chosen)]["values"]
    return paired_difference({s: v for s, v in zip(seeds, values) if v is not None},
                             {s: v for s, v in zip(seeds, base["values"]) if v is not None})


def gain_line(summary: dict[str, Any]) -> str | None:
    """One sentence: the export's paired gain over cross-entropy in points, its 95 % interval,
    the seed noise, and whether the gain is beyond that noise (None: nothing to compare)."""
    gain = rescored_gain(summary)
    if gain is None or gain.mean is None:
        return None
    base_std = summary["baseline"].get("std")
    noise = f"; cross-entropy's seed std {100 * base_std:.2f}" if base_std is not None else ""
    if gain.low is None:
        return (f"trial {summary['chosen']} vs cross-entropy on {gain.n} re-scoring seed: "
                f"{100 * gain.mean:+.2f} points (one seed: no interval){noise}")
    verdict = ("beyond the seed noise" if gain.significant else
               "within the seed noise: not a demonstrated gain")
    chosen_on = ("" if summary["top"] <= 1 else
                 f" (chosen as the best of {summary['top']} on these seeds, which flatters it a "
                 "little; --rescore-top 1 gives an unselected estimate)")
    return (f"trial {summary['chosen']} vs cross-entropy, paired over proxy seeds "
            f"{', '.join(str(s) for s in summary['seeds'][:gain.n])}: {100 * gain.mean:+.2f} "
            f"points, 95 % interval [{100 * gain.low:+.2f}, {100 * gain.high:+.2f}], better on "
            f"{gain.wins}/{gain.n} seeds{noise}: {verdict}{chosen_on}")
