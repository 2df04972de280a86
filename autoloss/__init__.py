"""autoloss: search differentiable surrogate losses for semantic-segmentation metrics.

Public surface (explicit re-exports)::

    from autoloss import evaluate, MetricAccumulator, load_loss, save_loss, SurrogateLoss
"""

from autoloss.metrics import METRIC_NAMES, MetricAccumulator, evaluate, evaluate_per_class
from autoloss.programs import MetricProgram

__version__ = "0.1.0"

__all__ = [
    "METRIC_NAMES",
    "MetricAccumulator",
    "MetricProgram",
    "__version__",
    "evaluate",
    "evaluate_per_class",
]
