"""Is CamVid's ``val`` split a fair stand-in for ``test``? Class mix by split and sequence, and
each loss's gain over cross-entropy on ``val`` against its gain on ``test`` (issue 23).

A search scores its proxy on ``val``; the final tables read ``test``. When ``val`` holds a class
mix unlike ``test``, a loss can win on ``val`` through classes ``test`` barely has. This script
reads the dataset and a finished comparison (``compare.json`` and its runs' ``metrics.json``,
whose ``val`` scores are the last validation of each run) and writes a markdown report::

    python benchmarks/camvid_splits.py --data ../shared/datasets/camvid \\
        --compare results/retrain-camvid --out results/analysis/camvid_splits.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"]


def class_mix(labels: np.ndarray) -> np.ndarray:
    """Per-class percentage of the labelled (non-void, label < 11) pixels, ``[11]``."""
    counts = np.bincount(labels.ravel(), minlength=12)[:11].astype(float)
    return 100 * counts / counts.sum()


def mix_table(data: Path) -> list[str]:
    columns: dict[str, np.ndarray] = {}
    frames: dict[str, int] = {}
    for split in ("train", "val", "test"):
        z = np.load(data / f"{split}.npz")
        labels, seqs = z["labels"], np.array([str(n).split("_")[0] for n in z["names"]])
        columns[f"{split}"] = class_mix(labels)
        frames[split] = len(labels)
        for seq in sorted(set(seqs)):
            columns[f"{split} {seq}"] = class_mix(labels[seqs == seq])
            frames[f"{split} {seq}"] = int((seqs == seq).sum())
    lines = ["| class | " + " | ".join(f"{k} ({frames[k]})" for k in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for k, name in enumerate(CLASSES):
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.2f}" for m in columns.values()) + " |")
    return lines


def gain_table(compare: Path) -> list[str]:
    """Mean over seeds of (loss - cross-entropy) on val and on test, mIoU and BF1 points."""
    setup = json.loads((compare / "compare.json").read_text())
    seeds: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for run in setup["runs"]:
        metrics = json.loads((compare / run["dir"] / "metrics.json").read_text())
        seeds.setdefault(run["loss"], {})[int(run["seed"])] = metrics
    ce = seeds["cross_entropy"]
    lines = ["| loss | seeds | mIoU gain on val | on test | val - test | BF1 gain on val | "
             "on test | val - test |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for loss, runs in seeds.items():
        common = sorted(s for s in runs if s in ce)
        cells = []
        for metric in ("miou", "bf1"):
            v = statistics.mean(100 * (runs[s]["val"][metric] - ce[s]["val"][metric]) for s in common)
            t = statistics.mean(100 * (runs[s]["test"][metric] - ce[s]["test"][metric])
                                for s in common)
            cells += [v, t, v - t]
        rows.append((loss, len(common), cells))
    for loss, n, c in sorted(rows, key=lambda r: -r[2][2]):
        lines.append(f"| `{loss}` | {n} | " + " | ".join(f"{x:+.2f}" for x in c) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/datasets/camvid")
    parser.add_argument("--compare", default="results/retrain-camvid")
    parser.add_argument("--out", default="results/analysis/camvid_splits.md")
    args = parser.parse_args()
    command = ("python benchmarks/camvid_splits.py --data " + args.data + " --compare "
               + args.compare + " --out " + args.out)
    text = "\n".join([
        "# CamVid: is val a fair stand-in for test? (issue 23)", "",
        f"Produced by `{command}`.", "",
        "## Class mix: % of labelled pixels, by split and sequence (frames)", "",
        *mix_table(Path(args.data)), "",
        f"## Gain over cross-entropy on val and on test ({args.compare}, mean over seeds, "
        "points)", "",
        "`val` is each run's last validation, `test` its final test score (same model).", "",
        *gain_table(Path(args.compare)), ""])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
