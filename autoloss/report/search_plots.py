"""The figures of a search's optuna study: its history, the parameter importance, the Pareto
front of a two-objective search and the per-trial values the pruner saw (:func:`plot_study` draws
the ones that apply). Drawn like :mod:`autoloss.report.plots`: ``Figure`` objects, no pyplot;
``out`` without its format, one file per format.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autoloss.errors import InvalidValueError
from autoloss.report.plots import FORMATS, STYLE, check_formats, save_figure
from autoloss.utils.trial_attrs import discarded

__all__ = ["plot_history", "plot_importance", "plot_intermediate", "plot_pareto", "plot_study"]

logger = logging.getLogger(__name__)


# ---- search history and importance ---------------------------------------------------------

def _target_name(study: Any) -> str:
    """The searched metric: the ``config`` user attribute ``autoloss.search.setup`` writes, else
    optuna's ``metric_names``."""
    config = study.user_attrs.get("config")
    metric = config.get("metric") if isinstance(config, dict) else None
    if isinstance(metric, list) and metric:
        return str(metric[0])
    if isinstance(metric, str):
        return metric
    names = getattr(study, "metric_names", None)
    return names[0] if names else "objective value"


def _trial_value(trial: Any) -> float | None:
    values = trial.values
    return float(values[0]) if values else None


def _reference_label(trial: Any) -> str | None:
    value = trial.user_attrs.get("reference")  # set by autoloss.search.setup on enqueued points
    return value if isinstance(value, str) and value else None


def _baseline_value(value: Any) -> float | None:
    """A number, or the first of a list (multi-objective baselines); None otherwise."""
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def plot_history(study: Any, *, out: Path | str, baseline: float | None = None,
                 formats: Sequence[str] = FORMATS) -> Path:
    """Target metric per trial of an optuna study (first objective if there are several).

    Complete trials: filled dots and the best-so-far line; pruned trials: hollow dots at their
    last reported (intermediate) value; failed trials: crosses at the bottom; trials with a
    ``reference`` user attribute (identity, paper curves) annotated with it; ``baseline`` (default:
    the study's ``baseline_ce`` user attribute, the cross-entropy proxy score) as a horizontal
    line. Returns the file of the first format.
    """
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    done = [(t.number, _trial_value(t)) for t in trials
            if t.state == TrialState.COMPLETE and _trial_value(t) is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    pruned_pts = [(t.number, t.intermediate_values[max(t.intermediate_values)])
                  for t in pruned if t.intermediate_values]
    unreported = [t.number for t in pruned if not t.intermediate_values]
    failed = [t.number for t in trials if t.state == TrialState.FAIL and not discarded(t)]
    maximize = study.directions[0].name == "MAXIMIZE"
    if baseline is None:
        baseline = _baseline_value(study.user_attrs.get("baseline_ce"))
    name = _target_name(study)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8, 4.5), layout="constrained")
        ax = fig.subplots()
        if done:
            xs, ys = np.array(done).T
            best = np.maximum.accumulate(ys) if maximize else np.minimum.accumulate(ys)
            end = max(t.number for t in trials)
            ax.step(np.append(xs, end), np.append(best, best[-1]), where="post", color="C2",
                    lw=1.8, label="best so far")
            ax.plot(xs, ys, "o", color="C0", ms=4.5, label=f"complete ({len(done)})")
        if pruned_pts:
            px, py = np.array(pruned_pts).T
            ax.plot(px, py, "o", mfc="none", mec="C1", ms=5,
                    label=f"pruned, last reported value ({len(pruned_pts)})")
        if baseline is not None:
            ax.axhline(baseline, ls="--", color="0.35", lw=1.2,
                       label=f"cross-entropy baseline ({baseline:.4g})")
        last = dict(done + pruned_pts)
        for t in trials:
            ref, value = _reference_label(t), last.get(t.number)
            if ref is not None and value is not None:
                ax.plot([t.number], [value], "D", mfc="none", mec="k", ms=8)
                ax.annotate(ref, (t.number, value), xytext=(8, 10), textcoords="offset points",
                            fontsize=8, arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.8})
        if unreported or failed:  # drawn in a strip below the data
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo - 0.1 * (hi - lo), hi)
        bottom = ax.get_xaxis_transform()  # x in data, y in axes fraction
        if unreported:
            ax.plot(unreported, [0.03] * len(unreported), "o", mfc="none", mec="C1", ms=5,
                    transform=bottom, label=f"pruned before reporting ({len(unreported)})")
        if failed:
            ax.plot(failed, [0.03] * len(failed), "x", color="C3", ms=6, mew=1.5,
                    transform=bottom, label=f"failed ({len(failed)})")
        if not trials:
            ax.text(0.5, 0.5, "no trials yet", transform=ax.transAxes, ha="center")
        direction = "higher" if maximize else "lower"
        ax.set(xlabel="trial number", ylabel=f"{name} ({direction} is better)",
               title=f"Search history: {study.study_name} ({len(trials)} trials)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if trials:
            fig.legend(loc="outside right upper")
        return save_figure(fig, out, formats)[0]


def _importances(study: Any) -> tuple[dict[str, float], str]:
    """PED-ANOVA (optuna's default since 5.0; no scikit-learn) ranks the parameters by how the
    best quantile of trials differs from the rest, in the study's direction (the Pareto front
    for several objectives). Older optuna without it: the default fANOVA (needs scikit-learn)."""
    import optuna.importance as imp

    ped = getattr(imp, "PedAnovaImportanceEvaluator", None)
    if ped is not None:
        return dict(imp.get_param_importances(study, evaluator=ped())), "PED-ANOVA"
    return dict(imp.get_param_importances(study, target=lambda t: t.values[0])), "fANOVA"


def plot_importance(study: Any, *, out: Path | str,
                    formats: Sequence[str] = FORMATS) -> Path | None:
    """Parameter importance of a study (:func:`_importances`) as a horizontal bar chart, most
    important on top.

    Returns None (and logs why) when it cannot be computed: fewer than 2 complete trials, no
    parameters, or an evaluator error.
    """
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values]
    if len(complete) < 2:
        logger.warning("parameter importance needs at least 2 complete trials, but study %r has "
                       "%d; skipped", study.study_name, len(complete))
        return None
    try:
        scores, evaluator = _importances(study)
    except (ImportError, RuntimeError, ValueError, ZeroDivisionError) as err:
        logger.warning("parameter importance of study %r failed (%s); skipped",
                       study.study_name, err)
        return None
    if not scores:
        logger.warning("study %r has no parameters to rank; importance skipped", study.study_name)
        return None
    items = sorted(scores.items(), key=lambda kv: kv[1])
    names, values = [k for k, _ in items], [v for _, v in items]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.5, 1.2 + 0.28 * len(items)), layout="constrained")
        ax = fig.subplots()
        bars = ax.barh(names, values, color="C0")
        ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=7)
        ax.set_xlim(0, max(max(values), 1e-9) * 1.18)
        ax.set(xlabel="importance (normalised, sums to 1)", ylabel="parameter",
               title=f"Parameter importance: {study.study_name}\n({evaluator}, "
                     f"{len(complete)} complete trials)")  # two lines: long names fit
        ax.grid(axis="y", visible=False)
        return save_figure(fig, out, formats)[0]


