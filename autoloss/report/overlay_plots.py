"""Qualitative overlays: test images, their ground truth and a model's predictions in class
colours (``autoloss plot --checkpoint``; the comparison overlays of :mod:`autoloss.report.compare_plots`
use the same palette)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from autoloss.errors import InvalidValueError
from autoloss.report.plots import FORMATS, STYLE, save_figure

__all__ = ["class_legend", "class_palette", "colourise", "plot_overlays"]


# ---- qualitative overlays ----------------------------------------------------------------------

def class_palette(num_classes: int) -> np.ndarray:
    """Fixed RGB colours ``[num_classes, 3]`` in [0, 1]: tab10, then the light tab20 shades,
    tab20b and tab20c, then evenly spaced hues. Black is reserved for ignored pixels."""
    cmaps = matplotlib.colormaps
    colours = [cmaps["tab10"](i)[:3] for i in range(10)]
    colours += [cmaps["tab20"](i)[:3] for i in range(1, 20, 2)]
    colours += [cmaps[name](i)[:3] for name in ("tab20b", "tab20c") for i in range(20)]
    extra = max(0, num_classes - len(colours))
    colours += [cmaps["hsv"](i / max(extra, 1))[:3] for i in range(extra)]
    return np.asarray(colours[:num_classes], dtype=float)


def colourise(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``[H, W]`` class indices -> ``[H, W, 3]`` colours; out-of-range (ignored) -> black."""
    rgb = np.zeros((*label.shape, 3), dtype=float)
    valid = (label >= 0) & (label < len(palette))
    rgb[valid] = palette[label[valid]]
    return rgb


def class_legend(fig: Figure, dataset: Any, seen: set[int], palette: np.ndarray) -> None:
    """A legend below ``fig`` of the classes ``seen`` (their palette colours) and of ignored
    pixels (black) when the dataset has an ignore index."""
    handles = [Patch(color=palette[c], label=dataset.class_names[c])
               for c in sorted(seen) if 0 <= c < dataset.num_classes]
    if dataset.ignore_index is not None:
        handles.append(Patch(color="black", label=f"ignored ({dataset.ignore_index})"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))


def plot_overlays(checkpoint: Path | str, data: str, *, split: str = "test", n: int = 4,
                  out: Path | str, formats: Sequence[str] = FORMATS) -> Path:
    """Rows of image | ground truth | prediction for ``n`` evenly spaced images of ``split`` of
    dataset ``data``, predicted by the model in ``checkpoint`` (``autoloss.train.trainer``).

    Class colours from :func:`class_palette`, ignored pixels black, a legend of the class names
    seen. The prediction's title gives its pixel accuracy over valid pixels. Returns the file of
    the first format.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidValueError(f"n must be a positive int, but got {n=}")
    from autoloss.data import load_dataset
    from autoloss.train.checkpoint import load_checkpoint
    from autoloss.train.models import predict

    model, meta = load_checkpoint(Path(checkpoint))
    dataset = load_dataset(data, split)
    if len(dataset) == 0:
        raise InvalidValueError(f"split {split!r} of {data!r} has no images")
    palette = class_palette(dataset.num_classes)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int))
    rows, seen = [], set()
    for index in picks.tolist():
        image, label = dataset[index]
        pred = predict(model, image, mean=dataset.mean, std=dataset.std).cpu().numpy()
        gt = label.numpy()
        valid = (gt >= 0) & (gt < dataset.num_classes)
        acc = float((pred[valid] == gt[valid]).mean()) if valid.any() else float("nan")
        seen.update(np.unique(gt[valid]).tolist(), np.unique(pred).tolist())
        rows.append((index, image.permute(1, 2, 0).numpy(), gt, pred, acc))
    loss = meta.get("loss") if isinstance(meta, dict) else None
    trained = f", trained with {loss.get('metric', loss.get('name', '?'))}" \
        if isinstance(loss, dict) else ""
    height, width = rows[0][2].shape
    panel = 2.8  # inches per image column; rows follow the image aspect ratio
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3 * panel, (panel * height / width + 0.3) * len(rows) + 0.9),
                     layout="constrained")
        axes = fig.subplots(len(rows), 3, squeeze=False)
        for (index, image, gt, pred, acc), row in zip(rows, axes):
            shown = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
            row[0].imshow(np.clip(shown, 0, 1), cmap="gray" if shown.ndim == 2 else None)
            row[1].imshow(colourise(gt, palette), interpolation="nearest")
            row[2].imshow(colourise(pred, palette), interpolation="nearest")
            titles = (f"image #{index}", "ground truth", f"prediction (pixel acc {acc:.3f})")
            for ax, title in zip(row, titles):
                ax.set_title(title)
                ax.set_axis_off()
        class_legend(fig, dataset, seen, palette)
        fig.suptitle(f"{Path(checkpoint).name}{trained}: {data} ({split})")
        return save_figure(fig, out, formats)[0]
