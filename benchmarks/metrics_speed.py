"""Speed of the exact metrics on the CamVid test split (233 images, 180x240, 11 classes).

The prediction is the ground truth with about 20% of its pixels (and every void pixel) set to a
random class (fixed seed). Times ``autoloss.evaluate`` with every metric (tol=5) and with each
metric alone, median of ``--repeats`` runs, at each ``--threads`` setting (default 2 and 1),
and writes a markdown table.

``autoloss.evaluate`` splits batches into chunks of about 2**20 one-hot elements itself.
Run from the repository root::

    python benchmarks/metrics_speed.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark this checkout, installed or not

from machine_info import cpu_model  # noqa: E402

from autoloss.core.metrics import METRIC_NAMES, evaluate  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "camvid" / "test.npz"
DEFAULT_OUT = ROOT / "results" / "benchmarks" / "metrics_speed.md"
NUM_CLASSES, IGNORE_INDEX, TOL = 11, 11, 5


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def make_case(path: Path, *, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth labels ``[N,H,W]`` and a prediction with ``noise`` of its pixels perturbed."""
    labels = np.load(path)["labels"]
    rng = np.random.default_rng(seed)
    random_classes = rng.integers(0, NUM_CLASSES, labels.shape, dtype=np.int64)
    perturb = (rng.random(labels.shape) < noise) | (labels == IGNORE_INDEX)
    return np.where(perturb, random_classes, labels.astype(np.int64)), labels


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_all(pred, target, options, repeats: int) -> tuple[dict[str, float], float]:
    """Median seconds of every metric alone and (second value) of all metrics together."""
    evaluate(pred, target, **options)  # warm-up
    together = median_time(lambda: evaluate(pred, target, **options), repeats)
    alone = {name: median_time(lambda n=name: evaluate(pred, target, metrics=[n], **options),
                               repeats) for name in METRIC_NAMES}
    return alone, together


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CamVid test.npz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                        help="torch.set_num_threads settings to time, one column each")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"--data {str(args.data)!r} does not exist")
    if min(args.threads) < 1 or args.repeats < 1:
        parser.error(f"--threads and --repeats must be >= 1, but got {args.threads=} "
                     f"{args.repeats=}")

    pred, target = make_case(args.data, noise=0.2, seed=0)
    options = dict(num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX, tol=TOL)
    values = evaluate(pred, target, **options)
    load_before = load_average()
    cpu_start = time.process_time()
    timings = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        timings[threads] = time_all(pred, target, options, args.repeats)
    cpu_seconds = time.process_time() - cpu_start
    load_after = load_average()

    n, h, w = target.shape
    heads = [f"s ({t} thread{'s' if t > 1 else ''})" for t in args.threads]
    lines = [
        "# Exact metric speed (`autoloss.evaluate`)",
        "",
        f"CamVid test split: {n} images of {h}x{w}, {NUM_CLASSES} classes (void = "
        f"{IGNORE_INDEX} ignored), prediction = labels with ~20% of pixels (and every void "
        f"pixel) set to a random class (seed 0); tol={TOL}. Wall-clock seconds, median of "
        f"{args.repeats} runs.",
        "",
        "| metrics | " + " | ".join(heads) + " | value |",
        "|---|" + "---:|" * len(heads) + "---:|",
        f"| all {len(METRIC_NAMES)} together | "
        + " | ".join(f"{timings[t][1]:.2f}" for t in args.threads) + " | |",
    ]
    lines += [f"| {name} alone | " + " | ".join(f"{timings[t][0][name]:.2f}" for t in args.threads)
              + f" | {values[name]:.4f} |" for name in METRIC_NAMES]
    lines += [
        "",
        "Metrics sharing their sums (miou, fwiou, mdice; macc, gacc) are computed once when "
        "evaluated together, so the total is less than the sum of the single-metric times.",
        "",
        "## Machine",
        "",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); torch threads: "
        f"{', '.join(map(str, args.threads))}",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        f"- load average (1, 5, 15 min) before / after: {load_before} / {load_after}; "
        f"process CPU time of the timings {cpu_seconds:.0f} s. Other jobs on the machine slow "
        "the multi-thread timings most (threads wait for each other at every operation).",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        "",
        "Rerun from the repository root: `python benchmarks/metrics_speed.py`",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
