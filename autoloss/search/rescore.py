"""Re-score a search's top trials and its controls with fresh proxy seeds, and choose the export.

Every trial of a search is scored once, with the search's proxy seed. The best of many noisy
scores is biased upward (the winner's curse): part of its lead is the noise of that one run.
:func:`rescore_top` takes the ``top`` best complete trials and scores each again with ``seeds``
*other* proxy seeds (the search's own score is left out of the mean, since it is the one they
were selected on), together with the study's **reference points** (the plain soft metric,
``identity``, i.e. the un-searched start of the search; the published curves ``paper:<preset>``;
a transferred ``init:<file>``) and the cross-entropy baseline, all on the same seeds.

The export is chosen by a rule (:data:`EXPORT_RULES`):

- ``beat-identity`` (default): the searched trial with the best re-scored mean is exported only
  if it beats the plain soft metric paired over the re-scoring seeds with its 95 % interval above
  zero; otherwise the plain soft metric itself is exported, and the summary says so. A user never
  receives curves that are no better than the trivial ones without being told. A searched
  export's reason also says that its margin is the proxy's and to retrain it beside the plain
  soft metric: the pre-registered CamVid tests found proxy margins of +0.5 gone after retraining.
- ``best-mean``: the best re-scored mean, whatever its margin over the plain soft metric (a
  reference point when one has the best mean).
- ``best-searched``: the searched trial (not a reference point) with the best re-scored mean,
  even when the plain soft metric scores higher: the search's candidate, for a test that
  compares it with its control.

Resumable: every (trial, seed) score is stored in the study's user attribute ``rescore`` as soon
as it is known, so an interrupted re-scoring continues where it stopped. Single-objective
studies only (a Pareto front has no one best mean).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from autoloss.errors import InvalidValueError
from autoloss.losses import load_loss

__all__ = ["EXPORT_RULES", "IDENTITY", "RESCORE_ATTR", "chosen_trial", "gain_line",
           "identity_gain_line", "rescore_seeds", "rescore_summary", "rescore_top",
           "rescored_gain", "searched_gain"]

RESCORE_ATTR = "rescore"
BASELINE = "cross_entropy"
IDENTITY = "identity"  # the reference label of the plain soft metric (identity curves)
# how the export is chosen among the re-scored trials (see the module docstring)
EXPORT_RULES = ("beat-identity", "best-mean", "best-searched")


def rescore_seeds(search_seed: int, n: int) -> list[int]:
    """The ``n`` proxy seeds of the re-scoring: the ones after the search's own seed."""
    return [search_seed + 1 + i for i in range(n)]


def _stats(scores: dict[str, dict[str, float]], key: str, seeds: Sequence[int]) -> dict[str, Any]:
    values = [scores.get(key, {}).get(str(s)) for s in seeds]
    done = [v for v in values if v is not None]
    return {"values": values, "mean": float(np.mean(done)) if done else None,
            "std": float(np.std(done, ddof=1)) if len(done) > 1 else None}


def _paired(a: dict[str, Any], b: dict[str, Any], seeds: Sequence[int]) -> Any:
    from autoloss.utils.stats import paired_difference

    return paired_difference({s: v for s, v in zip(seeds, a["values"]) if v is not None},
                             {s: v for s, v in zip(seeds, b["values"]) if v is not None})


