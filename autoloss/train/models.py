"""Small segmentation networks for proxy training and retraining, built from dataclass configs.

Two families, so that a loss searched with one can be tested on the other:

- :class:`UNetConfig` -> a compact UNet (Ronneberger et al., MICCAI 2015): ``depth`` max-pool
  stages of two 3x3 conv-norm-ReLU layers, channels ``width * 2**level``; the decoder reduces the
  deep features with a 1x1 conv, upsamples them bilinearly **to the skip's exact size** (so any
  ``H, W`` works, not only multiples of ``2**depth``), concatenates the skip and applies two 3x3
  layers.
- :class:`DeepLabConfig` -> a small DeepLabv3-style net (Chen et al., arXiv:1706.05587): a
  strided-conv encoder (output stride ``2**depth``), atrous spatial pyramid pooling (a 1x1 branch,
  one 3x3 branch per atrous rate, an image-pooling branch) and bilinear upsampling of the logits
  to the input size.

Every model maps ``[N, in_channels, H, W]`` float images to ``[N, num_classes, H, W]`` logits and
keeps its config as ``model.config``. Checkpoint files (written by ``autoloss.train.trainer.fit``) store
it with :func:`config_to_dict`, so :func:`autoloss.train.checkpoint.load_checkpoint` rebuilds the model
from the file alone.

Example:
    >>> model = model_from_name("unet", in_channels=3, num_classes=6, width=4, depth=2)
    >>> model(torch.zeros(2, 3, 37, 50)).shape
    torch.Size([2, 6, 37, 50])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoloss.data import normalize
from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean
from autoloss.utils.typed_fields import reject_unknown

__all__ = ["DeepLab", "DeepLabConfig", "ModelConfig", "UNet", "UNetConfig", "build_model",
           "config_from_dict", "config_to_dict", "count_parameters", "logits_at",
           "model_from_name", "pick_device", "predict"]

_NORMS = ("batch", "group")


def _check_common(config: UNetConfig | DeepLabConfig) -> None:
    for name in ("in_channels", "num_classes", "width", "depth"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidValueError(f"{name} must be a positive int, but got {name}={value!r}")
    if config.norm not in _NORMS:
        raise InvalidValueError(f"norm must be one of {_NORMS}, but got norm={config.norm!r}")
    if not isinstance(config.groups, int) or config.groups < 1:
        raise InvalidValueError(f"groups must be a positive int, but got groups={config.groups!r}")


@dataclass(frozen=True, kw_only=True)
class UNetConfig:
    """A compact UNet.

    Args:
        in_channels: image channels C_in. num_classes: output classes C.
        width: channels of the full-resolution stage; level ``l`` has ``width * 2**l``.
        depth: number of 2x down-sampling stages (the coarsest map is ``H / 2**depth``).
        norm: ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm, independent of batch size).
        groups: GroupNorm groups (the largest divisor of the channels not above this).
    """

    in_channels: int = 3
    num_classes: int
    width: int = 16
    depth: int = 3
    norm: str = "batch"
    groups: int = 8

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True, kw_only=True)
class DeepLabConfig:
    """A small DeepLabv3-style net.

    Args:
        in_channels: image channels C_in. num_classes: output classes C.
        width: channels of the first stride-2 stage; stage ``s`` has ``width * 2**s``.
        depth: number of stride-2 stages (output stride ``2**depth``).
        rates: atrous rates of the 3x3 ASPP branches (in pixels of the coarsest map).
        aspp_channels: channels of each ASPP branch and of the head (default ``4 * width``).
        norm, groups: as in :class:`UNetConfig`.
    """

    in_channels: int = 3
    num_classes: int
    width: int = 16
    depth: int = 3
    rates: tuple[int, ...] = field(default=(1, 2, 4))
    aspp_channels: int | None = None
    norm: str = "batch"
    groups: int = 8

    def __post_init__(self) -> None:
        _check_common(self)
        rates = tuple(self.rates)
        if not rates or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1
                                for r in rates):
            raise InvalidValueError(f"rates must be a non-empty sequence of positive ints, but got "
                             f"rates={self.rates!r}")
        object.__setattr__(self, "rates", rates)
        if self.aspp_channels is not None and (not isinstance(self.aspp_channels, int)
                                               or self.aspp_channels < 1):
            raise InvalidValueError(f"aspp_channels must be a positive int or None, but got "
                             f"aspp_channels={self.aspp_channels!r}")


ModelConfig = UNetConfig | DeepLabConfig

# name -> config class: one literal dict (used by model_from_name and checkpoints)
_ARCHS: dict[str, type[UNetConfig] | type[DeepLabConfig]] = {
    "unet": UNetConfig,
    "deeplab": DeepLabConfig,
}


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
    return nn.GroupNorm(g, channels)


def _conv(c_in: int, c_out: int, *, norm: str, groups: int, stride: int = 1,
          dilation: int = 1, kernel: int = 3) -> nn.Sequential:
    """conv (no bias, followed by a norm) -> norm -> ReLU; 'same' padding."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, dilation=dilation, bias=False),
        _norm(norm, c_out, groups),
        nn.ReLU(inplace=True),
    )


