"""Where does one loss gain over another? Per-class IoU differences of a comparison, paired by seed.

Reads the ``compare.json`` of an ``autoloss compare`` run (no training) and writes, per class,
the mean IoU of both losses, the paired difference (95 % t-interval over the seeds, seeds won)
and each seed's values, plus the share of the mIoU difference each class carries (a class's
difference divided by the number of classes). Used to see whether a searched loss wins by
turning on rare classes or by a general shift.

    python benchmarks/per_class_diff.py --compare results/retrain-camvid/compare.json \\
        --loss results/study-miou-camvid/search/best_loss.yaml --reference soft-miou \\
        --out results/analysis/per_class_searched_miou_vs_soft_miou.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def per_class(compare: dict[str, Any], loss: str, reference: str) -> list[dict[str, Any]]:
    """One row per class: ``class``, ``loss`` / ``reference`` means, ``diff`` (a
    PairedDifference dict, points) and the per-seed values (points)."""
    from autoloss.utils.stats import paired_difference

    def by_seed(name: str) -> dict[int, dict[str, float]]:
        return {int(r["seed"]): r["per_class_iou"] for r in compare["runs"] if r["loss"] == name}

    a, b = by_seed(loss), by_seed(reference)
    for name, runs in ((loss, a), (reference, b)):
        if not runs:
            raise SystemExit(f"{name!r} has no runs in the comparison; it has {compare['losses']}")
    classes = list(next(iter(a.values())))
    rows = []
    for c in classes:
        va = {s: 100 * v[c] for s, v in a.items() if v.get(c) is not None}
        vb = {s: 100 * v[c] for s, v in b.items() if v.get(c) is not None}
        rows.append({"class": c, "loss": float(np.mean(list(va.values()))),
                     "reference": float(np.mean(list(vb.values()))),
                     "diff": paired_difference(va, vb).to_dict(),
                     "loss_seeds": [round(va[s], 1) for s in sorted(va)],
                     "reference_seeds": [round(vb[s], 1) for s in sorted(vb)]})
    return rows


def report(rows: list[dict[str, Any]], loss: str, reference: str, command: str) -> str:
    n = len(rows)
    lines = [f"# Per-class IoU: `{loss}` against `{reference}` (test split, paired by seed)", "",
             f"Produced by `{command}`.", "",
             "| class | loss | reference | difference [95 % CI], seeds won | share of the mIoU "
             "difference | loss per seed | reference per seed |",
             "|---|---:|---:|---|---:|---|---|"]
    for r in sorted(rows, key=lambda r: -abs(r["diff"]["mean"] or 0)):
        d = r["diff"]
        ci = ("" if d["low"] is None else f" [{d['low']:+.1f}, {d['high']:+.1f}]")
        lines.append(f"| {r['class']} | {r['loss']:.1f} | {r['reference']:.1f} | "
                     f"{d['mean']:+.1f}{ci}, {d['wins']}/{d['n']} | {d['mean'] / n:+.2f} | "
                     f"{r['loss_seeds']} | {r['reference_seeds']} |")
    total = sum(r["diff"]["mean"] for r in rows) / n
    lines += ["", f"Sum of the shares: {total:+.2f} mIoU points (the mIoU difference, up to "
              "classes absent from a seed's test predictions and labels).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", required=True, help="compare.json of an autoloss compare run")
    parser.add_argument("--loss", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--out", required=True, help="markdown file to write")
    args = parser.parse_args(argv)
    rows = per_class(json.loads(Path(args.compare).read_text()), args.loss, args.reference)
    command = " ".join(["python", "benchmarks/per_class_diff.py", *(argv or sys.argv[1:])])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report(rows, args.loss, args.reference, command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
