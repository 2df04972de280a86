"""Figures of a search beyond its history: the Pareto front of a two-objective search and the
per-trial learning curves the pruner saw (drawn like :mod:`autoloss.report.plots`: ``Figure`` objects,
no pyplot; ``out`` without its format, one file per format).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from autoloss.errors import InvalidValueError
from autoloss.report.plots import FORMATS, STYLE, save_figure
from autoloss.utils.trial_attrs import discarded

__all__ = ["plot_intermediate", "plot_pareto"]


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
