"""Reading a loss comparison folder (``autoloss compare``) into a :class:`Comparison`.

The folder (``OUT``) holds ``compare.json`` (the panel of losses, the reference loss, every run's
test metrics, paired intervals against the reference) and one folder per run,
``runs/<loss-slug>/seed<s>/`` with ``run.json``, ``log.jsonl``, ``metrics.json`` and
``checkpoint.pt`` (``pretrain/seed<s>/`` too with protocol ``finetune``). :func:`read_comparison`
also reads older files: what ``compare.json`` lacks (class names, per-class IoU, the dataset) is
taken from the run folders, and a run's ``dir`` is looked up relative to ``OUT``, as written, and
by its tail (a moved folder).

Scores are fractions in [0, 1] in the files; :meth:`Comparison.scores` gives percentage points.
The figures are drawn by :mod:`autoloss.report.compare_plots`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.errors import InvalidValueError, MissingFileError
from autoloss.report.plots import default_labels
from autoloss.utils.json_files import read_json
from autoloss.utils.run_logs import run_log

__all__ = ["Comparison", "ComparisonRun", "read_comparison"]


@dataclass
class ComparisonRun:
    """One trained model of a comparison: ``metrics`` (test split, fractions, NaN when
    undefined), ``per_class_iou`` (class name -> fraction), ``dir`` (None: not found)."""

    loss: str
    seed: int
    dir: Path | None
    metrics: dict[str, float]
    per_class_iou: dict[str, float]

    def file(self, name: str) -> Path | None:
        """``dir / name`` if that file exists, else None."""
        path = None if self.dir is None else self.dir / name
        return path if path is not None and path.is_file() else None

    def log(self) -> Path | None:
        """The run's per-step log: ``log.jsonl``, else the compressed ``log.jsonl.gz`` of a
        finished run (:func:`autoloss.utils.run_logs.run_log`), else None."""
        return None if self.dir is None else run_log(self.dir)


@dataclass
class Comparison:
    """What :func:`read_comparison` found in a comparison folder ``root``."""

    root: Path
    data: str | None
    protocol: str
    reference: str
    test_split: str
    losses: list[str]
    labels: dict[str, str]
    metrics: list[str]
    class_names: list[str]
    runs: list[ComparisonRun]
    pretrain_runs: list[ComparisonRun]
    paired: dict[str, Any]

    def runs_of(self, loss: str) -> list[ComparisonRun]:
        return sorted((r for r in self.runs if r.loss == loss), key=lambda r: r.seed)

    def scores(self, loss: str, metric: str) -> np.ndarray:
        """The finite test scores of ``loss`` over its seeds, in percentage points."""
        values = [100 * r.metrics.get(metric, math.nan) for r in self.runs_of(loss)]
        return np.array([v for v in values if math.isfinite(v)], dtype=float)

    def significant(self, loss: str, metric: str) -> bool | None:
        """Whether the paired interval of ``loss`` vs the reference excludes 0 (None: unknown)."""
        entry = (self.paired.get(loss) or {}).get(metric)
        if not isinstance(entry, dict):
            return None
        if isinstance(entry.get("significant"), bool):
            return entry["significant"]
        low, high = _number(entry.get("low")), _number(entry.get("high"))
        return None if math.isnan(low) or math.isnan(high) else bool(low > 0 or high < 0)


def _number(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else math.nan


def _fractions(values: Any) -> dict[str, float]:
    return {str(k): _number(v) for k, v in values.items()} if isinstance(values, dict) else {}


def _json_file(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    value = read_json(path)
    return value if isinstance(value, dict) else {}


def _find_dir(root: Path, written: Any) -> Path | None:
    """``written`` relative to ``root``, as written, or its tail under ``root`` (a moved folder)."""
    if not isinstance(written, str) or not written:
        return None
    path = Path(written)
    tails = [root / Path(*path.parts[k:]) for k in range(1, len(path.parts))]
    return next((p for p in [root / path, path, *tails] if p.is_dir()), None)


def _read_run(root: Path, entry: Any, where: str, *, loss: str | None = None) -> ComparisonRun:
    if not isinstance(entry, dict) or not isinstance(entry.get("seed"), int) \
            or not isinstance(loss if loss is not None else entry.get("loss"), str):
        raise InvalidValueError(f"{where} must be an object with 'loss' (a string) and 'seed' (an int), "
                         f"but got {entry!r}")
    folder = _find_dir(root, entry.get("dir"))
    metrics, per_class = _fractions(entry.get("metrics")), _fractions(entry.get("per_class_iou"))
    if folder is not None and (not metrics or not per_class):
        stored = _json_file(folder / "metrics.json")  # today's compare.json: per-class IoU here
        metrics = metrics or _fractions(stored.get("test"))
        per_class = per_class or _fractions(stored.get("test_per_class_iou"))
    return ComparisonRun(loss if loss is not None else entry["loss"], entry["seed"], folder,
                         metrics, per_class)


def read_comparison(compare_dir: Path | str) -> Comparison:
    """The comparison in ``compare_dir/compare.json``, completed from the run folders.

    Defaults for what the file lacks: ``reference`` cross_entropy if in the panel (else the first
    loss), ``metrics`` those of the runs, ``class_names`` the keys of a run's per-class IoU,
    ``data`` the first run's ``run.json``, ``protocol`` finetune when there are pretraining runs.
    """
    root = Path(compare_dir)
    path = root / "compare.json"
    if not path.is_file():
        raise MissingFileError(f"{str(root)!r} holds no compare.json; expected a folder written "
                                f"by autoloss compare")
    info = read_json(path, fix="run the same autoloss compare command again to rewrite it")
    if not isinstance(info, dict) or not isinstance(info.get("runs"), list):
        raise InvalidValueError(f"{path} must hold a JSON object with a 'runs' list")
    runs = [_read_run(root, e, f"{path}: runs[{i}]") for i, e in enumerate(info["runs"])]
    pretrain = [_read_run(root, e, f"{path}: pretrain_runs[{i}]", loss="pretraining")
                for i, e in enumerate(info.get("pretrain_runs") or [])]
    losses = info.get("losses") or list(dict.fromkeys(r.loss for r in runs))
    if not losses:
        raise InvalidValueError(f"{path} names no losses and holds no runs: nothing to plot")
    reference = info.get("reference") or ("cross_entropy" if "cross_entropy" in losses
                                          else losses[0])
    if reference not in losses:
        warnings.warn(f"the reference loss {reference!r} of {path} is not in its panel "
                      f"{losses}; using {losses[0]!r}", stacklevel=3)
        reference = losses[0]
    metrics = info.get("metrics") or list(dict.fromkeys(m for r in runs for m in r.metrics))
    class_names = info.get("class_names") or next(
        (list(r.per_class_iou) for r in runs if r.per_class_iou), [])
    data = info.get("data") or next((_json_file(r.file("run.json")).get("data")
                                     for r in runs if r.file("run.json")), None)
    return Comparison(
        root=root, data=data, protocol=info.get("protocol") or ("finetune" if pretrain else
                                                                 "scratch"),
        reference=reference, test_split=info.get("test_split") or "test", losses=list(losses),
        labels=dict(zip(losses, default_labels(losses))), metrics=list(metrics),
        class_names=list(class_names), runs=runs, pretrain_runs=pretrain,
        paired=info.get("paired") if isinstance(info.get("paired"), dict) else {})
