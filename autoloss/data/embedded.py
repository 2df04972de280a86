"""The embedded ``shapes`` dataset: procedurally generated, deterministic, no files needed.

Six classes with the structures that make region and boundary metrics disagree:

====  ==========  ==========================================================================
idx   class       what it looks like
====  ==========  ==========================================================================
0     background  smooth colour gradient + faint stripes (the dominant class, ~80 %)
1     blob        large rotated ellipses; their 1-px outer rim is ``ignore_index`` (255)
2     rectangle   rotated or axis-aligned rectangles
3     line        thin straight lines, 1-3 px wide (a boundary-dominated class)
4     dot         small discs of a few pixels
5     rare        small triangles, in about one image in five
====  ==========  ==========================================================================

Colours overlap on purpose: blobs and dots share a warm palette, rectangles and lines a cool one,
a quarter of the objects take the other palette and the rare class sits between both, so a
per-pixel colour rule cannot solve it; shape and context (thin vs wide, small vs large) matter.
A mild blur and uniform noise (std 0.05) are applied last.

Every split has its own seed stream (blocks of 64 images, each from ``numpy``
``SeedSequence([seed, split index, block])``), so ``train``, ``val`` and ``test`` never share
images and a split is identical for a given seed. Generation is vectorised over images: the
default 512 + 128 + 256 images of 64x64 take about 0.4-0.7 s of CPU.

Pixel shares of the default train split (% of all pixels): background 79.9, blob 8.4,
rectangle 7.0, line 1.9, dot 0.5, rare 0.13, ignored 2.1.
"""

from __future__ import annotations

import numpy as np

from autoloss.data.dataset import ArrayStore, SegmentationDataset
from autoloss.errors import InvalidValueError

__all__ = ["SHAPES_CLASSES", "SHAPES_SPLITS", "generate_shapes", "shapes_dataset"]

SHAPES_CLASSES: tuple[str, ...] = ("background", "blob", "rectangle", "line", "dot", "rare")
#: split -> (seed stream, share of ``n``); the default ``n = 512`` gives 512 / 128 / 256 images.
SHAPES_SPLITS: dict[str, tuple[int, float]] = {"train": (0, 1.0), "val": (1, 0.25),
                                               "test": (2, 0.5)}
_WARM = np.array([[0.55, 0.95], [0.25, 0.60], [0.10, 0.45]], dtype=np.float32)
_COOL = np.array([[0.10, 0.45], [0.30, 0.65], [0.55, 0.95]], dtype=np.float32)
_RARE = np.array([[0.50, 0.85], [0.15, 0.40], [0.50, 0.85]], dtype=np.float32)


def _colours(rng: np.random.Generator, n: int, palette: np.ndarray, other: np.ndarray | None,
             swap: float = 0.25) -> np.ndarray:
    """Per-image object colours ``[n, 3]`` drawn from ``palette`` (or ``other`` w.p. ``swap``)."""
    u = rng.random((n, 3), dtype=np.float32)
    colour = palette[:, 0] + u * (palette[:, 1] - palette[:, 0])
    if other is not None:
        alt = other[:, 0] + u * (other[:, 1] - other[:, 0])
        colour = np.where(rng.random((n, 1)) < swap, alt, colour)
    return colour.astype(np.float32)


