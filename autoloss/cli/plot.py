"""``autoloss plot``: every figure of a search run folder, of loss files / presets, of training
logs and of a checkpoint's predictions (a run folder's in :mod:`autoloss.search.run_plots`, the
figures themselves in :mod:`autoloss.report`).

    autoloss plot runs/miou                       # run folder -> runs/miou/plots/*
    autoloss plot results/retrain --pair LOSS     # comparison folder -> results/retrain/plots/*
    autoloss plot asl-voc-miou best_loss.yaml     # curves overlaid -> ./plots/curves.*
    autoloss plot train.jsonl other.jsonl.gz      # training curves -> ./plots/training.*
    autoloss plot --checkpoint model.pt --data camvid:PATH   # overlays -> ./plots/overlays-model.*

A run folder is what :func:`autoloss.search.run_search` writes (:mod:`autoloss.search.run_folder`):
``run.json`` (storage URL and study name), ``study.db`` (the default SQLite storage) and
``best_loss.yaml`` (the exported best loss).
A comparison folder is what ``autoloss compare`` writes (``compare.json``); its figures are in
``autoloss.report.compare_plots``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from autoloss.errors import InvalidValueError
from autoloss.search.run_plots import plot_run
from autoloss.utils.run_logs import is_log_file

__all__ = ["register"]

_FORMAT_CHOICES = {"png": ("png",), "svg": ("svg",), "both": ("png", "svg")}


def _file_name(prefix: str, labels: Sequence[str]) -> str:
    """``prefix-label1+label2...`` made file-name safe (at most 80 characters)."""
    joined = "+".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", t).strip("_") or "x" for t in labels)
    return f"{prefix}-{joined}"[:80]


def _cmd_plot(args: argparse.Namespace) -> int:
    from autoloss.report import overlay_plots, plots
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
    logs = [Path(t) for t in args.targets if is_log_file(t)]
    losses = [t for t in args.targets if not Path(t).is_dir() and not is_log_file(t)]
    base = Path(args.out) if args.out is not None else Path("plots")
    written: list[Path] = []
    for run in runs:
        if args.out is None:
            dest = None
        else:
            dest = base / run.resolve().name if len(runs) > 1 else base
        if run in comparisons:
            from autoloss.report.compare_plots import plot_comparison

            written += plot_comparison(run, out=dest, pair=args.pair,
                                       n_images=3 if args.n is None else args.n, formats=fmts)
        else:
            written += plot_run(run, out=dest, formats=fmts)
    if losses:
        labels = [Path(t).stem if t.endswith((".yaml", ".yml")) else t for t in losses]
        written += plots.plot_curves(losses, out=base / _file_name("curves", labels),
                                     formats=fmts)
    if logs:
        stems = [Path(p.name.removesuffix(".gz")).stem for p in logs]
        path = plots.plot_training(logs, out=base / _file_name("training", stems), formats=fmts)
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
                    "loss files / presets (curves overlaid), trainer .jsonl (or .jsonl.gz) "
                    "logs, and a "
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
