"""Retrain with several losses and seeds, evaluate on the test split, tabulate mean ± std.

One **run** = one loss, one seed, one folder::

    <out>/run.json          what the run is (loss spec, data, model, training config): a rerun
                            with a different setup in the same folder is an error, not a mix
    <out>/checkpoint.pt     written every ``eval_every`` steps (``autoloss.trainer.fit``)
    <out>/log.jsonl         training loss and validation metrics
    <out>/metrics.json      written last: test metrics, per-class IoU, train wall time, config

A folder with ``metrics.json`` is a finished run and is never trained again; a folder with only a
checkpoint resumes from it (the trainer replays exactly the steps an uninterrupted run takes).
:func:`compare_losses` runs every ``(loss, seed)`` in ``<out>/runs/<loss-slug>/seed<s>/`` and
writes ``compare.md`` (one row per loss, ``mean ± std`` over seeds in percentage points, the best
mean per column in bold), ``compare.csv`` (long format) and ``compare.json``.

The ignore index always comes from the dataset: a loss that takes ``ignore_index`` (any part of a
combination) is built with ``load_loss(spec, ignore_index=dataset.ignore_index)``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.data import data_slug, dataset_splits, load_dataset
from autoloss.losses import load_loss
from autoloss.metrics import METRIC_NAMES, MetricAccumulator
from autoloss.models import (
    config_to_dict,
    load_checkpoint,
    model_from_name,
    predict,
    read_checkpoint,
)
from autoloss.trainer import TrainConfig, fit

__all__ = ["CompareResult", "RunResult", "Scores", "build_loss", "compare_losses", "data_slug",
           "evaluate_checkpoint", "format_table", "loss_slug", "score_model", "train_run"]

# TrainConfig fields that do not change the trained weights (may differ when resuming)
_FREE_FIELDS = frozenset({"device", "num_threads", "eval_every", "log_every", "eval_batch_size"})


@dataclass
class Scores:
    """Exact metrics of a model on one split: ``metrics`` (name -> value in [0, 1], NaN if
    undefined), ``per_class_iou`` ``[C]`` (NaN for a class absent from prediction and ground
    truth), ``class_names`` (C names), ``images`` scored."""

    metrics: dict[str, float]
    per_class_iou: list[float]
    class_names: list[str]
    images: int


@dataclass
class RunResult:
    """One finished run: ``metrics`` on the test split, ``train_time`` wall-clock seconds of
    training including validation (summed over resumed pieces), ``cached``: finished earlier."""

    loss: str
    seed: int
    out: Path
    metrics: dict[str, float]
    train_time: float
    cached: bool


@dataclass
class CompareResult:
    """What :func:`compare_losses` did: every run (loss-major order) and the files written."""

    runs: list[RunResult]
    table: str
    markdown_path: Path
    csv_path: Path
    json_path: Path
    wall_time: float


# ---- losses and scoring ----------------------------------------------------------------------


def loss_slug(spec: str | Path) -> str:
    """A folder name for a loss spec: a preset/baseline name as is, a YAML file by its stem."""
    text = str(spec)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "loss"


def _ignore_values(spec: dict[str, Any]) -> list[Any] | None:
    """The ``ignore_index`` of each part of a loss spec that has one (None: no part has one)."""
    parts = spec["combine"] if "combine" in spec else [spec]
    values = [part["ignore_index"] for part in parts if "ignore_index" in part]
    return values or None


def build_loss(spec: str | Path, *, ignore_index: int | None) -> nn.Module:
    """``load_loss(spec)`` with the dataset's ``ignore_index`` in every part that takes one.

    Raises if no part of the loss takes an ``ignore_index`` while the dataset has one (its
    ignored pixels would reach the loss as class labels)."""
    loss = load_loss(spec)
    to_dict = getattr(loss, "to_dict", None)
    values = _ignore_values(to_dict()) if callable(to_dict) else [None]
    if values is None:
        if ignore_index is not None:
            raise ValueError(f"loss {str(spec)!r} has no ignore_index option, but the dataset "
                             f"marks ignored pixels with ignore_index={ignore_index}; use a loss "
                             f"that takes ignore_index or a dataset without ignored pixels")
        return loss
    if any(v != ignore_index for v in values):
        loss = load_loss(spec, ignore_index=ignore_index)
    return loss


@torch.no_grad()
def score_model(model: nn.Module, data: Any, *, tol: int = 5, batch_size: int = 16) -> Scores:
    """Exact metrics (all of ``METRIC_NAMES``) and per-class IoU of ``model`` on a dataset from
    :func:`autoloss.data.load_dataset` (full images, normalised with its ``mean`` / ``std``)."""
    images, labels = data.arrays()
    acc = MetricAccumulator(num_classes=data.num_classes, ignore_index=data.ignore_index, tol=tol)
    for start in range(0, len(labels), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        pred = predict(model, x.permute(0, 3, 1, 2), mean=data.mean, std=data.std,
                       batch_size=batch_size)
        acc.update(pred.cpu(), torch.from_numpy(labels[start:start + batch_size].astype(np.int64)))
    iou = acc.compute_per_class()["miou"]
    return Scores(metrics=acc.compute(), per_class_iou=[float(v) for v in iou],
                  class_names=list(data.class_names), images=len(labels))


def evaluate_checkpoint(path: str | Path, data: str, *, split: str = "test", tol: int = 5,
                        device: str | None = None) -> Scores:
    """Scores of the model stored in a ``fit`` checkpoint on one split of ``data``."""
    model, _ = load_checkpoint(path, device=device)
    dataset = load_dataset(data, split)
    config = getattr(model, "config", None)
    if config is not None and config.num_classes != dataset.num_classes:
        raise ValueError(f"the checkpoint's model predicts {config.num_classes} classes, but "
                         f"dataset {data!r} has num_classes={dataset.num_classes}")
    return score_model(model, dataset, tol=tol)


# ---- one run ---------------------------------------------------------------------------------


@dataclass
class _Data:
    spec: str
    train: Any
    val: Any
    test: Any
    test_split: str


def _load_data(data: str, *, val_split: str | None, test_split: str) -> _Data:
    splits = dataset_splits(data)
    for name, split in (("val_split", val_split), ("test_split", test_split)):
        if split is not None and split not in splits:
            raise ValueError(f"{name}={split!r} is not a split of {data!r}, which has {splits}")
    if val_split is not None and val_split == test_split:
        raise ValueError(f"val_split and test_split must differ (validation must not see the "
                         f"reported split), but both are {test_split!r}")
    return _Data(data, load_dataset(data, "train"),
                 load_dataset(data, val_split) if val_split is not None else None,
                 load_dataset(data, test_split), test_split)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist()))


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()}


def _float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: (float("nan") if v is None else float(v)) for k, v in metrics.items()}


def _comparable(identity: dict[str, Any]) -> dict[str, Any]:
    out = _plain(identity)
    out["train_config"] = {k: v for k, v in (out.get("train_config") or {}).items()
                           if k not in _FREE_FIELDS}
    return out


def _check_identity(path: Path, stored: dict[str, Any], current: dict[str, Any]) -> None:
    old, new = _comparable(stored), _comparable(current)
    diff = [f"{k}: stored {old.get(k)!r} vs now {new[k]!r}" for k in new if old.get(k) != new[k]]
    if diff:
        raise ValueError(f"{path.parent} holds a run with another setup ({'; '.join(diff)}); "
                         f"pass another out folder or delete that one")


def _run(loss_spec: str | Path, data: _Data, *, config: TrainConfig, model: str,
         width: int | None, depth: int | None, out: Path, init_from: str | Path | None,
         tol: int, progress: bool) -> RunResult:
    out = Path(out)
    loss = build_loss(loss_spec, ignore_index=data.train.ignore_index)
    net = model_from_name(model, in_channels=data.train.in_channels,
                          num_classes=data.train.num_classes, width=width, depth=depth,
                          seed=config.seed)
    identity = {
        "loss_spec": loss.to_dict(), "data": data.spec, "model": config_to_dict(net.config),
        "train_config": dataclasses.asdict(config),
        "init_from": None if init_from is None else str(init_from), "tol": tol,
        "val_split": None if data.val is None else data.val.split, "test_split": data.test_split,
    }
    metrics_path, run_path = out / "metrics.json", out / "run.json"
    if metrics_path.is_file():
        stored = json.loads(metrics_path.read_text())
        _check_identity(metrics_path, stored, identity)
        return RunResult(str(loss_spec), config.seed, out, _float_metrics(stored["test"]),
                         float(stored["train_time"]), cached=True)
    if run_path.is_file():
        _check_identity(run_path, json.loads(run_path.read_text()), identity)
    out.mkdir(parents=True, exist_ok=True)
    run_path.write_text(json.dumps(_plain({"loss": str(loss_spec), **identity}), indent=2))
    checkpoint = out / "checkpoint.pt"
    result = fit(net, loss, data.train, config=config, eval_data=data.val, tol=tol,
                 checkpoint_path=checkpoint, log_path=out / "log.jsonl", init_from=init_from,
                 progress=progress)
    train_time = float(read_checkpoint(checkpoint)["elapsed"])
    t0 = time.perf_counter()
    scores = score_model(net, data.test, tol=tol, batch_size=config.eval_batch_size)
    record = {
        "loss": str(loss_spec), "seed": config.seed, "split": data.test_split,
        "test": _json_metrics(scores.metrics),
        "test_per_class_iou": _json_metrics(dict(zip(scores.class_names,
                                                     scores.per_class_iou))),
        "val": _json_metrics(result.metrics), "train_time": round(train_time, 3),
        "seconds_per_step": result.seconds_per_step or None,
        "test_eval_time": round(time.perf_counter() - t0, 3), "steps": result.steps, **identity,
    }
    tmp = metrics_path.with_name(".metrics.json.tmp")
    tmp.write_text(json.dumps(_plain(record), indent=2))
    tmp.replace(metrics_path)
    return RunResult(str(loss_spec), config.seed, out, scores.metrics, train_time, cached=False)


def train_run(loss: str | Path, data: str, *, config: TrainConfig, out: str | Path,
              model: str = "unet", width: int | None = None, depth: int | None = None,
              init_from: str | Path | None = None, tol: int = 5, val_split: str | None = "val",
              test_split: str = "test", progress: bool = True) -> RunResult:
    """Train one model with one loss (seed ``config.seed``) into ``out``, or return the stored
    result of a finished run there; resumes from ``out/checkpoint.pt`` after an interruption.

    Validates on ``val_split`` every ``config.eval_every`` steps (None: no validation), scores
    the final model on ``test_split`` with every metric of ``METRIC_NAMES`` (boundary tolerance
    ``tol``). ``model``, ``width``, ``depth``: see :func:`autoloss.models.model_from_name` (the
    initial weights are seeded with ``config.seed``). ``init_from``: warm-start checkpoint.
    """
    splits = _load_data(data, val_split=val_split, test_split=test_split)
    return _run(loss, splits, config=config, model=model, width=width, depth=depth,
                out=Path(out), init_from=init_from, tol=tol, progress=progress)


# ---- many runs -------------------------------------------------------------------------------


def _slugs(losses: Sequence[str]) -> list[str]:
    short = [loss_slug(loss) for loss in losses]
    # two YAML files with one stem: use the whole path
    return [re.sub(r"[^A-Za-z0-9._-]+", "-", loss).strip("-.") if short.count(slug) > 1 else slug
            for loss, slug in zip(losses, short)]


def _fmt_metrics(metrics: dict[str, float], names: Sequence[str]) -> str:
    return ", ".join(f"{n} {100 * metrics[n]:.2f}" for n in names if n in metrics)


def compare_losses(losses: Sequence[str], data: str, *, seeds: int, config: TrainConfig,
                   model: str = "unet", out: str | Path, width: int | None = None,
                   depth: int | None = None, init_from: str | Path | None = None, tol: int = 5,
                   val_split: str | None = "val", test_split: str = "test",
                   progress: bool = True) -> CompareResult:
    """Train every loss with seeds ``0 .. seeds-1`` (each run as :func:`train_run`, in
    ``out/runs/<loss-slug>/seed<s>/``), then write ``compare.md``, ``compare.csv`` and
    ``compare.json`` in ``out``. Finished runs are reused; an interrupted run resumes.

    ``config.seed`` is replaced by each run's seed; prints one progress line per run.
    """
    losses = [str(loss) for loss in losses]
    if not losses:
        raise ValueError("losses must name at least one loss, but got an empty list")
    if len(set(losses)) != len(losses):
        raise ValueError(f"losses must be distinct, but got {losses}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, but got {seeds=}")
    t0 = time.perf_counter()
    out = Path(out)
    for loss in losses:  # fail on a typo before hours of training
        load_loss(loss)
    splits = _load_data(data, val_split=val_split, test_split=test_split)
    slugs = _slugs(losses)
    total, runs = len(losses) * seeds, []
    for i, (loss, slug) in enumerate(((lo, sl) for lo, sl in zip(losses, slugs)
                                      for _ in range(seeds))):
        seed = i % seeds
        print(f"[{i + 1}/{total}] {loss} seed {seed} ...", flush=True)
        run = _run(loss, splits, config=dataclasses.replace(config, seed=seed), model=model,
                   width=width, depth=depth, out=out / "runs" / slug / f"seed{seed}",
                   init_from=init_from, tol=tol, progress=progress)
        state = "finished earlier" if run.cached else f"{run.train_time:.0f} s"
        print(f"      {_fmt_metrics(run.metrics, ('miou', 'bf1'))} ({state})", flush=True)
        runs.append(run)
    table = format_table(runs)
    header = [
        "# Loss comparison", "",
        f"- data: `{data}` (test split `{test_split}`, boundary tolerance {tol} px)",
        f"- model: `{model}` (width {width or 'default'}, depth {depth or 'default'}); "
        f"{config.steps} steps, batch {config.batch_size}, "
        f"{'crop {}x{}'.format(*config.crop) if config.crop else 'whole images'}, "
        f"{config.optimizer} lr {config.lr}",
        f"- seeds: {seeds} (0..{seeds - 1}); cells: mean ± sample std over seeds, percentage "
        f"points; **bold**: best mean per column; train time: wall-clock s per run", "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path, json_path = out / "compare.md", out / "compare.csv", out / "compare.json"
    md.write_text("\n".join(header) + "\n" + table)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["loss", "seed", "metric", "value"])
        for run in runs:
            for name, value in run.metrics.items():
                writer.writerow([run.loss, run.seed, name, repr(float(value))])
            writer.writerow([run.loss, run.seed, "train_time", f"{run.train_time:.3f}"])
    json_path.write_text(json.dumps(_plain({
        "data": data, "model": model, "width": width, "depth": depth, "seeds": seeds,
        "tol": tol, "test_split": test_split, "train_config": dataclasses.asdict(config),
        "losses": losses,
        "runs": [{"loss": r.loss, "seed": r.seed, "dir": str(r.out),
                  "metrics": _json_metrics(r.metrics), "train_time": r.train_time}
                 for r in runs],
        "summary": {loss: {name: _mean_std([r.metrics.get(name, math.nan) for r in runs
                                            if r.loss == loss])
                           for name in _metric_names(runs)} for loss in losses},
    }), indent=2))
    return CompareResult(runs, table, md, csv_path, json_path, time.perf_counter() - t0)


# ---- the table -------------------------------------------------------------------------------


def _metric_names(runs: Sequence[RunResult]) -> list[str]:
    names = {n for r in runs for n in r.metrics}
    return [n for n in METRIC_NAMES if n in names] + sorted(names - set(METRIC_NAMES))


def _mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"mean", "std" (sample, n-1; None for one value), "n"}`` of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def format_table(runs: Sequence[RunResult], *, metrics: Sequence[str] | None = None) -> str:
    """Markdown table: one row per loss (in first-seen order), one column per metric with
    ``mean ± std`` over its runs in percentage points (2 decimals; sample std, omitted for a
    single run), the best mean of each metric column in bold (ties too), a column ``train
    time (s)`` (mean) and the number of runs."""
    names = list(metrics) if metrics is not None else _metric_names(runs)
    losses = list(dict.fromkeys(r.loss for r in runs))
    stats = {loss: {n: _mean_std([100 * r.metrics.get(n, math.nan) for r in runs
                                  if r.loss == loss]) for n in names} for loss in losses}
    best = {}
    for n in names:
        means = [round(stats[loss][n]["mean"], 2) for loss in losses
                 if stats[loss][n]["mean"] is not None]
        best[n] = max(means) if means else None
    lines = ["| loss | " + " | ".join(names) + " | train time (s) | runs |",
             "|---|" + "---:|" * (len(names) + 2)]
    for loss in losses:
        cells = []
        for n in names:
            s = stats[loss][n]
            if s["mean"] is None:
                cells.append("n/a")
                continue
            text = f"{s['mean']:.2f}" + (f" ± {s['std']:.2f}" if s["std"] is not None else "")
            cells.append(f"**{text}**" if round(s["mean"], 2) == best[n] else text)
        times = [r.train_time for r in runs if r.loss == loss]
        lines.append(f"| {loss} | " + " | ".join(cells)
                     + f" | {np.mean(times):.0f} | {len(times)} |")
    return "\n".join(lines) + "\n"
