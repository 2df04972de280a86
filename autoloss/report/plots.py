"""Figures: learned curves and training curves, and how every figure is written (a search's
study: :mod:`autoloss.report.search_plots`; overlays: :mod:`autoloss.report.overlay_plots`;
comparisons: :mod:`autoloss.report.compare_plots`).

With those three, the only modules that import matplotlib. Figures are drawn on ``matplotlib.figure.Figure``
objects rendered by the Agg canvas (PNG) or the SVG backend -- pyplot is never imported, so no
global figure state, no GUI and no backend switch in the caller's process.

Every function takes ``out``, the output path **without** its format (a ``.png`` / ``.svg``
suffix is dropped), and ``formats`` (default ``("png", "svg")``): one file per format is
written next to ``out``. Functions that return one ``Path`` return the file of the first format.

Curves are the relaxations ``h(x)`` of Auto Seg-Loss (Li et al., ICLR 2021, section 3.2): a
searched curve is drawn against the identity ``h(x) = x`` (the plain soft metric).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from autoloss.errors import InvalidValueError, MissingFileError
from autoloss.report.names import is_search_loss_file, search_name
from autoloss.utils.atomic import write_atomic
from autoloss.utils.run_logs import read_log_text, run_log

__all__ = ["FORMATS", "LOSS_COLORS", "STYLE", "check_formats", "curves_of", "default_labels",
           "plot_curves", "plot_training", "read_training_log", "run_labels", "save_figure",
           "smooth", "training_figure"]

logger = logging.getLogger(__name__)

FORMATS = ("png", "svg")
_DPI = 150
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "none"}
LOSS_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
               "#17becf", "#bcbd22", "#7f7f7f")


# ---- output ------------------------------------------------------------------------------------

def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """``formats`` as a tuple, each one of :data:`FORMATS` (at least one)."""
    fmts = (formats,) if isinstance(formats, str) else tuple(formats)
    bad = [f for f in fmts if f not in FORMATS]
    if not fmts or bad:
        raise InvalidValueError(f"formats must be a non-empty subset of {FORMATS}, but got {fmts!r}")
    return fmts


def save_figure(fig: Figure, out: Path | str, formats: Sequence[str]) -> list[Path]:
    """Write ``fig`` once per format as ``out.<format>`` (parents created)."""
    fmts = check_formats(formats)
    base = Path(out)
    if base.suffix.lower() in {f".{f}" for f in FORMATS}:
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for fmt in fmts:
        path = base.parent / f"{base.name}.{fmt}"
        write_atomic(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=_DPI))
        paths.append(path)
    return paths


# ---- learned curves ----------------------------------------------------------------------------

def curves_of(loss: nn.Module) -> dict[str, Any]:
    """The curves ``name -> Curve`` of a surrogate loss, or of the surrogates in a combination
    (names then prefixed ``<metric>:`` when two parts share a curve name)."""
    from autoloss.losses import CombinedLoss, SurrogateLoss

    if isinstance(loss, SurrogateLoss):
        return dict(loss.curves)
    if isinstance(loss, CombinedLoss):
        found: dict[str, Any] = {}
        for part in loss.losses:
            for name, curve in curves_of(part).items():
                key = f"{getattr(part, 'metric', 'part')}:{name}" if name in found else name
                found[key] = curve
        return found
    return {}


def plot_curves(losses: Sequence[str | Path | nn.Module], *, labels: Sequence[str] | None = None,
                out: Path | str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Overlay the learned curves ``h(x)`` of one or several losses, one panel per curve name.

    Args:
        losses: loss YAML files, preset names (``asl-voc-miou``) or loss modules.
        labels: legend label per loss (default: file stem or preset name).
        out: output path without format; formats: ``png`` and/or ``svg``.

    Each panel shows the identity ``y = x`` (dashed), every loss's curve and its control points:
    Bezier junctions (on the curve) filled, off-curve controls hollow, joined by the thin control
    polygon; linear knots filled. Returns the written files.
    """
    if isinstance(losses, (str, Path, nn.Module)):
        losses = [losses]
    if len(losses) == 0:
        raise InvalidValueError("losses must name at least one loss, but got an empty list")
    if labels is not None and len(labels) != len(losses):
        raise InvalidValueError(f"labels must have one entry per loss ({len(losses)}), but got "
                         f"{len(labels)}: {list(labels)}")
    from autoloss.losses import load_loss

    names = list(labels) if labels is not None else default_labels(losses)
    entries = []
    for label, spec in zip(names, losses):
        module = spec if isinstance(spec, nn.Module) else load_loss(spec)
        curves = curves_of(module)
        if not curves:
            raise InvalidValueError(f"loss {label!r} ({type(module).__name__}) has no curves to plot; "
                             "expected a surrogate loss (a preset like 'asl-voc-miou' or a "
                             "searched loss file)")
        entries.append((label, getattr(module, "metric", None), curves))
    panels = list(dict.fromkeys(name for _, _, curves in entries for name in curves))
    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    metrics = sorted({m for _, m, _ in entries if m})
    x = torch.linspace(0.0, 1.0, 401, dtype=torch.float64)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.6 * ncols, 3.6 * nrows + 0.6), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, panel in zip(axes, panels):
            ax.plot([0, 1], [0, 1], "--", color="0.5", lw=1, label="identity y = x")
            for k, (label, _, curves) in enumerate(entries):
                if panel in curves:
                    _draw_curve(ax, curves[panel], x, color=LOSS_COLORS[k % len(LOSS_COLORS)],
                                label=label)
            ax.set(title=panel, xlabel="x (probability)", ylabel="h(x)", xlim=(-0.02, 1.02),
                   ylim=(-0.02, 1.02), aspect="equal")
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        handles, texts = axes[0].get_legend_handles_labels()
        for ax in axes[1:len(panels)]:
            for h, t in zip(*ax.get_legend_handles_labels()):
                if t not in texts:
                    handles.append(h)
                    texts.append(t)
        fig.legend(handles, texts, loc="outside lower center", ncols=min(len(texts), 4))
        what = f" ({', '.join(metrics)})" if metrics else ""
        fig.suptitle(f"Learned curves h(x){what}; filled: on-curve points, hollow: controls")
        return save_figure(fig, out, formats)


