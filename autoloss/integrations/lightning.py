"""PyTorch Lightning: a ``LightningModule`` that trains any segmentation network with an autoloss
loss and validates it with autoloss's exact metrics (:class:`~autoloss.core.metrics.MetricAccumulator`).

    import lightning as L
    from autoloss.integrations.lightning import SegmentationModule

    module = SegmentationModule(my_net, "searched_loss.yaml", num_classes=11, ignore_index=255)
    L.Trainer(max_epochs=50).fit(module, train_loader, val_loader)

Works with ``lightning`` (``import lightning``) or the older ``pytorch_lightning`` package,
whichever is installed (``pip install "autoloss[frameworks]"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from autoloss.core.metrics import MetricAccumulator
from autoloss.errors import InvalidTypeError, MissingDependencyError
from autoloss.integrations.pipeline_loss import LossLike, PipelineLoss, match_labels

try:
    from lightning.pytorch import LightningModule
except ImportError:
    try:
        from pytorch_lightning import LightningModule
    except ImportError as err:
        raise MissingDependencyError(
            "autoloss.integrations.lightning needs PyTorch Lightning: pip install lightning "
            "(or autoloss[frameworks])") from err

__all__ = ["SegmentationModule"]

Batch = Sequence[Tensor] | Mapping[str, Tensor]


def _unpack(batch: Batch) -> tuple[Tensor, Tensor]:
    """``(images [N,C_in,H,W], labels [N,H,W] or [N,1,H,W])`` of a batch: a pair (autoloss's
    datasets, most loaders) or a dict with ``image`` and ``label`` (MONAI's dictionary
    transforms)."""
    if isinstance(batch, Mapping) and "image" in batch and "label" in batch:
        return batch["image"], batch["label"]
    if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) == 2:
        return batch[0], batch[1]
    raise InvalidTypeError(f"a batch must be (images, labels) or a dict with 'image' and 'label', "
                           f"but got {type(batch).__name__}"
                           + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""))


class SegmentationModule(LightningModule):
    """Train ``model`` with an autoloss loss; validate with exact metrics.

    Args:
        model: any ``nn.Module`` mapping images ``[N,C_in,H,W]`` to logits ``[N,C,h,w]`` (any
            resolution: they are upsampled to the labels for the loss and the metrics).
        loss: a preset or baseline name, an exported loss file, a spec dict or a loss module.
        num_classes: C.
        ignore_index: the data's void label, or None.
        metrics: the metrics validation logs as ``val/<name>`` (autoloss names: ``miou``,
            ``biou``, ``bf1``, ...; user programs ``file.py:name``).
        tol: boundary tolerance in pixels of ``biou`` / ``bf1``.
        lr: learning rate of the default optimiser (AdamW).
        optimizer: ``f(parameters) -> torch.optim.Optimizer`` instead of the default.

    Batches are ``(images, labels)`` or ``{"image": ..., "label": ...}``; labels are integer
    ``[N,H,W]`` or ``[N,1,H,W]``. Logged: ``train/loss`` per step, ``val/loss`` and the
    metrics per validation (summed over the ranks under DDP before they are computed).
    """

    def __init__(self, model: nn.Module, loss: LossLike, *, num_classes: int,
                 ignore_index: int | None = None, metrics: Sequence[str] = ("miou",),
                 tol: int = 5, lr: float = 1e-3,
                 optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None
                 ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InvalidTypeError(f"model must be an nn.Module, but got {type(model).__name__}")
        self.model = model
        self.loss = PipelineLoss(loss, ignore_index=ignore_index)
        self.val_metrics = MetricAccumulator(num_classes=num_classes, ignore_index=ignore_index,
                                             metrics=list(metrics), tol=tol)
        self.lr = lr
        self.optimizer_factory = optimizer

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, labels = _unpack(batch)
        loss = self.loss(self(images), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images, labels = _unpack(batch)
        logits, labels = match_labels(self(images), labels)
        self.log("val/loss", self.loss(logits, labels), batch_size=images.shape[0])
        self.val_metrics.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics.images == 0:
            return
        if self.trainer.world_size > 1:
            self.val_metrics.all_reduce()
        for name, value in self.val_metrics.compute().items():
            self.log(f"val/{name}", value, sync_dist=False)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is not None:
            return self.optimizer_factory(self.parameters())
        return torch.optim.AdamW(self.parameters(), lr=self.lr)
