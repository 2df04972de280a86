"""The tables of a loss comparison: mean ± std, paired differences, per-class IoU, plateaus.

Every function here reads finished runs (:class:`RunRecord`) and returns text or plain data; the
files are written by :func:`write_reports`:

- ``compare.md``: the setup, then (1) every metric as ``mean ± std`` over seeds in percentage
  points, **bold** where the paired 95 % interval against the reference loss lies above zero and
  marked ``▾`` where it lies below; (2) the paired differences to the reference with their
  interval and the seeds won; (3) per-class test IoU; (4) the validation plateau of the
  reference (and pretraining) runs.
- ``compare.csv``: long format, one row per (loss, seed, metric).
- ``compare.json``: ``runs`` (``loss``, ``seed``, ``dir`` relative to the folder, ``metrics`` as
  fractions, ``per_class_iou``, ``train_time``), ``pretrain_runs``, ``summary`` (mean/std/n per
  loss and metric, fractions), ``paired`` (per loss and metric, in points), ``plateau``, and the
  setup.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.core.metrics import METRIC_NAMES
from autoloss.errors import InvalidValueError
from autoloss.utils.atomic import write_atomic, write_text_atomic
from autoloss.utils.stats import mean_std, paired_difference, plateau

__all__ = ["RunRecord", "format_paired", "format_per_class", "format_plateaus", "format_table",
           "metric_names", "paired_table", "plateau_rows", "write_reports"]

PLATEAU_SHARE = 0.25  # the last quarter of the evaluations
PLATEAU_TOL = 0.005  # moves by less than half a point


@dataclass
class RunRecord:
    """One finished run as the reports need it: test ``metrics`` (fractions, NaN if undefined),
    ``per_class_iou`` (class name -> fraction), ``history`` of validation evaluations
    ``[(step, {metric: value})]``, ``train_time`` in seconds, ``out`` its folder."""

    loss: str
    seed: int
    out: Path
    metrics: dict[str, float]
    train_time: float
    per_class_iou: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)


def metric_names(runs: Sequence[RunRecord]) -> list[str]:
    """The metrics the runs have, in ``METRIC_NAMES`` order, then any others sorted."""
    names = {n for r in runs for n in r.metrics}
    return [n for n in METRIC_NAMES if n in names] + sorted(names - set(METRIC_NAMES))


def _losses(runs: Sequence[RunRecord]) -> list[str]:
    return list(dict.fromkeys(r.loss for r in runs))


def _by_seed(runs: Sequence[RunRecord], loss: str, metric: str) -> dict[int, float]:
    return {r.seed: 100 * r.metrics.get(metric, math.nan) for r in runs if r.loss == loss}


def paired_table(runs: Sequence[RunRecord], *, reference: str, metrics: Sequence[str],
                 confidence: float = 0.95) -> dict[str, dict[str, dict[str, Any]]]:
    """``{loss: {metric: PairedDifference.to_dict()}}`` in percentage points, for every loss
    but the reference, paired with the reference by seed."""
    ref = {m: _by_seed(runs, reference, m) for m in metrics}
    return {loss: {m: paired_difference(_by_seed(runs, loss, m), ref[m],
                                        confidence=confidence).to_dict() for m in metrics}
            for loss in _losses(runs) if loss != reference}


def _cell(stats: Mapping[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.2f}" + (f" ± {stats['std']:.2f}" if stats["std"] is not None else "")


def format_table(runs: Sequence[RunRecord], *, reference: str | None = None,
                 metrics: Sequence[str] | None = None, confidence: float = 0.95) -> str:
    """Markdown table: one row per loss (first-seen order), one column per metric with
    ``mean ± std`` over its runs in percentage points (2 decimals; sample std, omitted for a
    single run), a column ``train time (s)`` (mean) and the number of runs.

    With a ``reference`` loss, a cell is **bold** where the paired interval of the loss against
    the reference lies above zero, and ends in ``▾`` where it lies below; nothing is marked
    otherwise (the difference is within the seed noise)."""
    names = list(metrics) if metrics is not None else metric_names(runs)
    losses = _losses(runs)
    paired = (paired_table(runs, reference=reference, metrics=names, confidence=confidence)
              if reference is not None else {})
    lines = ["| loss | " + " | ".join(names) + " | train time (s) | runs |",
             "|---|" + "---:|" * (len(names) + 2)]
    for loss in losses:
        cells = []
        for n in names:
            text = _cell(mean_std(list(_by_seed(runs, loss, n).values())))
            diff = paired.get(loss, {}).get(n)
            if text != "n/a" and diff is not None and diff["significant"]:
                text = f"**{text}**" if diff["mean"] > 0 else f"{text} ▾"
            cells.append(text)
        times = [r.train_time for r in runs if r.loss == loss]
        lines.append(f"| {loss} | " + " | ".join(cells)
                     + f" | {np.mean(times):.0f} | {len(times)} |")
    return "\n".join(lines) + "\n"


def format_paired(runs: Sequence[RunRecord], *, reference: str, metrics: Sequence[str],
                  confidence: float = 0.95) -> str:
    """Markdown table of the paired differences to ``reference`` in points: ``+d [low, high]
    w/n`` (mean difference, t-interval, seeds won of seeds paired); bold where the interval
    excludes zero."""
    paired = paired_table(runs, reference=reference, metrics=metrics, confidence=confidence)
    lines = ["| loss | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for loss, row in paired.items():
        cells = []
        for m in metrics:
            d = row[m]
            if d["mean"] is None:
                cells.append("n/a")
                continue
            text = f"{d['mean']:+.2f}"
            if d["low"] is not None:
                text += f" [{d['low']:+.2f}, {d['high']:+.2f}]"
            text += f" {d['wins']}/{d['n']}"
            cells.append(f"**{text}**" if d["significant"] else text)
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_per_class(runs: Sequence[RunRecord]) -> str:
    """Markdown table of test IoU per class (mean over seeds, points): a row per loss, the best
    mean of each class in bold."""
    classes = list(dict.fromkeys(c for r in runs for c in r.per_class_iou))
    if not classes:
        return ""
    losses = _losses(runs)
    means = {loss: {c: mean_std([100 * r.per_class_iou.get(c, math.nan) for r in runs
                                 if r.loss == loss])["mean"] for c in classes} for loss in losses}
    best = {c: max((round(means[lo][c], 1) for lo in losses if means[lo][c] is not None),
                   default=None) for c in classes}
    lines = ["| loss | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for loss in losses:
        cells = []
        for c in classes:
            v = means[loss][c]
            text = "n/a" if v is None else f"{v:.1f}"
            cells.append(f"**{text}**" if v is not None and round(v, 1) == best[c] else text)
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plateau_rows(runs: Sequence[RunRecord], *, metric: str, stage: str) -> list[dict[str, Any]]:
    """Per run with at least 2 validations: the plateau of ``metric`` over its last quarter of
    evaluations (spread in points)."""
    rows = []
    for r in runs:
        points = [(s, m[metric]) for s, m in r.history if metric in m]
        if len(points) < 2:
            continue
        p = plateau([s for s, _ in points], [v for _, v in points], share=PLATEAU_SHARE,
                    tol=PLATEAU_TOL)
        rows.append({"stage": stage, "loss": r.loss, "seed": r.seed, "metric": metric,
                     "window": p.window, "first_step": p.first_step, "last_step": p.last_step,
                     "spread": 100 * p.spread if math.isfinite(p.spread) else None,
                     "drift": None if p.drift is None else 100 * p.drift,
                     "final": _json_value(100 * points[-1][1]),
                     "reached": p.reached})
    return rows


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_plateaus(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`plateau_rows`."""
    if not rows:
        return ""
    lines = ["| stage | loss | seed | val metric | last evaluations (steps) | final | spread "
             "(points) | plateau (< 0.5) | drift (points) |", "|---|---|---:|---|---|---:|---:|---|---:|"]
    for r in rows:
        drift = "n/a" if r.get("drift") is None else f"{r['drift']:+.2f}"
        lines.append(f"| {r['stage']} | {r['loss']} | {r['seed']} | {r['metric']} | "
                     f"{r['window']} ({r['first_step']}..{r['last_step']}) | {_points(r['final'])} | "
                     f"{_points(r['spread'])} | {'yes' if r['reached'] else '**no**'} | {drift} |")
    return "\n".join(lines) + "\n"


