"""Glue to use an autoloss loss in other training pipelines, one small module per framework.

- :class:`PipelineLoss` (any loop, MONAI, segmentation_models_pytorch): logits at any
  resolution upsampled to the labels, ``[N,1,H,W]`` integer labels accepted.
- :class:`TrainerLoss` (Hugging Face ``transformers``): ``Trainer(compute_loss_func=...)``.
- :class:`MMSegLoss` (MMSegmentation): mmseg's loss signature; the config names it through
  ``custom_imports=dict(imports=["autoloss.integrations.mmseg_plugin"])``.
- ``autoloss.integrations.lightning.SegmentationModule`` (PyTorch Lightning): imported from its
  module, which needs ``lightning``; nothing here imports a framework.
"""

from autoloss.integrations.huggingface import TrainerLoss
from autoloss.integrations.mmseg import MMSegLoss
from autoloss.integrations.pipeline_loss import LossLike, PipelineLoss, build_loss, match_labels

__all__ = ["LossLike", "MMSegLoss", "PipelineLoss", "TrainerLoss", "build_loss", "match_labels"]
