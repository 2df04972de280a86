"""Training augmentation (random scale, crop, horizontal flip) and normalisation, in torch.

Every random draw comes from the ``torch.Generator`` passed in, so a seeded generator gives the
same batch every time. Images are resized bilinearly (antialiased when shrinking), labels with
nearest neighbour (no new values); pixels outside the scaled image are padded with 0 (images)
and ``ignore_index`` (labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autoloss.errors import InvalidTypeError, InvalidValueError

__all__ = ["Augment", "normalize", "to_tensors"]


def to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    """A numpy batch (``images`` ``[B,H,W,C]`` uint8 or float in [0, 1], ``labels`` ``[B,H,W]``)
    as torch ``(float32 [B,C,H,W] in [0, 1], int64 [B,H,W])``."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    return x.permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels.astype(np.int64))


def normalize(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
              ) -> Tensor:
    """``(images - mean[c]) / std[c]`` per channel; ``images`` ``[B,C,H,W]`` or ``[C,H,W]``."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).reshape(-1, 1, 1)
    channels = images.shape[-3] if images.dim() >= 3 else -1
    if images.dim() not in (3, 4) or mean_t.numel() != channels or std_t.numel() != channels:
        raise InvalidValueError(f"images must be [B,C,H,W] or [C,H,W] with C = len(mean) = len(std), "
                         f"but got images {tuple(images.shape)}, {len(mean_t)} means and "
                         f"{len(std_t)} stds")
    if bool((std_t <= 0).any()):
        raise InvalidValueError(f"std must be positive, but got {std_t.flatten().tolist()}")
    return (images - mean_t) / std_t


def _nearest_indices(size_in: int, size_out: int) -> Tensor:
    """Source rows for a nearest resize (pixel-centre rule, as ``data.resize_label``)."""
    idx = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out).long()
    return idx.clamp_(max=size_in - 1)


class Augment:
    """Random scale, random crop and random horizontal flip of a batch.

    Args:
        crop: output ``(height, width)``; None keeps the input size (scale, then crop or pad
            back to it).
        scale: range of the per-image scale factor, drawn uniformly; None or ``(1, 1)``: no
            scaling.
        flip: flip each image left-right with probability 1/2.
        ignore_index: label of padded pixels. With None, nothing is padded: each image's scale
            is raised to the smallest value whose result covers the crop.

    ``__call__(images float [B,C,H,W], labels long [B,H,W], generator)`` returns
    ``(images [B,C,h,w], labels [B,h,w])`` with ``(h, w) = crop``.
    """

    def __init__(self, *, crop: tuple[int, int] | None,
                 scale: tuple[float, float] | None = (0.75, 1.25), flip: bool = True,
                 ignore_index: int | None) -> None:
        if crop is not None and (len(crop) != 2 or min(crop) < 1):
            raise InvalidValueError(f"crop must be (height, width) with positive sides or None, "
                             f"but got {crop=}")
        if scale is not None and (len(scale) != 2 or not 0 < scale[0] <= scale[1]):
            raise InvalidValueError(f"scale must be (low, high) with 0 < low <= high or None, "
                             f"but got {scale=}")
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        self.flip = bool(flip)
        self.ignore_index = ignore_index

    def __repr__(self) -> str:
        return (f"Augment(crop={self.crop}, scale={self.scale}, flip={self.flip}, "
                f"ignore_index={self.ignore_index})")

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
        if images.dim() != 4 or labels.dim() != 3 or images.shape[0] != labels.shape[0] \
                or images.shape[2:] != labels.shape[1:]:
            raise InvalidValueError(f"images must be [B,C,H,W] and labels [B,H,W] of the same B,H,W, "
                             f"but got images {tuple(images.shape)} and labels "
                             f"{tuple(labels.shape)}")
        if not images.is_floating_point() or labels.is_floating_point():
            raise InvalidTypeError(f"images must be float and labels integer, but got {images.dtype} "
                            f"and {labels.dtype}")
        b, c, h, w = images.shape
        ch, cw = self.crop or (h, w)
        u = torch.rand(b, 4, generator=generator, dtype=torch.float64)  # scale, y, x, flip
        low, high = self.scale or (1.0, 1.0)
        factors = (low + (high - low) * u[:, 0]).tolist()
        pad_value = self.ignore_index if self.ignore_index is not None else 0
        out_images = images.new_zeros((b, c, ch, cw))
        out_labels = labels.new_full((b, ch, cw), pad_value)
        for i, factor in enumerate(factors):
            sh, sw = max(1, round(h * factor)), max(1, round(w * factor))
            if self.ignore_index is None and (sh < ch or sw < cw):  # cover the crop, no padding
                factor = max(factor, ch / h, cw / w)
                sh, sw = max(ch, round(h * factor)), max(cw, round(w * factor))
            image, label = images[i:i + 1], labels[i]
            if (sh, sw) != (h, w):
                image = F.interpolate(image, size=(sh, sw), mode="bilinear",
                                      align_corners=False, antialias=sh < h or sw < w)
                rows = _nearest_indices(h, sh).to(label.device)
                cols = _nearest_indices(w, sw).to(label.device)
                label = label[rows[:, None], cols[None, :]]
            oy = int(u[i, 1] * (sh - ch + 1)) if sh > ch else 0
            ox = int(u[i, 2] * (sw - cw + 1)) if sw > cw else 0
            rh, rw = min(sh, ch), min(sw, cw)
            out_images[i, :, :rh, :rw] = image[0, :, oy:oy + rh, ox:ox + rw]
            out_labels[i, :rh, :rw] = label[oy:oy + rh, ox:ox + rw]
        if self.flip:
            flipped = (u[:, 3] < 0.5).to(images.device)
            out_images = torch.where(flipped[:, None, None, None], out_images.flip(-1), out_images)
            out_labels = torch.where(flipped[:, None, None], out_labels.flip(-1), out_labels)
        return out_images, out_labels
