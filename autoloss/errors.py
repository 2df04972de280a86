"""The errors autoloss raises on bad input, under one root type, and the did-you-mean hint.

Every error that is the user's to fix (an argument, a file, a dataset, a storage URL) is an
:class:`AutoLossError`. Each subclass also derives from the built-in type a Python user would
expect, so ``except ValueError`` keeps working::

    AutoLossError
    ├── InvalidValueError (ValueError)        an argument or file entry has a wrong value
    ├── InvalidTypeError (TypeError)          ... has a wrong type
    ├── MissingFileError (FileNotFoundError)  a file or folder named by the user does not exist
    ├── MissingDependencyError (ImportError)  an optional package the request needs is absent
    ├── StorageError (RuntimeError)           the study database cannot be opened or written
    ├── SearchError (RuntimeError)            a search cannot go on (its workers keep failing)
    ├── NonFiniteLossError (RuntimeError)     training produced a NaN or infinite loss
    └── UntrustedCodeError (PermissionError)  a file names Python code that was not trusted

The ``autoloss`` command prints an ``AutoLossError`` (and an ``OSError`` of the machine: a
read-only folder, a full disk) as one line and exits with 2; anything else is a bug and keeps its
traceback.

Example:
    >>> try:
    ...     raise InvalidValueError("tol must be >= 0, but got tol=-1")
    ... except ValueError as err:
    ...     isinstance(err, AutoLossError)
    True
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AutoLossError",
    "InvalidTypeError",
    "InvalidValueError",
    "MissingDependencyError",
    "MissingFileError",
    "NonFiniteLossError",
    "SearchError",
    "StorageError",
    "UntrustedCodeError",
    "did_you_mean",
]


class AutoLossError(Exception):
    """Root of the errors that are the user's to fix; the message says what, where and what to
    do."""


class InvalidValueError(AutoLossError, ValueError):
    """An argument, option or file entry has a value outside what is accepted."""


class InvalidTypeError(AutoLossError, TypeError):
    """An argument, option or file entry has the wrong type."""


class MissingFileError(AutoLossError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class MissingDependencyError(AutoLossError, ImportError):
    """An optional package (a database driver, ``cmaes``) that the request needs is not
    installed; the message names the ``pip install``."""


class StorageError(AutoLossError, RuntimeError):
    """The study storage (SQLite, PostgreSQL, journal file) cannot be opened or written."""


class SearchError(AutoLossError, RuntimeError):
    """A search or study cannot go on: its workers keep failing, or no trial completed. The
    study is kept; the message says how to resume."""


class NonFiniteLossError(AutoLossError, RuntimeError):
    """The training loss became NaN or infinite at ``step`` (1-based); ``value`` is that loss."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"the loss is {value} (non-finite) at step {step}; training stopped "
                         f"before the update. Lower lr, set grad_clip, or check the loss")
        self.step = step
        self.value = value


class UntrustedCodeError(AutoLossError, PermissionError):
    """A file names user Python code (``metric: file.py:name``, ``proxy_factory``) that was not
    trusted with :func:`autoloss.trust_code`, ``trust_code=True`` or ``--trust-code``."""


def did_you_mean(value: object, choices: Iterable[object], *, n: int = 2) -> str:
    """``"; did you mean 'x'?"`` (or ``'x' or 'y'``) when the string ``value`` is close to one of
    ``choices`` (case-insensitive), else ``""``: the tail of an error message."""
    if not isinstance(value, str):
        return ""
    by_lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=n)
    return f"; did you mean {' or '.join(repr(by_lower[c]) for c in close)}?" if close else ""
