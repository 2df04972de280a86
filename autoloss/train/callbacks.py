"""What :func:`autoloss.train.trainer.fit` does around its steps, one small callback each:
the JSONL log and TensorBoard scalars (:class:`LogRecords`), the checkpoint after each
evaluation (:class:`Checkpointer`), the progress bar (:class:`ProgressBar`) and the user's
``on_eval`` (:class:`OnEval`). A user's own callback subclasses :class:`TrainCallback` and is
passed as ``fit(..., callbacks=[...])``; it runs after these, in the order given.

A callback only observes: it touches no random state, so a run gives the same numbers with any
callbacks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from autoloss.utils.atomic import write_text_atomic
from autoloss.utils.run_logs import gz_path, read_log_text, run_log

__all__ = ["Checkpointer", "JsonlWriter", "LogRecords", "LoopState", "OnEval", "ProgressBar",
           "TrainCallback", "json_scores"]


@dataclass
class LoopState:
    """What a callback may read of the running loop. ``history``: one
    ``{"step", "metrics"}`` per evaluation so far (resumed runs included); ``prior_time``:
    seconds the run had taken before it was resumed; ``started``: ``time.perf_counter()`` at the
    start of this call of ``fit``."""

    model: nn.Module
    loss: nn.Module
    optimizer: Any
    config: Any  # TrainConfig (trainer imports this module)
    start: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    prior_time: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Seconds of training of the whole run, earlier runs before a resume included."""
        return self.prior_time + time.perf_counter() - self.started


class TrainCallback:
    """The hooks of ``fit``'s loop; each does nothing unless overridden."""

    def on_step(self, step: int, loss: float, lr: float, state: LoopState) -> None:
        """After optimizer step ``step`` (1-based), whose loss was ``loss`` at learning rate
        ``lr``."""

    def on_eval(self, step: int, scores: dict[str, float] | None, state: LoopState) -> None:
        """At each evaluation point (every ``eval_every`` steps and the last): ``scores`` of the
        evaluation data, or None when ``fit`` has none (checkpoints are still written)."""

    def close(self) -> None:
        """At the end of ``fit``, also when it fails."""


class JsonlWriter:
    """One JSON object per line into ``path``; a resumed run (``start > 0``) keeps the records
    of steps ``<= start`` and appends, so a killed and resumed run logs each step once. A resumed
    run whose log was compressed (``path.gz``, :mod:`autoloss.utils.run_logs`) writes a plain
    ``path`` again, from the compressed records, and the ``.gz`` goes (a new run, ``start=0``,
    deletes it too)."""

    def __init__(self, path: str | Path, *, start: int = 0) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if start > 0:
            _trim_log(path, start)
        else:
            gz_path(path).unlink(missing_ok=True)  # a new run: an old compressed log is stale
        self._file = open(path, "a" if start > 0 else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _trim_log(path: Path, step: int) -> None:
    """Keep the log records of steps <= ``step`` (a resumed run writes the later ones again)."""
    source = run_log(path.parent, path.name)
    if source is None:
        return
    keep = []
    for line in read_log_text(source).splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a killed run
    write_text_atomic(path, "".join(keep))
    if source != path:
        source.unlink()  # the plain log now holds its records


def json_scores(scores: dict[str, float]) -> dict[str, float | None]:
    """Metric scores as JSON values: a NaN or infinite one (e.g. the BF1 of an empty class) is
    written as null, which JSON can hold."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in scores.items()}


class LogRecords(TrainCallback):
    """The training log: ``{"step", "loss", "lr", "time"}`` every ``log_every`` steps and at the
    last, ``{"step", "eval": {...}}`` per evaluation (NaN -> null), to each writer (anything
    with ``write(record)`` and ``close()``: :class:`JsonlWriter`,
    :class:`~autoloss.train.tensorboard_log.TensorBoardLog`)."""

    def __init__(self, writers: list[Any], *, log_every: int, steps: int) -> None:
        self.writers, self.log_every, self.steps = writers, log_every, steps

    def _write(self, record: dict[str, Any]) -> None:
        for writer in self.writers:
            writer.write(record)

    def on_step(self, step: int, loss: float, lr: float, state: LoopState) -> None:
        if step % self.log_every == 0 or step == self.steps:
            self._write({"step": step, "loss": loss, "lr": lr, "time": round(state.elapsed(), 3)})

    def on_eval(self, step: int, scores: dict[str, float] | None, state: LoopState) -> None:
        if scores is not None:
            self._write({"step": step, "eval": json_scores(scores)})

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class Checkpointer(TrainCallback):
    """The run's checkpoint, written atomically at each evaluation point: weights, optimizer,
    random state, history and config, all that ``fit(..., resume=True)`` needs to go on.
    ``save(path, step, state)`` writes it (the trainer's own format)."""

    def __init__(self, path: str | Path, save: Callable[[Path, int, LoopState], None]) -> None:
        self.path, self._save = Path(path), save

    def on_eval(self, step: int, scores: dict[str, float] | None, state: LoopState) -> None:
        self._save(self.path, step, state)


class ProgressBar(TrainCallback):
    """A tqdm bar of the steps, with the last loss and the last scores after it."""

    def __init__(self, *, total: int, initial: int, desc: str, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, disable=disable, desc=desc,
                        dynamic_ncols=True, leave=False)
        self.postfix: dict[str, str] = {}

    def on_step(self, step: int, loss: float, lr: float, state: LoopState) -> None:
        self.bar.update(1)
        self.postfix["loss"] = f"{loss:.4f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_eval(self, step: int, scores: dict[str, float] | None, state: LoopState) -> None:
        if scores is not None:
            self.postfix.update({k: f"{v:.3f}" for k, v in scores.items()})
            self.bar.set_postfix(self.postfix)

    def close(self) -> None:
        self.bar.close()


class OnEval(TrainCallback):
    """``fn(step, scores)`` after each evaluation (and its checkpoint); ``fit``'s ``on_eval``."""

    def __init__(self, fn: Callable[[int, dict[str, float]], None]) -> None:
        self.fn = fn

    def on_eval(self, step: int, scores: dict[str, float] | None, state: LoopState) -> None:
        if scores is not None:
            self.fn(step, dict(scores))

