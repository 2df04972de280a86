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
    on an error the temporary file is removed and ``path`` keeps its old content. An ``OSError``
    that names no file (a full disk: ``[Errno 28] No space left on device``) names ``path``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise _naming(err, target) from err
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _naming(err, target) from err
        raise
    return target


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` if it names a file, else the same error (type, errno) naming ``path``."""
    if err.filename is not None or err.errno is None:
        return err
    return type(err)(err.errno, err.strerror or str(err), str(path))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``Path(path).write_text(text)`` (UTF-8), atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
