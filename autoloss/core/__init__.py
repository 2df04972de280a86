"""The one idea: a metric written once as a program over an operator set. With the exact
operators (:class:`ExactOps`) a program gives the metric; with the relaxed ones
(:class:`RelaxedOps`, curves from a :class:`RelaxationFamily`) the differentiable surrogate.

    operators  the operator sets (OperatorSet protocol, ExactOps, RelaxedOps; shapes documented)
    relaxations, tensor_curves  the parameterised curves and their tensor form
    tensor_ops, traced_filters  the operators in a form torch.compile fuses
    programs   the metric programs (mIoU, FWIoU, BIoU, BF1, mAcc, gAcc, ...)
    metrics    the exact metrics over a dataset (MetricAccumulator, evaluate)
"""

from autoloss.core.metrics import (
    METRIC_NAMES,
    MetricAccumulator,
    check_labels,
    evaluate,
    evaluate_per_class,
)
from autoloss.core.operators import ExactOps, OperatorSet, RelaxedOps, one_hot
from autoloss.core.programs import BUILTIN_PROGRAMS, MetricProgram, get_program, load_user_program
from autoloss.core.relaxations import (
    FAMILIES,
    BezierCurve,
    Curve,
    IdentityCurve,
    LinearCurve,
    RelaxationFamily,
    curve_from_dict,
    family,
)

__all__ = ["BUILTIN_PROGRAMS", "FAMILIES", "METRIC_NAMES", "BezierCurve", "Curve", "ExactOps",
           "IdentityCurve", "LinearCurve", "MetricAccumulator", "MetricProgram", "OperatorSet",
           "RelaxationFamily", "RelaxedOps", "check_labels", "curve_from_dict", "evaluate",
           "evaluate_per_class", "family", "get_program", "load_user_program", "one_hot"]