def _up(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UNet(nn.Module):
    """Compact UNet: ``[N, C_in, H, W]`` -> logits ``[N, C, H, W]`` (see :class:`UNetConfig`)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        opts = {"norm": config.norm, "groups": config.groups}
        chans = [config.width * 2**level for level in range(config.depth + 1)]
        self.down = nn.ModuleList()
        c_prev = config.in_channels
        for c in chans:
            self.down.append(nn.Sequential(_conv(c_prev, c, **opts), _conv(c, c, **opts)))
            c_prev = c
        self.reduce = nn.ModuleList()  # 1x1: deep channels -> skip channels, before upsampling
        self.up = nn.ModuleList()
        for level in reversed(range(config.depth)):
            c = chans[level]
            self.reduce.append(_conv(chans[level + 1], c, kernel=1, **opts))
            self.up.append(nn.Sequential(_conv(2 * c, c, **opts), _conv(c, c, **opts)))
        self.head = nn.Conv2d(chans[0], config.num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.up[-1](self.trunk(x)))

    def trunk(self, x: Tensor) -> Tensor:
        """Everything before the last decoder block: images ``[N, C_in, H, W]`` -> that block's
        input ``[N, 2*width, H, W]`` (upsampled deep features and the full-resolution skip)."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise InvalidValueError(f"input must be [N,{self.config.in_channels},H,W], but got shape "
                             f"{tuple(x.shape)}")
        skips = []
        for level, block in enumerate(self.down):
            if level > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for i, (reduce, block) in enumerate(zip(self.reduce, self.up)):
            skip = skips.pop()
            x = torch.cat([_up(reduce(x), skip.shape[-2:]), skip], dim=1)
            if i < len(self.up) - 1:
                x = block(x)
        return x


