"""``autoloss plot``: every figure of a search run folder, of loss files / presets, of training
logs and of a checkpoint's predictions (the figures themselves are in ``autoloss.plots``).

    autoloss plot runs/miou                       # run folder -> runs/miou/plots/*
    autoloss plot results/retrain --pair LOSS     # comparison folder -> results/retrain/plots/*
    autoloss plot asl-voc-miou best_loss.yaml     # curves overlaid -> ./plots/curves.*
    autoloss plot train.jsonl other.jsonl         # training curves -> ./plots/training.*
    autoloss plot --checkpoint model.pt --data camvid:PATH   # overlays -> ./plots/overlays-model.*

A run folder is what ``autoloss.search.run_search`` writes (:mod:`autoloss.run_folder`):
``run.json`` (storage URL and study name), ``study.db`` (the default SQLite storage) and
``best_loss.yaml`` (the exported best loss).
A comparison folder is what ``autoloss compare`` writes (``compare.json``); its figures are in
``autoloss.compare_plots``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError, MissingFileError

__all__ = ["open_run_study", "plot_run", "reference_preset", "register"]

_FORMAT_CHOICES = {"png": ("png",), "svg": ("svg",), "both": ("png", "svg")}


def open_run_study(run_dir: Path | str) -> Any | None:
    """The optuna study of a run folder, or None if the folder holds none (see
    :meth:`autoloss.run_folder.RunFolder.storage`)."""
    from autoloss.run_folder import RunFolder
    from autoloss.search import open_study

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
    from autoloss.spaces import default_space

    try:
        return default_space(metric).reference
    except (ValueError, KeyError, FileNotFoundError):
        return None


def _published(study: Any | None, loss: Any) -> tuple[Any, str] | None:
    """``(loss with the paper's published curves, its label)`` for a searched loss: the preset
    of its metric, or for a weighted sum of surrogates the same combination of each metric's
    preset (``asl-voc-miou + asl-voc-bf1``); None when a metric has no published curves."""
    from autoloss import plots
    from autoloss.losses import CombinedLoss, load_loss

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


def plot_run(run_dir: Path | str, *, out: Path | str | None = None,
             formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Every figure available for a search run folder, written under ``out`` (default
    ``<run>/plots``): ``curves`` (best_loss.yaml against the identity and the paper's preset for
    the metric), ``history``, ``importance`` (when there are enough complete trials),
    ``pareto`` (two-objective searches), ``intermediate`` (the values the pruner saw) and
    ``training`` (from ``*.jsonl`` logs in the folder). Returns the written files."""
    from autoloss import plots
    from autoloss.losses import load_loss
    from autoloss.run_folder import RunFolder

    run = Path(run_dir)
    if not run.is_dir():
        raise MissingFileError(f"run folder {str(run)!r} does not exist")
    fmts = plots.check_formats(formats)
    folder = RunFolder(run)
    dest = Path(out) if out is not None else folder.plots_dir
    study = open_run_study(run)
    best = folder.loss_path
    logs = sorted(run.glob("*.jsonl"))
    if study is None and not best.is_file() and not logs:
        raise InvalidValueError(f"run folder {str(run)!r} holds no study (run.json / *.db), no "
                         "best_loss.yaml and no *.jsonl log: nothing to plot")
    written: list[Path] = []

    def siblings(path: Path | None) -> list[Path]:
        return [] if path is None else [path.with_suffix(f".{f}") for f in fmts]

    if best.is_file():
        loss = load_loss(best)
        from autoloss.artifact import search_name

        specs: list[Any] = [loss]
        labels = [f"searched ({search_name(run.resolve())})"]
        reference = _published(study, loss)
        if reference is not None:
            specs.append(reference[0])
            labels.append(f"paper: {reference[1]}")
        if plots.curves_of(loss):
            written += plots.plot_curves(specs, labels=labels, out=dest / "curves", formats=fmts)
    if study is not None:
        from autoloss import search_plots

        written += siblings(plots.plot_history(study, out=dest / "history", formats=fmts))
        written += siblings(plots.plot_importance(study, out=dest / "importance", formats=fmts))
        if len(study.directions) == 2:
            written += siblings(search_plots.plot_pareto(study, out=dest / "pareto",
                                                         formats=fmts))
        written += siblings(search_plots.plot_intermediate(study, out=dest / "intermediate",
                                                           formats=fmts))
    if logs:
        written += siblings(plots.plot_training(logs, out=dest / "training", formats=fmts))
    return written


def _file_name(prefix: str, labels: Sequence[str]) -> str:
    """``prefix-label1+label2...`` made file-name safe (at most 80 characters)."""
    joined = "+".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", t).strip("_") or "x" for t in labels)
    return f"{prefix}-{joined}"[:80]


def _cmd_plot(args: argparse.Namespace) -> int:
    from autoloss import overlay_plots, plots

    fmts = _FORMAT_CHOICES[args.format]
    if (args.checkpoint is None) != (args.data is None):
        raise InvalidValueError("--checkpoint and --data go together (the overlays need both), but got "
                         f"--checkpoint={args.checkpoint} --data={args.data}")
    if not args.targets and args.checkpoint is None:
        raise InvalidValueError("autoloss plot needs a run folder, loss file, preset name or .jsonl "
                         "log, or --checkpoint with --data")
    runs = [Path(t) for t in args.targets if Path(t).is_dir()]
    comparisons = [run for run in runs if (run / "compare.json").is_file()]
    if args.pair is not None and not comparisons:
        raise InvalidValueError(f"--pair applies to a comparison folder (one holding compare.json), but "
                         f"none is among {args.targets}")
    logs = [Path(t) for t in args.targets if t.endswith(".jsonl")]
    losses = [t for t in args.targets if not Path(t).is_dir() and not t.endswith(".jsonl")]
    base = Path(args.out) if args.out is not None else Path("plots")
    written: list[Path] = []
    for run in runs:
        if args.out is None:
            dest = None
        else:
            dest = base / run.resolve().name if len(runs) > 1 else base
        if run in comparisons:
            from autoloss.compare_plots import plot_comparison

            written += plot_comparison(run, out=dest, pair=args.pair,
                                       n_images=3 if args.n is None else args.n, formats=fmts)
        else:
            written += plot_run(run, out=dest, formats=fmts)
    if losses:
        labels = [Path(t).stem if t.endswith((".yaml", ".yml")) else t for t in losses]
        written += plots.plot_curves(losses, out=base / _file_name("curves", labels),
                                     formats=fmts)
    if logs:
        path = plots.plot_training(logs, out=base / _file_name("training", [p.stem for p in logs]),
                                   formats=fmts)
        written += [path.with_suffix(f".{f}") for f in fmts]
    if args.checkpoint is not None:
        ckpt = Path(args.checkpoint)
        path = overlay_plots.plot_overlays(ckpt, args.data, split=args.split,
                                   n=4 if args.n is None else args.n,
                                   out=base / _file_name("overlays", [ckpt.stem]), formats=fmts)
        written += [path.with_suffix(f".{f}") for f in fmts]
    for path in written:
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot`` subcommand to the ``autoloss`` parser's subparsers."""
    p = sub.add_parser(
        "plot", help="plot a search run, a loss comparison, learned curves, logs or predictions",
        description="Figures (PNG/SVG) for search run folders (curves, history, importance), "
                    "comparison folders of autoloss compare (test scores, validation curves, "
                    "per-class IoU, predictions of two losses), "
                    "loss files / presets (curves overlaid), trainer .jsonl logs, and a "
                    "checkpoint's predictions (--checkpoint with --data).")
    p.add_argument("targets", nargs="*", metavar="RUN_OR_LOSS",
                   help="run or comparison folder, loss YAML file, preset name or training "
                        ".jsonl log")
    p.add_argument("--out", default=None,
                   help="output folder (default: <run>/plots for a run, ./plots otherwise)")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint for overlays")
    p.add_argument("--data", default=None, help="dataset spec for overlays, e.g. camvid:PATH")
    p.add_argument("--split", default="test", help="dataset split for overlays (default test)")
    p.add_argument("-n", type=int, default=None,
                   help="images in the overlays (default 4 for --checkpoint, 3 for a comparison)")
    p.add_argument("--pair", default=None, metavar="LOSS",
                   help="comparison folder: the loss whose predictions are shown next to the "
                        "reference's (default: the best mean of the first metric)")
    p.add_argument("--format", choices=sorted(_FORMAT_CHOICES), default="both",
                   help="file format(s) (default both)")
    p.set_defaults(func=_cmd_plot)
