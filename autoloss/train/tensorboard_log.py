"""Training curves to TensorBoard, beside the JSONL log (optional: needs ``tensorboard``).

``fit(..., tensorboard_dir=DIR)`` (``autoloss train --tensorboard DIR``) writes what the JSONL
log holds as scalars: ``train/loss`` and ``train/lr`` every ``log_every`` steps, ``val/<metric>``
per evaluation, against the training step; ``tensorboard --logdir DIR`` shows them. A resumed
run appends to the same folder from the step it resumes at.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autoloss.errors import MissingDependencyError

__all__ = ["TensorBoardLog", "require_tensorboard"]


def require_tensorboard() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, or a clear error when ``tensorboard`` is
    missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingDependencyError(
            "tensorboard_dir / --tensorboard needs the tensorboard package: pip install "
            "tensorboard (or 'autoloss[tensorboard]')") from None
    return SummaryWriter


class TensorBoardLog:
    """A ``torch.utils.tensorboard.SummaryWriter`` fed with the trainer's log records."""

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        SummaryWriter = require_tensorboard()
        # purge_step: events a killed run wrote after its last checkpoint are hidden on resume
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step or None)

    def write(self, record: dict[str, Any]) -> None:
        """One JSONL record: ``{"step", "loss", "lr", ...}`` or ``{"step", "eval": {...}}``
        (NaN and None values are skipped)."""
        step = int(record["step"])
        scalars = {f"val/{k}": v for k, v in (record.get("eval") or {}).items()}
        scalars.update({f"train/{k}": record[k] for k in ("loss", "lr") if k in record})
        for tag, value in scalars.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