def _file_label(path: Path) -> str:
    """A searched ``best_loss.yaml`` by its search or study folder (``study-miou-camvid`` for
    ``results/study-miou-camvid/search/best_loss.yaml``), a search's other loss files by the
    folder and their kind (``study-bf1-camvid identity``), any other YAML by its stem."""
    if path.suffix not in (".yaml", ".yml"):
        return str(path)
    if not is_search_loss_file(path) or not search_name(path.parent):
        return path.stem
    kind = path.stem.removesuffix("_loss")
    return search_name(path.parent) + ("" if kind == "best" else f" {kind}")


def default_labels(losses: Sequence[str | Path | nn.Module]) -> list[str]:
    """Preset name, a search's folder (:func:`_file_label`) or file stem (``parent/stem`` when
    they repeat); ``loss i`` for modules."""
    paths = [None if isinstance(s, nn.Module) else Path(s) for s in losses]
    stems = [_file_label(p) if p is not None else "" for p in paths]
    return [f"loss {i + 1}" if p is None else
            f"{p.parent.name}/{stem}" if stems.count(stem) > 1 and p.parent.name else stem
            for i, (p, stem) in enumerate(zip(paths, stems))]


def _draw_curve(ax: Any, curve: Any, x: torch.Tensor, *, color: str, label: str) -> None:
    ax.plot(x.numpy(), curve(x).numpy(), color=color, lw=1.8, label=label)
    points = np.asarray(curve.control_points(), dtype=float)
    if curve.kind == "bezier":
        ax.plot(points[:, 0], points[:, 1], "-", color=color, lw=0.6, alpha=0.6)
        on, off = points[0::2], points[1::2]
        ax.plot(on[:, 0], on[:, 1], "o", color=color, ms=5, ls="none")
        ax.plot(off[:, 0], off[:, 1], "o", mfc="white", mec=color, mew=1.2, ms=5, ls="none")
    elif curve.kind == "linear":
        ax.plot(points[:, 0], points[:, 1], "o", color=color, ms=4, ls="none")


# ---- training curves ---------------------------------------------------------------------------

Points = list[tuple[int, float]]


