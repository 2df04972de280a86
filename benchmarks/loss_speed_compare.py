"""Before/after forward+backward time of every loss on its default path (one process, 2-D,
float32, ``sync="local"``, no ``resize``): this checkout against an earlier commit, in the same
run.

Run:  python benchmarks/loss_speed_compare.py --before-rev 7978e83 [--rounds 3] [--reps 9]

The earlier commit is exported with ``git archive`` into a temporary folder. Each round times
every loss once in a fresh process per tree, alternating before / after (so a change in the
machine's load hits both alike); a tree's time is the median over its rounds of each process's
median of ``--reps`` passes (``benchmarks/loss_speed.py``'s timing and inputs, camvid workload
[8,12,180,240]). Surrogates run eager (``compile=False``) and compiled (``compile=True``,
timed after the compiling call).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from datetime import date
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine_info import machine_summary  # noqa: E402

WORKLOAD = "camvid [8,12,180,240]"
COMPILED = ["asl-voc-miou", "soft-miou"]

CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads({threads})
import loss_speed as ls
shape, ignore = ls.WORKLOADS[{workload!r}]
logits, labels = ls.make_inputs(shape, ignore)
import autoloss
out = {{"_autoloss": autoloss.__file__}}
for name in {names!r}:
    out[name] = ls.time_loss(ls.build(name, ignore), logits, labels, {reps})
for name in {compiled!r}:
    fn = ls.build(name, ignore, compiled=True)
    ls.first_call(fn, logits, labels)
    out[name + " (compiled)"] = ls.time_loss(fn, logits, labels, {reps})
print(json.dumps(out))
"""


def export(rev: str, folder: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "autoloss", "benchmarks"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def run_tree(tree: Path, names: list[str], args: argparse.Namespace, cache: str) -> dict:
    code = CHILD.format(bench=str(tree / "benchmarks"), threads=args.threads, workload=WORKLOAD,
                        names=names, compiled=[] if args.no_compiled else COMPILED,
                        reps=args.reps)
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOLOSS_COMPILE", "PYTHONPATH")}
    env["TORCHINDUCTOR_CACHE_DIR"] = cache
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, cwd=tree)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    where = Path(found.pop("_autoloss")).resolve()
    if not where.is_relative_to(tree.resolve()):
        raise SystemExit(f"the {tree} run imported autoloss from {where}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", required=True, help="git revision to compare against")
    parser.add_argument("--after-rev", help="git revision to measure (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compiled", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "results" / "benchmarks" / "loss_speed_before_after.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import loss_speed

    names = loss_speed.loss_names()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    times: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="speed-compare-") as tmp:
        trees = {"before": export(args.before_rev, Path(tmp) / "before"),
                 "after": (export(args.after_rev, Path(tmp) / "after") if args.after_rev
                           else ROOT)}
        caches = {key: str(Path(tmp) / f"inductor-{key}") for key in trees}
        for round_ in range(args.rounds):
            for key, tree in trees.items():
                for name, ms in run_tree(tree, names, args, caches[key]).items():
                    times[key].setdefault(name, []).append(ms)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    load_after = Path("/proc/loadavg").read_text().split()[0]
    rows, worst = [], 0.0
    for name in times["after"]:
        before = statistics.median(times["before"][name])
        after = statistics.median(times["after"][name])
        worst = max(worst, after / before) if name != "cross_entropy_torch" else worst
        rows.append(f"| {name} | {before:.1f} | {after:.1f} | {after / before:.2f}x |")
    text = "\n".join([
        "# Loss speed before / after (default path: one process, 2-D, float32)",
        "",
        f"Measured {date.today()} on {machine_summary()}, {args.threads} torch thread(s); "
        f"before = `{args.before_rev}`, after = `{args.after_rev or 'this checkout'}`; "
        f"{args.rounds} alternating rounds "
        f"of a fresh process per tree, each the median of {args.reps} forward+backward passes; "
        f"the table gives the median over rounds (ms). Load average {load_before} before the "
        f"run, {load_after} after it, on {os.cpu_count()} cores shared with other jobs, so "
        "differences of a few percent are noise. Rerun: `python benchmarks/"
        f"loss_speed_compare.py --before-rev {args.before_rev}`.",
        "",
        f"Workload {WORKLOAD}. Worst ratio after / before: {worst:.2f}x.",
        "",
        "| loss | before ms | after ms | after / before |",
        "|---|---|---|---|",
        *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
