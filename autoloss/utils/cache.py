"""The shared proxy cache: cross-entropy warm starts, trained once per dataset, model and
recipe, and reused by every search on this machine (any output folder, any worker).

Location: ``$AUTOLOSS_CACHE`` if set, else ``$XDG_CACHE_HOME/autoloss``, else
``~/.cache/autoloss``; a search's ``cache`` option (``--cache DIR``) overrides it. Each entry is
``warmstart-<key>.pt`` with a ``.json`` sidecar (data, proxy settings, validation scores, wall
time); ``<key>`` digests everything that changes the weights (data spec and the names and
sizes of its files, model, warm-start recipe), so a changed setting never reuses a stale
entry. Writers hold a lock file, so concurrent workers train an entry once.

    autoloss cache list        # what is cached, how big, for which data
    autoloss cache clear       # delete every entry (they are retrained when needed)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV_CACHE", "CacheEntry", "clear_cache", "default_cache_dir", "list_cache"]

ENV_CACHE = "AUTOLOSS_CACHE"


def default_cache_dir() -> Path:
    """``$AUTOLOSS_CACHE``, else ``$XDG_CACHE_HOME/autoloss``, else ``~/.cache/autoloss``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "autoloss"


@dataclass(frozen=True)
class CacheEntry:
    """One cached warm start: its ``path``, ``size`` in bytes, the ``data`` spec it was trained
    on, the proxy ``model`` (``unet w16 d3``), its ``steps`` and training ``wall_time`` (s)."""

    path: Path
    size: int
    data: str | None
    model: str | None
    steps: int | None
    wall_time: float | None


def list_cache(directory: str | Path | None = None) -> list[CacheEntry]:
    """The warm starts in ``directory`` (default :func:`default_cache_dir`), oldest first."""
    folder = Path(directory) if directory is not None else default_cache_dir()
    entries = []
    for path in sorted(folder.glob("warmstart-*.pt"), key=lambda p: p.stat().st_mtime):
        if path.name.endswith(".partial.pt"):
            continue
        try:
            info = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            info = {}
        proxy = info.get("proxy") or {}
        model = proxy.get("model") or None
        if model is not None and ":" not in str(model):  # a built-in: its size (not a builder's)
            model = f"{model} w{proxy.get('width')} d{proxy.get('depth')}"
        entries.append(CacheEntry(path, path.stat().st_size, info.get("data"), model,
                                  proxy.get("warm_start_steps"), info.get("wall_time")))
    return entries


def clear_cache(directory: str | Path | None = None) -> int:
    """Delete every warm start (with its sidecar, lock and partial files) in ``directory``;
    returns the number of entries deleted."""
    folder = Path(directory) if directory is not None else default_cache_dir()
    deleted = 0
    for path in folder.glob("warmstart-*"):
        if path.suffix == ".pt" and not path.name.endswith(".partial.pt"):
            deleted += 1
        path.unlink(missing_ok=True)
    return deleted
