"""Files written whole or not at all: a reader (or a crash, a full disk, a kill) never sees half a
``summary.md``, ``compare.json`` or exported loss file. Each write goes to a temporary file in
the same folder, which then replaces the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomic", "write_text_atomic"]


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then move it onto ``path``;
    on an error the temporary file is removed and ``path`` keeps its old content."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``Path(path).write_text(text)`` (UTF-8), atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
