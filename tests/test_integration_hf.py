"""Hugging Face transformers: a tiny SegFormer (random init, no download) trains a few steps
with an autoloss loss through ``Trainer(compute_loss_func=TrainerLoss(...))``; its logits are at
1/4 of the labels' size and are upsampled by the adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install 'autoloss[frameworks]')")
pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate, not installed")

from autoloss.data import load_dataset  # noqa: E402
from autoloss.integrations import TrainerLoss  # noqa: E402
from autoloss.losses import load_loss  # noqa: E402


def _segformer(num_labels: int):
    config = transformers.SegformerConfig(
        num_channels=3, num_labels=num_labels, num_encoder_blocks=2, depths=[1, 1],
        sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2],
        num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16)
    torch.manual_seed(0)
    return transformers.SegformerForSemanticSegmentation(config)


class _Items(torch.utils.data.Dataset):
    """autoloss's embedded shapes as the dicts a transformers Trainer feeds the model."""

    def __init__(self, n: int) -> None:
        self.data = load_dataset("shapes?n=8&size=32", "train", subset=n)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, label = self.data[i]
        return {"pixel_values": image, "labels": label[None]}  # [1,H,W]: MONAI-style labels


class _Recording(TrainerLoss):
    def forward(self, outputs, labels, num_items_in_batch=None):  # type: ignore[override]
        self.calls.append((tuple(outputs.logits.shape), tuple(labels.shape), num_items_in_batch))
        return super().forward(outputs, labels, num_items_in_batch)


def test_segformer_trains_with_an_autoloss_loss_through_compute_loss_func(tmp_path):
    model = _segformer(num_labels=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = _Recording("asl-voc-miou", ignore_index=255)
    loss.calls = []
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-3,
        use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Items(6),
                                   compute_loss_func=loss)
    trainer.train()
    assert len(loss.calls) == 3
    assert all(logits == (2, 6, 8, 8) and labels == (2, 1, 32, 32) for logits, labels, _ in
               loss.calls)  # 1/4-resolution logits against full-size labels
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(0 < v <= 1 for v in losses)  # 1 - soft mIoU, not CE
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_trainer_loss_equals_the_loss_on_upsampled_logits_and_scales_for_accumulation():
    model = _segformer(num_labels=6).eval()
    items = _Items(2)
    batch = torch.utils.data.default_collate([items[0], items[1]])
    outputs = model(pixel_values=batch["pixel_values"])
    labels = batch["labels"]
    up = F.interpolate(outputs.logits, size=(32, 32), mode="bilinear", align_corners=False)
    expected = load_loss("asl-voc-miou", ignore_index=255)(up, labels[:, 0])
    loss = TrainerLoss("asl-voc-miou")
    torch.testing.assert_close(loss(outputs, labels), expected)
    torch.testing.assert_close(loss(outputs, labels, num_items_in_batch=labels.numel()), expected)
    # two equal micro-batches accumulated: each weighs half
    torch.testing.assert_close(loss(outputs, labels, num_items_in_batch=2 * labels.numel()),
                               expected / 2)
    torch.testing.assert_close(loss({"logits": outputs.logits}, labels), expected)
    with pytest.raises(ValueError, match="labels=None"):
        loss(outputs, None)
    with pytest.raises(TypeError, match="'logits' tensor"):
        loss({"loss": expected}, labels)
