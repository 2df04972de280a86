"""MONAI / segmentation_models_pytorch label layouts: integer labels ``[N,1,H,W]`` (and
``[N,1,D,H,W]`` for volumes) are the same labels as ``[N,H,W]`` for every loss and for
``MetricAccumulator``; float labels in that form are refused, never rounded or read as soft
(issue 25, item 4)."""

from __future__ import annotations

import pytest
import torch
from loss_cases import BINARY, IGNORE, all_names, build, inputs

from autoloss.core.metrics import MetricAccumulator
from autoloss.losses import load_loss
from autoloss.losses.binary import two_class


@pytest.mark.parametrize("name", all_names())
def test_every_loss_reads_n1hw_integer_labels_as_nhw(name, tmp_path):
    loss = build(name, tmp_path)
    logits, labels = inputs(name, (2, 3, 16, 16), block=4)
    torch.testing.assert_close(loss(logits, labels[:, None]), loss(logits, labels))
    torch.testing.assert_close(loss(logits, labels[:, None].to(torch.uint8)), loss(logits, labels))


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "lovasz_softmax", "focal",
                                  "jaccard_metric", "soft-miou"])
def test_volume_losses_read_n1dhw_labels(name):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 6, 6, generator=gen, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 6, 6), generator=gen)
    loss = load_loss(name)
    value = loss(logits, labels[:, None])
    torch.testing.assert_close(value, loss(logits, labels))
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_decoder_resolution_logits_with_n1hw_labels_are_upsampled():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (2, 1, 16, 16), generator=gen)
    loss = load_loss("asl-voc-miou", resize="bilinear")
    up = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear",
                                         align_corners=False)
    torch.testing.assert_close(loss(logits, labels), load_loss("asl-voc-miou")(up, labels[:, 0]))


def test_float_n1hw_labels_are_refused_not_read_as_soft():
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 1, 8, 8)).float()  # MONAI's LoadImage gives floats
    for name in ("cross_entropy", "dice", "soft-miou"):
        with pytest.raises(ValueError, match=r"float \[N,1,...\] target.*target.round\(\).long\(\)"):
            load_loss(name)(logits, labels)
    with pytest.raises(TypeError, match="hard integer labels"):
        load_loss("lovasz_softmax")(logits, labels)


def test_binary_losses_take_n1hw_labels_and_refuse_fractional_floats():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 1, 8, 8, generator=gen)
    labels = torch.randint(0, 2, (2, 8, 8), generator=gen)
    labels[0, 0, 0] = IGNORE
    for name in ("binary_cross_entropy", "lovasz_hinge"):
        loss = load_loss(name, ignore_index=IGNORE)
        torch.testing.assert_close(loss(logits, labels[:, None]), loss(logits, labels))
    dice = load_loss({"name": "dice", "mode": "binary"}, ignore_index=IGNORE)
    torch.testing.assert_close(dice(logits, labels[:, None].float()), dice(logits, labels))
    soft = labels[:, None].float().clamp(max=1) * 0.7
    with pytest.raises(ValueError, match=r"fractional values \[0.699999988079071\].*round"):
        dice(logits, soft)
    with pytest.raises(ValueError, match="fractional"):
        two_class(logits, soft)
    assert set(BINARY) >= {"binary_cross_entropy", "lovasz_hinge"}


def test_metric_accumulator_reads_n1hw_labels_where_unambiguous():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 3, 8, 8, generator=gen)
    target = torch.randint(0, 3, (2, 8, 8), generator=gen)
    target[0, :2] = IGNORE

    def run(pred, tgt):
        acc = MetricAccumulator(num_classes=3, ignore_index=IGNORE, metrics=["miou", "biou"],
                                tol=1)
        acc.update(pred, tgt)
        return acc.compute()

    reference = run(scores, target)
    labels = scores.argmax(1)
    assert run(scores, target[:, None]) == reference  # scores [N,C,H,W], target [N,1,H,W]
    assert run(labels, target[:, None]) == reference  # labels [N,H,W], target [N,1,H,W]
    assert run(labels[:, None], target) == reference  # argmax(keepdim=True), target [N,H,W]
    with pytest.raises(TypeError, match=r"target.round\(\).long\(\)"):
        run(scores, target[:, None].float())
    volume = torch.randn(2, 3, 4, 6, 6, generator=gen)
    vtarget = torch.randint(0, 3, (2, 4, 6, 6), generator=gen)
    assert run(volume, vtarget[:, None]) == run(volume, vtarget)
