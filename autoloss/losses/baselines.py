"""The hand-designed baseline losses by name: one literal dict, no registry."""

from __future__ import annotations

from torch import nn

__all__ = ["BASELINES"]

BASELINES: dict[str, type[nn.Module]] = {}
