"""A fake proxy for the search tests: no training, a deterministic score from the loss's curves.

Importable by spawned worker processes as ``fake_proxy:FakeProxy`` (pytest puts ``tests/`` on
``sys.path``, and spawned children inherit it). Also :func:`fast_tmp_dir` for storage fixtures.

Score: for each surrogate in the loss, ``v`` = mean over its curves of ``h(0.5)``; the metrics
reward ``v`` near 0.7 for region metrics and near 0.35 for boundary metrics (so a multi-objective
search has a trade-off), plus ``1e-3`` noise from the seed. Cross-entropy scores 0.75 (mIoU).
Options (the ``proxy`` dict of the search config): ``crash_above`` / ``nonfinite_below`` (raise
when the first surrogate's ``v`` is above / below), ``sleep`` (seconds per evaluation),
``kill_once`` (the first surrogate run in a worker process SIGKILLs that process, once per cache
folder: a worker that dies mid-trial), ``interrupt_once`` (the first surrogate run sends SIGTERM
to its own process, once per cache folder: a search stopped mid-trial), ``barrier_dir`` and
``barrier_count`` (the first surrogate run in each process, in its first trial, waits until
``barrier_count`` processes have reached that folder: every process of a scale-out test holds a
trial at once, however late the machine's load lets it start), ``hold_while`` and
``hold_after`` (in worker processes, every surrogate run after the first ``hold_after`` of the
cache folder waits while the file ``hold_while`` exists: a test stops the search in a state it
chose, however fast or slow the machine, and removes the file before resuming).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoloss.core.metrics import METRIC_NAMES
from autoloss.losses import CombinedLoss, SurrogateLoss

try:
    from autoloss.train.trainer import NonFiniteLossError
except ImportError:  # the trainer is not there yet: a stand-in with the same name and fields
    class NonFiniteLossError(RuntimeError):  # type: ignore[no-redef]
        def __init__(self, step: int, value: float) -> None:
            super().__init__(f"loss became {value} at step {step}")
            self.step, self.value = step, value

def fast_tmp_dir() -> Iterator[Path]:
    """A temporary folder on tmpfs when there is one (SQLite commits are ~50x faster there),
    removed afterwards; for ``yield from`` in fixtures."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="autoloss-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


BOUNDARY = ("biou", "bf1")
KNOWN = ("data", "crash_above", "nonfinite_below", "sleep", "kill_once", "interrupt_once",
         "drop_bg", "barrier_dir", "barrier_count", "hold_while", "hold_after")
BARRIER_TIMEOUT = 600.0  # seconds; a process that never comes is a failed test, not a hang


def curve_value(loss: SurrogateLoss) -> float:
    x = torch.tensor([0.5], dtype=torch.float64)
    return sum(float(c(x)) for c in loss.curves.values()) / len(loss.curves)


def surrogates(loss: nn.Module) -> list[SurrogateLoss]:
    if isinstance(loss, SurrogateLoss):
        return [loss]
    if isinstance(loss, CombinedLoss):
        return [m for m in loss.losses if isinstance(m, SurrogateLoss)]
    return []


def _in_worker() -> bool:
    return multiprocessing.current_process().name != "MainProcess"


_MET: set[Path] = set()  # barrier folders this process has passed


def _meet(folder: Path, count: int) -> None:
    """Once per process and ``folder``: register this process there, then wait until ``count``
    processes have."""
    if folder in _MET:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while (arrived := len(list(folder.iterdir()))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fake proxy barrier: {arrived} of {count} processes reached "
                               f"{folder} in {BARRIER_TIMEOUT:.0f} s")
        time.sleep(0.02)
    _MET.add(folder)


def _ticket(folder: Path) -> int:
    """This run's number among the runs that took one from ``folder`` (1, 2, ...), unique
    across processes (exclusive file creation)."""
    folder.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        try:
            (folder / str(number)).open("x").close()
            return number
        except FileExistsError:
            number += 1


def _hold(path: Path) -> None:
    """Wait while ``path`` exists."""
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"fake proxy hold: {path} still there after {BARRIER_TIMEOUT:.0f} s")
        time.sleep(0.02)


class FakeProxy:
    def __init__(self, config: dict[str, Any], *, cache_dir: Path) -> None:
        unknown = sorted(set(config) - set(KNOWN))
        if unknown:
            raise ValueError(f"unknown fake proxy options {unknown}")
        self.config = dict(config)
        self.cache_dir = Path(cache_dir)
        self.num_classes = 3
        self.ignore_index: int | None = 255
        self.image_size = (32, 48)
        self.eval_steps = [10, 20, 30]

    def prepare(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.cache_dir / "warm_start.txt").write_text("ok")

    def _log(self, kind: str) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)  # like the real proxy, runs need no
        with open(self.cache_dir / "runs.log", "a") as f:      # prepare() first
            f.write(f"{kind} {os.getpid()}\n")

    def metrics_of(self, loss: nn.Module, seed: int) -> dict[str, float]:
        noise = 1e-3 * math.sin(12.9898 * (seed + 1))
        parts = surrogates(loss)
        if not parts:  # cross-entropy (or any loss without a surrogate)
            base = {"region": 0.75, "boundary": 0.45}
        else:
            region = [curve_value(p) for p in parts if p.metric not in BOUNDARY] or [0.5]
            boundary = [curve_value(p) for p in parts if p.metric in BOUNDARY] or [0.5]
            base = {"region": 0.8 - (sum(region) / len(region) - 0.7) ** 2,
                    "boundary": 0.6 - (sum(boundary) / len(boundary) - 0.35) ** 2}
        return {m: base["boundary" if m in BOUNDARY else "region"] + noise for m in METRIC_NAMES}

    def run(self, loss: nn.Module, *, seed: int,
            on_eval: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
        parts = surrogates(loss)
        self._log("surrogate" if parts else "baseline")
        if parts and "barrier_dir" in self.config:  # a trial (the baseline has none)
            _meet(Path(self.config["barrier_dir"]), int(self.config["barrier_count"]))
        if parts and "hold_while" in self.config and _in_worker() and (
                _ticket(self.cache_dir / "tickets") > int(self.config.get("hold_after", 0))):
            _hold(Path(self.config["hold_while"]))
        if parts:
            v = curve_value(parts[0])
            if "crash_above" in self.config and v > self.config["crash_above"]:
                raise RuntimeError(f"fake crash (h(0.5)={v:.3f})")
            if "nonfinite_below" in self.config and v < self.config["nonfinite_below"]:
                raise NonFiniteLossError(self.eval_steps[0], float("nan"))
        final = self.metrics_of(loss, seed)
        if parts and self.config.get("interrupt_once"):
            marker = self.cache_dir / "interrupted"
            try:
                marker.open("x").close()
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGTERM)
        if parts and self.config.get("kill_once") and _in_worker():
            marker = self.cache_dir / "killed"
            try:
                marker.open("x").close()  # the first worker to get here dies
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        for step in self.eval_steps:
            time.sleep(float(self.config.get("sleep", 0.0)))
            if on_eval is not None:
                frac = 0.5 + 0.5 * step / self.eval_steps[-1]
                on_eval(step, {k: v * frac for k, v in final.items()})
        return final
