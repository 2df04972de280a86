"""One retraining run: train a model with one loss and one seed, score it on the test split.

One **run** = one loss, one seed, one folder::

    <out>/run.json          what the run is (loss spec, data, model, training config): a rerun
                            with a different setup in the same folder is an error, not a mix
    <out>/checkpoint.pt     written every ``eval_every`` steps (``autoloss.train.trainer.fit``)
    <out>/log.jsonl         training loss and validation metrics (``log.jsonl.gz`` once the run
                            has finished and its log was compressed: autoloss.utils.run_logs)
    <out>/metrics.json      written last: test metrics, per-class IoU, train wall time, config

Both JSON files also hold ``provenance``: the code that trained the run (autoloss version, git
commit, uncommitted changes) and the sha256 of the checkpoint it started from
(:mod:`autoloss.utils.provenance`).

A folder with ``metrics.json`` is a finished run and is never trained again; a folder with only a
checkpoint resumes from it (the trainer replays exactly the steps an uninterrupted run takes).

The ignore index always comes from the dataset: a loss that takes ``ignore_index`` (any part of a
combination) is built with ``load_loss(spec, ignore_index=dataset.ignore_index)``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.core.metrics import MetricAccumulator
from autoloss.data import dataset_splits, load_dataset, split_hint
from autoloss.errors import InvalidValueError, MissingFileError
from autoloss.losses import load_loss
from autoloss.report.compare_report import RunRecord
from autoloss.report.names import is_search_loss_file, search_name
from autoloss.train.callbacks import json_scores
from autoloss.train.checkpoint import load_checkpoint, read_checkpoint
from autoloss.train.models import predict
from autoloss.train.trainer import TrainConfig, fit
from autoloss.train.user_models import ModelSpec, make_model, model_identity
from autoloss.utils.atomic import write_text_atomic
from autoloss.utils.json_files import read_json
from autoloss.utils.locks import file_lock
from autoloss.utils.provenance import code_version, file_sha256
from autoloss.utils.run_logs import read_log_text, run_log

__all__ = ["RunData", "RunResult", "Scores", "build_loss", "evaluate_checkpoint", "load_splits",
           "loss_slug", "plain_json", "run_once", "score_model", "train_run"]

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


# ---- losses and scoring ----------------------------------------------------------------------


def loss_slug(spec: str | Path) -> str:
    """A folder name for a loss spec: a preset/baseline name as is, a YAML file by its stem; a
    search's own loss files (``best_loss.yaml``, ``identity_loss.yaml``, ``middle_loss.yaml``,
    ``trial_N_loss.yaml``) by their search and stem: ``search-miou-camvid-best_loss``, a study's
    ``OUT/search/identity_loss.yaml``: ``study-miou-camvid-identity_loss``. The name does not
    depend on the other losses of a panel, so panels that share a runs folder share runs."""
    text = str(spec)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        path = Path(text)
        text = (f"{search_name(path.parent)}-{path.stem}" if is_search_loss_file(path)
                else path.stem)
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
            raise InvalidValueError(f"loss {str(spec)!r} has no ignore_index option, but the dataset "
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
        raise InvalidValueError(f"the checkpoint's model predicts {config.num_classes} classes, but "
                         f"dataset {data!r} has num_classes={dataset.num_classes}")
    return score_model(model, dataset, tol=tol)


# ---- one run ---------------------------------------------------------------------------------


@dataclass
class RunData:
    """The splits a run trains, validates and is scored on (``val`` None: no validation)."""

    spec: str
    train: Any
    val: Any
    test: Any
    test_split: str | None


def load_splits(data: str, *, val_split: str | None, test_split: str | None) -> RunData:
    """Load the train, validation and test splits of ``data`` (validation must not be the
    reported split; ``test_split=None``: no split is scored at the end, e.g. a pretraining on
    data whose test split must stay unread)."""
    splits = dataset_splits(data)
    for name, split in (("val_split", val_split), ("test_split", test_split)):
        if split is not None and split not in splits:
            raise InvalidValueError(f"{name}={split!r} is not a split of {data!r}, which has "
                                    f"{splits}{split_hint(data, split)}")
    if val_split is not None and val_split == test_split:
        raise InvalidValueError(f"val_split and test_split must differ (validation must not see the "
                         f"reported split), but both are {test_split!r}")
    run = RunData(data, load_dataset(data, "train"),
                  load_dataset(data, val_split) if val_split is not None else None,
                  load_dataset(data, test_split) if test_split is not None else None,
                  test_split)
    for split in (run.train, run.val, run.test):  # found now, not after training
        if split is not None and len(split) == 0:
            raise InvalidValueError(f"split {split.split!r} of {data!r} has no images; add images "
                                    f"to it or name another split (val_split / test_split)")
    return run


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON data (numpy values and arrays as Python numbers and lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist()))


def _float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: (float("nan") if v is None else float(v)) for k, v in metrics.items()}


def _comparable(identity: dict[str, Any]) -> dict[str, Any]:
    out = plain_json(identity)
    out["train_config"] = {k: v for k, v in (out.get("train_config") or {}).items()
                           if k not in _FREE_FIELDS}
    return out


def _check_identity(path: Path, stored: dict[str, Any], current: dict[str, Any]) -> None:
    old, new = _comparable(stored), _comparable(current)
    diff = [f"{k}: stored {old.get(k)!r} vs now {new[k]!r}" for k in new if old.get(k) != new[k]]
    if diff:
        raise InvalidValueError(f"{path.parent} holds a run with another setup ({'; '.join(diff)}); "
                         f"pass another out folder or delete that one")


def _read_evals(out: Path) -> list[tuple[int, dict[str, float]]]:
    """The validation evaluations of the JSONL log of run folder ``out`` (``log.jsonl``, or the
    ``log.jsonl.gz`` of a finished run): ``[(step, {metric: value})]``."""
    evals = []
    log_path = run_log(out)
    if log_path is not None:
        for line in read_log_text(log_path).splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed run
            if isinstance(record, dict) and isinstance(record.get("eval"), dict):
                evals.append((int(record["step"]), _float_metrics(record["eval"])))
    return evals


def _result(loss_spec: str | Path, out: Path, stored: dict[str, Any], *,
            cached: bool) -> RunResult:
    return RunResult(str(loss_spec), int(stored["seed"]), out,
                     _float_metrics(stored["test"] or {}),
                     float(stored["train_time"]), cached=cached,
                     per_class_iou=_float_metrics(stored.get("test_per_class_iou") or {}),
                     history=_read_evals(out))


def run_once(loss_spec: str | Path, data: RunData, *, config: TrainConfig, model: ModelSpec,
         width: int | None, depth: int | None, out: Path, init_from: str | Path | None,
         tol: int, progress: bool, init_label: str | None = None,
         tensorboard_dir: str | Path | None = None) -> RunResult:
    """One run into ``out`` (or its stored result). ``init_label`` stands for ``init_from`` in
    the run's identity (a path relative to the comparison folder, so that the folder can move).
    ``tensorboard_dir``: TensorBoard scalars of the training there too (not part of the
    identity)."""
    out = Path(out)
    loss = build_loss(loss_spec, ignore_index=data.train.ignore_index)
    net = make_model(model, in_channels=data.train.in_channels,
                     num_classes=data.train.num_classes, width=width, depth=depth,
                     seed=config.seed)
    if init_label is None and init_from is not None:
        init_label = str(init_from)
    identity = {
        "loss_spec": loss.to_dict(), "data": data.spec, "model": model_identity(model, net),
        "train_config": dataclasses.asdict(config), "init_from": init_label, "tol": tol,
        "val_split": None if data.val is None else data.val.split, "test_split": data.test_split,
    }
    with file_lock(out / ".lock"):  # one process per run folder at a time (inside it: D only)
        return _run_locked(loss_spec, loss, net, identity, data, config=config, out=out,
                           init_from=init_from, tol=tol, progress=progress,
                           tensorboard_dir=tensorboard_dir)


def _run_locked(loss_spec: str | Path, loss: nn.Module, net: nn.Module,
                identity: dict[str, Any], data: RunData, *, config: TrainConfig, out: Path,
                init_from: str | Path | None, tol: int, progress: bool,
                tensorboard_dir: str | Path | None = None) -> RunResult:
    """:func:`run_once` once it holds the run's lock: a second process that reaches a run the
    first is training waits, then finds it finished."""
    metrics_path, run_path = out / "metrics.json", out / "run.json"
    if metrics_path.is_file():
        stored = read_json(metrics_path, fix="delete it to train this run again")
        _check_identity(metrics_path, stored, identity)
        return _result(loss_spec, out, stored, cached=True)
    started: dict[str, Any] = {}
    if run_path.is_file():
        started = read_json(run_path, fix="delete the run folder to train it again")
        _check_identity(run_path, started, identity)
    if init_from is not None and not Path(init_from).is_file():
        raise MissingFileError(f"init_from={str(init_from)!r}: no checkpoint there")
    out.mkdir(parents=True, exist_ok=True)
    # where it came from (not part of the identity: a resume on another commit continues it)
    provenance = {"code": code_version(),
                  "init_sha256": None if init_from is None else file_sha256(init_from)}
    first = started.get("provenance")
    if isinstance(first, dict) and first.get("code") not in (None, provenance["code"]):
        # resumed by other code: the run keeps the code it started with, and names this one
        provenance = {**first, "resumed_with": [*first.get("resumed_with", []), code_version()]}
    write_text_atomic(run_path, json.dumps(plain_json({"loss": str(loss_spec), **identity,
                                                       "provenance": provenance}), indent=2))
    checkpoint = out / "checkpoint.pt"
    result = fit(net, loss, data.train, config=config, eval_data=data.val, tol=tol,
                 checkpoint_path=checkpoint, log_path=out / "log.jsonl", init_from=init_from,
                 tensorboard_dir=tensorboard_dir, progress=progress)
    train_time = float(read_checkpoint(checkpoint)["elapsed"])
    t0 = time.perf_counter()
    scores = (None if data.test is None else
              score_model(net, data.test, tol=tol, batch_size=config.eval_batch_size))
    record = {
        "loss": str(loss_spec), "seed": config.seed, "split": data.test_split,
        "test": None if scores is None else json_scores(scores.metrics),
        "test_per_class_iou": None if scores is None else json_scores(
            dict(zip(scores.class_names, scores.per_class_iou))),
        "val": json_scores(result.metrics), "train_time": round(train_time, 3),
        "seconds_per_step": result.seconds_per_step or None,
        "test_eval_time": round(time.perf_counter() - t0, 3), "steps": result.steps, **identity,
        "provenance": provenance,
    }
    write_text_atomic(metrics_path, json.dumps(plain_json(record), indent=2))
    return _result(loss_spec, out, plain_json(record), cached=False)


def train_run(loss: str | Path, data: str, *, config: TrainConfig, out: str | Path,
              model: ModelSpec = "unet", width: int | None = None, depth: int | None = None,
              init_from: str | Path | None = None, tol: int = 5, val_split: str | None = "val",
              test_split: str | None = "test", progress: bool = True,
              tensorboard_dir: str | Path | None = None) -> RunResult:
    """Train one model with one loss (seed ``config.seed``) into ``out``, or return the stored
    result of a finished run there; resumes from ``out/checkpoint.pt`` after an interruption.

    Validates on ``val_split`` every ``config.eval_every`` steps (None: no validation), scores
    the final model on ``test_split`` with every metric of ``METRIC_NAMES`` (boundary tolerance
    ``tol``; ``None``: no split is scored, the result's ``metrics`` are empty). ``model``,
    ``width``, ``depth``: see :func:`autoloss.train.models.model_from_name`;
    ``model`` may also be your own builder ``build(in_channels, num_classes) -> nn.Module``
    (the callable, ``"module:function"`` or ``"path/to/file.py:function"``,
    :mod:`autoloss.train.user_models`; width and depth do not apply). The initial weights are
    seeded with ``config.seed``. ``init_from``: warm-start checkpoint.
    ``tensorboard_dir``: also write the training curves there (``tensorboard`` package).
    """
    splits = load_splits(data, val_split=val_split, test_split=test_split)
    return run_once(loss, splits, config=config, model=model, width=width, depth=depth,
                out=Path(out), init_from=init_from, tol=tol, progress=progress,
                tensorboard_dir=tensorboard_dir)