# ---- Pareto front and per-trial values ----------------------------------------------------


def _objective_names(study: Any) -> list[str]:
    """The objectives' names: optuna's ``metric_names`` (set by the search), else the
    ``config`` user attribute's metric list, else ``objective k``."""
    names = getattr(study, "metric_names", None)
    if names:
        return [str(n) for n in names]
    config = study.user_attrs.get("config")
    metric = config.get("metric") if isinstance(config, dict) else None
    metric = [metric] if isinstance(metric, str) else metric
    if isinstance(metric, list) and len(metric) == len(study.directions):
        return [str(m) for m in metric]
    return [f"objective {k}" for k in range(len(study.directions))]


def _front(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Indices of the non-dominated rows of ``points [n, 2]``, sorted by the first objective."""
    signed = points * np.where(maximize, 1.0, -1.0)  # larger is better in both columns
    keep = [i for i, p in enumerate(signed)
            if not np.any(np.all(signed >= p, axis=1) & np.any(signed > p, axis=1))]
    return np.array(sorted(keep, key=lambda i: points[i, 0]), dtype=int)


def plot_pareto(study: Any, *, out: Path | str, formats: Sequence[str] = FORMATS) -> Path:
    """The two objectives of every complete trial of a two-objective study, the Pareto front
    (non-dominated trials, joined by a staircase), the reference points (identity, published
    curves) annotated and the cross-entropy baseline (the study's ``baseline_ce`` list) as a
    star. Returns the file of the first format."""
    from optuna.trial import TrialState

    if len(study.directions) != 2:
        raise InvalidValueError(f"plot_pareto needs a study with 2 objectives, but "
                                f"{study.study_name!r} has {len(study.directions)}")
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.values is not None and len(t.values) == 2]
    names = _objective_names(study)
    maximize = [d.name == "MAXIMIZE" for d in study.directions]
    baseline = study.user_attrs.get("baseline_ce")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7, 5), layout="constrained")
        ax = fig.subplots()
        if trials:
            points = np.array([t.values for t in trials], dtype=float)
            front = _front(points, maximize)
            ax.plot(points[:, 0], points[:, 1], "o", color="C0", ms=4.5, alpha=0.6,
                    label=f"trials ({len(trials)})")
            fx, fy = points[front, 0], points[front, 1]
            ax.step(fx, fy, where="post" if maximize[0] != maximize[1] else "pre", color="C3",
                    lw=1.5, alpha=0.8)
            ax.plot(fx, fy, "o", color="C3", ms=6, label=f"Pareto front ({len(front)})")
            for t, (x, y) in zip(trials, points):
                ref = t.user_attrs.get("reference")
                if isinstance(ref, str) and ref:
                    ax.plot([x], [y], "D", mfc="none", mec="k", ms=9)
                    ax.annotate(ref, (x, y), xytext=(8, -14), textcoords="offset points",
                                fontsize=8)
        else:
            ax.text(0.5, 0.5, "no complete trials yet", transform=ax.transAxes, ha="center")
        if isinstance(baseline, list) and len(baseline) == 2:
            ax.plot([baseline[0]], [baseline[1]], "*", color="0.2", ms=13,
                    label=f"cross-entropy ({baseline[0]:.3f}, {baseline[1]:.3f})")
        arrows = ["higher" if m else "lower" for m in maximize]
        ax.set(xlabel=f"{names[0]} ({arrows[0]} is better)",
               ylabel=f"{names[1]} ({arrows[1]} is better)",
               title=f"Pareto front: {study.study_name}")
        ax.legend(loc="best")
        return save_figure(fig, out, formats)[0]


def plot_intermediate(study: Any, *, out: Path | str,
                      formats: Sequence[str] = FORMATS) -> Path | None:
    """The value each trial reported at each evaluation step (what the pruner compared):
    complete trials in blue, pruned ones in orange ending with a cross at the step they were
    stopped, the cross-entropy baseline dashed. None when no trial reported a value (a
    multi-objective study, or no evaluation before the end)."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False)
              if t.intermediate_values and not discarded(t)
              and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if not trials:
        return None
    baseline = study.user_attrs.get("baseline_ce")
    baseline = baseline[0] if isinstance(baseline, list) and baseline else baseline
    name = _objective_names(study)[0]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8, 4.5), layout="constrained")
        ax = fig.subplots()
        every_step: set[int] = set()
        for group, color, label in ((done, "C0", "complete"), (pruned, "C1", "pruned")):
            for i, t in enumerate(group):
                steps = sorted(t.intermediate_values)
                every_step.update(steps)
                values = [t.intermediate_values[s] for s in steps]
                first = f"{label} ({len(group)})" if i == 0 else None
                ax.plot(steps, values, "-", color=color, lw=0.9, alpha=0.55,
                        label=first if group is done else None)
                if group is pruned:
                    ax.plot(steps[-1], values[-1], "x", color=color, ms=6, mew=1.5,
                            label=f"{first}, where it stopped" if first else None)
        if len(every_step) <= 12:
            ax.set_xticks(sorted(every_step))
        if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
            ax.axhline(baseline, ls="--", color="0.35", lw=1.2,
                       label=f"cross-entropy baseline ({baseline:.4g})")
        ax.set(xlabel="proxy training step", ylabel=f"{name} at the step",
               title=f"Per-trial validation values: {study.study_name}")
        ax.legend(loc="lower right")
        return save_figure(fig, out, formats)[0]


def plot_study(study: Any, *, dest: Path | str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Every figure of ``study`` that applies, written under ``dest``: ``history``,
    ``importance`` (when there are enough complete trials), ``pareto`` (two objectives) and
    ``intermediate`` (when trials reported values). Returns the written files."""
    fmts = check_formats(formats)
    dest = Path(dest)
    firsts = [plot_history(study, out=dest / "history", formats=fmts),
              plot_importance(study, out=dest / "importance", formats=fmts)]
    if len(study.directions) == 2:
        firsts.append(plot_pareto(study, out=dest / "pareto", formats=fmts))
    firsts.append(plot_intermediate(study, out=dest / "intermediate", formats=fmts))
    return [path.with_suffix(f".{f}") for path in firsts if path is not None for f in fmts]
