"""Model builders of a user's own for the tests of the model hook (``own_models:quarter`` on the
command line and in experiment files; pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class QuarterNet(nn.Module):
    """Two stride-2 convolutions: images ``[N, C_in, H, W]`` -> logits ``[N, C, H/4, W/4]``
    (a decoder-resolution output, like SegFormer's)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, num_classes, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.norm(self.down(x))))


def quarter(in_channels: int, num_classes: int) -> nn.Module:
    return QuarterNet(in_channels, num_classes)


def full(in_channels: int, num_classes: int) -> nn.Module:
    """A full-resolution two-layer net."""
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, num_classes, 1))


def wrong_channels(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Conv2d(in_channels, num_classes + 2, 1)


def not_a_module(in_channels: int, num_classes: int) -> object:
    return {"in_channels": in_channels}


def no_arguments() -> nn.Module:
    return nn.Identity()
