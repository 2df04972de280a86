"""Running a search's trials until the study has its budget, here and in worker processes.

``workers=N`` processes (spawned) share the storage; each runs its share of the missing trials,
and stops once the study has ``trials`` finished ones. Queued trials run in the parent process
first (SQLite has no row locks, so two workers could take the same one). Several searches
(hosts) may share one study: the budget is the study's (:mod:`autoloss.search.budget`), sampler
randomness is keyed by the trial number (:mod:`autoloss.search.trial_seeds`). A worker that
dies costs only its running trial: that trial is failed and the missing trials run in new
workers.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from autoloss.errors import SearchError
from autoloss.search.budget import (
    BudgetReached,
    discarded,
    doomed,
    fail_dead_trials,
    fail_orphans,
    finished,
    settled,
)
from autoloss.search.config import ProxyLike
from autoloss.search.objective import build_objective
from autoloss.search.plan import SearchPlan, replace_config
from autoloss.search.storage import make_storage

__all__ = ["best_text", "quiet_optuna", "run_until_budget"]

Callback = Callable[[Any, Any], None]


class _HideDiscarded(logging.Filter):
    """Drops optuna's two "Trial k failed" warnings of a discarded trial (it never ran) and of
    a trial stopped by Ctrl-C or SIGTERM (its traceback; the command says "interrupted" in one
    line and the trial runs again on resume)."""

    def __init__(self) -> None:
        super().__init__()
        self._hidden: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        head = " ".join(message.split()[:2])  # "Trial 12"
        if BudgetReached.__name__ in message or "KeyboardInterrupt" in message:
            self._hidden.add(head)
            return False
        if head in self._hidden and "failed with value" in message:
            self._hidden.discard(head)
            return False
        return True


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """optuna's logging at WARNING, without the warnings of discarded and interrupted trials
    (:class:`_HideDiscarded`), for the time of a search; restored after."""
    logger = logging.getLogger("optuna.study._optimize")
    hide = _HideDiscarded()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger.addFilter(hide)
    try:
        yield
    finally:
        logger.removeFilter(hide)
        optuna.logging.set_verbosity(verbosity)


def run_until_budget(plan: SearchPlan, study: optuna.Study, proxy: ProxyLike, started: float,
                     bar: Any, tick: Callback, callbacks: Sequence[Callback], *,
                     progress: bool) -> None:
    """Run trials here and in workers until the study (shared with other processes) has its
    budget, then wait for the trials others still run. A round gives this process the missing
    trials; if others' trials then fail (a killed process), the next round runs their share.
    Stops at the timeout, or after a round in which no trial finished or was discarded."""
    cfg = plan.config
    while True:
        remaining = max(0, cfg.trials - finished(study))
        left = None if cfg.timeout is None else cfg.timeout - (time.monotonic() - started)
        if not remaining or (left is not None and left <= 0):
            return
        before = settled(study)
        now = plan if left is None else replace_config(plan, timeout=left)
        # With workers, the queued trials (references, retries) run here first: two processes
        # could both pop one WAITING trial from SQLite (no row locks there).
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        here = remaining if cfg.workers == 1 else min(remaining, waiting)
        if here:
            _optimize(study, now, build_objective(plan, proxy), here, [tick, *callbacks])
        remaining = max(0, cfg.trials - finished(study))
        if remaining and cfg.workers > 1:
            _run_workers(now, study, remaining, bar, callbacks)
        _wait_for_running(study, cfg.trials, progress=progress)
        if settled(study) == before:
            return


def _optimize(study: optuna.Study, plan: SearchPlan, objective: Callable[[Any], Any],
              n_trials: int, callbacks: list[Any]) -> None:
    budget, timeout_s = plan.config.trials, plan.config.timeout

    def stop(study: optuna.Study, trial: Any) -> None:
        if finished(study) >= budget:
            study.stop()

    def ran(callback: Callback) -> Callback:
        def call(study: optuna.Study, trial: Any) -> None:
            if not discarded(trial):
                callback(study, trial)
        return call

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,),
                           callbacks=[stop, *map(ran, callbacks)], gc_after_trial=False)
            return
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as err:
            # SQLite has no row locks: two processes can take the same queued trial, and the
            # slower one cannot record it (optuna refuses with a ValueError when its cache
            # already knows the trial finished, else the database does); go on (the budget
            # check ends the loop)
            if isinstance(err, ValueError) and "Cannot tell a" not in str(err):
                raise


def _run_workers(plan: SearchPlan, study: optuna.Study, remaining: int, bar: Any,
                 callbacks: Sequence[Callback] = ()) -> None:
    """Run the ``remaining`` trials in ``workers`` spawned processes. A worker that dies
    (killed, out of memory) costs only its running trial: that trial is failed and the missing
    trials run in new workers, until the budget is reached or the timeout has passed. An error
    when workers fail by themselves (exit code > 0) and no trial finished (they would fail
    again), or after 5 rounds of killed workers without a finished trial."""
    cfg = plan.config
    started, stalls = time.monotonic(), 0
    while remaining > 0:
        before = finished(study)
        codes = _worker_round(plan, study, remaining, bar, callbacks)
        dead = [code for code in codes if code != 0]
        if not dead:
            return  # the workers stopped by themselves: budget reached, or the timeout
        lost = fail_orphans(study)
        remaining = max(0, cfg.trials - finished(study))
        timed_out = cfg.timeout is not None and time.monotonic() - started >= cfg.timeout
        stalls = stalls + 1 if finished(study) == before else 0
        # workers that failed by themselves (exit code > 0) without a finished trial would fail
        # again; killed ones (a signal: code < 0) are retried, up to 5 rounds without progress
        if stalls and (all(code > 0 for code in dead) or stalls >= 5):
            raise SearchError(f"{len(dead)} search worker(s) exited with codes {dead} and no "
                              "trial finished; the study is kept, resume it with the same "
                              "command")
        warnings.warn(f"{len(dead)} search worker(s) exited with codes {dead}; their running "
                      f"trial(s) {lost} were failed" + (
                          f", {remaining} missing trial(s) run in new workers"
                          if remaining and not timed_out else ""), stacklevel=3)
        if timed_out:
            return


def _worker_round(plan: SearchPlan, study: optuna.Study, remaining: int, bar: Any,
                  callbacks: Sequence[Callback]) -> list[int]:
    """One set of worker processes sharing ``remaining`` trials; their exit codes. On an
    exception here (Ctrl-C, SIGTERM) the workers are terminated: the study stays resumable."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    workers = min(plan.config.workers, remaining)
    shares = [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]
    procs = [ctx.Process(target=_worker, args=(plan, n, tuple(callbacks)), daemon=False)
             for n in shares]
    for p in procs:
        p.start()
    seen = finished(study)
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            now = finished(study)
            if now > seen:
                bar.update(now - seen)
                bar.set_postfix(best=best_text(study))
                seen = now
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
    return [int(p.exitcode or 0) for p in procs]


