"""Search a loss for your own network and data, then train with it in your own loop.

    python examples/own_model_and_data.py --out /tmp/own-example      # ~15 s on one core

1. writes a tiny PNG dataset in the per-split folder layout autoloss's ``folder:`` reader takes
   (``OUT/data/{train,val,test}/{images,masks}``, masks are index PNGs: 0 background,
   1 rectangle, 2 disc);
2. searches a surrogate loss for mIoU with 4 trials on it, the proxy training *this file's*
   small CNN (no autoloss model) through the model hook ``proxy={"model": build_cnn}``;
   the search exports ``OUT/search/best_loss.yaml``;
3. loads that file with ``autoloss.load_loss`` in a plain PyTorch loop, trains the CNN with it
   and with cross-entropy for 3 seeds each (same initial weights and batches per seed), and
   prints autoloss's paired difference of the test mIoU (mean, 95 % t-interval, seeds won).

Everything is tiny so that it runs anywhere in well under a minute: the numbers show the
mechanics, not which loss is better (that needs real data, steps and seeds).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from autoloss import MetricAccumulator, load_loss
from autoloss.search import SearchConfig, run_search
from autoloss.utils.stats import paired_difference

CLASSES = 3  # background, rectangle, disc
SIZE = 32


# ---- your model: any nn.Module; autoloss only needs build(in_channels, num_classes) -----------


class SmallCNN(nn.Module):
    """Images ``[N, C_in, H, W]`` -> logits ``[N, num_classes, H/2, W/2]`` (half resolution, as
    many decoders output; autoloss upsamples such logits to the labels' size)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_cnn(in_channels: int, num_classes: int) -> nn.Module:
    return SmallCNN(in_channels, num_classes)


# ---- your data: a PNG folder per split --------------------------------------------------------


def write_dataset(root: Path, *, counts: dict[str, int], seed: int = 0) -> None:
    """Noisy images with a rectangle and a disc each; index masks as greyscale PNGs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for split, n in counts.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            mask = np.zeros((SIZE, SIZE), np.uint8)
            y0, x0 = rng.integers(0, SIZE - 12, 2)
            h, w = rng.integers(6, 14, 2)
            mask[y0:y0 + h, x0:x0 + w] = 1
            cy, cx, r = *rng.integers(6, SIZE - 6, 2), rng.integers(4, 8)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
            colours = np.array([[90, 90, 90], [160, 80, 70], [80, 100, 170]], float)
            image = colours[mask] + rng.normal(0, 35, (SIZE, SIZE, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{i:03d}.png")


def read_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float ``[N, 3, H, W]`` in [0, 1] and labels int64 ``[N, H, W]`` of one split."""
    files = sorted((root / split / "images").glob("*.png"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    masks = np.stack([np.asarray(Image.open(root / split / "masks" / f.name)) for f in files])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(masks.astype(np.int64))


# ---- your training loop ----------------------------------------------------------------------


def train_and_score(loss_fn: nn.Module, data: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
                    seed: int, steps: int, batch_size: int = 8) -> float:
    """Train a fresh ``SmallCNN`` (weights and batch order from ``seed``) with ``loss_fn``;
    return its test mIoU."""
    torch.manual_seed(seed)
    model = build_cnn(3, CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    images, labels = data["train"]
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(images), (batch_size,), generator=order)
        logits = model(images[index])
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                               align_corners=False)  # half resolution -> the labels' size
        loss = loss_fn(logits, labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    accumulator = MetricAccumulator(num_classes=CLASSES, metrics=["miou"])
    with torch.no_grad():
        x, y = data["test"]
        logits = F.interpolate(model(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
        accumulator.update(logits.argmax(1), y)
    return float(accumulator.compute()["miou"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the data, search and results")
    parser.add_argument("--seeds", type=int, default=3, help="runs per loss (default 3)")
    parser.add_argument("--steps", type=int, default=80, help="steps per run (default 80)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    torch.set_num_threads(1)

    write_dataset(out / "data", counts={"train": 48, "val": 16, "test": 16})
    print(f"dataset: {out / 'data'} (per-split images/ + masks/, {CLASSES} classes)")

    # the search: autoloss's proxy (cross-entropy warm start, short seeded fine-tuning per
    # trial, exact mIoU on val, pruning, re-scoring) running *your* network
    proxy = {"model": build_cnn, "steps": 10, "eval_every": 5, "batch_size": 8,
             "warm_start_steps": 40, "metrics": ["miou"], "num_threads": 1, "device": "cpu",
             "compile_loss": False}
    result = run_search(SearchConfig(
        metric="miou", data=f"folder:{out / 'data'}", trials=4, sampler="random", seed=0,
        proxy=proxy, rescore_top=4, rescore_seeds=2, plots=False, out=out / "search",
        cache=out / "cache"), progress=False)
    if result.loss_path is None:
        raise SystemExit("the search completed no trial; see its summary.md")
    print(f"search: exported {result.loss_path} ({result.export_reason})")

    # your loop: the exported file is a plain nn.Module loss(logits [N,C,H,W], labels [N,H,W])
    data = {split: read_split(out / "data", split) for split in ("train", "test")}
    searched = load_loss(result.loss_path)
    scores: dict[str, dict[int, float]] = {"searched": {}, "cross_entropy": {}}
    for seed in range(args.seeds):
        for name, loss_fn in (("searched", searched), ("cross_entropy", nn.CrossEntropyLoss())):
            scores[name][seed] = train_and_score(loss_fn, data, seed=seed, steps=args.steps)
        print(f"seed {seed}: test mIoU searched {100 * scores['searched'][seed]:.2f}, "
              f"cross-entropy {100 * scores['cross_entropy'][seed]:.2f}")

    points = {name: {s: 100 * v for s, v in by_seed.items()} for name, by_seed in scores.items()}
    diff = paired_difference(points["searched"], points["cross_entropy"])
    interval = ("no interval (one seed)" if diff.low is None
                else f"95 % interval [{diff.low:+.2f}, {diff.high:+.2f}]")
    print(f"paired difference searched - cross-entropy (test mIoU points): mean "
          f"{diff.mean:+.2f}, {interval}, better on {diff.wins}/{diff.n} seeds")
    record = {"loss": str(result.loss_path), "scores": scores, "paired": diff.to_dict()}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    if not all(math.isfinite(v) for by_seed in scores.values() for v in by_seed.values()):
        raise SystemExit("a score is not finite")


if __name__ == "__main__":
    main()