def _choose(trials: dict[str, dict[str, Any]], references: dict[str, str],
            seeds: Sequence[int], rule: str) -> tuple[int | None, str]:
    """``(chosen trial number, the sentence that says why)`` under ``rule``."""
    complete = {k: t for k, t in trials.items() if None not in t["values"]}
    if not complete:
        return None, "no trial has a score for every re-scoring seed"
    best = max(complete, key=lambda k: (complete[k]["mean"], -int(k)))
    identity = next((k for k, label in references.items() if label == IDENTITY), None)
    if rule == "best-mean":
        return int(best), "rule best-mean: the best re-scored mean"
    searched = {k: t for k, t in complete.items() if k not in references}
    if rule == "best-searched":
        if not searched:
            return None, ("rule best-searched: no searched trial has a score for every "
                          "re-scoring seed (the top trials are reference points)")
        pick = max(searched, key=lambda k: (searched[k]["mean"], -int(k)))
        return int(pick), "rule best-searched: the searched trial with the best re-scored mean"
    if identity not in complete:
        return int(best), ("rule beat-identity, but the study has no re-scored plain soft metric "
                           "(identity reference trial): the best re-scored mean")
    if not searched:
        return int(identity), ("rule beat-identity: no searched trial was re-scored (the top "
                               "trials are reference points), so the plain soft metric (trial "
                               f"{identity}) is exported")
    challenger = max(searched, key=lambda k: (searched[k]["mean"], -int(k)))
    gain = _paired(searched[challenger], complete[identity], seeds)
    if gain.low is not None and gain.low > 0:
        return int(challenger), (f"rule beat-identity: trial {challenger} beats the plain soft "
                                 f"metric (trial {identity}) with its 95 % interval above zero on "
                                 f"the proxy; retrain it beside the plain soft metric "
                                 f"(identity_loss.yaml) before relying on it: proxy margins of "
                                 f"this size did not survive retraining in the pre-registered "
                                 f"CamVid tests")
    return int(identity), (f"rule beat-identity: no searched trial beats the plain soft metric "
                           f"with its 95 % interval above zero (the best, trial {challenger}, "
                           f"does not), so the plain soft metric (trial {identity}) is exported")


def _summary(scores: dict[str, dict[str, float]], seeds: Sequence[int],
             search_values: dict[str, float | None], references: dict[str, str], top: int,
             rule: str) -> dict[str, Any]:
    trials = {key: {**_stats(scores, key, seeds), "search_value": search_values[key]}
              for key in search_values}
    chosen, reason = _choose(trials, references, seeds, rule)
    return {"top": top, "seeds": list(seeds), "trials": trials, "references": dict(references),
            "baseline": _stats(scores, BASELINE, seeds) if BASELINE in scores else None,
            "rule": rule, "chosen": chosen, "reason": reason}


