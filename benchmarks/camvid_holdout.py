"""A CamVid copy whose ``val`` split is held out of ``train`` (for a search's proxy reward).

CamVid's own ``val`` split (101 frames, one block of sequence 0016E5) has a class mix unlike
``train`` and ``test``: Bicyclist is 2.25 % of its labelled pixels and in every frame, against
0.30 % (train) and 0.20 % (test), Fence 3.1 % against 1.2 %. A proxy that scores losses on it
rewards what helps Bicyclist and Fence there (``results/analysis/camvid_splits.md``, issue 23).

This script writes ``OUT/train.npz`` and ``OUT/val.npz`` in the layout ``camvid:OUT`` reads:
``val`` is the last ``--fraction`` of the frames of each ``train`` sequence (a contiguous block,
so at most one neighbouring frame is shared across the cut), ``train`` the rest. CamVid's
``val`` and ``test`` are not copied: a search on ``camvid:OUT`` can read neither. The output is
a deterministic function of the input (same frames, same order)::

    python benchmarks/camvid_holdout.py --src ../shared/datasets/camvid --out DIR [--fraction 0.2]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from camvid_splits import CLASSES, class_mix  # this folder (scripts run as files)


def holdout_indices(names: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (into ``names``) of the last ``ceil(fraction * n)`` frames of each sequence,
    frames ordered by name (``<sequence>_<frame>.png``)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), but got {fraction=}")
    sequences = np.array([str(n).split("_")[0] for n in names])
    held = []
    for seq in sorted(set(sequences)):
        idx = np.flatnonzero(sequences == seq)
        idx = idx[np.argsort(names[idx], kind="stable")]
        held += list(idx[len(idx) - math.ceil(fraction * len(idx)):])
    return np.array(sorted(held), dtype=int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default="../shared/datasets/camvid")
    parser.add_argument("--out", required=True)
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args()
    src, out = Path(args.src), Path(args.out)
    train = np.load(src / "train.npz")
    names, images, labels = train["names"], train["images"], train["labels"]
    held = holdout_indices(names, args.fraction)
    kept = np.setdiff1d(np.arange(len(names)), held)
    out.mkdir(parents=True, exist_ok=True)
    for split, idx in (("train", kept), ("val", held)):
        np.savez(out / f"{split}.npz", images=images[idx], labels=labels[idx], names=names[idx])
    print(f"wrote {out}: train {len(kept)} frames, val (held out of train) {len(held)} frames")
    mixes = {"train (kept)": class_mix(labels[kept]), "val (held out)": class_mix(labels[held]),
             "CamVid val": class_mix(np.load(src / "val.npz")["labels"])}
    print("| class | " + " | ".join(mixes) + " |")
    for k, name in enumerate(CLASSES):
        print(f"| {name} | " + " | ".join(f"{m[k]:.2f}" for m in mixes.values()) + " |")


if __name__ == "__main__":
    main()
