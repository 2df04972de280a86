"""Losses: searched surrogates, baselines, combinations, and the ``load_loss`` entry point.

Every loss is also a class, for code that builds losses directly::

    from autoloss.losses import DiceLoss, LovaszSoftmaxLoss, SurrogateLoss
    loss = DiceLoss(mode="binary", classes=[1])
"""

from autoloss.losses.combine import CombinedLoss
from autoloss.losses.cross_entropy import BinaryCrossEntropyLoss, CrossEntropyLoss
from autoloss.losses.focal import FocalLoss
from autoloss.losses.jdt import CompatibleTverskyLoss, DiceSemimetricLoss, JaccardMetricLoss
from autoloss.losses.loader import (
    DATASET_OPTIONS,
    SCHEMA_VERSION,
    load_loss,
    loss_names,
    portable_spec,
    read_spec,
    save_loss,
)
from autoloss.losses.lovasz import LovaszHingeLoss, LovaszSoftmaxLoss
from autoloss.losses.presets import PRESETS
from autoloss.losses.region import DiceLoss, JaccardLoss, TverskyLoss
from autoloss.losses.rmi import RMILoss
from autoloss.losses.surrogate import SurrogateLoss, surrogate_loss

__all__ = [
    "PRESETS",
    "DATASET_OPTIONS",
    "SCHEMA_VERSION",
    "BinaryCrossEntropyLoss",
    "CombinedLoss",
    "CompatibleTverskyLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "DiceSemimetricLoss",
    "FocalLoss",
    "JaccardLoss",
    "JaccardMetricLoss",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "RMILoss",
    "SurrogateLoss",
    "TverskyLoss",
    "load_loss",
    "loss_names",
    "portable_spec",
    "read_spec",
    "save_loss",
    "surrogate_loss",
]