class DeepLab(nn.Module):
    """Small DeepLabv3-style net: ``[N, C_in, H, W]`` -> logits ``[N, C, H, W]``.

    ASPP (Chen et al. 2017, Sec. 3.3): branches ``1x1``, ``3x3`` with dilation ``r`` for each
    rate, and global average pooling -> 1x1 -> broadcast; concatenated, projected with a 1x1
    conv, refined by a 3x3 conv, classified by a 1x1 conv and upsampled bilinearly to ``H, W``.
    The pooling branch has no norm layer, so training with batch size 1 works.
    """

    def __init__(self, config: DeepLabConfig) -> None:
        super().__init__()
        self.config = config
        opts = {"norm": config.norm, "groups": config.groups}
        stages = []
        c_prev = config.in_channels
        for s in range(config.depth):
            c = config.width * 2**s
            stages.append(nn.Sequential(_conv(c_prev, c, stride=2, **opts), _conv(c, c, **opts)))
            c_prev = c
        self.encoder = nn.Sequential(*stages)
        a = config.aspp_channels or 4 * config.width
        self.branches = nn.ModuleList([_conv(c_prev, a, kernel=1, **opts)])
        for rate in config.rates:
            self.branches.append(_conv(c_prev, a, dilation=rate, **opts))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_prev, a, 1),
                                  nn.ReLU(inplace=True))
        self.project = _conv(a * (len(config.rates) + 2), a, kernel=1, **opts)
        self.refine = _conv(a, a, **opts)
        self.head = nn.Conv2d(a, config.num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise InvalidValueError(f"input must be [N,{self.config.in_channels},H,W], but got shape "
                             f"{tuple(x.shape)}")
        size = x.shape[-2:]
        f = self.encoder(x)
        parts = [branch(f) for branch in self.branches]
        parts.append(self.pool(f).expand(-1, -1, f.shape[2], f.shape[3]))
        y = self.refine(self.project(torch.cat(parts, dim=1)))
        return _up(self.head(y), size)


def build_model(config: ModelConfig, *, seed: int | None = None) -> nn.Module:
    """The network described by ``config``; with ``seed``, its initial weights depend only on it
    (the global torch RNG is left untouched)."""
    if not isinstance(config, (UNetConfig, DeepLabConfig)):
        raise InvalidTypeError(f"config must be a UNetConfig or DeepLabConfig, but got "
                        f"{type(config).__name__}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if isinstance(config, UNetConfig):
            return UNet(config)
        return DeepLab(config)


def _arch_class(name: str) -> type[UNetConfig] | type[DeepLabConfig]:
    if name not in _ARCHS:
        raise InvalidValueError(f"unknown model {name!r}, expected one of {list(_ARCHS)}"
                                f"{did_you_mean(name, _ARCHS)}")
    return _ARCHS[name]


def model_from_name(name: str, *, in_channels: int, num_classes: int, width: int | None = None,
                    depth: int | None = None, seed: int | None = None) -> nn.Module:
    """Build ``"unet"`` or ``"deeplab"`` with default settings, optionally overriding width and
    depth; ``seed`` as in :func:`build_model`."""
    cls = _arch_class(name)
    overrides = {k: v for k, v in (("width", width), ("depth", depth)) if v is not None}
    return build_model(cls(in_channels=in_channels, num_classes=num_classes, **overrides),
                       seed=seed)


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """``{"arch": name, **fields}`` with plain Python values (for checkpoints, JSON, YAML)."""
    for name, cls in _ARCHS.items():
        if type(config) is cls:
            out: dict[str, Any] = {"arch": name}
            for f in dataclasses.fields(config):
                value = getattr(config, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
            return out
    raise InvalidTypeError(f"config must be a UNetConfig or DeepLabConfig, but got "
                    f"{type(config).__name__}")


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`config_to_dict`; unknown keys are an error (they would be typos)."""
    if "arch" not in data:
        raise InvalidValueError(f"model config dict needs an 'arch' key ({list(_ARCHS)}), but got keys "
                         f"{sorted(data)}")
    cls = _arch_class(data["arch"])
    values = {k: v for k, v in data.items() if k != "arch"}
    reject_unknown(values, [f.name for f in dataclasses.fields(cls)],
                   where=f"{data['arch']} model config: ", what="key")
    if "rates" in values:
        values["rates"] = tuple(values["rates"])
    return cls(**values)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> CUDA if available, else CPU; otherwise the named device (checked to exist)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or None, but got "
                         f"device={device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidValueError(f"device={device!r} was requested, but CUDA is not available here; "
                         f"use device='cpu' or None")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidValueError(f"device={device!r} was requested, but MPS is not available here")
    return dev


# ---- inference -------------------------------------------------------------------------------


def logits_at(logits: Tensor, size: Sequence[int], *, num_classes: int | None = None) -> Tensor:
    """A model's logits ``[N, C, h, w]`` for labels of spatial ``size`` ``(H, W)``: checked
    (``C == num_classes`` unless None, ``h <= H``, ``w <= W``) and, when smaller, upsampled
    bilinearly to ``(H, W)`` (``align_corners=False``, as mmseg and Hugging Face do for
    decoder-resolution logits such as SegFormer's 1/4). Returned unchanged at full size."""
    height, width = int(size[0]), int(size[1])
    ok = isinstance(logits, Tensor) and logits.dim() == 4
    if not ok or (num_classes is not None and logits.shape[1] != num_classes) \
            or logits.shape[2] > height or logits.shape[3] > width:
        classes = "C" if num_classes is None else str(num_classes)
        got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InvalidValueError(
            f"the model must output logits [N, {classes}, h, w] for this data (h, w at most the "
            f"input's {height}x{width}; smaller ones are upsampled bilinearly), but got {got}")
    if tuple(logits.shape[2:]) == (height, width):
        return logits
    return _up(logits, (height, width))



@torch.no_grad()
def predict(model: nn.Module, images: Tensor, *, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None, batch_size: int = 16) -> Tensor:
    """Predicted labels int64 ``[N, H, W]`` (or ``[H, W]``) of images ``[N, C, H, W]`` (or
    ``[C, H, W]``): float in [0, 1] or uint8 (divided by 255), normalised with ``mean``/``std``
    when given (pass the dataset's). Runs in ``eval()`` mode; the model's mode is restored."""
    if not isinstance(images, Tensor) or images.dim() not in (3, 4):
        raise InvalidValueError(f"images must be a [N,C,H,W] or [C,H,W] tensor, but got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    single = images.dim() == 3
    x = images[None] if single else images
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    if (mean is None) != (std is None):
        raise InvalidValueError("mean and std must be given together (or neither)")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            if mean is not None:
                xb = normalize(xb, mean, std)
            logits = logits_at(model(xb), xb.shape[-2:])
            out.append(logits.max(dim=1).indices)  # = argmax (first maximum), faster
    finally:
        model.train(was_training)
    labels = torch.cat(out)
    return labels[0] if single else labels
