"""Mixed precision: every loss computes in float32 whatever the logits' dtype.

A loss reduces over every pixel of the batch: per-class sums of ``N*H*W`` probabilities
(512 x 1024 pixels per image), ranks counted up to ``N*H*W``. In float16 such a sum overflows
above 65,504 and in bfloat16 an integer above 256 is no longer exact, so a loss on half-precision
logits (a model run under ``torch.autocast``, or cast with ``.half()``) computed in their dtype
is wrong: NaN, a constant 1.0 with zero gradient, or a Lovasz gradient pointing elsewhere.

:func:`float32_compute` wraps a loss function so that half-precision logits (and soft targets)
are cast to float32 and autocast is switched off inside the loss (autocast would run ``bmm``,
convolutions and poolings in bfloat16 again). The loss is then float32, as autocast's own
policy makes ``F.cross_entropy`` float32; the gradient flows back through the cast to the
half-precision logits. Float32 and float64 logits outside autocast take the unwrapped path (no
cost). A float16 gradient still needs loss scaling (``torch.amp.GradScaler``), as for any loss:
the gradient of a mean over ~500,000 pixels per entry is below float16's smallest normal number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from autoloss.errors import InvalidValueError

__all__ = ["HALF_DTYPES", "float32_compute"]

HALF_DTYPES = (torch.float16, torch.bfloat16)

F = TypeVar("F", bound=Callable[..., Any])


def float32_compute(loss: F) -> F:
    """Decorate ``loss(logits, target, ...)``: half-precision ``logits`` (and a half-precision
    soft ``target``) are cast to float32, and autocast is off while it runs."""

    @functools.wraps(loss)
    def wrapper(logits: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(logits, Tensor):
            return loss(logits, target, *args, **kwargs)
        device = logits.device.type
        if device == "meta":
            raise InvalidValueError(
                "logits are on the meta device, which holds shapes but no values, and a loss "
                "is computed from values: materialise the model on a real device first "
                "(model.to_empty(device='cpu'), then load or initialise its weights)")
        half = logits.dtype in HALF_DTYPES
        if not half and not torch.is_autocast_enabled(device):
            return loss(logits, target, *args, **kwargs)
        if half:
            logits = logits.float()
        if isinstance(target, Tensor) and target.dtype in HALF_DTYPES:
            target = target.float()
        with torch.autocast(device, enabled=False):
            return loss(logits, target, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
