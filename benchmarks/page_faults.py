"""Page faults and time per call of a compiled surrogate under three allocator settings.

Run:  python benchmarks/page_faults.py [--loss asl-voc-bf1] [--rounds 3] [--reps 15]
          [--threads 1] [--out results/benchmarks/page_faults.md]

Why (issue #28): a compiled BF1 step allocates and frees buffers of 16-20 MiB. With glibc's
default malloc, freed memory at the top of the heap (or a freed mmap) goes back to the OS, and
the next call faults every page it touches again, 4 KiB at a time: the same loss then costs more
or less depending on the heap it finds. Each round runs one fresh subprocess per setting, in
turn, so that a change of the machine's load hits all three alike:

* ``default``: glibc's defaults;
* ``THP``: ``THP_MEM_ALLOC_ENABLE=1``, PyTorch's (>= 2.2) switch that puts CPU buffers of 2 MiB
  and more on transparent huge pages (``madvise``), a fault per 2 MiB;
* ``malloc``: ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296``, glibc keeps
  freed memory for the next call.

In each subprocess (``--threads`` threads): CamVid-like logits ``[8,12,180,240]`` (11 classes +
ignore label 11), the loss with ``compile=True`` (one untimed compiling call), 3 untimed rounds,
then ``--reps`` forward+backward calls of the loss and of ``F.cross_entropy`` in turn; per call
the wall time, the thread's CPU time (``time.thread_time``: user + system, page faults included,
the time other processes take excluded; meaningful with one thread) and the minor page faults
(``getrusage``). The table gives the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from machine_info import git_commit, out_option  # this folder is on sys.path when run

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "benchmarks" / "page_faults.md"
SETTINGS = {
    "default": {},
    "THP": {"THP_MEM_ALLOC_ENABLE": "1"},
    "malloc": {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296"},
}
ALLOCATOR_VARIABLES = sorted({k for env in SETTINGS.values() for k in env})
SHAPE, IGNORE = (8, 12, 180, 240), 11


def child(loss_name: str, reps: int, threads: int) -> dict[str, float]:
    """Medians of one process (the measurement described in the module docstring)."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from loss_speed import build, make_inputs

    torch.set_num_threads(threads)
    logits, labels = make_inputs(SHAPE, IGNORE)
    fns = {"loss": build(loss_name, IGNORE, compiled=True),
           "ce": lambda x, y: F.cross_entropy(x, y, ignore_index=IGNORE)}

    def call(fn) -> tuple[float, float, int]:
        x = logits.clone().requires_grad_(True)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        wall, cpu = time.perf_counter(), time.thread_time()
        fn(x, labels).backward()
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        return wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    call(fns["loss"])  # compiles
    for _ in range(3):
        for fn in fns.values():
            call(fn)
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            samples[name].append(call(fn))
    out = {}
    for name, rows in samples.items():
        out[f"{name}_wall_ms"] = 1e3 * statistics.median(r[0] for r in rows)
        out[f"{name}_cpu_ms"] = 1e3 * statistics.median(r[1] for r in rows)
        out[f"{name}_faults"] = statistics.median(r[2] for r in rows)
    return out


def measure(setting: str, args) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
    env.update(SETTINGS[setting])
    proc = subprocess.run([sys.executable, __file__, "--child", args.loss, str(args.reps),
                           str(args.threads)], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the {setting} subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(rows: list[tuple[int, str, dict[str, float]]], args, load: tuple[str, str],
           commit: str) -> str:
    import torch

    lines = [
        f"# Page faults and time per call: compiled `{args.loss}`, three allocator settings", "",
        f"Measured {date.today()} at commit {commit}, torch {torch.__version__}, {args.threads} "
        f"thread(s), {args.rounds} rounds of {args.reps} calls; load average before the run "
        f"{load[0]}, after it {load[1]}, on {os.cpu_count()} cores. Rerun: `python "
        f"benchmarks/page_faults.py --loss {args.loss} --rounds {args.rounds} --reps {args.reps} "
        f"--threads {args.threads}{out_option(args.out, DEFAULT_OUT)}`. What is measured and "
        "why: the module docstring."
        + (" With more than one thread, CPU ms is the calling thread's only: read the wall "
           "times (on a quiet machine)." if args.threads > 1 else ""), "",
        "| setting | round | loss wall ms | loss CPU ms | CE wall ms | CE CPU ms | wall / CE | "
        "CPU / CE | loss faults / call |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, setting, m in rows:
        lines.append(
            f"| {setting} | {number} | {m['loss_wall_ms']:.1f} | {m['loss_cpu_ms']:.1f} | "
            f"{m['ce_wall_ms']:.1f} | {m['ce_cpu_ms']:.1f} | "
            f"{m['loss_wall_ms'] / m['ce_wall_ms']:.2f}x | "
            f"{m['loss_cpu_ms'] / m['ce_cpu_ms']:.2f}x | {m['loss_faults']:.0f} |")
    lines += ["", "Per setting, the range over rounds:", "",
              "| setting | loss CPU ms | CPU / CE | loss faults / call |", "|---|---|---|---|"]
    for setting in SETTINGS:
        ms = [m for _, s, m in rows if s == setting]
        cpu = [m["loss_cpu_ms"] for m in ms]
        ratio = [m["loss_cpu_ms"] / m["ce_cpu_ms"] for m in ms]
        faults = [m["loss_faults"] for m in ms]
        lines.append(f"| {setting} | {min(cpu):.1f}-{max(cpu):.1f} | {min(ratio):.2f}-"
                     f"{max(ratio):.2f}x | {min(faults):.0f}-{max(faults):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="asl-voc-bf1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, reps, threads = args.child
        print(json.dumps(child(name, int(reps), int(threads))))
        return
    commit = git_commit()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    rows = []
    for number in range(1, args.rounds + 1):
        for setting in SETTINGS:
            rows.append((number, setting, measure(setting, args)))
            print(f"round {number} {setting}: {rows[-1][2]}", flush=True)
    load_after = Path("/proc/loadavg").read_text().split()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(rows, args, (load_before, load_after), commit))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
