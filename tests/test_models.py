"""Tests of autoloss.train.models: shapes at any size, gradients, configs, devices, predict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoloss.train.models import (
    DeepLabConfig,
    UNetConfig,
    build_model,
    config_from_dict,
    config_to_dict,
    count_parameters,
    model_from_name,
    pick_device,
    predict,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread


TINY = {"width": 4, "depth": 2}


@pytest.mark.parametrize("arch", ["unet", "deeplab"])
@pytest.mark.parametrize("size", [(64, 64), (37, 51), (90, 120), (9, 13)])
def test_logits_have_input_size(arch: str, size: tuple[int, int]) -> None:
    model = model_from_name(arch, in_channels=3, num_classes=5, **TINY, seed=0)
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("config", [
    UNetConfig(in_channels=1, num_classes=3, width=4, depth=3, norm="group"),
    UNetConfig(in_channels=3, num_classes=2, width=6, depth=1),
    DeepLabConfig(in_channels=1, num_classes=3, width=4, depth=3, rates=(1, 3), norm="group"),
    DeepLabConfig(in_channels=3, num_classes=7, width=4, depth=1, aspp_channels=8),
])
def test_configurations_and_batch_of_one(config: UNetConfig | DeepLabConfig) -> None:
    model = build_model(config).train()
    out = model(torch.randn(1, config.in_channels, 33, 47))  # batch 1 in train mode works
    assert out.shape == (1, config.num_classes, 33, 47)
    if config.norm == "group":
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


@pytest.mark.parametrize("arch", ["unet", "deeplab"])
def test_every_parameter_gets_a_gradient(arch: str) -> None:
    model = model_from_name(arch, in_channels=3, num_classes=4, **TINY, seed=1)
    x = torch.randn(2, 3, 30, 42)
    y = torch.randint(0, 4, (2, 30, 42))
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_parameter_counts_grow_with_width_and_depth() -> None:
    counts = {}
    for arch in ("unet", "deeplab"):
        small = count_parameters(model_from_name(arch, in_channels=3, num_classes=11, **TINY))
        wide = count_parameters(model_from_name(arch, in_channels=3, num_classes=11, width=8,
                                                depth=2))
        deep = count_parameters(model_from_name(arch, in_channels=3, num_classes=11, width=4,
                                                depth=3))
        assert 0 < small < wide and small < deep
        counts[arch] = small
    # a hand count of the smallest UNet: width 2, depth 1, 1 input channel, 2 classes
    # conv weights (no bias) + norm affine (2 per channel), then the 1x1 head with bias
    model = build_model(UNetConfig(in_channels=1, num_classes=2, width=2, depth=1))
    down = (1 * 2 * 9 + 4) + (2 * 2 * 9 + 4) + (2 * 4 * 9 + 8) + (4 * 4 * 9 + 8)
    reduce = 4 * 2 + 4
    up = (4 * 2 * 9 + 4) + (2 * 2 * 9 + 4)
    head = 2 * 2 + 2
    assert count_parameters(model) == down + reduce + up + head


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = model_from_name("deeplab", in_channels=3, num_classes=3, **TINY, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = model_from_name("deeplab", in_channels=3, num_classes=3, **TINY, seed=7)
    c = model_from_name("deeplab", in_channels=3, num_classes=3, **TINY, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_model_from_name_errors() -> None:
    with pytest.raises(ValueError, match="did you mean 'unet'"):
        model_from_name("unte", in_channels=3, num_classes=2)
    with pytest.raises(ValueError, match="deeplab"):
        model_from_name("segformer", in_channels=3, num_classes=2)
    with pytest.raises(TypeError):
        model_from_name("unet", in_channels=3, num_classes=2, widht=4)  # type: ignore[call-arg]


@pytest.mark.parametrize("bad, word", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 2, "width": 0}, "width"),
    ({"num_classes": 2, "depth": 2.5}, "depth"),
    ({"num_classes": 2, "norm": "layer"}, "norm"),
])
def test_config_validation_names_the_argument(bad: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        UNetConfig(**bad)
    with pytest.raises(ValueError, match=word):
        DeepLabConfig(**bad)
    with pytest.raises(ValueError, match="rates"):
        DeepLabConfig(num_classes=2, rates=(1, 0))


def test_config_dict_round_trip() -> None:
    for config in (UNetConfig(in_channels=1, num_classes=4, width=5, norm="group"),
                   DeepLabConfig(num_classes=3, rates=(2, 5), aspp_channels=12)):
        data = config_to_dict(config)
        assert data["arch"] in ("unet", "deeplab")
        assert all(not isinstance(v, tuple) for v in data.values())  # plain (YAML/JSON) values
        assert config_from_dict(data) == config
    with pytest.raises(ValueError, match="widht"):
        config_from_dict({"arch": "unet", "num_classes": 2, "widht": 3})
    with pytest.raises(ValueError, match="arch"):
        config_from_dict({"num_classes": 2})
    with pytest.raises(TypeError):
        build_model({"arch": "unet"})  # type: ignore[arg-type]


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device(None).type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="device"):
        pick_device("gpu0")


def test_predict_is_argmax_in_eval_mode_and_restores_mode() -> None:
    model = model_from_name("unet", in_channels=3, num_classes=4, **TINY, seed=0).train()
    images = torch.rand(5, 3, 20, 28)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    labels = predict(model, images, mean=mean, std=std, batch_size=2)
    assert model.training
    model.eval()
    with torch.no_grad():
        m = torch.tensor(mean).view(1, 3, 1, 1)
        s = torch.tensor(std).view(1, 3, 1, 1)
        expected = model((images - m) / s).argmax(dim=1)
    assert labels.dtype == torch.int64 and torch.equal(labels, expected)
    assert torch.equal(predict(model, images[2], mean=mean, std=std), expected[2])
    as_uint8 = (images * 255).round().to(torch.uint8)
    assert predict(model, as_uint8).shape == (5, 20, 28)
    with pytest.raises(ValueError, match="mean and std"):
        predict(model, images, mean=mean)
