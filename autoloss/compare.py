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
writes ``compare.md``, ``compare.csv`` and ``compare.json`` (:mod:`autoloss.compare_report`: mean ±
std over seeds, paired differences to a reference loss with t-intervals, per-class IoU, plateaus).

Two protocols. ``scratch``: every run trains from its seed's initial weights. ``finetune``: per
seed one cross-entropy model is trained first (``<out>/pretrain/seed<s>/``, a run like any other:
cached, resumable), and every loss of the panel, cross-entropy included, trains on from it; this
is how metric losses are used in practice (fine-tuning a cross-entropy model, as PaddleSeg's
Lovasz recipe and Berman et al. do).

The ignore index always comes from the dataset: a loss that takes ``ignore_index`` (any part of a
combination) is built with ``load_loss(spec, ignore_index=dataset.ignore_index)``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.compare_report import RunRecord, format_table, write_reports
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


@dataclass(kw_only=True)
class RunResult(RunRecord):
    """One finished run: ``metrics`` on the test split, ``train_time`` wall-clock seconds of
    training including validation (summed over resumed pieces), ``cached``: finished earlier,
    ``per_class_iou`` on the test split, ``history`` of validations (see RunRecord)."""

    cached: bool


@dataclass
class CompareResult:
    """What :func:`compare_losses` did: every run (loss-major order), the pretraining runs of
    the finetune protocol (one per seed) and the files written."""

    runs: list[RunResult]
    pretrain_runs: list[RunResult]
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


def _read_evals(log_path: Path) -> list[tuple[int, dict[str, float]]]:
    """The validation evaluations of a run's JSONL log: ``[(step, {metric: value})]``."""
    evals = []
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed run
            if isinstance(record, dict) and isinstance(record.get("eval"), dict):
                evals.append((int(record["step"]), _float_metrics(record["eval"])))
    return evals


def _result(loss_spec: str | Path, out: Path, stored: dict[str, Any], *,
            cached: bool) -> RunResult:
    return RunResult(str(loss_spec), int(stored["seed"]), out, _float_metrics(stored["test"]),
                     float(stored["train_time"]), cached=cached,
                     per_class_iou=_float_metrics(stored.get("test_per_class_iou") or {}),
                     history=_read_evals(out / "log.jsonl"))


def _run(loss_spec: str | Path, data: _Data, *, config: TrainConfig, model: str,
         width: int | None, depth: int | None, out: Path, init_from: str | Path | None,
         tol: int, progress: bool, init_label: str | None = None) -> RunResult:
    """One run into ``out`` (or its stored result). ``init_label`` stands for ``init_from`` in
    the run's identity (a path relative to the comparison folder, so that the folder can move)."""
    out = Path(out)
    loss = build_loss(loss_spec, ignore_index=data.train.ignore_index)
    net = model_from_name(model, in_channels=data.train.in_channels,
                          num_classes=data.train.num_classes, width=width, depth=depth,
                          seed=config.seed)
    if init_label is None and init_from is not None:
        init_label = str(init_from)
    identity = {
        "loss_spec": loss.to_dict(), "data": data.spec, "model": config_to_dict(net.config),
        "train_config": dataclasses.asdict(config), "init_from": init_label, "tol": tol,
        "val_split": None if data.val is None else data.val.split, "test_split": data.test_split,
    }
    metrics_path, run_path = out / "metrics.json", out / "run.json"
    if metrics_path.is_file():
        stored = json.loads(metrics_path.read_text())
        _check_identity(metrics_path, stored, identity)
        return _result(loss_spec, out, stored, cached=True)
    if run_path.is_file():
        _check_identity(run_path, json.loads(run_path.read_text()), identity)
    if init_from is not None and not Path(init_from).is_file():
        raise FileNotFoundError(f"init_from={str(init_from)!r}: no checkpoint there")
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
    return _result(loss_spec, out, _plain(record), cached=False)


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


@dataclass(frozen=True)
class _Task:
    """One run of a comparison, as sent to a worker process."""

    label: str
    loss: str
    seed: int
    out: Path
    config: TrainConfig
    init_from: Path | None = None
    init_label: str | None = None


@dataclass(frozen=True)
class _Setup:
    """What every run of a comparison shares."""

    data: str
    val_split: str | None
    test_split: str
    model: str
    width: int | None
    depth: int | None
    tol: int


_WORKER_DATA: dict[tuple[str, str | None, str], _Data] = {}