def read_training_log(path: Path | str) -> tuple[Points, dict[str, Points]]:
    """``(train losses [(step, loss)], eval metrics {name: [(step, value)]})`` of a trainer JSONL
    log (``autoloss.train.trainer.fit``): ``{"step", "loss", ...}`` lines and ``{"step", "eval": {...}}``
    lines (a ``metrics`` mapping is read the same way); null (non-finite) values are skipped. A
    gzip-compressed log (``log.jsonl.gz``) reads the same, and is read in place of an absent
    plain ``path`` (:mod:`autoloss.utils.run_logs`)."""
    path = run_log(Path(path).parent, Path(path).name) or Path(path)
    if not path.is_file():
        raise MissingFileError(f"training log {str(path)!r} does not exist")
    losses: Points = []
    metrics: dict[str, Points] = {}

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for lineno, line in enumerate(read_log_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InvalidValueError(f"{path}:{lineno} is not a JSON record: {err}") from None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int):
            continue
        scores = record.get("eval", record.get("metrics"))
        if isinstance(scores, dict):
            for key, value in scores.items():
                if number(value):
                    metrics.setdefault(key, []).append((step, float(value)))
        elif number(record.get("loss")):
            losses.append((step, float(record["loss"])))
    return losses, metrics


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Short distinct legend labels for log files: the fewest trailing path parts that tell
    them apart, without a file name they all share (``runs/ce/seed0/log.jsonl`` and
    ``runs/focal/seed0/log.jsonl`` -> ``ce/seed0``, ``focal/seed0``; ``.gz`` is ignored)."""
    parts = [list(Path(p).with_name(Path(p).name.removesuffix(".gz")).with_suffix("").parts)
             for p in paths]
    while (len(parts) > 1 and all(len(x) > 1 for x in parts)
           and len({x[-1] for x in parts}) == 1):
        parts = [x[:-1] for x in parts]
    for depth in range(1, max(len(x) for x in parts) + 1):
        labels = ["/".join(x[-depth:]) for x in parts]
        if len(set(labels)) == len(labels):
            return labels
    return ["/".join(x) for x in parts]


def plot_training(log_jsonl: Path | str | Sequence[Path | str], *, out: Path | str,
                  metrics: Sequence[str] | None = None,
                  formats: Sequence[str] = FORMATS) -> Path:
    """Training curves of one or more runs' JSONL logs (:func:`read_training_log`): the loss vs
    step (raw, faint, and smoothed), then one panel per evaluation metric vs step (``metrics``:
    which ones, default all logged); one colour per run. Returns the file of the first format."""
    one = isinstance(log_jsonl, (str, Path))
    paths = [Path(log_jsonl)] if one else [Path(p) for p in log_jsonl]
    if not paths:
        raise InvalidValueError("log_jsonl must name at least one log file, but got an empty list")
    runs = [(label, *read_training_log(p)) for label, p in zip(run_labels(paths), paths)]
    logged = list(dict.fromkeys(name for _, _, evals in runs for name in evals))
    names = logged if metrics is None else list(metrics)
    missing = [m for m in names if m not in logged]
    if missing:
        raise InvalidValueError(f"metrics {missing} are not in the logs, which hold {logged}")
    with matplotlib.rc_context(STYLE):
        fig = training_figure(runs, names, title="Training curves")
        return save_figure(fig, out, formats)[0]


def training_figure(runs: Sequence[tuple[str, Points, dict[str, Points]]], metrics: Sequence[str],
                    *, title: str, percent: bool = False) -> Figure:
    """Training loss vs step (raw, faint, and smoothed when long), then one panel per metric
    vs step; one colour and one legend entry per run. ``runs``: ``(label, losses, evals)`` as
    :func:`read_training_log` gives them; ``percent``: metrics drawn in percentage points."""
    ncols = min(len(metrics) + 1, 3)
    nrows = math.ceil((len(metrics) + 1) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    scale = 100.0 if percent else 1.0
    for k, (label, losses, evals) in enumerate(runs):
        color = LOSS_COLORS[k % len(LOSS_COLORS)]
        if losses:
            steps, values = np.array(losses).T
            if len(values) >= 100:
                axes[0].plot(steps, values, color=color, lw=0.8, alpha=0.3)
                values = smooth(values)
            axes[0].plot(steps, values, color=color, lw=1.6, label=label)
        for ax, name in zip(axes[1:], metrics):
            if evals.get(name):
                steps, values = np.array(evals[name]).T
                ax.plot(steps, scale * values, "-", marker=".", color=color, label=label)
    axes[0].set(xlabel="step", ylabel="loss", title="training loss (smoothed if long)")
    for ax, name in zip(axes[1:], metrics):
        ax.set(xlabel="step", ylabel=f"{name} (%)" if percent else name, title=f"eval {name}")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    for ax in axes[len(metrics) + 1:]:
        ax.set_visible(False)
    handles = {t: h for ax in axes for h, t in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncols=min(len(handles), 6))
    fig.suptitle(title)
    return fig


def smooth(values: np.ndarray) -> np.ndarray:
    """Centred moving average over ``~len/25`` points (no lag; edges average what exists)."""
    width = 2 * (len(values) // 50) + 1
    kernel = np.ones(width)
    return (np.convolve(values, kernel, mode="same")
            / np.convolve(np.ones_like(values), kernel, mode="same"))
