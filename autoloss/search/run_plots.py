"""Which figures a search run folder (:mod:`autoloss.search.run_folder`) gets, drawn by
:mod:`autoloss.report` (the study's by :mod:`autoloss.report.search_plots`): what ``autoloss
plot RUN`` writes into ``<run>/plots`` (:func:`plot_run`, from the folder) and a search's last
step (:func:`plot_search`, from the study and loss it holds in memory). It draws nothing itself;
it picks the published curves a searched loss is drawn against (:func:`reference_preset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError, MissingFileError
from autoloss.report.names import search_name
from autoloss.utils.run_logs import is_log_file

__all__ = ["open_run_study", "plot_run", "plot_search", "reference_preset"]


def open_run_study(run_dir: Path | str) -> Any | None:
    """The optuna study of a run folder, or None if the folder holds none (see
    :meth:`autoloss.search.run_folder.RunFolder.storage`)."""
    from autoloss.search.run_folder import RunFolder
    from autoloss.search.storage import open_study

    found = RunFolder(run_dir).storage()
    return None if found is None else open_study(*found)


def reference_preset(study: Any | None, metric: str | None) -> str | None:
    """The loss preset with the paper's published curves for this search: the ``paper:<preset>``
    reference trial of the study, else the default search space's reference for ``metric``."""
    from autoloss.losses import PRESETS

    if study is not None:
        for trial in study.get_trials(deepcopy=False):
            label = trial.user_attrs.get("reference")
            if isinstance(label, str) and label.startswith("paper:") and label[6:] in PRESETS:
                return label[6:]
    if metric is None:
        return None
    from autoloss.search.spaces import default_space

    try:
        return default_space(metric).reference
    except (ValueError, KeyError, FileNotFoundError):
        return None


def _published(study: Any | None, loss: Any) -> tuple[Any, str] | None:
    """``(loss with the paper's published curves, its label)`` for a searched loss: the preset
    of its metric, or for a weighted sum of surrogates the same combination of each metric's
    preset (``asl-voc-miou + asl-voc-bf1``); None when a metric has no published curves."""
    from autoloss.losses import CombinedLoss, load_loss
    from autoloss.report import plots

    parts = loss.losses if isinstance(loss, CombinedLoss) else [loss]
    metrics = [getattr(part, "metric", None) for part in parts]
    metrics = [m for m in metrics if isinstance(m, str)]
    if not metrics:
        return None
    presets = [reference_preset(study if len(metrics) == 1 else None, m) for m in metrics]
    if any(p is None for p in presets):
        return None
    published = (load_loss(presets[0]) if len(presets) == 1 else
                 load_loss({"combine": [load_loss(p).to_dict() for p in presets]}))
    if not plots.curves_of(published):
        return None
    return published, " + ".join(presets)


def plot_search(study: Any | None, loss: Any | None, *, dest: Path | str, name: str,
                logs: Sequence[Path] = (), formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """The figures of a search from objects in memory, written under ``dest``: ``curves`` (the
    searched ``loss``, a module, against the paper's preset for its metric), ``history``,
    ``importance`` (when there are enough complete trials), ``pareto`` (two-objective
    searches) and ``intermediate`` (the values the pruner saw) of ``study``, and ``training``
    from the JSONL ``logs``. ``name`` labels the searched curves. Returns the written files."""
    from autoloss.report import plots

    fmts = plots.check_formats(formats)
    dest = Path(dest)
    written: list[Path] = []

    def siblings(path: Path | None) -> list[Path]:
        return [] if path is None else [path.with_suffix(f".{f}") for f in fmts]

    if loss is not None:
        specs: list[Any] = [loss]
        labels = [f"searched ({name})"]
        reference = _published(study, loss)
        if reference is not None:
            specs.append(reference[0])
            labels.append(f"paper: {reference[1]}")
        if plots.curves_of(loss):
            written += plots.plot_curves(specs, labels=labels, out=dest / "curves", formats=fmts)
    if study is not None:
        from autoloss.report.search_plots import plot_study

        written += plot_study(study, dest=dest, formats=fmts)
    if logs:
        written += siblings(plots.plot_training(list(logs), out=dest / "training", formats=fmts))
    return written


def plot_run(run_dir: Path | str, *, out: Path | str | None = None,
             formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Every figure available for a search run folder (:func:`plot_search` of its study,
    ``best_loss.yaml`` and ``*.jsonl`` or ``*.jsonl.gz`` logs), written under ``out`` (default
    ``<run>/plots``): what ``autoloss plot RUN`` draws. Returns the written files."""
    from autoloss.losses import load_loss
    from autoloss.report import plots
    from autoloss.search.run_folder import RunFolder

    run = Path(run_dir)
    if not run.is_dir():
        raise MissingFileError(f"run folder {str(run)!r} does not exist")
    plots.check_formats(formats)
    folder = RunFolder(run)
    study = open_run_study(run)
    best = folder.loss_path
    logs = sorted(p for p in run.iterdir() if p.is_file() and is_log_file(p.name))
    if study is None and not best.is_file() and not logs:
        raise InvalidValueError(f"run folder {str(run)!r} holds no study (run.json / *.db), no "
                         "best_loss.yaml and no *.jsonl log: nothing to plot")
    return plot_search(study, load_loss(best) if best.is_file() else None,
                       dest=Path(out) if out is not None else folder.plots_dir,
                       name=search_name(run.resolve()), logs=logs, formats=formats)
