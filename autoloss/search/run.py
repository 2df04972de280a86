"""The loss search: :func:`search_study` (only the search) -> :class:`SearchRun` ->
:func:`finish_run` (re-score, export, summary, plots, on the objects in memory);
:func:`run_search` does both.

Each trial samples the raw curve parameters of the space (:mod:`autoloss.search.spaces`), builds
the surrogate loss, fine-tunes the proxy with it and returns the exact target metric on the
proxy-validation split (:mod:`autoloss.search.objective`; Li et al., "Auto Seg-Loss", ICLR 2021).
Where the parts live:

- :mod:`~autoloss.search.plan`: the config resolved once (target, space, proxy options);
- :mod:`~autoloss.search.samplers`: samplers, the pruner, the startup points;
- :mod:`~autoloss.search.setup`: the study created or loaded, its identity checked on resume,
  its first trials queued, the cross-entropy baseline scored;
- :mod:`~autoloss.search.workers`: trials run here and in worker processes up to the budget;
- :mod:`~autoloss.search.budget`: which trials count, dead and discarded trials.

Choices:

- **Resumable**: the study lives in a storage (default ``sqlite:///<out>/study.db``); running the
  same command again loads it and runs only the trials missing to reach ``trials`` finished ones
  (COMPLETE + PRUNED + FAIL with a reason; an interrupted trial does not count). SQL storages
  record a heartbeat per running trial; a trial whose worker died is failed once its heartbeat is
  ``3 * heartbeat`` seconds old, and re-queued once with the same parameters. (``journal:PATH``
  storages have no heartbeat: a killed worker's trial stays RUNNING and is simply not counted.)
- **Targets**: ``"miou"``; a weighted sum ``"miou+0.5*bf1"`` (one objective; the loss mixes the
  metrics' surrogates with the same weights); a list with ``multi_objective=True`` (one objective
  per metric, no pruning, the mixing weights are searched, the result is the Pareto front).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from torch import nn

from autoloss.search.budget import discard_leftover_queue, discarded, doomed, finished
from autoloss.search.config import ProxyLike, SearchConfig, SearchResult
from autoloss.search.objective import cross_entropy
from autoloss.search.plan import SearchPlan, plan_search
from autoloss.search.rescore import (
    gain_line,
    identity_gain_line,
    rescore_seeds,
    rescore_summary,
    rescore_top,
)
from autoloss.search.run_folder import RunFolder
from autoloss.search.setup import load_or_create, model_record, plugin_name, prepare, setup_study
from autoloss.search.space_types import Space
from autoloss.search.storage import make_storage, storage_errors
from autoloss.search.workers import best_text, quiet_optuna, run_until_budget
from autoloss.utils.atomic import write_text_atomic
from autoloss.utils.signals import sigterm_as_interrupt
from autoloss.utils.urls import mask_password_in

__all__ = ["SearchRun", "finish_run", "rescore", "rewrite_summary", "run_search", "search_study"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class SearchRun:
    """A search held in memory: what :func:`search_study` returns and :func:`finish_run` takes.
    ``plan``: the resolved search; ``started``: ``time.monotonic()`` when the search began."""

    plan: SearchPlan
    study: optuna.Study
    proxy: ProxyLike
    folder: RunFolder
    started: float

    @property
    def config(self) -> SearchConfig:
        """The resolved config (``plan.config``)."""
        return self.plan.config

    @property
    def space(self) -> Space:
        """The search space (``plan.space``)."""
        return self.plan.space


@contextlib.contextmanager
def _search_session(cfg: SearchConfig) -> Iterator[None]:
    """Quiet optuna logging (:func:`~autoloss.search.workers.quiet_optuna`), SIGTERM as Ctrl-C,
    and a storage failure (e.g. a full disk under SQLite) as a
    :class:`~autoloss.errors.StorageError` that says how to resume."""
    with quiet_optuna(), storage_errors(cfg.storage), sigterm_as_interrupt():
        yield


def search_study(config: SearchConfig, *, progress: bool = True,
                 callbacks: Sequence[Callable[[Any, Any], None]] = (),
                 overwrite: bool = False) -> SearchRun:
    """Only the search: create (or load and check) the study of ``config`` in its storage,
    score the cross-entropy baseline once, and run trials until the study has ``trials``
    finished ones (in ``workers`` processes). Records ``run.json`` in the run folder; writes
    nothing else there (see :func:`finish_run`). ``callbacks``: as for :func:`run_search`.

    One run folder holds one search: a folder whose ``run.json`` names another study or
    storage, or whose study file is missing, empty or corrupt, is refused
    (:meth:`RunFolder.check_search`) unless ``overwrite``, which deletes that search's files
    first (:meth:`RunFolder.clear`)."""
    from tqdm.auto import tqdm

    plan = plan_search(config)  # every check of the config, before anything is written
    cfg = plan.config
    started = time.monotonic()
    folder = RunFolder(cfg.out)
    if overwrite:
        folder.clear(cfg.storage)
    folder.check_search(cfg.storage, cfg.study)
    with _search_session(cfg):
        proxy = plan.make_proxy()  # builds, trains nothing yet
        storage = make_storage(cfg.storage, heartbeat=cfg.heartbeat)
        study, created = load_or_create(plan, plan.make_sampler(),
                                        plan.make_pruner(proxy.eval_steps), storage)
        folder.write_info(cfg.storage, cfg.study,  # once the study it names exists
                          proxy_factory=plugin_name(cfg.proxy_factory),
                          model=model_record(proxy))
        setup_study(plan, study, proxy, created=created, progress=progress)
        done = finished(study)
        if cfg.trials > done:  # a finished study (rerun to redraw or export) needs no warm start
            prepare(proxy, progress=progress)
        bar = tqdm(total=cfg.trials, initial=min(done, cfg.trials), desc=f"search {cfg.study}",
                   unit="trial", disable=not progress, dynamic_ncols=True)

        def tick(study: optuna.Study, trial: Any) -> None:
            bar.update(1)
            bar.set_postfix(best=best_text(study))

        try:
            run_until_budget(plan, study, proxy, started, bar, tick, callbacks,
                             progress=progress)
            discard_leftover_queue(study, cfg.trials)
        finally:
            bar.close()
    return SearchRun(plan, study, proxy, folder, started)


def finish_run(run: SearchRun, *, progress: bool = True,
               command: str | None = None) -> SearchResult:
    """The steps after a search, on the objects it holds in memory: re-score the top trials
    (``rescore_top``), export the chosen one to ``<out>/best_loss.yaml``, write
    ``<out>/summary.md`` (``command`` named at its top) and draw the plots (``plots``)."""
    from autoloss.losses import save_loss
    from autoloss.search.export import export_record, summarize

    cfg, study, folder = run.config, run.study, run.folder
    with _search_session(cfg):
        loss_path, spec = None, None
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            rescored = rescore(run.plan, study, run.proxy, progress=progress)
            spec, provenance = export_record(study, None, folder.loss_path, storage=cfg.storage)
            loss_path = save_loss(spec, folder.loss_path, provenance=provenance)
            _export_identity(study, rescored, folder, cfg.storage)
        wall = time.monotonic() - run.started
        text = summarize(study, wall_time=wall, discarding=doomed(study, cfg.trials),
                         command=None if command is None else mask_password_in(command,
                                                                                cfg.storage))
        write_text_atomic(folder.summary_path, text)
        if progress:
            print(text)
        if cfg.plots:
            _draw_plots(run, spec)
    return _result(cfg, study, loss_path, wall)


def _draw_plots(run: SearchRun, spec: dict[str, Any] | None) -> None:
    """The run's plots under ``<out>/plots``, from the study and exported loss ``spec`` in
    memory; a plotting error is a warning, never a lost search."""
    from autoloss.losses import load_loss
    from autoloss.report.names import search_name
    from autoloss.search.run_plots import plot_search

    folder = run.folder
    try:
        plot_search(run.study, None if spec is None else load_loss(spec), dest=folder.plots_dir,
                    name=search_name(folder.path), logs=sorted(folder.path.glob("*.jsonl")))
    except Exception as err:  # the search itself has succeeded
        warnings.warn(f"the search finished, but drawing its plots failed: {err!r}; retry with "
                      f"autoloss plot {folder.path}", stacklevel=3)


def rewrite_summary(study: optuna.Study, folder: RunFolder, *, storage: str,
                    rescored: dict[str, Any] | None, command: str | None = None) -> None:
    """After ``autoloss export DIR`` has written ``DIR/best_loss.yaml`` (after re-scoring with
    ``--rescore-top``, say): write ``identity_loss.yaml`` and ``summary.md`` from the study as
    it is now, so the folder's files agree. The summary keeps the search's command and wall time
    (read from the old one) and names ``command``, the export that rewrote it."""
    import re

    from autoloss.search.export import summarize

    old = folder.summary_path.read_text() if folder.summary_path.is_file() else ""
    search_command = re.search(r"^Produced by `(.*)`\.$", old, re.M)
    wall = re.search(r"^- wall time: ([0-9.]+) s$", old, re.M)
    _export_identity(study, rescored, folder, storage)
    write_text_atomic(folder.summary_path, summarize(
        study, wall_time=float(wall.group(1)) if wall else None,
        command=search_command.group(1) if search_command else None,
        rescored_by=None if command is None else mask_password_in(command, storage)))


def _export_identity(study: optuna.Study, rescored: dict[str, Any] | None, folder: RunFolder,
                     storage: str) -> None:
    """Write the search's control, the re-scored plain soft metric (identity curves), to
    ``<out>/identity_loss.yaml`` (a stale one is removed), so it can be retrained beside the
    export (``autoloss study`` does)."""
    from autoloss.losses import save_loss
    from autoloss.search.export import export_record
    from autoloss.search.rescore import IDENTITY

    number = next((int(k) for k, label in ((rescored or {}).get("references") or {}).items()
                   if label == IDENTITY), None)
    if number is None:
        folder.identity_loss_path.unlink(missing_ok=True)
        return
    spec, provenance = export_record(study, number, folder.identity_loss_path, storage=storage)
    provenance["export_reason"] = ("the search's control: its plain soft metric (identity "
                                   "curves), re-scored next to the export")
    provenance["export_rule"] = "control"
    save_loss(spec, folder.identity_loss_path, provenance=provenance)


def run_search(config: SearchConfig, *, progress: bool = True,
               callbacks: Sequence[Callable[[Any, Any], None]] = (),
               command: str | None = None, overwrite: bool = False) -> SearchResult:
    """Run (or resume) a search and finish its run folder: :func:`search_study`, then
    :func:`finish_run` (re-scoring, ``<out>/best_loss.yaml``, ``<out>/summary.md``, and with
    ``plots`` the figures in ``<out>/plots``).

    ``callbacks``: optuna callbacks ``f(study, frozen_trial)`` called after every trial of the
    search (e.g. ``optuna_integration.MLflowCallback``); with ``workers > 1`` each worker
    process gets a copy, so they must pickle. The study's objectives are named after the
    metrics (``study.metric_names``) and it holds the cross-entropy baseline as the user
    attribute ``baseline_ce`` (reference trials carry ``reference``). ``command``: how the search
    was started, named at the top of ``summary.md`` (its storage password masked).
    ``overwrite``: see :func:`search_study`."""
    run = search_study(config, progress=progress, callbacks=callbacks, overwrite=overwrite)
    return finish_run(run, progress=progress, command=command)


def rescore(plan: SearchPlan, study: optuna.Study, proxy: ProxyLike, *,
            progress: bool = True) -> dict[str, Any] | None:
    """Re-score the study's ``cfg.rescore_top`` best trials, its reference points and
    cross-entropy with ``cfg.rescore_seeds`` other proxy seeds
    (:func:`autoloss.search.rescore.rescore_top`); the export is chosen by ``cfg.export_rule``."""
    cfg = plan.config
    if cfg.multi_objective or cfg.rescore_top < 1 or cfg.rescore_seeds < 1:
        return None

    def run_proxy(loss: nn.Module, seed: int) -> float:
        return plan.objective_values({k: float(v)
                                      for k, v in proxy.run(loss, seed=seed).items()})[0]

    say = (lambda text: print(text, flush=True)) if progress else None
    return rescore_top(study, run_proxy, baseline=cross_entropy(proxy), top=cfg.rescore_top,
                       seeds=rescore_seeds(cfg.seed, cfg.rescore_seeds), rule=cfg.export_rule,
                       progress=say)


def _result(cfg: SearchConfig, study: optuna.Study, loss_path: Path | None,
            wall: float) -> SearchResult:
    counts = {s.name.lower(): sum(1 for t in study.get_trials(deepcopy=False, states=(s,))
                                  if not discarded(t)) for s in FINISHED}
    best_value, best_trial = None, None
    if counts["complete"]:
        if cfg.multi_objective:
            front = study.best_trials
            best = max(front, key=lambda t: sum(t.values))
            best_value, best_trial = list(best.values), best.number
        else:
            best_value, best_trial = study.best_value, study.best_trial.number
    baseline = study.user_attrs.get("baseline_ce")
    rescored = rescore_summary(study)
    gain = None if rescored is None else gain_line(rescored)
    gain_identity = None if rescored is None else identity_gain_line(rescored)
    return SearchResult(cfg.study, cfg.storage, best_value, best_trial, baseline, cfg.out,
                        loss_path, counts, wall, gain, gain_identity,
                        None if rescored is None else rescored.get("reason"))
