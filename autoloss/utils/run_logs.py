"""A training run's per-step log: ``log.jsonl`` while the run trains, ``log.jsonl.gz`` once it
has finished (its folder holds ``metrics.json``) and its log was compressed to be committed.

Readers of a run's log go through :func:`run_log` and :func:`read_log_text`, so a compressed log
reads like a plain one. :func:`compress_finished_logs` compresses the logs of every finished run
under a folder, deterministically (gzip with mtime 0 and no file name in the header: the same log
always gives the same bytes, so compressing again changes nothing). A run that is still training,
or is resumed, writes a plain ``log.jsonl`` (``autoloss.train.callbacks.JsonlWriter``).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FINISHED_MARKER", "LOG_NAME", "CompressedLog", "compress_finished_logs",
           "compress_log", "gz_path", "is_log_file", "read_log_text", "run_log"]

#: the per-step log of a run folder (``autoloss.retrain.runs``)
LOG_NAME = "log.jsonl"
#: the file a run writes last: a folder holding it is a finished run, never trained again
FINISHED_MARKER = "metrics.json"
_GZ = ".gz"


def gz_path(path: Path | str) -> Path:
    """``log.jsonl`` -> ``log.jsonl.gz``."""
    path = Path(path)
    return path.with_name(path.name + _GZ)


def is_log_file(name: Path | str) -> bool:
    """Whether ``name`` is a JSONL log, plain (``.jsonl``) or compressed (``.jsonl.gz``)."""
    return str(name).endswith((".jsonl", ".jsonl" + _GZ))


def run_log(folder: Path | str, name: str = LOG_NAME) -> Path | None:
    """The log ``name`` of a run folder: the plain file if it exists, else its ``.gz``, else None
    (a plain file wins: a run resumed after compression writes a plain log again)."""
    plain = Path(folder) / name
    for path in (plain, gz_path(plain)):
        if path.is_file():
            return path
    return None


def read_log_text(path: Path | str) -> str:
    """The text of a JSONL log, plain or gzip-compressed (by its ``.gz`` suffix)."""
    path = Path(path)
    if path.name.endswith(_GZ):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


def compress_log(path: Path | str) -> Path:
    """Compress the plain log ``path`` into ``path.gz`` (atomically; gzip level 9, mtime 0, no
    file name in the header, so equal logs give equal bytes), then delete ``path``. Returns the
    ``.gz`` path."""
    path = Path(path)
    data = path.read_bytes()
    target = gz_path(path)

    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                   compresslevel=9, mtime=0) as f:
            f.write(data)
        os.replace(tmp, target)  # atomic: a reader never sees half a .gz
    finally:
        tmp.unlink(missing_ok=True)
    path.unlink()
    return target


@dataclass(frozen=True)
class CompressedLog:
    """One log :func:`compress_finished_logs` compressed: the ``.gz`` file and both sizes in bytes."""

    path: Path
    plain_bytes: int
    gz_bytes: int


def compress_finished_logs(root: Path | str, *, skip: Iterable[str] = ()) -> list[CompressedLog]:
    """Compress ``log.jsonl`` of every finished run (a folder holding ``metrics.json``) under
    ``root``, in sorted order; folders named in ``skip`` (e.g. ``preregistered``) are not entered.
    Unfinished runs keep their plain log. Running it again compresses nothing."""
    skipped = set(skip)
    done = []
    for plain in sorted(Path(root).rglob(LOG_NAME)):
        rel = plain.relative_to(root).parts[:-1]
        if skipped.intersection(rel) or not (plain.parent / FINISHED_MARKER).is_file():
            continue
        size = plain.stat().st_size
        gz = compress_log(plain)
        done.append(CompressedLog(gz, size, gz.stat().st_size))
    return done
