"""Where a result came from: the code that made it and the file it started from.

A training run records both (``run.json`` and ``metrics.json`` of
:mod:`autoloss.retrain.runs`): ``code_version()`` names the autoloss version and, when the
package runs from a git checkout, the commit and whether the checkout had uncommitted changes to
the package; ``file_sha256(path)`` identifies the checkpoint a fine-tuning run started from, so
a table can say that two runs started from the same model and which commit trained it.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["code_version", "file_sha256"]

_PACKAGE = Path(__file__).resolve().parents[1]


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(_PACKAGE), *args], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def code_version() -> dict[str, Any]:
    """``{"autoloss": version, "git_commit": hash or None, "git_dirty": bool or None}``: the
    commit of the checkout the package runs from (None when installed from a wheel), and whether
    the package folder had uncommitted changes then (cached for the process)."""
    from autoloss._version import __version__

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", ".") if commit else None
    return {"autoloss": __version__, "git_commit": commit,
            "git_dirty": None if status is None else bool(status)}
