"""autoloss: search differentiable surrogate losses for semantic-segmentation metrics.

Public surface (explicit re-exports)::

    from autoloss import evaluate, MetricAccumulator, load_loss, save_loss, SurrogateLoss

Errors the user can fix derive from :class:`AutoLossError` (:mod:`autoloss.errors`).
"""

from autoloss._version import __version__
from autoloss.core.metrics import METRIC_NAMES, MetricAccumulator, evaluate, evaluate_per_class
from autoloss.core.programs import MetricProgram
from autoloss.data import describe_dataset, load_dataset
from autoloss.errors import (
    AutoLossError,
    InvalidTypeError,
    InvalidValueError,
    MissingDependencyError,
    MissingFileError,
    NonFiniteLossError,
    SearchError,
    StorageError,
    UntrustedCodeError,
)
from autoloss.losses import SurrogateLoss, load_loss, save_loss
from autoloss.train.checkpoint import load_checkpoint
from autoloss.train.models import DeepLabConfig, UNetConfig, build_model, model_from_name
from autoloss.train.trainer import TrainConfig, TrainResult, fit
from autoloss.utils.trust import trust_code

__all__ = [
    "METRIC_NAMES",
    "AutoLossError",
    "InvalidTypeError",
    "InvalidValueError",
    "MissingDependencyError",
    "MissingFileError",
    "SearchError",
    "StorageError",
    "DeepLabConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "UntrustedCodeError",
    "UNetConfig",
    "build_model",
    "fit",
    "load_checkpoint",
    "model_from_name",
    "MetricAccumulator",
    "MetricProgram",
    "SurrogateLoss",
    "__version__",
    "describe_dataset",
    "evaluate",
    "evaluate_per_class",
    "load_dataset",
    "load_loss",
    "save_loss",
    "trust_code",
]
