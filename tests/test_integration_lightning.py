"""PyTorch Lightning: SegmentationModule trains a user's network a few steps with an autoloss
loss and validates it with MetricAccumulator, whose mIoU matches an independent evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("lightning", reason="lightning is not installed "
                                        "(pip install 'autoloss[frameworks]')")

import lightning as L  # noqa: E402

from autoloss.core.metrics import evaluate  # noqa: E402
from autoloss.data import load_dataset  # noqa: E402
from autoloss.integrations.lightning import SegmentationModule  # noqa: E402

SPEC = "shapes?n=8&size=32"


class _HalfResNet(nn.Module):
    """A user's own network: logits at half the input's resolution."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _loader(split: str, n: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(load_dataset(SPEC, split, subset=n), batch_size=2)


def test_lightning_module_trains_and_validates_with_exact_metrics():
    torch.manual_seed(0)
    net = _HalfResNet(6)
    module = SegmentationModule(net, "asl-voc-miou", num_classes=6, ignore_index=255,
                                metrics=["miou", "biou"], tol=1, lr=1e-2)
    before = [p.detach().clone() for p in net.parameters()]
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(module, _loader("train", 6))
    assert trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert 0 < float(trainer.callback_metrics["train/loss"]) <= 1
    scores = trainer.validate(module, _loader("val", 2), verbose=False)[0]
    # the same predictions scored independently: upsampled logits, argmax, exact mIoU
    images, labels = next(iter(_loader("val", 2)))
    with torch.no_grad():
        logits = nn.functional.interpolate(net(images), size=labels.shape[-2:], mode="bilinear",
                                           align_corners=False)
    expected = evaluate(logits.argmax(1), labels, num_classes=6, ignore_index=255, tol=1,
                        metrics=["miou", "biou"])
    assert scores["val/miou"] == pytest.approx(expected["miou"], abs=1e-6)
    assert scores["val/biou"] == pytest.approx(expected["biou"], abs=1e-6)
    assert 0 < scores["val/loss"] <= 1


def test_lightning_module_takes_monai_style_dict_batches():
    torch.manual_seed(0)
    module = SegmentationModule(_HalfResNet(3), "dice", num_classes=3)
    images = torch.rand(2, 3, 16, 16)
    labels = torch.randint(0, 3, (2, 1, 16, 16))
    loss = module.training_step({"image": images, "label": labels}, 0)
    assert loss.requires_grad and torch.isfinite(loss)
    with pytest.raises(TypeError, match="'image' and 'label'.*keys \\['img', 'seg'\\]"):
        module.training_step({"img": images, "seg": labels}, 0)