def _json_value(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def write_reports(out: Path, runs: Sequence[RunRecord], *, setup: Mapping[str, Any],
                  header: Sequence[str], reference: str | None,
                  pretrain_runs: Sequence[RunRecord] = (), plateau_metric: str = "miou",
                  class_names: Sequence[str] = ()) -> tuple[Path, Path, Path, str]:
    """Write ``compare.md``, ``compare.csv`` and ``compare.json`` into ``out``; returns their
    paths and the main table. ``setup``: plain data stored at the top of the JSON; ``header``:
    markdown lines above the tables."""
    names = metric_names(runs)
    losses = _losses(runs)
    if reference is not None and reference not in losses:
        raise InvalidValueError(f"reference must be one of the compared losses {losses}, but got "
                         f"{reference=}")
    table = format_table(runs, reference=reference, metrics=names)
    plateaus = plateau_rows(pretrain_runs, metric=plateau_metric, stage="pretrain")
    if reference is not None:
        plateaus += plateau_rows([r for r in runs if r.loss == reference], metric=plateau_metric,
                                 stage="reference")
    sections = ["\n".join(header), "", "## Test scores (mean ± std over seeds, points)", "",
                table]
    if reference is not None and len(losses) > 1:
        sections += [f"## Paired difference to {reference} (points, 95 % t-interval over seeds, "
                     f"seeds won)", "", format_paired(runs, reference=reference, metrics=names)]
    per_class = format_per_class(runs)
    if per_class:
        sections += ["## Test IoU per class (mean over seeds, points; best per class in bold)",
                     "", per_class]
    if plateaus:
        sections += [f"## Validation plateau ({plateau_metric})", "",
                     "Plateau: over the last quarter of the evaluations the metric moves by less "
                     "than 0.5 points (max - min, which includes the evaluation-to-evaluation "
                     "noise). Drift: the mean of the last quarter minus the mean of the quarter "
                     "before (a trend).", "", format_plateaus(plateaus)]
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path, json_path = out / "compare.md", out / "compare.csv", out / "compare.json"
    write_text_atomic(md, "\n".join(sections))
    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["loss", "seed", "metric", "value"])
            for run in runs:
                for name, value in run.metrics.items():
                    writer.writerow([run.loss, run.seed, name, repr(float(value))])
                writer.writerow([run.loss, run.seed, "train_time", f"{run.train_time:.3f}"])

    write_atomic(csv_path, write_csv)

    def run_json(r: RunRecord) -> dict[str, Any]:
        return {"loss": r.loss, "seed": r.seed, "dir": _relative(r.out, out),
                "metrics": {k: _json_value(v) for k, v in r.metrics.items()},
                "per_class_iou": {k: _json_value(v) for k, v in r.per_class_iou.items()},
                "train_time": r.train_time}

    record = {
        **setup, "reference": reference, "losses": losses, "metrics": names,
        "class_names": list(class_names),
        "runs": [run_json(r) for r in runs],
        "pretrain_runs": [run_json(r) for r in pretrain_runs],
        "summary": {loss: {n: mean_std([r.metrics.get(n, math.nan) for r in runs
                                        if r.loss == loss]) for n in names} for loss in losses},
        "paired": (paired_table(runs, reference=reference, metrics=names)
                   if reference is not None else {}),
        "plateau": plateaus,
    }
    write_text_atomic(json_path, json.dumps(record, indent=2, allow_nan=False))
    return md, csv_path, json_path, table
