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

User code is named the same way everywhere (a metric program, a model builder, a proxy
factory): ``path/to/file.py:name`` (a file, behind the gate above) or ``module:name`` (an
importable module; a shared file may name one only with ``--trust-code``,
:func:`require_trusted_reference`). :func:`import_reference` loads either, with one-line errors.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError, MissingFileError, UntrustedCodeError, did_you_mean

__all__ = ["ENV_ALL", "ENV_FILES", "UntrustedCodeError", "code_file", "import_reference",
           "is_reference", "is_trusted", "reference_name", "reference_sha256", "require_trusted",
           "require_trusted_import", "require_trusted_reference", "trust_code"]

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


def require_trusted_reference(target: object, *, option: str, source: str) -> None:
    """The gate for user code a shared file names (an experiment or study YAML): a file
    reference ``file.py:name`` must be trusted (:func:`require_trusted`), a module reference
    ``module:name`` needs every file trusted (:func:`require_trusted_import`). Anything that is
    not such a reference (a built-in name, None) passes: it runs no code."""
    if not is_reference(target):
        return
    if code_file(target) is not None:
        require_trusted(str(target), source=f"{source}, option {option}")
    else:
        require_trusted_import(str(target), option=option, source=source)


def is_reference(value: object) -> bool:
    """Whether ``value`` names user code: a string ``module:name`` or ``path/file.py:name``."""
    if not isinstance(value, str):
        return False
    head, sep, attr = value.rpartition(":")
    return bool(sep and head and attr)


def reference_name(obj: Any) -> str:
    """How a Python object is recorded (studies, provenance, run folders): ``module:qualname``
    of a function or class, of the type of any other object."""
    named = isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__"))
    kind = obj if named else type(obj)
    return f"{kind.__module__}:{kind.__qualname__}"


def reference_sha256(reference: str) -> str | None:
    """The sha256 of the file of a ``file.py:name`` reference (None for a module reference)."""
    file = code_file(reference)
    if file is None or not file.is_file():
        return None
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _load_file(path: Path, *, what: str) -> Any:
    module_name = f"autoloss_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InvalidValueError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:  # the user's file does not parse: where, not a traceback
        del sys.modules[module_name]
        raise InvalidValueError(f"{what} file {err.filename}:{err.lineno}: syntax error: "
                                f"{err.msg}") from None
    return module


def _load_module(name: str, *, reference: str, what: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(f"{err.name}.")):
            raise  # the user's module imports something missing: its own traceback
        raise MissingFileError(f"{what} {reference!r}: no module named {err.name!r} (not on "
                               f"sys.path / PYTHONPATH); add its folder to PYTHONPATH or name "
                               f"the file: path/to/file.py:name") from None


def import_reference(reference: str, *, what: str) -> Any:
    """The object a user code reference names: ``path/to/file.py:name`` (the file is run, so
    it must be trusted: :func:`require_trusted`) or ``module:name`` (imported from
    ``sys.path``). ``what`` names the option in the one-line errors (``"user metric"``,
    ``"model"``): a missing file or module, a syntax error, a missing name (did you mean)."""
    if not is_reference(reference):
        raise InvalidValueError(f"{what} must be 'module:name' or 'path/to/file.py:name', but got "
                                f"{reference!r}")
    head, _, attr = reference.rpartition(":")
    file = code_file(reference)
    if file is not None:
        if not file.is_file():
            raise MissingFileError(f"{what} file {str(file)!r} (from {reference!r}) does not "
                                   f"exist")
        require_trusted(reference)
        module, where = _load_file(file, what=what), repr(str(file))
    else:
        module, where = _load_module(head, reference=reference, what=what), f"module {head!r}"
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_")]
        raise InvalidValueError(f"{what} {reference!r}: {where} defines no {attr!r}"
                                f"{did_you_mean(attr, names)}")
    return getattr(module, attr)
