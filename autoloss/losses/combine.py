"""Weighted sums of losses: ``{"combine": [{"name": ..., "weight": w, ...}, ...]}``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from autoloss.errors import InvalidValueError
from autoloss.losses._validate import MAX_OPTION

__all__ = ["CombinedLoss"]


class CombinedLoss(nn.Module):
    """``sum_i weight_i * loss_i(logits, target)``.

    Args:
        losses: the component losses (any ``nn.Module`` taking ``(logits, target)``).
        weights: one non-negative weight per loss.

    Example:
        >>> from autoloss.losses import load_loss
        >>> loss = load_loss({"combine": [{"name": "lovasz_softmax", "weight": 0.2},
        ...                               {"name": "cross_entropy", "weight": 0.8}]})
    """

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(losses) == 0:
            raise InvalidValueError("combine needs at least one loss, but got an empty list")
        if len(losses) != len(weights):
            raise InvalidValueError(
                f"combine needs one weight per loss, but got {len(losses)} losses and "
                f"{len(weights)} weights"
            )
        for i, w in enumerate(weights):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) \
                    or not 0 <= w <= MAX_OPTION:
                raise InvalidValueError(f"combine weight #{i} must be a finite non-negative number, "
                                        f"at most {MAX_OPTION:g} (MAX_OPTION), but got {w!r}")
        self.losses = nn.ModuleList(losses)
        self.weights = [float(w) for w in weights]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, C, H, W]``, ``target [N, H, W]`` -> ``sum_i weight_i * loss_i(logits,
        target)``: a scalar."""
        total = None
        for weight, loss in zip(self.weights, self.losses):
            term = weight * loss(logits, target)
            total = term if total is None else total + term
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"combine": [{**loss.to_dict(), "weight": w}
                            for loss, w in zip(self.losses, self.weights)]}
