"""Before/after forward+backward time of every loss on its default path (one process, 2-D,
float32, ``sync="local"``, no ``resize``): this checkout against an earlier commit, in the same
run.

Run:  python benchmarks/loss_speed_compare.py --before-rev 7978e83 [--rounds 5] [--reps 5]

Both trees are exported with ``git archive`` (``--after-rev``, default: this checkout as it is)
and each gets one long-lived worker process. For every loss, the two workers time it in turn,
``--rounds`` times (before, after, before, after, ...), so a change in the machine's load hits
both alike; a tree's time is the minimum over rounds of the median of ``--reps`` passes
(``benchmarks/loss_speed.py``'s timing and inputs, camvid workload [8,12,180,240]); the minimum
is the least disturbed by other jobs. Surrogates also run compiled (``compile=True``, timed
after the compiling call).
"""

from __future__ import annotations

import argparse
import json
import os
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
import autoloss
shape, ignore = ls.WORKLOADS[{workload!r}]
logits, labels = ls.make_inputs(shape, ignore)
built = {{}}
print(json.dumps(autoloss.__file__), flush=True)
for line in sys.stdin:
    name = line.strip()
    if name not in built:
        compiled = name.endswith(" (compiled)")
        fn = ls.build(name.removesuffix(" (compiled)"), ignore, compiled=compiled)
        ls.first_call(fn, logits, labels)
        built[name] = fn
    print(json.dumps(ls.time_loss(built[name], logits, labels, {reps})), flush=True)
"""


def export(rev: str, folder: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "autoloss", "benchmarks"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    return folder


class Worker:
    """A process timing losses of one tree on request (one name per line in, ms out)."""

    def __init__(self, tree: Path, args: argparse.Namespace, cache: str) -> None:
        code = CHILD.format(bench=str(tree / "benchmarks"), threads=args.threads,
                            workload=WORKLOAD, reps=args.reps)
        env = {k: v for k, v in os.environ.items() if k not in ("AUTOLOSS_COMPILE", "PYTHONPATH")}
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
        where = Path(json.loads(self.proc.stdout.readline())).resolve()
        if not where.is_relative_to(tree.resolve()):
            raise SystemExit(f"the {tree} worker imported autoloss from {where}")

    def time(self, name: str) -> float:
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker died timing {name}")
        return float(json.loads(line))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", required=True, help="git revision to compare against")
    parser.add_argument("--after-rev", help="git revision to measure (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compiled", action="store_true")
    parser.add_argument("--only", nargs="*", help="these loss names only (' (compiled)' suffix: "
                        "the compiled surrogate)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "results" / "benchmarks" / "loss_speed_before_after.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import loss_speed

    names = loss_speed.loss_names()
    if not args.no_compiled:
        names += [f"{name} (compiled)" for name in COMPILED]
    if args.only:
        names = ["cross_entropy_torch", *args.only]
    load_before = Path("/proc/loadavg").read_text().split()[0]
    times: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="speed-compare-") as tmp:
        trees = {"before": export(args.before_rev, Path(tmp) / "before"),
                 "after": (export(args.after_rev, Path(tmp) / "after") if args.after_rev
                           else ROOT)}
        workers = {key: Worker(tree, args, str(Path(tmp) / f"inductor-{key}"))
                   for key, tree in trees.items()}
        for name in names:
            for _ in range(args.rounds):
                for key, worker in workers.items():
                    times[key].setdefault(name, []).append(worker.time(name))
            print(f"{name}: before {min(times['before'][name]):.1f} ms, after "
                  f"{min(times['after'][name]):.1f} ms", flush=True)
        for worker in workers.values():
            worker.close()
    load_after = Path("/proc/loadavg").read_text().split()[0]
    rows, worst = [], 0.0
    for name in times["after"]:
        before, after = min(times["before"][name]), min(times["after"][name])
        worst = max(worst, after / before) if name != "cross_entropy_torch" else worst
        rows.append(f"| {name} | {before:.1f} | {after:.1f} | {after / before:.2f}x |")
    text = "\n".join([
        "# Loss speed before / after (default path: one process, 2-D, float32)",
        "",
        f"Measured {date.today()} on {machine_summary()}, {args.threads} torch thread(s); "
        f"before = `{args.before_rev}`, after = `{args.after_rev or 'this checkout'}`; one "
        f"worker process per tree, timing each loss in turn, {args.rounds} rounds of the median "
        f"of {args.reps} forward+backward passes; the table gives the minimum over rounds "
        f"(ms). Load average {load_before} before the "
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
