"""Is a pretraining converged? Validation curves of training runs and their last-quarter drift.

Reads the ``log.jsonl`` (or ``log.jsonl.gz``) of training run folders (``autoloss train`` /
``compare``; no training here) and reports, per run, the validation metric over the last quarter of
its evaluations: the drift (mean of the last quarter minus the mean of the quarter before, the
plateau criterion of issue 23: below 0.3 points for every seed) and the spread, with one figure of
the curves.

    python benchmarks/pretrain_plateau.py --out results/pretrain-probes/plateau \\
        results/retrain-camvid/pretrain/seed0 results/pretrain-probes/sgd4000-seed0
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

CRITERION = 0.3  # points: the largest last-quarter drift of a converged pretraining


def curve(folder: Path, metric: str) -> tuple[list[int], list[float], dict[str, Any]]:
    """``(steps, values in points, run.json)`` of the validation evaluations of a run folder."""
    from autoloss.utils.run_logs import read_log_text, run_log

    steps, values = [], []
    log = run_log(folder)
    if log is None:
        raise SystemExit(f"{folder}: no log.jsonl or log.jsonl.gz")
    for line in read_log_text(log).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        if isinstance(record.get("eval"), dict) and record["eval"].get(metric) is not None:
            steps.append(int(record["step"]))
            values.append(100 * float(record["eval"][metric]))
    info_path = folder / "run.json"
    return steps, values, json.loads(info_path.read_text()) if info_path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    from autoloss.utils.stats import plateau

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding log.jsonl (or .gz)")
    parser.add_argument("--out", required=True, help="output prefix (OUT.md, OUT.png)")
    parser.add_argument("--metric", default="miou")
    args = parser.parse_args(argv)
    command = " ".join(["python", "benchmarks/pretrain_plateau.py", *(argv or sys.argv[1:])])
    rows, curves = [], {}
    for folder in args.runs:
        steps, values, info = curve(folder, args.metric)
        config = info.get("train_config") or {}
        total = config.get("steps")
        done = steps[-1] if steps else 0
        label = folder.as_posix()
        curves[label] = (steps, values)
        if len(values) < 8:
            rows.append(f"| `{label}` | {config.get('lr')} | {done}/{total} | - | - | - | "
                        "too few evaluations |")
            continue
        p = plateau(steps, values, share=0.25, tol=100.0)
        finished = total is not None and done >= total
        verdict = ("converged" if finished and p.drift is not None and p.drift < CRITERION
                   else "not converged" if finished else "unfinished")
        rows.append(f"| `{label}` | {config.get('lr')} | {done}/{total} | {values[-1]:.1f} | "
                    f"{p.drift:+.2f} | {p.spread:.2f} | {verdict} |")
    text = "\n".join([
        f"# Validation plateau of training runs ({args.metric})", "",
        f"Produced by `{command}`. Drift: mean of the last quarter of the evaluations minus the "
        f"mean of the quarter before (points); converged: a finished run with drift < "
        f"{CRITERION}.", "",
        "| run | lr | steps done | last value | drift | spread of the last quarter | verdict |",
        "|---|---:|---:|---:|---:|---:|---|", *rows, ""])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.md").write_text(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = plt.get_cmap("tab20" if len(curves) > 10 else "tab10").colors
    for (label, (steps, values)), colour in zip(curves.items(), itertools.cycle(colours)):
        ax.plot(steps, values, lw=1.2, label=label, color=colour)
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation {args.metric} (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=120)
    plt.close(fig)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
