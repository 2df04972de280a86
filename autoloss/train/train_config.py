"""The options of :func:`autoloss.train.trainer.fit`: :class:`TrainConfig` (keyword-only,
checked when built; the rules sit on its fields, :mod:`autoloss.utils.typed_fields`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autoloss.errors import InvalidValueError
from autoloss.utils.typed_fields import (
    at_least,
    check_fields,
    converted,
    in_range,
    matches,
    one_of,
    parse_size,
    positive,
)

__all__ = ["TrainConfig"]

_OPTIMIZERS = ("sgd", "adamw")


def _scale_range(value: Any, *, name: str) -> tuple[float, float]:
    """``(low, high)`` with ``0 < low <= high`` as floats (the random scale range)."""
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(matches(v, float) and math.isfinite(v) for v in value)
            and 0 < value[0] <= value[1]):
        return (float(value[0]), float(value[1]))
    raise InvalidValueError(f"{name} must be (low, high), 0 < low <= high, but got {name}={value!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Options of :func:`~autoloss.train.trainer.fit` (every one keyword-only and validated).

    Args:
        steps: optimizer steps. batch_size: images per step.
        crop: training crop ``(height, width)``; None trains on whole (augmented) images.
        lr, momentum, weight_decay: optimizer settings (momentum is SGD only).
        optimizer: ``"sgd"`` or ``"adamw"``. poly_power: exponent of the poly schedule.
        eval_every: steps between evaluations / checkpoints (and one at the end).
        log_every: steps between loss lines in the JSONL log. eval_batch_size: images per
            evaluation forward pass.
        seed: seeds the global torch RNG, the batch order and the augmentation.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None (CUDA if available).
        grad_clip: max global gradient norm, or None. augment: random scale / crop / flip (with
            ``augment=False`` a ``crop`` is still a random crop). scale: random scale range.
        num_threads: torch CPU threads during ``fit`` (restored afterwards), None = unchanged.
    """

    steps: int = field(default=300, metadata=at_least(1))
    batch_size: int = field(default=8, metadata=at_least(1))
    crop: tuple[int, int] | None = field(default=None, metadata=converted(parse_size))
    lr: float = field(default=0.01, metadata=positive())
    momentum: float = field(default=0.9, metadata=in_range(0, 1, high_open=True))
    weight_decay: float = field(default=1e-4, metadata=at_least(0))
    optimizer: str = field(default="sgd", metadata=one_of(*_OPTIMIZERS))
    poly_power: float = field(default=0.9, metadata=at_least(0))
    eval_every: int = field(default=50, metadata=at_least(1))
    log_every: int = field(default=10, metadata=at_least(1))
    eval_batch_size: int = field(default=16, metadata=at_least(1))
    seed: int = field(default=0, metadata=at_least(0))
    device: str | None = None
    grad_clip: float | None = field(default=None, metadata=positive())
    augment: bool = True
    scale: tuple[float, float] = field(default=(0.75, 1.25), metadata=converted(_scale_range))
    num_threads: int | None = field(default=None, metadata=at_least(1))

    def __post_init__(self) -> None:
        check_fields(self)

    def lr_at(self, step: int) -> float:
        """Poly learning rate for 0-based ``step``: ``lr * (1 - step/steps) ** poly_power``."""
        return self.lr * (1.0 - step / self.steps) ** self.poly_power
