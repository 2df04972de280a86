"""The hand-designed baseline losses by name: one literal dict, no registry.

Each entry is an ``nn.Module`` class taking logits ``[N,C,H,W]`` (``[N,H,W]`` or ``[N,1,H,W]``
for the binary losses) and labels; its keyword-only constructor lists its options.
"""

from __future__ import annotations

from torch import nn

from autoloss.losses.cross_entropy import BinaryCrossEntropyLoss, CrossEntropyLoss
from autoloss.losses.focal import FocalLoss
from autoloss.losses.jdt import CompatibleTverskyLoss, DiceSemimetricLoss, JaccardMetricLoss
from autoloss.losses.lovasz import LovaszHingeLoss, LovaszSoftmaxLoss
from autoloss.losses.region import DiceLoss, JaccardLoss, TverskyLoss
from autoloss.losses.rmi import RMILoss

__all__ = ["BASELINES"]

BASELINES: dict[str, type[nn.Module]] = {
    "cross_entropy": CrossEntropyLoss,
    "binary_cross_entropy": BinaryCrossEntropyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "tversky": TverskyLoss,
    "lovasz_softmax": LovaszSoftmaxLoss,
    "lovasz_hinge": LovaszHingeLoss,
    "jaccard_metric": JaccardMetricLoss,
    "dice_semimetric": DiceSemimetricLoss,
    "compatible_tversky": CompatibleTverskyLoss,
    "rmi": RMILoss,
}
