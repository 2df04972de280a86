"""Retrain with several losses and seeds, evaluate on the test split, tabulate mean ± std.

:func:`compare_losses` trains every ``(loss, seed)`` as one run of :mod:`autoloss.retrain.runs` in
``<out>/runs/<loss-slug>/seed<s>/`` and writes ``compare.md``, ``compare.csv`` and
``compare.json`` (:mod:`autoloss.report.compare_report`: mean ± std over seeds, paired differences to a
reference loss with t-intervals, per-class IoU, plateaus) and draws their figures into
``plots/`` (:mod:`autoloss.report.compare_plots`). Finished runs are kept, an interrupted one resumes.

Two protocols. ``scratch``: every run trains from its seed's initial weights. ``finetune``: per
seed one cross-entropy model is trained first (``<out>/pretrain/seed<s>/``, a run like any other:
cached, resumable), and every loss of the panel, cross-entropy included, trains on from it; this
is how metric losses are used in practice (fine-tuning a cross-entropy model, as PaddleSeg's
Lovasz recipe and Berman et al. do).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import re
import subprocess
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoloss.core.metrics import METRIC_NAMES
from autoloss.data import data_slug
from autoloss.errors import InvalidValueError
from autoloss.losses import load_loss
from autoloss.report.compare_report import format_table, write_reports
from autoloss.retrain.experiment import Experiment
from autoloss.retrain.runs import (
    RunData,
    RunResult,
    Scores,
    build_loss,
    evaluate_checkpoint,
    load_splits,
    loss_slug,
    plain_json,
    run_once,
    score_model,
    train_run,
)
from autoloss.train.trainer import TrainConfig
from autoloss.train.user_models import ModelSpec, is_builtin, model_hook, model_name

__all__ = ["CompareResult", "RunResult", "Scores", "build_loss", "compare_losses", "data_slug",
           "evaluate_checkpoint", "format_table", "loss_slug", "score_model", "train_run"]


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
    init_from: Path | str | None = None
    init_label: str | None = None


@dataclass(frozen=True)
class _Setup:
    """What every run of a comparison shares."""

    data: str
    val_split: str | None
    test_split: str
    model: ModelSpec
    width: int | None
    depth: int | None
    tol: int
    tensorboard_dir: Path | None = None


_WORKER_DATA: dict[tuple[str, str | None, str], RunData] = {}


def _do_task(setup: _Setup, task: _Task, progress: bool) -> RunResult:
    key = (setup.data, setup.val_split, setup.test_split)
    if key not in _WORKER_DATA:  # one load per worker process
        _WORKER_DATA.clear()
        _WORKER_DATA[key] = load_splits(setup.data, val_split=setup.val_split,
                                       test_split=setup.test_split)
    board = None
    if setup.tensorboard_dir is not None:  # one TensorBoard run per run folder: <loss>/seed<s>
        board = setup.tensorboard_dir / task.out.parent.name / task.out.name
    return run_once(task.loss, _WORKER_DATA[key], config=task.config, model=setup.model,
                width=setup.width, depth=setup.depth, out=task.out, init_from=task.init_from,
                init_label=task.init_label, tol=setup.tol, progress=progress,
                tensorboard_dir=board)


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
                print(f"      queued {task.label}", flush=True)
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
        except BaseException as err:
            for future in pending:
                future.cancel()
            if isinstance(err, KeyboardInterrupt):  # SIGTERM reaches this process only:
                workers = getattr(pool, "_processes", None) or {}  # stop its runs as Ctrl-C does
                for proc in list(workers.values()):
                    proc.terminate()
            raise
    return results


def _code_version() -> str:
    """The autoloss version, and the git commit of its source where it is a checkout."""
    from autoloss._version import __version__

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


def _draw_plots(folder: Path) -> None:
    """The comparison figures under ``<folder>/plots``; a plotting error is a warning, never a
    lost comparison."""
    try:
        from autoloss.report.compare_plots import plot_comparison  # matplotlib only when drawing

        plot_comparison(folder)
    except Exception as err:  # the comparison itself has succeeded
        warnings.warn(f"the comparison finished, but drawing its plots failed: {err!r}; retry with "
                      f"autoloss plot {folder}", stacklevel=3)


def _reference(exp: Experiment, plateau_metric: str) -> str | None:
    """What a comparison needs beyond a valid experiment (losses, a test split, a reference
    among the losses); the loss every other is paired with (``cross_entropy`` when compared)."""
    if not exp.losses:
        raise InvalidValueError("losses must name at least one loss, but got an empty list")
    if exp.test_split is None:
        raise InvalidValueError("a comparison reports its losses' scores on a test split, but got "
                                "test_split=None (null is for autoloss train alone)")
    reference = exp.reference
    if reference is None and "cross_entropy" in exp.losses:
        reference = "cross_entropy"
    if reference is not None and reference not in exp.losses:
        raise InvalidValueError(f"reference must be one of the compared losses "
                                f"{list(exp.losses)}, but got {reference=}")
    if plateau_metric not in METRIC_NAMES:
        raise InvalidValueError(f"plateau_metric must be one of {list(METRIC_NAMES)}, but got "
                                f"{plateau_metric=}")
    return reference


def _configs(exp: Experiment) -> tuple[TrainConfig, TrainConfig | None]:
    """The runs' and the pretraining's TrainConfig (seed 0; each task sets its own); with
    ``jobs > 1`` each run gets ``cpu_count // jobs`` threads unless the experiment sets them."""
    config, pretrain = exp.train_config(seed=0), exp.pretrain_config(seed=0)
    if exp.jobs > 1 and config.num_threads is None:
        threads = max(1, (os.cpu_count() or 1) // exp.jobs)
        config = dataclasses.replace(config, num_threads=threads)
        if pretrain is not None and pretrain.num_threads is None:
            pretrain = dataclasses.replace(pretrain, num_threads=threads)
    return config, pretrain


def _tasks(exp: Experiment, config: TrainConfig, pretrain: TrainConfig | None
           ) -> tuple[list[_Task], list[_Task]]:
    """The pretraining tasks (one per seed, finetune protocol) and the runs (loss-major)."""
    out = exp.out_dir()
    pre_tasks = [] if pretrain is None else [
        _Task(f"pretrain cross_entropy seed {s}", "cross_entropy", s, out / "pretrain" / f"seed{s}",
              dataclasses.replace(pretrain, seed=s)) for s in range(exp.seeds)]
    tasks = []
    for loss, slug in zip(exp.losses, _slugs(exp.losses)):
        for s in range(exp.seeds):
            start, label = exp.init_from, None
            if pretrain is not None:
                start = out / "pretrain" / f"seed{s}" / "checkpoint.pt"
                label = f"pretrain/seed{s}/checkpoint.pt"
            tasks.append(_Task(f"{loss} seed {s}", loss, s, out / "runs" / slug / f"seed{s}",
                               dataclasses.replace(config, seed=s), start, label))
    return pre_tasks, tasks


def _header(exp: Experiment, config: TrainConfig, pretrain: TrainConfig | None,
            pre_runs: list[RunResult], reference: str | None, command: str | None) -> list[str]:
    """The lines above the tables: how the comparison was made."""
    model, width, depth = exp.model, exp.width, exp.depth
    lines = [
        "# Loss comparison", "",
        *([f"Produced by `{command}`."] if command else []),
        f"- data: `{exp.data}` (validation split `{exp.val_split}`, reported split "
        f"`{exp.test_split}`, boundary tolerance {exp.tol} px)",
        (f"- model: `{model}` (width {width or 'default'}, depth {depth or 'default'})"
         if is_builtin(model) else f"- model: `{model_name(model)}` (the user's builder)"),
    ]
    if pretrain is not None:
        times = [r.train_time for r in pre_runs]
        lines += [f"- protocol `finetune`: per seed, cross-entropy pretraining with "
                  f"{_describe(pretrain)} ({np.mean(times):.0f} s per seed); then every loss "
                  f"trains on from it with {_describe(config)}"]
    else:
        lines += [f"- protocol `scratch`: {_describe(config)}"
                  + (f", from `{exp.init_from}`" if exp.init_from else "")]
    lines += [
        f"- seeds: {exp.seeds} (0..{exp.seeds - 1}), paired: seed s of every loss starts from "
        f"the same weights and sees the same batches",
        f"- cells: mean ± sample std over seeds of the `{exp.test_split}` scores, percentage points"
        + (f"; **bold**: the paired 95 % t-interval against `{reference}` lies above zero, ▾: "
           f"below zero, unmarked: within the seed noise" if reference else ""),
        f"- train time: wall-clock seconds per run; code: autoloss {_code_version()}", "",
    ]
    return lines


def _setup_record(exp: Experiment, config: TrainConfig, pretrain: TrainConfig | None,
                  command: str | None) -> dict:
    """The comparison's setup as ``compare.json`` records it."""
    return plain_json({
        "data": exp.data, "model": model_name(exp.model), "width": exp.width,
        "depth": exp.depth, "seeds": exp.seeds, "tol": exp.tol, "val_split": exp.val_split,
        "test_split": exp.test_split, "protocol": "scratch" if pretrain is None else "finetune",
        "train_config": dataclasses.asdict(config),
        "pretrain_config": None if pretrain is None else dataclasses.asdict(pretrain),
        "command": command, "code": _code_version(),
    })


def compare_losses(experiment: Experiment, *, command: str | None = None, progress: bool = True,
                   tensorboard_dir: str | Path | None = None,
                   plateau_metric: str = "miou") -> CompareResult:
    """Train every loss of ``experiment`` with seeds ``0 .. seeds-1`` (each run as
    :func:`train_run`, in ``<out>/runs/<loss-slug>/seed<s>/``, ``out`` being
    :meth:`Experiment.out_dir`), then write ``compare.md``, ``compare.csv`` and ``compare.json``
    in ``experiment.report`` (default ``out``; see :mod:`autoloss.report.compare_report`), so
    comparisons of different panels can share runs. Finished runs are reused; an interrupted
    run resumes. The experiment is checked when it is built (:class:`Experiment`); a comparison
    also needs losses, a test split and a reference among the losses.

    Protocols: ``scratch``: every run starts from its seed's initial weights (or
    ``init_from``). ``finetune``: per seed, one cross-entropy run with
    :meth:`Experiment.pretrain_config` (``out/pretrain/seed<s>/``, shared by every loss with
    that seed), then every loss, cross-entropy included, trains on from it.

    ``model``: ``unet``, ``deeplab`` or your own builder (see :func:`train_run`); with
    ``jobs > 1`` a callable must pickle by reference (a module-level function or class).
    ``reference``: the loss every other is paired with (default ``cross_entropy`` when
    compared, else none). ``jobs``: runs trained at once in worker processes (each with
    ``train.num_threads`` threads, default ``cpu_count // jobs``). ``plots``: draw the figures
    (:func:`autoloss.report.compare_plots.plot_comparison`) into ``plots/`` next to the tables; a
    plotting error is a warning, the comparison is kept.

    Run-time options, not part of the experiment: ``command``: how the comparison was started,
    for the report. ``progress``: progress bars. ``tensorboard_dir``: also write each run's
    training curves as TensorBoard scalars, one run per ``<loss-slug>/seed<s>`` (and
    ``pretrain/seed<s>``) under it, so ``tensorboard --logdir DIR`` overlays them (needs the
    ``tensorboard`` package; not part of any run's identity). ``plateau_metric``: the
    validation metric whose plateau is reported.
    """
    exp = experiment
    reference = _reference(exp, plateau_metric)
    t0 = time.perf_counter()
    for loss in exp.losses:  # fail on a typo before hours of training
        load_loss(loss)
    if not is_builtin(exp.model):  # and on a builder that cannot be imported
        model_hook(exp.model)
    splits = load_splits(exp.data, val_split=exp.val_split, test_split=exp.test_split)
    config, pretrain = _configs(exp)
    pre_tasks, tasks = _tasks(exp, config, pretrain)
    setup = _Setup(exp.data, exp.val_split, exp.test_split, exp.model, exp.width, exp.depth,
                   exp.tol, None if tensorboard_dir is None else Path(tensorboard_dir))
    if tensorboard_dir is not None:  # fail before any training when the package is missing
        from autoloss.train.tensorboard_log import require_tensorboard

        require_tensorboard()
    _WORKER_DATA[(exp.data, exp.val_split, exp.test_split)] = splits
    results = _execute(setup, pre_tasks, tasks, jobs=exp.jobs, progress=progress)
    runs = [results[t] for t in tasks]
    pre_runs = [results[t] for t in pre_tasks]
    folder = Path(exp.report) if exp.report is not None else exp.out_dir()
    md, csv_path, json_path, table = write_reports(
        folder, runs, setup=_setup_record(exp, config, pretrain, command),
        header=_header(exp, config, pretrain, pre_runs, reference, command),
        reference=reference, pretrain_runs=pre_runs, plateau_metric=plateau_metric,
        class_names=splits.train.class_names)
    if exp.plots:
        _draw_plots(folder)
    return CompareResult(runs, pre_runs, table, md, csv_path, json_path,
                         time.perf_counter() - t0)
