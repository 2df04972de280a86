"""Reading the JSON records autoloss writes (``run.json``, ``metrics.json``, ``compare.json``),
with an error that names the file and the place when one is damaged (a crash of another tool,
an edit by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError

__all__ = ["read_json"]


def read_json(path: str | Path, *, fix: str = "restore it or delete it") -> Any:
    """The data of the JSON file ``path``; invalid JSON is an
    :class:`~autoloss.errors.InvalidValueError` naming the file, line and column, ending with
    ``fix`` (what the user can do about it)."""
    path = Path(path)
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidValueError(f"{path}, line {err.lineno} column {err.colno}: invalid JSON "
                                f"({err.msg}); {fix}") from None
