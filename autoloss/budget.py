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
waiting for their heartbeats to go stale.
"""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["DISCARDED", "OWNER", "counts", "discarded", "fail_orphans", "finished", "over_budget",
           "owner"]

DISCARDED = "discarded"  # user attribute of a trial that never ran: why
OWNER = "owner"  # user attribute of a trial: {"host": ..., "pid": ...} of the process running it
_COUNTED = ("COMPLETE", "PRUNED")  # state names (optuna is imported only by the search)


def discarded(trial: Any) -> bool:
    """Whether ``trial`` was discarded (never ran; see the module docstring)."""
    return DISCARDED in trial.user_attrs


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


def owner() -> dict[str, Any]:
    """This process: ``{"host": hostname, "pid": pid}``."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _orphaned(trial: Any, host: str) -> bool:
    """A running trial whose owner process ran on ``host`` and is gone."""
    who = trial.user_attrs.get(OWNER)
    if not isinstance(who, dict) or who.get("host") != host or not isinstance(who.get("pid"), int):
        return False
    if who["pid"] == os.getpid():
        return False
    try:
        os.kill(who["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def fail_orphans(study: Any) -> list[int]:
    """Fail the running trials of dead processes of this host (no retry is queued: the budget
    check lets a new trial take the place); returns their numbers."""
    from optuna.trial import TrialState

    here = socket.gethostname()
    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _orphaned(t, here):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            numbers.append(t.number)
    return numbers