def _do_task(setup: _Setup, task: _Task, progress: bool) -> RunResult:
    key = (setup.data, setup.val_split, setup.test_split)
    if key not in _WORKER_DATA:  # one load per worker process
        _WORKER_DATA.clear()
        _WORKER_DATA[key] = _load_data(setup.data, val_split=setup.val_split,
                                       test_split=setup.test_split)
    return _run(task.loss, _WORKER_DATA[key], config=task.config, model=setup.model,
                width=setup.width, depth=setup.depth, out=task.out, init_from=task.init_from,
                init_label=task.init_label, tol=setup.tol, progress=progress)


def _report(task: _Task, run: RunResult, done: int, total: int) -> None:
    state = "finished earlier" if run.cached else f"{run.train_time:.0f} s"
    print(f"[{done}/{total}] {task.label}: {_fmt_metrics(run.metrics, ('miou', 'bf1'))} "
          f"({state})", flush=True)


def _execute(setup: _Setup, pretrain: list[_Task], runs: list[_Task], *, jobs: int,
             progress: bool) -> dict[_Task, RunResult]:
    """Run every task; a run with ``init_from`` waits for the pretraining that writes it.

    ``jobs == 1``: in this process, in order. ``jobs > 1``: that many worker processes (spawned),
    a run queued as soon as its pretraining is done."""
    results: dict[_Task, RunResult] = {}
    total = len(pretrain) + len(runs)
    if jobs == 1:
        for task in [*pretrain, *runs]:
            print(f"[{len(results) + 1}/{total}] {task.label} ...", flush=True)
            results[task] = _do_task(setup, task, progress)
            _report(task, results[task], len(results), total)
        return results
    waiting = {task.seed: [t for t in runs if t.init_from is not None and t.seed == task.seed]
               for task in pretrain}
    ready = [t for t in runs if t.init_from is None]
    with cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {}

        def submit(tasks: list[_Task]) -> None:
            for task in tasks:
                print(f"      started {task.label}", flush=True)
                pending[pool.submit(_do_task, setup, task, False)] = task

        submit([*pretrain, *ready])
        try:
            while pending:
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    task = pending.pop(future)
                    results[task] = future.result()
                    _report(task, results[task], len(results), total)
                    if task in pretrain:
                        submit(waiting.get(task.seed, []))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results


def _code_version() -> str:
    """The autoloss version, and the git commit of its source where it is a checkout."""
    from autoloss import __version__

    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(Path(__file__).parent), "status",
                                "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return __version__
    suffix = " with uncommitted changes" if dirty.stdout.strip() else ""
    return f"{__version__} (commit {commit.stdout.strip()[:12]}{suffix})"


def _describe(config: TrainConfig) -> str:
    crop = "crop {}x{}".format(*config.crop) if config.crop else "whole images"
    return (f"{config.steps} steps, batch {config.batch_size}, {crop}, {config.optimizer} "
            f"lr {config.lr} (poly {config.poly_power}), validation every {config.eval_every}")


