"""Frozen-trunk proxy pieces (``ProxyConfig(finetune="last")``): the UNet trunk run once per
proxy, its features cached as a dataset, and the small trainable tail fine-tuned on them.

Measured in ``results/proxy_fidelity.md``: cheap and nearly noiseless, but it ranked losses
poorly against full retraining, so it is not the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.data import normalize
from autoloss.train.models import UNet

__all__ = ["FeatureSplit", "UNetTail", "unet_trunk"]


class UNetTail(nn.Module):
    """The trainable end of a UNet: its last decoder block and the classifier, applied to the
    block's input ``[N, 2*width, H, W]`` (the upsampled deep features concatenated with the
    full-resolution skip) -> logits ``[N, C, H, W]``. Shares the UNet's parameters."""

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.block = unet.up[-1]
        self.head = unet.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


@torch.no_grad()
def unet_trunk(unet: UNet, x: torch.Tensor) -> torch.Tensor:
    """``unet.trunk(x)`` without autograd: images ``[N, C_in, H, W]`` -> the last decoder
    block's input ``[N, 2*width, H, W]`` (so ``UNetTail(unet)(trunk) == unet(x)``)."""
    return unet.trunk(x)


@dataclass
class FeatureSplit:
    """Trunk features as a dataset for ``fit``: ``arrays()`` gives float16 ``[N, H, W, F]``
    features and the split's labels; mean 0 and std 1 (no normalisation)."""

    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    ignore_index: int | None
    split: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.mean, self.std = (0.0,) * self.features.shape[-1], (1.0,) * self.features.shape[-1]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.features, self.labels

    @classmethod
    def of(cls, unet: UNet, data: Any, device: torch.device, batch_size: int = 16
           ) -> FeatureSplit:
        images, labels = data.arrays()
        unet = unet.to(device).eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
            x = x.to(device).float()
            x = x.div_(255) if images.dtype == np.uint8 else x
            x = normalize(x.permute(0, 3, 1, 2), data.mean, data.std)
            feats = unet_trunk(unet, x)
            out.append(feats.permute(0, 2, 3, 1).to("cpu", torch.float16).numpy())
        return cls(np.concatenate(out), labels, int(data.num_classes), data.ignore_index,
                   str(data.split))