def _frame(rng: np.random.Generator, n: int, size: tuple[int, int], y: np.ndarray,
           x: np.ndarray, *, extent: float, upright: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Random centres and rotations: object coordinates ``(u, v)``, each ``[n, H, W]``.

    Centres may lie up to ``0.3 * extent`` pixels outside the image (objects cut by the border);
    a share ``upright`` of the objects is axis-aligned."""
    cy = rng.uniform(-extent * 0.3, size[0] + extent * 0.3, n).astype(np.float32)
    cx = rng.uniform(-extent * 0.3, size[1] + extent * 0.3, n).astype(np.float32)
    theta = rng.uniform(0, np.pi, n).astype(np.float32)
    theta = np.where(rng.random(n) < upright, np.float32(0), theta)
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    dy, dx = y - cy[:, None, None], x - cx[:, None, None]
    return dx * cos + dy * sin, dy * cos - dx * sin


def _background(rng: np.random.Generator, n: int, y: np.ndarray, x: np.ndarray,
                size: tuple[int, int]) -> np.ndarray:
    """Per-image grey-ish base colour + linear gradient + faint stripes: ``[n, H, W, 3]``."""
    f32 = np.float32
    base = rng.uniform(0.30, 0.60, (n, 1, 1, 1)).astype(f32) \
        + rng.uniform(-0.08, 0.08, (n, 1, 1, 3)).astype(f32)
    phi = rng.uniform(0, 2 * np.pi, (2, n, 1, 1)).astype(f32)
    yc, xc = y - f32(size[0] / 2), x - f32(size[1] / 2)
    ramp = (np.cos(phi[0]) * xc + np.sin(phi[0]) * yc) / f32(max(size))  # in [-0.71, 0.71]
    freq = rng.uniform(0.15, 0.5, (n, 1, 1)).astype(f32)
    stripes = np.sin(freq * (np.cos(phi[1]) * x + np.sin(phi[1]) * y))
    shade = rng.uniform(0.0, 0.25, (n, 1, 1)).astype(f32) * ramp + f32(0.05) * stripes
    return base + shade[..., None]


#: limits of the generated data, checked before generating (blocks of 64 images in float32)
SHAPES_MAX_IMAGE_PIXELS = 512 * 512
SHAPES_MAX_PIXELS = 2**27
_BLOCK = 64  # images generated per seed block (keeps arrays cache-sized; prefixes are stable)


def generate_shapes(n: int, *, size: tuple[int, int] = (64, 64), seed: int = 0, stream: int = 0,
                    ignore_index: int | None = 255) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` images: ``(images uint8 [n, H, W, 3], labels uint8 [n, H, W])``.

    Args:
        n: number of images.
        size: ``(H, W)``; object sizes scale with ``min(H, W) / 64`` (line width and dot size
            do not: they stay a few pixels).
        seed, stream: image ``i`` depends only on ``(i, size, seed, stream)``: images are made in
            blocks of 64, block ``b`` from ``SeedSequence([seed, stream, b])``, so a larger ``n``
            only appends images.
        ignore_index: label of the blobs' 1-px rim (``None``: no ignored pixels).
    """
    if n < 1 or min(size) < 8 or seed < 0 or stream < 0:
        raise InvalidValueError(f"shapes needs n >= 1, size >= 8x8 and non-negative seeds, but got "
                         f"{n=}, {size=}, {seed=}, {stream=}")
    _check_size(n, size, where="shapes")
    blocks = [_generate_block(_BLOCK, size, np.random.default_rng(
        np.random.SeedSequence([seed, stream, block])), ignore_index)
        for block in range((n + _BLOCK - 1) // _BLOCK)]
    images = np.concatenate([b[0] for b in blocks])[:n]
    return images, np.concatenate([b[1] for b in blocks])[:n]


def _check_size(n: int, size: tuple[int, int], *, where: str) -> None:
    pixels = size[0] * size[1]
    if pixels > SHAPES_MAX_IMAGE_PIXELS or n * pixels > SHAPES_MAX_PIXELS:
        raise InvalidValueError(
            f"{where}: shapes makes at most {SHAPES_MAX_IMAGE_PIXELS} pixels per image (512x512) "
            f"and {SHAPES_MAX_PIXELS} per split (SHAPES_MAX_PIXELS: e.g. 8192 images of 128x128), "
            f"but got {n} images of {size[0]}x{size[1]}; pass a smaller '?n=' or '?size='")


def _generate_block(n: int, size: tuple[int, int], rng: np.random.Generator,
                    ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    s = min(h, w) / 64.0
    y = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None]
    x = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :]
    label = np.zeros((n, h, w), dtype=np.uint8)
    top = np.zeros((n, h, w), dtype=np.uint8)  # which painted object (1..16) is on top, 0: none
    colours = [np.zeros((n, 3), dtype=np.float32)]

    def paint(mask: np.ndarray, cls: int, colour: np.ndarray, p: float) -> None:
        mask &= (rng.random(n) < p)[:, None, None]
        np.copyto(label, np.uint8(cls), where=mask)
        np.copyto(top, np.uint8(len(colours)), where=mask)
        colours.append(colour)

    for _ in range(3):  # blobs: ellipses with semi-axes 6-14 px
        u, v = _frame(rng, n, size, y, x, extent=12 * s)
        a, b = rng.uniform(6, 14, (2, n, 1, 1)).astype(np.float32) * s
        paint(np.square(u / a) + np.square(v / b) <= 1.0, 1, _colours(rng, n, _WARM, _COOL), 0.7)
    for _ in range(3):  # rectangles: half sides 3-11 px, half of them axis-aligned
        u, v = _frame(rng, n, size, y, x, extent=10 * s, upright=0.5)
        a, b = rng.uniform(3, 11, (2, n, 1, 1)).astype(np.float32) * s
        inside = (np.abs(u) <= a) & (np.abs(v) <= b)
        paint(inside, 2, _colours(rng, n, _COOL, _WARM), 0.65)
    for _ in range(3):  # lines: segments 15-45 px long, half-width 0.5-1.5 (1-3 px wide)
        ay = rng.uniform(0, h, (n, 1, 1)).astype(np.float32)
        ax = rng.uniform(0, w, (n, 1, 1)).astype(np.float32)
        phi = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
        length = rng.uniform(15, 45, (n, 1, 1)).astype(np.float32) * s
        ex, ey = np.cos(phi) * length, np.sin(phi) * length
        t = np.clip(((x - ax) * ex + (y - ay) * ey) / length**2, 0.0, 1.0)
        dist2 = (x - ax - t * ex) ** 2 + (y - ay - t * ey) ** 2
        half = rng.uniform(0.5, 1.5, (n, 1, 1)).astype(np.float32)
        paint(dist2 <= half**2, 3, _colours(rng, n, _COOL, _WARM), 0.6)
    for _ in range(6):  # dots: discs of radius 0.8-2 px (about 2-12 pixels)
        cy = rng.uniform(0, h, (n, 1, 1)).astype(np.float32)
        cx = rng.uniform(0, w, (n, 1, 1)).astype(np.float32)
        r = rng.uniform(0.8, 2.0, (n, 1, 1)).astype(np.float32)
        paint((x - cx) ** 2 + (y - cy) ** 2 <= r**2, 4, _colours(rng, n, _WARM, _COOL), 0.5)
    # rare: a small triangle (circumradius 3.5-6 px) in about one image in five
    cy = rng.uniform(4, h - 4, (n, 1, 1)).astype(np.float32)
    cx = rng.uniform(4, w - 4, (n, 1, 1)).astype(np.float32)
    radius = rng.uniform(3.5, 6.0, (n, 1, 1)).astype(np.float32) * s
    angles = (rng.uniform(0, 2 * np.pi, (n, 1, 1)) + np.array([0, 2, 4])[:, None, None, None]
              * (np.pi / 3) + rng.uniform(-0.3, 0.3, (3, n, 1, 1))).astype(np.float32)
    vx, vy = cx + radius * np.cos(angles), cy + radius * np.sin(angles)  # [3, n, 1, 1], CCW
    inside = np.ones((n, h, w), dtype=bool)
    for k in range(3):
        j = (k + 1) % 3
        inside &= (vx[j] - vx[k]) * (y - vy[k]) - (vy[j] - vy[k]) * (x - vx[k]) >= 0
    paint(inside, 5, _colours(rng, n, _RARE, None), 0.2)

    # objects over the background, mild blur (half of a 3x3 box filter), then noise
    palette = np.stack(colours, axis=1)  # [n, objects + 1, 3]
    flat_index = top + (palette.shape[1] * np.arange(n))[:, None, None]
    image = np.take(palette.reshape(-1, 3), flat_index, axis=0)  # [n, H, W, 3]
    image = np.where(top[..., None] > 0, image, _background(rng, n, y, x, size))
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = padded[:, :, :-2] + padded[:, :, 1:-1] + padded[:, :, 2:]
    box = (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) * np.float32(1 / 9)
    noise = (rng.random(image.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(0.17)
    image = np.float32(0.5) * (image + box) + noise
    images = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)

    if ignore_index is not None:  # blob pixels with a 4-neighbour of another label -> ignored
        blob = label == 1
        pad = np.pad(blob, ((0, 0), (1, 1), (1, 1)), mode="edge")
        interior = pad[:, :-2, 1:-1] & pad[:, 2:, 1:-1] & pad[:, 1:-1, :-2] & pad[:, 1:-1, 2:]
        label[blob & ~interior] = ignore_index
    return images, label


def shapes_dataset(split: str, *, n: int = 512, seed: int = 0, size: tuple[int, int] = (64, 64),
                   ignore_index: int | None = 255, spec: str = "shapes") -> SegmentationDataset:
    """Split ``split`` of ``shapes``: ``train`` has ``n`` images, ``val`` n/4, ``test`` n/2."""
    if split not in SHAPES_SPLITS:
        raise InvalidValueError(f"shapes has splits {list(SHAPES_SPLITS)}, but got split={split!r}")
    if ignore_index is not None and not 6 <= ignore_index <= 255:
        raise InvalidValueError(f"shapes stores labels as uint8: ignore_index must be in [6, 255] or "
                         f"none, but got {ignore_index=}")
    stream, share = SHAPES_SPLITS[split]
    count = max(1, round(n * share))
    _check_size(count, size, where=spec)
    images, labels = generate_shapes(count, size=size, seed=seed, stream=stream,
                                     ignore_index=ignore_index)
    names = tuple(f"shapes_{split}_{i:05d}" for i in range(count))
    store = ArrayStore(images, labels, names, source=f"generated {spec}")
    return SegmentationDataset(store, name="shapes", spec=spec, split=split,
                               num_classes=len(SHAPES_CLASSES), ignore_index=ignore_index,
                               class_names=SHAPES_CLASSES)