def _worker(plan: SearchPlan, n_trials: int, callbacks: Sequence[Callback] = ()) -> None:
    """Entry point of a spawned worker process: load the study and run ``n_trials``."""
    with quiet_optuna():
        proxy = plan.make_proxy()
        proxy.prepare()
        storage = make_storage(plan.config.storage, heartbeat=plan.config.heartbeat)
        study = optuna.load_study(study_name=plan.config.study, storage=storage,
                                  sampler=plan.make_sampler(),
                                  pruner=plan.make_pruner(proxy.eval_steps))
        _optimize(study, plan, build_objective(plan, proxy), n_trials, list(callbacks))


def _wait_for_running(study: optuna.Study, budget: int, *, progress: bool) -> None:
    """With the budget reached or given out, wait for the trials other processes still run, so
    that every process re-scores, exports and summarises the same finished study. Stale trials
    (their process dead) are failed on the way. A running trial that its process is about to
    discard (it started too late, :func:`autoloss.search.budget.doomed`) is not waited for: its
    state is known already, however long its process stalls."""
    said = False
    while True:
        fail_dead_trials(study)
        skip = doomed(study, budget)
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.number not in skip]
        if not running:
            return
        if progress and not said:
            print(f"waiting for {len(running)} trial(s) running in other processes", flush=True)
            said = True
        time.sleep(0.5)


def best_text(study: optuna.Study) -> str:
    """The best value so far, for the progress bar ("-" for none or several objectives)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done or len(study.directions) > 1:
        return "-"
    return f"{max(t.value for t in done):.4f}"