def compare_losses(losses: Sequence[str], data: str, *, seeds: int, config: TrainConfig,
                   model: str = "unet", out: str | Path, width: int | None = None,
                   depth: int | None = None, init_from: str | Path | None = None, tol: int = 5,
                   val_split: str | None = "val", test_split: str = "test",
                   pretrain: TrainConfig | None = None, reference: str | None = None,
                   jobs: int = 1, plateau_metric: str = "miou", command: str | None = None,
                   progress: bool = True) -> CompareResult:
    """Train every loss with seeds ``0 .. seeds-1`` (each run as :func:`train_run`, in
    ``out/runs/<loss-slug>/seed<s>/``), then write ``compare.md``, ``compare.csv`` and
    ``compare.json`` in ``out`` (see :mod:`autoloss.compare_report`). Finished runs are reused;
    an interrupted run resumes.

    Protocols: ``pretrain=None`` (``scratch``): every run starts from its seed's initial weights
    (or ``init_from``). ``pretrain=TrainConfig(...)`` (``finetune``): per seed, one
    cross-entropy run with that config (``out/pretrain/seed<s>/``, shared by every loss with
    that seed), then every loss, cross-entropy included, trains on from it with ``config``.

    ``config.seed`` is replaced by each run's seed. ``reference``: the loss every other is
    paired with (default ``cross_entropy`` when compared, else none). ``jobs``: runs trained at
    once in worker processes (each with ``config.num_threads`` threads, default
    ``cpu_count // jobs``). ``plateau_metric``: the validation metric whose plateau is
    reported. ``command``: how the comparison was started, for the report.
    """
    losses = [str(loss) for loss in losses]
    if not losses:
        raise ValueError("losses must name at least one loss, but got an empty list")
    if len(set(losses)) != len(losses):
        raise ValueError(f"losses must be distinct, but got {losses}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, but got {seeds=}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, but got {jobs=}")
    if pretrain is not None and init_from is not None:
        raise ValueError("pass either pretrain (the finetune protocol: each seed starts from its "
                         "own cross-entropy model) or init_from (one checkpoint for every run), "
                         f"not both; got init_from={str(init_from)!r}")
    if reference is None and "cross_entropy" in losses:
        reference = "cross_entropy"
    if reference is not None and reference not in losses:
        raise ValueError(f"reference must be one of the compared losses {losses}, but got "
                         f"{reference=}")
    if plateau_metric not in METRIC_NAMES:
        raise ValueError(f"plateau_metric must be one of {list(METRIC_NAMES)}, but got "
                         f"{plateau_metric=}")
    t0 = time.perf_counter()
    out = Path(out)
    for loss in losses:  # fail on a typo before hours of training
        load_loss(loss)
    splits = _load_data(data, val_split=val_split, test_split=test_split)
    if jobs > 1 and config.num_threads is None:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        config = dataclasses.replace(config, num_threads=threads)
        if pretrain is not None and pretrain.num_threads is None:
            pretrain = dataclasses.replace(pretrain, num_threads=threads)
    pre_tasks = [] if pretrain is None else [
        _Task(f"pretrain cross_entropy seed {s}", "cross_entropy", s, out / "pretrain" / f"seed{s}",
              dataclasses.replace(pretrain, seed=s)) for s in range(seeds)]
    tasks = []
    for loss, slug in zip(losses, _slugs(losses)):
        for s in range(seeds):
            start, label = init_from, None
            if pretrain is not None:
                start = out / "pretrain" / f"seed{s}" / "checkpoint.pt"
                label = f"pretrain/seed{s}/checkpoint.pt"
            tasks.append(_Task(f"{loss} seed {s}", loss, s, out / "runs" / slug / f"seed{s}",
                               dataclasses.replace(config, seed=s), start, label))
    setup = _Setup(data, val_split, test_split, model, width, depth, tol)
    _WORKER_DATA[(data, val_split, test_split)] = splits
    results = _execute(setup, pre_tasks, tasks, jobs=jobs, progress=progress)
    runs = [results[t] for t in tasks]
    pre_runs = [results[t] for t in pre_tasks]

    protocol = "scratch" if pretrain is None else "finetune"
    lines = [
        "# Loss comparison", "",
        *([f"Produced by `{command}`."] if command else []),
        f"- data: `{data}` (validation split `{val_split}`, reported split `{test_split}`, "
        f"boundary tolerance {tol} px)",
        f"- model: `{model}` (width {width or 'default'}, depth {depth or 'default'})",
    ]
    if pretrain is not None:
        times = [r.train_time for r in pre_runs]
        lines += [f"- protocol `finetune`: per seed, cross-entropy pretraining with "
                  f"{_describe(pretrain)} ({np.mean(times):.0f} s per seed); then every loss "
                  f"trains on from it with {_describe(config)}"]
    else:
        lines += [f"- protocol `scratch`: {_describe(config)}"
                  + (f", from `{init_from}`" if init_from else "")]
    lines += [
        f"- seeds: {seeds} (0..{seeds - 1}), paired: seed s of every loss starts from the same "
        f"weights and sees the same batches",
        f"- cells: mean ± sample std over seeds of the `{test_split}` scores, percentage points"
        + (f"; **bold**: the paired 95 % t-interval against `{reference}` lies above zero, ▾: "
           f"below zero, unmarked: within the seed noise" if reference else ""),
        f"- train time: wall-clock seconds per run; code: autoloss {_code_version()}", "",
    ]
    setup_json = _plain({
        "data": data, "model": model, "width": width, "depth": depth, "seeds": seeds,
        "tol": tol, "val_split": val_split, "test_split": test_split, "protocol": protocol,
        "train_config": dataclasses.asdict(config),
        "pretrain_config": None if pretrain is None else dataclasses.asdict(pretrain),
        "command": command, "code": _code_version(),
    })
    md, csv_path, json_path, table = write_reports(
        out, runs, setup=setup_json, header=lines, reference=reference,
        pretrain_runs=pre_runs, plateau_metric=plateau_metric,
        class_names=splits.train.class_names)
    return CompareResult(runs, pre_runs, table, md, csv_path, json_path,
                         time.perf_counter() - t0)
