"""Losses: searched surrogates, baselines, combinations, and the ``load_loss`` entry point."""

from autoloss.losses.combine import CombinedLoss
from autoloss.losses.loader import (
    DATASET_OPTIONS,
    SCHEMA_VERSION,
    load_loss,
    loss_names,
    portable_spec,
    read_spec,
    save_loss,
)
from autoloss.losses.presets import PRESETS
from autoloss.losses.surrogate import SurrogateLoss, surrogate_loss

__all__ = [
    "PRESETS",
    "DATASET_OPTIONS",
    "SCHEMA_VERSION",
    "portable_spec",
    "CombinedLoss",
    "SurrogateLoss",
    "load_loss",
    "loss_names",
    "read_spec",
    "save_loss",
    "surrogate_loss",
]
