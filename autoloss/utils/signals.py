"""SIGTERM as Ctrl-C: one way for a command to be interrupted.

``kill``, ``timeout`` and batch schedulers send SIGTERM; inside :func:`sigterm_as_interrupt` it
raises ``KeyboardInterrupt`` like Ctrl-C does, so the same cleanup runs (a search terminates its
workers, a training run keeps its last checkpoint) and the command exits with the same code and
line (:mod:`autoloss.cli.app`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["sigterm_as_interrupt"]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (main thread only: elsewhere a
    signal handler cannot be set, and the block runs unchanged); the previous handler is
    restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
