"""Does a transferred start help a search on a new domain? Best proxy score after N trials.

Reads two finished (or partly finished) searches on ISBI 2012 with the same seed and proxy, one
started from the CamVid-searched mIoU loss (``init_from``), one from the identity, and reports
for each the proxy score of its first trial and the best score after 8, 16 and 32 trials, in
points of val mIoU, next to the cross-entropy baseline of the same proxy. Run the searches
first (each resumable):

    autoloss search --config experiments/search_miou_isbi2012_init.yaml
    autoloss search --config experiments/search_miou_isbi2012_identity.yaml
    python benchmarks/init_from_isbi.py      # -> results/init_from_isbi2012.md / .json

A trial counts towards N whatever its state (a pruned trial costs its steps but has no final
score); the best is over the completed trials among the first N.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"init from CamVid mIoU loss": "results/search-miou-isbi2012-init",
        "identity (default)": "results/search-miou-isbi2012-identity"}
COMMAND = "python benchmarks/init_from_isbi.py"


def load(out: Path) -> optuna.Study:
    """The study of a search folder (its ``run.json`` names storage and study)."""
    run = json.loads((out / "run.json").read_text())
    storage = f"sqlite:///{out / 'study.db'}"  # the folder's own database, wherever the clone is
    return optuna.load_study(study_name=run["study"], storage=storage)


def best_after(study: optuna.Study, counts: list[int]) -> dict[int, float | None]:
    """Best completed value among the first ``n`` trials (by number), for each ``n``."""
    trials = sorted(study.trials, key=lambda t: t.number)
    out: dict[int, float | None] = {}
    for n in counts:
        values = [t.value for t in trials[:n]
                  if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
        out[n] = max(values) if len(trials) >= n and values else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--out", default="results/init_from_isbi2012")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows = {}
    for arm, folder in ARMS.items():
        study = load(ROOT / folder)
        first = min(study.trials, key=lambda t: t.number)
        rows[arm] = {"folder": folder, "trials": len(study.trials),
                     "baseline_ce": study.user_attrs.get("baseline_ce"),
                     "first_trial": first.value,
                     "best_after": {str(n): v for n, v in best_after(study, args.counts).items()}}

    def pts(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"

    lines = ["# Search on ISBI 2012 (mIoU) started from a transferred loss vs the identity",
             "", f"Produced by `{COMMAND}` from the two searches of "
             "`experiments/search_miou_isbi2012_{init,identity}.yaml` (same seed 0, same proxy "
             "and warm start; proxy val mIoU on the 5 val slices, points).", "",
             "| start | CE baseline | trial 0 | " + " | ".join(f"best after {n}"
                                                          for n in args.counts) + " |",
             "|---|---|---|" + "---|" * len(args.counts)]
    for arm, row in rows.items():
        lines.append(f"| {arm} | {pts(row['baseline_ce'])} | {pts(row['first_trial'])} | "
                     + " | ".join(pts(row["best_after"][str(n)]) for n in args.counts) + " |")
    lines += ["", "One seed per arm: a difference smaller than the proxy's seed noise is not "
              "evidence either way."]
    out = ROOT / args.out
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": COMMAND, "arms": rows},
                                                   indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
