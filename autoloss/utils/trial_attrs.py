"""Names of the user attributes of optuna trials that more than one layer reads: the search
writes them (:mod:`autoloss.search.budget`), the summary and the figures leave such trials out
(:mod:`autoloss.report`). No optuna import: a trial is anything with ``user_attrs``."""

from __future__ import annotations

from typing import Any

__all__ = ["DISCARDED", "discarded"]

DISCARDED = "discarded"  # user attribute of a trial that never ran: why


def discarded(trial: Any) -> bool:
    """Whether ``trial`` was discarded: started once the study had its trial budget, failed at
    once, never ran (:mod:`autoloss.search.budget`)."""
    return DISCARDED in trial.user_attrs
