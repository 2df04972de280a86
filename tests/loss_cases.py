"""Every loss name ``load_loss`` accepts, with inputs of the right kind: the loss list the
contract tests (precision, global statistics, resize) run over, so a new loss cannot skip them."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from autoloss.losses import SurrogateLoss, load_loss, loss_names, save_loss

#: names whose logits are one foreground channel [N,1,H,W] (labels in {0, 1})
BINARY = {"lovasz_hinge", "binary_cross_entropy", "paddleseg-lovasz-hinge-bce"}
IGNORE = 255

#: curves of a searched loss file, as ``autoloss search`` exports one (Bezier, absolute points)
SEARCHED_CURVES = {
    "inter": {"kind": "bezier", "points": [0.1, 0.5, 0.35, 0.7, 0.62, 0.78]},
    "union": {"kind": "bezier", "points": [0.6, 0.05, 0.8, 0.9, 0.94, 0.98]},
}


def all_names() -> list[str]:
    """Every preset and baseline name (``surrogate`` stands for an exported searched file)."""
    names = loss_names()
    return names["presets"] + names["baselines"]


def searched_file(folder: Path) -> Path:
    """A searched surrogate written as a loss file (the export's format)."""
    path = folder / "searched_miou.yaml"
    if not path.exists():
        save_loss(SurrogateLoss("miou", curves=SEARCHED_CURVES),
                  path, provenance={"source": "tests", "dataset": "synthetic"})
    return path


def build(name: str, folder: Path, **options) -> nn.Module:
    """The loss ``name`` with the ignore index of :func:`inputs` and ``options``."""
    spec = searched_file(folder) if name == "surrogate" else name
    return load_loss(spec, ignore_index=IGNORE, **options)


def inputs(name: str, shape: tuple[int, int, int, int], *, seed: int = 0,
           dtype: torch.dtype = torch.float32, ignored: float = 0.02,
           block: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N,C,H,W]`` (``[N,1,H,W]`` for binary names) and blocky labels ``[N,H,W]``
    with a share ``ignored`` of :data:`IGNORE` pixels."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    classes = 2 if name in BINARY else c
    coarse = torch.randint(0, classes, (n, h // block + 1, w // block + 1), generator=gen)
    labels = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w]
    labels = labels.contiguous()
    labels[torch.rand((n, h, w), generator=gen) < ignored] = IGNORE
    logits = torch.randn((n, 1 if name in BINARY else c, h, w), generator=gen, dtype=dtype)
    logits = logits + 2.0 * torch.nn.functional.one_hot(labels.clamp(0, classes - 1), classes) \
        .permute(0, 3, 1, 2)[:, -logits.shape[1]:].to(dtype)  # a model that is partly right
    return logits, labels
