"""Reading the flat YAML files autoloss takes (experiments), with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autoloss.errors import InvalidValueError, MissingFileError

__all__ = ["read_mapping"]


def read_mapping(path: str | Path, *, what: str = "an experiment") -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is ``{}``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file (and the
    line) for invalid YAML or a top level that is not a mapping; ``what`` names the file's role
    in that message."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{what.split(' ', 1)[-1]} file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise InvalidValueError(f"{path}{line}: invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise InvalidValueError(f"{path}: {what} must be a mapping of options, but got "
                         f"{type(data).__name__}")
    return data
