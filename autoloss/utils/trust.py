"""Which user Python files autoloss may run.

A metric program can live in the user's own file (``metric: my_metrics.py:tversky``), and
loading it runs that file. Loss, experiment, study and search-space files are meant to be
shared, so reading one must be as safe as reading data: autoloss runs no user file unless the
user said so (in the spirit of ``torch.load(weights_only=True)`` and ``trust_remote_code``):

- on the command line, ``--trust-code`` trusts every file; a file named directly in a flag
  (``autoloss search --metric my_metrics.py:tversky``) is trusted, being the user's own words;
- in Python, :func:`trust_code` trusts given files (``autoloss.trust_code("my_metrics.py")``)
  and ``load_loss(path, trust_code=True)`` the files its spec names;
- ``AUTOLOSS_TRUST_CODE=1`` in the environment trusts every file.

Trust is kept in the environment (``AUTOLOSS_TRUSTED_FILES``), so worker processes a search
spawns inherit it. Anything else raises :class:`UntrustedCodeError` before a line runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from autoloss.errors import UntrustedCodeError

__all__ = ["ENV_ALL", "ENV_FILES", "UntrustedCodeError", "code_file", "is_trusted",
           "require_trusted", "require_trusted_import", "trust_code"]

ENV_ALL = "AUTOLOSS_TRUST_CODE"
ENV_FILES = "AUTOLOSS_TRUSTED_FILES"

_HOW = ("pass --trust-code on the command line, call autoloss.trust_code(PATH) or "
        "load_loss(..., trust_code=True) in Python, or set AUTOLOSS_TRUST_CODE=1")


def code_file(reference: str) -> Path | None:
    """The Python file of a user program reference ``path/to/file.py:name`` (None otherwise)."""
    head, sep, _ = str(reference).rpartition(":")
    return Path(head).expanduser() if sep and head.endswith(".py") else None


def _trusted_files() -> set[str]:
    return {p for p in os.environ.get(ENV_FILES, "").split(os.pathsep) if p}


def trust_code(*paths: str | Path) -> None:
    """Let autoloss run these user files (``file.py`` or ``file.py:name``), in this process
    and the worker processes it starts."""
    files = _trusted_files()
    for path in paths:
        file = code_file(str(path)) or Path(path).expanduser()
        files.add(str(file.resolve()))
    os.environ[ENV_FILES] = os.pathsep.join(sorted(files))


def _all_trusted() -> bool:
    return os.environ.get(ENV_ALL, "").strip().lower() in ("1", "true", "yes")


def is_trusted(path: str | Path) -> bool:
    """True if ``path`` may run: every file is trusted, or this one was."""
    return _all_trusted() or str(Path(path).expanduser().resolve()) in _trusted_files()


def require_trusted(reference: str, *, source: str | None = None) -> None:
    """Raise :class:`UntrustedCodeError` unless the file of ``reference`` may run."""
    file = code_file(reference)
    if file is None or is_trusted(file):
        return
    where = f" (from {source})" if source else ""
    raise UntrustedCodeError(f"{reference!r}{where} names Python code, {str(file)!r}, that would "
                             f"run when it is loaded; autoloss runs no user file unless told "
                             f"to: {_HOW}")


def require_trusted_import(target: str, *, option: str, source: str) -> None:
    """Raise unless every file is trusted: ``source`` sets ``option`` to the importable
    ``module:attr`` ``target``, which would import (run) that module."""
    if _all_trusted():
        return
    raise UntrustedCodeError(f"{source} sets {option}={target!r}, which imports and runs that "
                             f"module; a file may do that only with --trust-code (or "
                             f"AUTOLOSS_TRUST_CODE=1)")
