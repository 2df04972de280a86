"""Which trials of a study count toward its trial budget, when several processes share it.

A search asks for ``trials`` finished trials in the study as a whole, however many processes
(on however many hosts) work on it. Counted: complete and pruned trials, failed ones with a
recorded reason (a crash or a non-finite loss), and, for the budget check of a new trial, the
trials still running or queued. A trial stopped with its worker (no reason recorded) does not
count; its retry does.

Exact with any number of processes: the storage hands out trial numbers in order, and trial
``k`` runs only if fewer than ``trials`` counted trials are numbered below it
(:func:`over_budget`); otherwise it is *discarded*: failed at once, with the user attribute
:data:`DISCARDED` saying why, and left out of every count, summary and plot.

Each running trial records its owner (host name and process id, :func:`owner`), so a restart on
the same host fails the trials of its dead processes at once (:func:`fail_orphans`) instead of
waiting for their heartbeats to go stale; a trial whose process died before recording itself is
failed once it has been ownerless for :data:`OWNERLESS_GRACE` seconds. That grace is a time a
live process is expected to take, at most, between taking a trial and recording itself (a few
milliseconds); if one ever takes longer, its trial is failed under it and the process, unable to
record that trial, goes on with the next one (:mod:`autoloss.search.workers`): one trial is
lost, the search is not.
"""

from __future__ import annotations

import os
import socket
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from autoloss.utils.trial_attrs import DISCARDED, discarded

__all__ = ["DISCARDED", "OWNER", "BudgetReached", "counts", "discard_leftover_queue", "discarded",
           "doomed", "fail_dead_trials", "fail_orphans", "finished", "first_copy", "over_budget",
           "owner", "settled"]

class BudgetReached(Exception):
    """Raised in a trial started once the study had its budget (by other processes); the trial
    is failed and marked :data:`DISCARDED`, and the process stops."""


OWNER = "owner"  # user attribute of a trial: {"host": ..., "pid": ...} of the process running it
OWNERLESS_GRACE = 30.0  # seconds a running trial may go without an owner before it counts as dead
_COUNTED = ("COMPLETE", "PRUNED")  # state names (optuna is imported only by the search)


def counts(trial: Any) -> bool:
    """Whether a finished ``trial`` counts toward the budget."""
    if trial.state.name == "FAIL":
        return "fail_reason" in trial.user_attrs
    return trial.state.name in _COUNTED


def finished(study: Any) -> int:
    """Finished trials of an optuna study that count toward the budget."""
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


def over_budget(study: Any, number: int, budget: int) -> bool:
    """Whether ``budget`` trials numbered below ``number`` already count: finished ones that
    count, queued ones, and running ones whose process is not known to be dead."""
    here = socket.gethostname()
    taken = 0
    for t in study.get_trials(deepcopy=False):
        if t.number >= number:
            continue
        state = t.state.name
        if state == "WAITING" or (state == "RUNNING" and not _orphaned(t, here)) or counts(t):
            taken += 1
    return taken >= budget


def doomed(study: Any, budget: int) -> frozenset[int]:
    """The running trials that their process will discard (or has just discarded, unrecorded
    yet): ``budget`` trials numbered below each already count (:func:`over_budget`). The count
    below a trial can only fall (a trial of a killed process), never rise (trial numbers are
    handed out in order), so no trial that passed its budget check is ever among them."""
    return frozenset(t.number for t in study.get_trials(deepcopy=False)
                     if t.state.name == "RUNNING" and over_budget(study, t.number, budget))


def owner() -> dict[str, Any]:
    """This process: ``{"host": hostname, "pid": pid}``."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _orphaned(trial: Any, host: str) -> bool:
    """A running trial whose owner process ran on ``host`` and is gone, or that has had no owner
    for :data:`OWNERLESS_GRACE` seconds (its process died between creating it and recording
    itself, a window of milliseconds; storages without heartbeats would keep it forever)."""
    who = trial.user_attrs.get(OWNER)
    if who is None:
        start = trial.datetime_start  # optuna records local time
        return start is not None and (datetime.now() - start).total_seconds() > OWNERLESS_GRACE
    if not isinstance(who, dict) or who.get("host") != host or not isinstance(who.get("pid"), int):
        return False
    if who["pid"] == os.getpid():
        return False
    return not _alive(who["pid"])


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, killed but not yet reaped, does
    not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:  # Linux: the state letter follows the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def fail_orphans(study: Any) -> list[int]:
    """Fail the running trials of dead processes of this host, and those ownerless for
    :data:`OWNERLESS_GRACE` seconds (no retry is queued: the budget check lets a new trial take
    the place); returns their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    here = socket.gethostname()
    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _orphaned(t, here):
            try:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            except UpdateFinishedTrialError:  # another process failed it since it was read
                continue  # (skip_if_finished checks a cached state; the database refuses)
            numbers.append(t.number)
    return numbers


def fail_dead_trials(study: Any) -> None:
    """Fail the running trials whose process is gone: at once for this host's dead processes
    (:func:`fail_orphans`), by their stale heartbeat for other hosts'."""
    import optuna

    fail_orphans(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def first_copy(study: Any, number: int, label: str | None) -> int | None:
    """The number of an earlier live or finished trial of reference point ``label``, if any:
    two processes that both found a new study unprepared (its creator stalled) each queue the
    first trials, and only the lowest-numbered copy of each runs (the later ones are
    discarded), so no wait has to be long enough."""
    if label is None:
        return None
    for t in study.get_trials(deepcopy=False):
        if (t.number < number and t.user_attrs.get("reference") == label and not discarded(t)
                and not (t.state.name == "FAIL" and "fail_reason" not in t.user_attrs)):
            return t.number
    return None


def settled(study: Any) -> int:
    """Trials that count toward the budget plus discarded ones: a round of trials that all were
    discarded (copies of a reference point) has made progress; one whose trials all failed by
    themselves has not."""
    return finished(study) + sum(1 for t in study.get_trials(deepcopy=False) if discarded(t))


def discard_leftover_queue(study: Any, budget: int) -> None:
    """A study with its ``budget`` keeps no queued trial (e.g. a heartbeat retry of a trial whose
    worker died after the budget was reached): each is taken and discarded."""
    from optuna.trial import TrialState

    while finished(study) >= budget and study.get_trials(deepcopy=False,
                                                         states=(TrialState.WAITING,)):
        trial = study.ask()  # takes a queued trial first
        trial.set_user_attr(DISCARDED, "queued after the study had its trial budget")
        study.tell(trial, state=TrialState.FAIL)
