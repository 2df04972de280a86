"""The two steps of a pre-registered test that are not ``autoloss`` commands (issue 23).

``middle RUN --to FILE``: export the no-search control of a search run folder, the trial picked
by a fixed rule from the middle of its ranking: among the complete trials that are not
reference points (the plain soft metric, the published curves), ranked by search score best
first, the one at rank ``ceil(n / 2)``; ties keep the lower trial number first.

``report``: the registered decision from a comparison's ``compare.json`` (test split, one
value per seed and loss): the paired differences of the searched loss against its control
(the plain soft metric), cross-entropy, the best hand-designed loss and the no-search control,
each with its 95 % paired t-interval, and the verdict of the primary test. The rule, as
registered in ``experiments/preregistered/README.md``:

- primary: searched minus control is **met** when its mean is at least ``--target`` points and
  its interval's lower end is above zero; **positive, below target** when only the second
  holds; **not shown** otherwise (an interval that holds zero, or a negative one);
- secondary (``--target-ce``, if given): the same rule for searched minus cross-entropy;
- the rest is descriptive (no verdict).

Usage::

    python benchmarks/preregistered.py middle results/preregistered/search-miou-camvid \\
        --to results/preregistered/search-miou-camvid/middle_loss.yaml
    python benchmarks/preregistered.py report --compare results/preregistered/miou-camvid/compare.json \\
        --metric miou --searched S --control C --ce cross_entropy --hand H --middle M \\
        --target 0.5 --target-ce 1.0 --out results/preregistered/miou-camvid/decision.md
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError
from autoloss.utils.stats import PairedDifference, paired_difference


def middle_trial(study: Any) -> int:
    """The trial number at rank ``ceil(n / 2)`` (1 = best) among the study's complete trials
    that are not reference points, by search score (maximised), ties by trial number."""
    from optuna.trial import TrialState

    from autoloss.utils.trial_attrs import discarded

    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state == TrialState.COMPLETE and "reference" not in t.user_attrs
              and not discarded(t) and t.value is not None and math.isfinite(t.value)]
    if not trials:
        raise InvalidValueError(f"study {study.study_name!r} has no complete searched trial")
    ranked = sorted(trials, key=lambda t: (-t.value, t.number))
    return ranked[math.ceil(len(ranked) / 2) - 1].number


def _cmd_middle(args: argparse.Namespace) -> int:
    from autoloss.search.export import export_trial
    from autoloss.search.run_folder import RunFolder
    from autoloss.search.storage import open_study

    found = RunFolder(Path(args.run)).storage()
    if found is None:
        raise InvalidValueError(f"{args.run} holds no study database")
    storage, name = found
    study = open_study(storage, name)
    number = middle_trial(study)
    path = export_trial(study, number, Path(args.to), storage=storage)
    print(f"middle-ranked trial {number} of {study.study_name} exported to {path}")
    return 0


def _seed_values(compare: dict[str, Any], loss: str, metric: str) -> dict[int, float]:
    values = {int(r["seed"]): 100 * float(r["metrics"][metric]) for r in compare["runs"]
              if r["loss"] == loss and r["metrics"].get(metric) is not None}
    if not values:
        raise InvalidValueError(f"compare.json has no run of loss {loss!r} with {metric!r}; "
                                f"its losses: {compare['losses']}")
    return values


def verdict(diff: PairedDifference, target: float) -> str:
    """The registered rule: met / positive, below target / not shown."""
    if diff.low is None or diff.mean is None:
        return "not shown (fewer than 2 paired seeds)"
    if diff.low > 0 and diff.mean >= target:
        return f"**met** (mean >= +{target:g} and the interval above zero)"
    if diff.low > 0:
        return f"positive, below the target of +{target:g} (interval above zero)"
    return "not shown (the interval holds zero)" if diff.high >= 0 else "reversed (interval below zero)"


def _fmt(d: PairedDifference) -> str:
    if d.mean is None:
        return "n/a"
    if d.low is None:
        return f"{d.mean:+.2f} (1 seed)"
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}], wins {d.wins}/{d.n}"


def report(compare: dict[str, Any], *, metric: str, searched: str, control: str, ce: str,
           hand: str | None, middle: str | None, target: float,
           target_ce: float | None) -> str:
    """The decision table (markdown) of one registered test; values in points (x100)."""
    vals = {name: _seed_values(compare, name, metric)
            for name in [searched, control, ce, hand, middle] if name is not None}
    lines = ["| loss | role | seeds | test " + metric + " (mean ± std) |", "|---|---|---:|---:|"]
    roles = {searched: "searched export", control: "plain soft metric (control)",
             ce: "cross-entropy", **({hand: "best hand-designed (chosen on val)"} if hand else {}),
             **({middle: "no-search control (middle-ranked trial)"} if middle else {})}
    for name, role in roles.items():
        v = list(vals[name].values())
        mean = sum(v) / len(v)
        std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        lines.append(f"| `{name}` | {role} | {len(v)} | {mean:.2f} ± {std:.2f} |")
    rows = [("searched - plain soft metric (primary)", searched, control, target),
            ("searched - cross-entropy", searched, ce, target_ce)]
    if hand:
        rows.append(("searched - best hand-designed", searched, hand, None))
    if middle:
        rows += [("searched - middle-ranked trial", searched, middle, None),
                 ("middle-ranked trial - plain soft metric", middle, control, None)]
    lines += ["", "| paired difference (points) | mean [95 % interval], seeds won | verdict |",
              "|---|---|---|"]
    for label, a, b, goal in rows:
        d = paired_difference(vals[a], vals[b])
        lines.append(f"| {label} | {_fmt(d)} | "
                     f"{verdict(d, goal) if goal is not None else 'descriptive'} |")
    return "\n".join(lines) + "\n"


def _cmd_report(args: argparse.Namespace) -> int:
    compare = json.loads(Path(args.compare).read_text())
    table = report(compare, metric=args.metric, searched=args.searched, control=args.control,
                   ce=args.ce, hand=args.hand, middle=args.middle, target=args.target,
                   target_ce=args.target_ce)
    command = shlex.join(["python", "benchmarks/preregistered.py", *sys.argv[1:]])
    text = (f"# Pre-registered test: {args.metric} ({args.compare})\n\nProduced by `{command}` "
            f"from the test-split scores of the runs (paired by seed, 95 % t-intervals).\n\n"
            + table)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("middle", help="export the middle-ranked searched trial of a run folder")
    p.add_argument("run")
    p.add_argument("--to", required=True)
    p.set_defaults(func=_cmd_middle)
    p = sub.add_parser("report", help="the registered decision from a compare.json")
    p.add_argument("--compare", required=True)
    p.add_argument("--metric", required=True)
    p.add_argument("--searched", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--ce", default="cross_entropy")
    p.add_argument("--hand")
    p.add_argument("--middle")
    p.add_argument("--target", type=float, required=True, help="points, searched - control")
    p.add_argument("--target-ce", type=float, help="points, searched - cross-entropy")
    p.add_argument("--out")
    p.set_defaults(func=_cmd_report)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
