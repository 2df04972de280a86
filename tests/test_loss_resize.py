"""Decoder-resolution logits: ``resize="bilinear"`` on every loss upsamples logits to the labels'
size (``align_corners=False``, as mmseg and Hugging Face do), and a shape mismatch by an integer
factor says to pass it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_cases import BINARY, all_names, build, inputs

from autoloss.errors import InvalidValueError
from autoloss.losses import load_loss

SHAPE = (2, 3, 32, 48)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("resize")


@pytest.mark.parametrize("name", all_names())
def test_resize_equals_the_loss_of_upsampled_logits(name, folder, single_thread) -> None:
    logits, labels = inputs(name, SHAPE, dtype=torch.float64)
    small = logits[:, :, ::4, ::4].clone().requires_grad_(True)  # [N,C,8,12]: 1/4 resolution
    with pytest.raises(InvalidValueError, match="4x the logits' size.*resize='bilinear'"):
        build(name, folder)(small, labels)
    value = build(name, folder, resize="bilinear")(small, labels)
    value.backward()
    ref_in = small.detach().clone().requires_grad_(True)
    up = F.interpolate(ref_in, size=SHAPE[2:], mode="bilinear", align_corners=False)
    ref = build(name, folder)(up, labels)
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(small.grad, ref_in.grad, rtol=1e-10, atol=1e-12)
    same = logits.clone()  # logits already at the labels' size are untouched
    torch.testing.assert_close(build(name, folder, resize="bilinear")(same, labels),
                               build(name, folder)(same, labels), rtol=0, atol=0)


def test_resize_is_in_the_spec_only_when_set(folder) -> None:
    for name in ("dice", "lovasz_softmax", "surrogate", "cross_entropy", "rmi"):
        assert "resize" not in build(name, folder).to_dict()
        spec = build(name, folder, resize="bilinear").to_dict()
        assert spec["resize"] == "bilinear"
        assert load_loss(spec).to_dict() == spec


def test_resize_option_is_checked(folder) -> None:
    with pytest.raises(InvalidValueError, match="resize must be one of.*resize='bilinar'"):
        build("dice", folder, resize="bilinar")


def test_mismatch_without_integer_factor_has_no_hint(folder) -> None:
    logits, labels = inputs("dice", SHAPE)
    with pytest.raises(InvalidValueError) as err:
        build("dice", folder)(logits[:, :, :30, :45], labels)
    assert "resize" not in str(err.value)
    with pytest.raises(InvalidValueError, match=r"2x4 the logits' size"):
        build("dice", folder)(logits[:, :, ::2, ::4], labels)


def test_binary_and_multilabel_modes_resize(folder) -> None:
    logits, labels = inputs(sorted(BINARY)[0], SHAPE, dtype=torch.float64)
    small = logits[:, :, ::2, ::2]
    up = F.interpolate(small, size=SHAPE[2:], mode="bilinear", align_corners=False)
    for spec in ({"name": "dice", "mode": "binary"}, {"name": "lovasz_hinge"},
                 {"name": "binary_cross_entropy"}):
        torch.testing.assert_close(load_loss(spec, resize="bilinear", ignore_index=255)(small, labels),
                                   load_loss(spec, ignore_index=255)(up, labels))
    multi = torch.stack([labels, torch.where(labels == 255, 255, 1 - labels)], dim=1)
    small2 = torch.cat([small, -small], dim=1)
    up2 = F.interpolate(small2, size=SHAPE[2:], mode="bilinear", align_corners=False)
    spec = {"name": "jaccard", "mode": "multilabel", "ignore_index": 255}
    torch.testing.assert_close(load_loss(spec, resize="bilinear")(small2, multi),
                               load_loss(spec)(up2, multi))
