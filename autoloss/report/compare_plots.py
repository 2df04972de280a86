"""Figures of a loss comparison folder (``autoloss compare``): test scores per loss, validation
curves, per-class IoU, and two losses' predictions side by side.

The folder is read by :func:`autoloss.report.comparison.read_comparison` (its layout is described
there); :class:`Comparison`, :class:`ComparisonRun` and :func:`read_comparison` are importable
from here too. Scores are percentage points on the figures.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from autoloss.errors import InvalidValueError, did_you_mean
from autoloss.report.comparison import Comparison, ComparisonRun, read_comparison
from autoloss.report.overlay_plots import class_legend, class_palette, colourise
from autoloss.report.plots import (
    FORMATS,
    LOSS_COLORS,
    STYLE,
    check_formats,
    read_training_log,
    save_figure,
    training_figure,
)

__all__ = ["Comparison", "ComparisonRun", "plot_comparison", "read_comparison"]

_REFERENCE_COLOUR = "#404040"
_SIGNIFICANT_HATCH = "///"


def _colours(comp: Comparison) -> dict[str, str]:
    """The reference in dark grey; the others in the plots palette (its grey left out), then the
    light tab20 shades."""
    cmap = matplotlib.colormaps["tab20"]
    palette = [c for c in LOSS_COLORS if c != "#7f7f7f"]
    palette += [to_hex(cmap(i)) for i in range(1, 20, 2)]
    others = [loss for loss in comp.losses if loss != comp.reference]
    colours = {loss: palette[k % len(palette)] for k, loss in enumerate(others)}
    return {comp.reference: _REFERENCE_COLOUR, **colours}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# ---- 1. test scores ----------------------------------------------------------------------------

def _bars_figure(comp: Comparison, metrics: Sequence[str]) -> Figure:
    """One panel per metric: mean test score per loss (bar), seeds (dots), sample std (error
    bar), the reference's mean (dashed), losses significantly different from it hatched."""
    colours, n = _colours(comp), len(comp.losses)
    x = np.arange(n)
    seeds = max((len(comp.runs_of(loss)) for loss in comp.losses), default=0)
    width = max(4.0, 0.5 * n + 1.2) * len(metrics)
    fig = Figure(figsize=(width, 4.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        scores = [comp.scores(loss, metric) for loss in comp.losses]
        means = np.array([s.mean() if s.size else np.nan for s in scores])
        stds = np.array([s.std(ddof=1) if s.size > 1 else np.nan for s in scores])
        bars = ax.bar(x, np.nan_to_num(means), width=0.7, zorder=2, edgecolor="white",
                      color=[colours[loss] for loss in comp.losses], alpha=0.85)
        for bar, loss in zip(bars, comp.losses):
            if comp.significant(loss, metric):
                bar.set_hatch(_SIGNIFICANT_HATCH)
        has_std = np.isfinite(stds)
        ax.errorbar(x[has_std], means[has_std], yerr=stds[has_std], fmt="none", ecolor="black",
                    elinewidth=1.1, capsize=3, zorder=4)
        for i, s in enumerate(scores):
            jitter = np.linspace(-0.16, 0.16, s.size) if s.size > 1 else np.zeros(s.size)
            ax.plot(i + jitter, s, "o", ms=3.5, mfc="white", mec="black", mew=0.8, zorder=5)
        reference = means[comp.losses.index(comp.reference)]
        if np.isfinite(reference):
            ax.axhline(reference, ls="--", lw=1.1, color=_REFERENCE_COLOUR, zorder=3)
        values = np.concatenate([*scores, means[has_std] + stds[has_std],
                                 means[has_std] - stds[has_std]])
        bottom = _zoom(ax, values)
        for i, (mean, s) in enumerate(zip(means, scores)):
            if np.isfinite(mean):
                top = max(s.max(), mean + (stds[i] if has_std[i] else 0))
                star = "*" if comp.significant(comp.losses[i], metric) else ""
                ax.annotate(f"{mean:.1f}{star}", (i, top), xytext=(0, 3), ha="center",
                            textcoords="offset points", va="bottom", fontsize=7)
        ax.set_xticks(x, [comp.labels[loss] for loss in comp.losses], rotation=35, ha="right",
                      rotation_mode="anchor")
        ax.get_xticklabels()[comp.losses.index(comp.reference)].set_fontweight("bold")
        ax.set_xlim(-0.6, n - 0.4)
        axis = f", axis from {bottom:.0f}" if bottom > 0 else ""
        ax.set(title=f"test {metric}", ylabel=f"{metric} (%{axis})")
        ax.grid(axis="x", visible=False)
    have_paired = any(comp.significant(loss, m) is not None for loss in comp.losses for m in metrics)
    paired = ("hatched, *: paired interval vs the reference excludes 0" if have_paired
              else "no paired intervals in compare.json")
    handles = [Patch(color=_REFERENCE_COLOUR, label=f"reference {comp.labels[comp.reference]} "
                                                    "(dashed: its mean)"),
               Line2D([], [], ls="none", marker="o", ms=4, mfc="white", mec="black",
                      label="one seed"),
               Line2D([], [], color="black", marker="_", ms=8, label="±1 sample std"),
               Patch(facecolor="white", edgecolor="black", hatch=_SIGNIFICANT_HATCH if have_paired
                     else None, label=paired)]
    fig.legend(handles=handles, loc="outside lower center",
               ncols=4 if width >= 11 else 2 if width >= 7 else 1)
    fig.suptitle(f"Test scores ({comp.test_split} split; bar: mean over {seeds} "
                 f"seed{'s' if seeds != 1 else ''})\n{comp.data}")
    return fig


def _zoom(ax: Any, values: np.ndarray) -> float:
    """Y limits around ``values`` (percentage points) with room above for labels; the axis starts
    at 0 unless that would squash the differences. Returns the bottom."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        ax.set_ylim(0, 100)
        return 0.0
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 1.0)
    bottom = lo - 0.6 * span
    bottom = 0.0 if bottom < 0.4 * hi else 5 * math.floor(bottom / 5)
    ax.set_ylim(bottom, hi + 0.18 * max(hi - bottom, span))
    return bottom


# ---- 2. validation curves ----------------------------------------------------------------------

def _eval_curves(runs: Sequence[ComparisonRun], metric: str) -> list[dict[int, float]]:
    """``{step: value in points}`` of ``metric`` for each run that has a log with it."""
    curves = []
    for run in runs:
        log = run.log()
        points = read_training_log(log)[1].get(metric, []) if log is not None else []
        if points:
            curves.append({step: 100 * value for step, value in points})
    return curves


def _band(curves: Sequence[dict[int, float]]) -> tuple[np.ndarray, ...]:
    """Steps (union over curves) and, at each, the mean, min and max over the curves having it."""
    steps = np.array(sorted({s for c in curves for s in c}))
    at = [[c[s] for c in curves if s in c] for s in steps]
    return (steps, np.array([np.mean(v) for v in at]), np.array([min(v) for v in at]),
            np.array([max(v) for v in at]))


def _missing_logs(runs: Sequence[ComparisonRun]) -> list[str]:
    return [f"{run.loss} seed {run.seed}" for run in runs if run.log() is None]


def _curves_figure(comp: Comparison, metrics: Sequence[str]) -> Figure | None:
    """One panel per metric: per loss the mean validation score over seeds at each evaluation
    step, the seeds' min-max as a band; one legend entry per loss. None when no log has them."""
    colours = _colours(comp)
    series = {loss: {m: _eval_curves(comp.runs_of(loss), m) for m in metrics}
              for loss in comp.losses}
    if not any(c for per_metric in series.values() for c in per_metric.values()):
        return None
    ncols = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(max(5.2 * ncols, 7.0), 3.6 * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        for loss in comp.losses:
            curves = series[loss][metric]
            if not curves:
                continue
            steps, mean, lo, hi = _band(curves)
            ref = loss == comp.reference
            ax.fill_between(steps, lo, hi, color=colours[loss], alpha=0.12, lw=0)
            ax.plot(steps, mean, "-", marker="o", ms=2.5, color=colours[loss], lw=2.2 if ref else 1.4,
                    zorder=3 if ref else 2, label=comp.labels[loss])
        ax.set(xlabel="step", ylabel=f"{metric} (%)", title=f"validation {metric}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles = {t: h for ax in axes for h, t in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center",
               ncols=min(len(handles), 5 if ncols > 1 else 3), title="loss (band: seeds' min-max)")
    fig.suptitle(f"Validation curves, mean over seeds\n{comp.data}")
    return fig


def _pretrain_figure(comp: Comparison, metrics: Sequence[str]) -> Figure | None:
    """The cross-entropy pretraining runs of a finetune comparison: training loss and validation
    metrics vs step, one line per seed. None when no pretraining log exists."""
    logs = [(run.seed, read_training_log(path)) for run in comp.pretrain_runs
            if (path := run.log()) is not None]
    if not logs:
        return None
    runs = [(f"seed {seed}", losses, evals) for seed, (losses, evals) in logs]
    return training_figure(runs, metrics, percent=True,
                           title=f"Cross-entropy pretraining (the fine-tuning start)\n{comp.data}")


# ---- 3. per-class IoU --------------------------------------------------------------------------

def _per_class_figure(comp: Comparison) -> Figure | None:
    """Grouped bars: per class, the mean test IoU of every loss over its seeds; below, each
    loss's difference from the reference. None without per-class IoU."""
    names = comp.class_names
    table = np.full((len(comp.losses), len(names)), np.nan)  # [loss, class] in points
    for i, loss in enumerate(comp.losses):
        for j, name in enumerate(names):
            values = [100 * r.per_class_iou.get(name, math.nan) for r in comp.runs_of(loss)]
            values = [v for v in values if math.isfinite(v)]
            table[i, j] = np.mean(values) if values else np.nan
    if not names or np.isnan(table).all():
        return None
    colours, n = _colours(comp), len(comp.losses)
    ref = comp.losses.index(comp.reference)
    width = 0.8 / n
    x = np.arange(len(names))
    others = [i for i in range(n) if i != ref]
    rows = 2 if others else 1
    fig_width = max(7.0, len(names) * (0.1 * n + 0.35) + 1.5)
    fig = Figure(figsize=(fig_width, 3.4 * rows + 1.2), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False, sharex=True).ravel()
    offsets = (np.arange(n) - (n - 1) / 2) * width
    for i, loss in enumerate(comp.losses):
        axes[0].bar(x + offsets[i], table[i], width, color=colours[loss], label=comp.labels[loss],
                    zorder=2)
    axes[0].set(ylabel="IoU (%)", ylim=(0, 100),
                title=f"test IoU per class (mean over seeds, {comp.test_split} split)")
    if others:
        diff = table - table[ref]
        for k, i in enumerate(others):
            off = (k - (len(others) - 1) / 2) * 0.8 / len(others)
            axes[1].bar(x + off, diff[i], 0.8 / len(others), color=colours[comp.losses[i]],
                        zorder=2)
        axes[1].axhline(0, color=_REFERENCE_COLOUR, lw=1)
        axes[1].set(ylabel="IoU difference (points)",
                    title=f"difference from the reference {comp.labels[comp.reference]}")
    for ax in axes:
        ax.grid(axis="x", visible=False)
        for edge in x[:-1] + 0.5:
            ax.axvline(edge, color="0.85", lw=0.8, zorder=1)
    axes[-1].set_xticks(x, names, rotation=30 if max(map(len, names)) > 8 else 0,
                        ha="right" if max(map(len, names)) > 8 else "center")
    axes[-1].set_xlim(-0.5, len(names) - 0.5)
    longest = max(len(comp.labels[loss]) for loss in comp.losses)
    fits = max(1, int(fig_width / (0.075 * longest + 0.55)))  # legend columns that fit the width
    fig.legend(loc="outside lower center", ncols=min(n, 6, fits))
    fig.suptitle(f"Per-class IoU\n{comp.data}")
    return fig


# ---- 4. predictions of two losses --------------------------------------------------------------

def _image_scores(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(mIoU over the classes in this image's ground truth or prediction, pixel accuracy), both
    over valid pixels (ground truth in ``[0, num_classes)``), in percentage points."""
    valid = (gt >= 0) & (gt < num_classes)
    if not valid.any():
        return math.nan, math.nan
    p, g = pred[valid], gt[valid]
    inter = np.bincount(g[p == g], minlength=num_classes)[:num_classes]
    union = (np.bincount(p, minlength=num_classes)[:num_classes]
             + np.bincount(g, minlength=num_classes)[:num_classes] - inter)
    present = union > 0
    return 100 * float((inter[present] / union[present]).mean()), 100 * float((p == g).mean())


def _overlay_figure(comp: Comparison, a: str, b: str, n_images: int,
                    why_b: str) -> tuple[Figure | None, str]:
    """Rows image | ground truth | prediction of ``a`` | of ``b`` (seed 0 checkpoints) for
    ``n_images`` evenly spaced test images; ``(None, what is missing)`` when it cannot be drawn."""
    from autoloss.data import load_dataset
    from autoloss.train.checkpoint import load_checkpoint
    from autoloss.train.models import predict

    models = []
    for loss in (a, b):
        run = next((r for r in comp.runs_of(loss) if r.seed == 0), None)
        path = None if run is None else run.file("checkpoint.pt")
        if path is None:
            return None, (f"no seed-0 run of {loss}" if run is None else
                          f"the run folder of {loss} seed 0 is missing" if run.dir is None else
                          f"no checkpoint.pt in {run.dir} ({loss} seed 0)")
        models.append(load_checkpoint(path)[0])
    if not comp.data:
        return None, "no dataset spec (compare.json 'data' or a run's run.json)"
    try:
        dataset = load_dataset(comp.data, comp.test_split)
    except (FileNotFoundError, ValueError) as err:
        return None, f"cannot load the dataset {comp.data!r} ({err})"
    if len(dataset) == 0:
        return None, f"split {comp.test_split!r} of {comp.data!r} holds no images"
    palette = class_palette(dataset.num_classes)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(n_images, len(dataset)))
                      .round().astype(int))
    rows, seen = [], set()
    for index in picks.tolist():
        image, label = dataset[index]
        gt = label.numpy()
        preds = [predict(m, image, mean=dataset.mean, std=dataset.std).cpu().numpy()
                 for m in models]
        valid = (gt >= 0) & (gt < dataset.num_classes)
        seen.update(np.unique(gt[valid]).tolist(), *(np.unique(p).tolist() for p in preds))
        rows.append((index, image.permute(1, 2, 0).numpy(), gt, preds))
    height, width = rows[0][2].shape
    panel = 2.6  # inches per column; rows follow the image aspect ratio
    fig = Figure(figsize=(4 * panel, (panel * height / width + 0.55) * len(rows) + 1.0),
                 layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for (index, image, gt, preds), row in zip(rows, axes):
        shown = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
        row[0].imshow(np.clip(shown, 0, 1), cmap="gray" if shown.ndim == 2 else None)
        row[1].imshow(colourise(gt, palette), interpolation="nearest")
        titles = [f"test image #{index}", "ground truth"]
        for ax, loss, pred in zip(row[2:], (a, b), preds):
            ax.imshow(colourise(pred, palette), interpolation="nearest")
            miou, acc = _image_scores(pred, gt, dataset.num_classes)
            titles.append(f"{comp.labels[loss]}\nmIoU {miou:.1f} %, pixel acc {acc:.1f} %")
        for ax, title in zip(row, titles):
            ax.set_title(title, fontsize=8.5)
            ax.set_axis_off()
    class_legend(fig, dataset, seen, palette)
    fig.suptitle(f"Seed-0 predictions: {comp.labels[a]} (reference) vs {comp.labels[b]}{why_b}\n"
                 f"{comp.data} ({comp.test_split})")
    return fig, ""


# ---- all figures -------------------------------------------------------------------------------

def _check_name(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise InvalidValueError(f"{what} must be one of {list(allowed)}, but got {value!r}"
                                f"{did_you_mean(value, allowed)}")


def plot_comparison(compare_dir: Path | str, *, out: Path | str | None = None,
                    metrics: Sequence[str] = ("miou", "bf1"), pair: str | None = None,
                    n_images: int = 3, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Every figure of a comparison folder (:func:`read_comparison`), written under ``out``
    (default ``compare_dir/plots``), one file per format:

    - ``bars``: one panel per metric of ``metrics``: mean test score per loss over seeds, the
      seeds as dots, the sample std as error bar; the reference loss in grey with its mean
      dashed; hatched (and ``*``): paired interval vs the reference excludes 0.
    - ``curves``: validation curves per metric, mean over seeds with the seeds' min-max band;
      ``pretrain`` too (one line per seed) with protocol finetune.
    - ``per_class_iou``: grouped bars of the mean test IoU per class and loss, and each loss's
      difference from the reference.
    - ``overlays-<A>-vs-<B>``: ``n_images`` evenly spaced test images: image | ground truth | seed-0
      prediction of the reference A | of ``pair`` B (default: the best mean of ``metrics[0]``
      other than the reference), each with that image's mIoU and pixel accuracy.

    A figure whose inputs are missing (logs, checkpoints, per-class IoU, the dataset) is skipped
    with a warning naming them; one seed only draws without spread, with a warning. Returns the
    written files.
    """
    fmts = check_formats(formats)
    comp = _checked_comparison(compare_dir, metrics, pair, n_images)
    dest = Path(out) if out is not None else comp.root / "plots"
    written: list[Path] = []

    def save(fig: Figure | None, name: str, missing: str) -> None:
        """Write ``fig`` as ``name``, or warn that it is skipped for want of ``missing``."""
        if fig is None:
            warnings.warn(f"{name} of {comp.root} skipped: {missing}", stacklevel=3)
        else:
            written.extend(save_figure(fig, dest / name, fmts))

    with matplotlib.rc_context(STYLE):
        if max(len(comp.runs_of(loss)) for loss in comp.losses) < 2:
            warnings.warn(f"one seed per loss in {comp.root}: no error bars or seed bands",
                          stacklevel=2)
        save(_bars_figure(comp, metrics), "bars", "")
        if missing := _missing_logs(comp.runs):
            warnings.warn(f"no log.jsonl for {', '.join(missing)} in {comp.root}: their "
                          f"validation curves are left out", stacklevel=2)
        save(_curves_figure(comp, metrics), "curves",
             f"no log.jsonl holds validation {', '.join(metrics)}")
        if comp.protocol == "finetune":
            save(_pretrain_figure(comp, metrics), "pretrain", "protocol finetune, but no "
                 "pretraining run has a log.jsonl (pretrain/seed<s>/)")
        save(_per_class_figure(comp), "per_class_iou",
             "no per-class IoU in compare.json or the runs' metrics.json")
        b, why = _overlay_partner(comp, pair, metrics[0])
        if b is None:
            save(None, "overlays", f"no loss besides the reference {comp.reference} has test "
                 "scores")
        else:
            fig, missing = _overlay_figure(comp, comp.reference, b, n_images, why)
            save(fig, f"overlays-{_slug(comp.labels[comp.reference])}-vs-{_slug(comp.labels[b])}",
                 missing)
    return written


def _checked_comparison(compare_dir: Path | str, metrics: Sequence[str], pair: str | None,
                        n_images: int) -> Comparison:
    """The comparison of ``compare_dir`` once the options of :func:`plot_comparison` are
    checked against it (metrics it holds, a ``pair`` among its losses, some runs)."""
    if isinstance(metrics, str) or not metrics:
        raise InvalidValueError(f"metrics must be a non-empty sequence of metric names, but got {metrics!r}")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise InvalidValueError(f"n_images must be a positive int, but got {n_images=}")
    comp = read_comparison(compare_dir)
    for metric in metrics:
        _check_name(metric, comp.metrics, "metrics")
    if pair is not None:
        _check_name(pair, [loss for loss in comp.losses if loss != comp.reference],
                    f"pair (a loss other than the reference {comp.reference!r})")
    if not any(comp.runs_of(loss) for loss in comp.losses):
        raise InvalidValueError(f"{comp.root / 'compare.json'} holds no runs: nothing to plot")
    return comp


def _overlay_partner(comp: Comparison, pair: str | None, metric: str) -> tuple[str | None, str]:
    """The loss drawn beside the reference in the overlays and why: ``pair``, else the best
    mean test ``metric`` other than the reference (None: no other loss has test scores)."""
    if pair is not None:
        return pair, ""
    means = {loss: comp.scores(loss, metric).mean() for loss in comp.losses
             if loss != comp.reference and comp.scores(loss, metric).size}
    return (max(means, key=means.get) if means else None), f" (best mean test {metric})"