def rescore_top(study: Any, run_proxy: Callable[[Any, int], float], *, baseline: Any,
                top: int, seeds: Sequence[int], rule: str = "beat-identity",
                progress: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Score the ``top`` best complete trials of ``study``, its reference trials (plain soft
    metric, published curves, ``init``) and ``baseline`` (a loss module) with each of
    ``seeds``; choose the export by ``rule`` (:data:`EXPORT_RULES`); store and return the
    summary (None for a multi-objective study or one without complete trials).

    ``run_proxy(loss, seed) -> objective value`` trains and scores one loss. The summary:
    ``{"top", "seeds", "trials": {number: {"values", "mean", "std", "search_value"}},
    "references": {number: label}, "baseline": {"values", "mean", "std"}, "rule",
    "chosen": trial number, "reason": why}``.
    """
    if rule not in EXPORT_RULES:
        raise InvalidValueError(f"rule must be one of {EXPORT_RULES}, but got rule={rule!r}")
    if len(study.directions) > 1:
        return None
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if not done or top < 1 or not seeds:
        return None
    ranked = sorted(done, key=lambda t: (-t.value, t.number))[:top]
    # the controls: every reference trial that ran (a pruned or failed one is re-scored too)
    top_numbers = {t.number for t in ranked}
    refs = [t for t in trials if "reference" in t.user_attrs and "loss" in t.user_attrs
            and t.state.name in ("COMPLETE", "PRUNED", "FAIL") and t.number not in top_numbers]
    references = {str(t.number): str(t.user_attrs["reference"]) for t in [*ranked, *refs]
                  if "reference" in t.user_attrs}
    stored = study.user_attrs.get(RESCORE_ATTR) or {}
    scores: dict[str, dict[str, float]] = {k: dict(v) for k, v in
                                           (stored.get("scores") or {}).items()}
    search_values = {str(t.number): None if t.value is None else float(t.value)
                     for t in [*ranked, *refs]}
    jobs: list[tuple[str, Any]] = [(str(t.number), t) for t in [*ranked, *refs]]
    jobs.append((BASELINE, None))
    for key, trial in jobs:
        for seed in seeds:
            if str(seed) in scores.get(key, {}):
                continue
            loss = baseline if trial is None else load_loss(trial.user_attrs["loss"])
            label = "cross-entropy" if trial is None else f"trial {trial.number}" + (
                f" ({references[key]})" if key in references else "")
            if progress is not None:
                progress(f"re-scoring {label} with proxy seed {seed}")
            scores.setdefault(key, {})[str(seed)] = float(run_proxy(loss, seed))
            study.set_user_attr(RESCORE_ATTR, {"scores": scores, **_summary(
                scores, seeds, search_values, references, top, rule)})
    summary = {"scores": scores, **_summary(scores, seeds, search_values, references, top, rule),
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
    :class:`autoloss.utils.stats.PairedDifference` in the objective's unit (None without a
    baseline or a chosen trial). The seeds are not the search's, so the trial was not selected
    on them, except among the ``top`` re-scored trials (with ``top == 1``: not at all)."""
    base, chosen = summary.get("baseline"), summary.get("chosen")
    if base is None or chosen is None:
        return None
    return _paired(summary["trials"][str(chosen)], base, summary["seeds"])


def _identity_key(summary: dict[str, Any]) -> str | None:
    return next((k for k, label in (summary.get("references") or {}).items()
                 if label == IDENTITY), None)


def searched_gain(summary: dict[str, Any]) -> tuple[int, Any] | None:
    """``(trial, gain)``: the searched trial with the best re-scored mean (any re-scored trial
    that is not a reference point) and its values minus the plain soft metric's, paired by proxy
    seed (a :class:`autoloss.utils.stats.PairedDifference`); None when either is missing."""
    identity = _identity_key(summary)
    if identity is None or identity not in summary["trials"]:
        return None
    references = summary.get("references") or {}
    complete = {k: t for k, t in summary["trials"].items()
                if k not in references and t["mean"] is not None}
    if not complete:
        return None
    best = max(complete, key=lambda k: (complete[k]["mean"], -int(k)))
    return int(best), _paired(complete[best], summary["trials"][identity], summary["seeds"])


def _interval_text(gain: Any, seeds: Sequence[int]) -> str:
    if gain.low is None:
        return f"{100 * gain.mean:+.2f} points on {gain.n} re-scoring seed (no interval)"
    return (f"{100 * gain.mean:+.2f} points, 95 % interval [{100 * gain.low:+.2f}, "
            f"{100 * gain.high:+.2f}], better on {gain.wins}/{gain.n} seeds (paired over proxy "
            f"seeds {', '.join(str(s) for s in seeds[:gain.n])})")


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
    # the plain soft metric exported by the beat-identity rule was fixed beforehand as the
    # fallback, not picked as the best mean of these seeds
    fallback = (summary.get("rule") == "beat-identity"
                and str(summary["chosen"]) == _identity_key(summary))
    chosen_on = ("" if len(summary["trials"]) <= 1 or fallback else
                 f" (chosen as the best of {len(summary['trials'])} on these seeds, which "
                 "flatters it a little; --rescore-top 1 gives an unselected estimate)")
    return (f"trial {summary['chosen']} vs cross-entropy, paired over proxy seeds "
            f"{', '.join(str(s) for s in summary['seeds'][:gain.n])}: {100 * gain.mean:+.2f} "
            f"points, 95 % interval [{100 * gain.low:+.2f}, {100 * gain.high:+.2f}], better on "
            f"{gain.wins}/{gain.n} seeds{noise}: {verdict}{chosen_on}")


def identity_gain_line(summary: dict[str, Any]) -> str | None:
    """One sentence: did the search beat its own start? The best searched trial's paired gain
    over the plain soft metric (identity curves) on the re-scoring seeds, its interval and
    verdict (None when the study has no re-scored plain soft metric)."""
    identity = _identity_key(summary)
    if identity is None or summary["trials"].get(identity, {}).get("mean") is None:
        return None
    found = searched_gain(summary)
    if found is None:
        return (f"no searched trial was re-scored beside the plain soft metric (trial {identity}): "
                "the top trials are reference points (--rescore-top 2 or more re-scores the best "
                "searched one)")
    trial, gain = found
    if gain.mean is None:
        return None
    verdict = ("no interval: not a demonstrated gain" if gain.low is None else
               "the search beat its start" if gain.low > 0 else
               "worse than its start" if gain.high < 0 else
               "within the seed noise: the search did not beat its start")
    searched = sum(1 for k in summary["trials"] if k not in (summary.get("references") or {}))
    chosen_on = ("" if searched <= 1 else
                 f"; trial {trial} is the best of {searched} re-scored searched trials on these "
                 "seeds, which flatters it")
    return (f"best searched trial {trial} vs the plain soft metric (trial {identity}, identity "
            f"curves): {_interval_text(gain, summary['seeds'])}: {verdict}{chosen_on}")
