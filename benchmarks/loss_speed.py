"""Forward+backward time and peak extra memory of every loss, against cross-entropy; surrogates
both eager and compiled (``torch.compile``, :mod:`autoloss.losses.compiled`).

Run:  python benchmarks/loss_speed.py --threads 2 [--reps 15] [--out results/benchmarks/loss_speed.md]

Workloads: logits [8,12,180,240] (CamVid-like: 11 classes + ignore label 11, ~4% ignored) and
[16,21,128,128] (the Auto Seg-Loss proxy crops, 21 classes + ignore 255). Each loss is timed as
the median of ``--reps`` forward+backward passes after 2 warm-up passes, with
``torch.set_num_threads(--threads)``; ``F.cross_entropy`` is measured in the same run and every
time is also given as a ratio to it. A compiled surrogate is timed after its compiling first
call, whose time is reported apart ("compile s": in this process, on the inductor cache this run
starts empty, so each graph compiles cold; the process's one-time compiler start-up is spent
on a warm-up graph first and reported on its own). Peak extra memory is the peak resident-set
growth during one forward+backward, measured in a fresh subprocess per loss (Linux: the peak
``VmHWM`` is reset through ``/proc/self/clear_refs`` once the inputs exist, and for a compiled
loss once the graph is compiled and has run once, so only the loss's own memory counts).
"Compile time, new process" times what a new process (a search worker) pays at its first call:
in a fresh subprocess, on an empty inductor cache (cold) and on the cache that run left (warm).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import cpu_model  # noqa: E402

from autoloss.losses import PRESETS, load_loss  # noqa: E402
from autoloss.losses.baselines import BASELINES  # noqa: E402

WORKLOADS = {
    "camvid [8,12,180,240]": ((8, 12, 180, 240), 11),
    "proxy [16,21,128,128]": ((16, 21, 128, 128), 255),
}
SURROGATES = [name for name in PRESETS if name.startswith(("asl-voc-", "soft-"))]
SKIP_BASELINES = {"lovasz_hinge", "binary_cross_entropy"}  # binary losses: other input shape
# issue #12: compiled time / CE time at most this
TARGETS = {"asl-voc-miou": 3, "asl-voc-fwiou": 3, "asl-voc-biou": 3, "asl-voc-macc": 2,
           "asl-voc-gacc": 2, "asl-voc-bf1": 8, "soft-bf1": 8}
NEW_PROCESS = ["asl-voc-miou", "asl-voc-bf1"]  # compile times of a fresh process


def loss_names() -> list[str]:
    return ["cross_entropy_torch"] + SURROGATES + sorted(set(BASELINES) - SKIP_BASELINES)


def make_inputs(shape: tuple[int, ...], ignore: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    logits = torch.randn(shape, generator=gen)
    # blocky labels so boundaries exist, like real label maps
    coarse = torch.randint(0, c - 1, (n, h // 6 + 1, w // 6 + 1), generator=gen)
    labels = coarse.repeat_interleave(6, 1).repeat_interleave(6, 2)[:, :h, :w].contiguous()
    labels[torch.rand((n, h, w), generator=gen) < 0.04] = ignore
    return logits, labels


def build(name: str, ignore: int, compiled: bool = False):
    if name == "cross_entropy_torch":
        return lambda x, y: F.cross_entropy(x, y, ignore_index=ignore)
    if name in SURROGATES:
        return load_loss(name, ignore_index=ignore, compile=compiled)
    return load_loss(name, ignore_index=ignore)


def first_call(loss_fn, logits, labels) -> float:
    """Seconds of one forward+backward (for a compiled loss: the compiling call)."""
    x = logits.clone().requires_grad_(True)
    start = time.perf_counter()
    loss_fn(x, labels).backward()
    return time.perf_counter() - start


def time_loss(loss_fn, logits, labels, reps: int) -> float:
    times = []
    for i in range(reps + 2):
        x = logits.clone().requires_grad_(True)
        start = time.perf_counter()
        loss_fn(x, labels).backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1000


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(name: str, workload: str, compiled: bool) -> None:
    torch.set_num_threads(1)
    shape, ignore = WORKLOADS[workload]
    logits, labels = make_inputs(shape, ignore)
    loss_fn = build(name, ignore, compiled)
    if compiled:
        first_call(loss_fn, logits, labels)  # compile (from the cache) and run once
    print(json.dumps({"extra_mib": peak_extra_mib(loss_fn, logits, labels)}))


def peak_extra_mib(loss_fn, logits, labels) -> float:
    """Peak resident-set growth (MiB) of one forward+backward, from inputs that already exist
    (Linux: the peak ``VmHWM`` is reset to the current RSS through ``/proc/self/clear_refs``)."""
    x = logits.clone().requires_grad_(True)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    base = _status_kib("VmRSS")
    loss_fn(x, labels).backward()
    return (_status_kib("VmHWM") - base) / 1024


def first_call_child(name: str, workload: str) -> None:
    """A new process's first compiled call (compiler start-up included)."""
    shape, ignore = WORKLOADS[workload]
    logits, labels = make_inputs(shape, ignore)
    seconds = first_call(build(name, ignore, True), logits, labels)
    print(json.dumps({"seconds": seconds}))


def child(args: list[str], threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), *args],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm_up_compiler() -> float:
    """Seconds to compile and run a trivial graph: the process's compiler start-up."""
    start = time.perf_counter()
    fn = torch.compile(lambda x: (x * 2).sum(), fullgraph=True, dynamic=False)
    fn(torch.ones(8))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "loss_speed.md")
    parser.add_argument("--only", nargs="*", help="subset of loss names")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-compiled", action="store_true", help="eager losses only")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--first-call-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        name, workload, compiled = args.memory_child
        peak_memory_child(name, workload, compiled == "1")
        return
    if args.first_call_child:
        first_call_child(*args.first_call_child)
        return
    if os.environ.get("AUTOLOSS_COMPILE"):
        raise SystemExit("unset AUTOLOSS_COMPILE: this benchmark chooses eager or compiled itself")
    cache = tempfile.mkdtemp(prefix="loss-speed-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # cold: every graph compiles in this run
    names = args.only or loss_names()
    if "cross_entropy_torch" not in names:
        names = ["cross_entropy_torch", *names]
    load_before = Path("/proc/loadavg").read_text().split()[0]
    startup = None if args.no_compiled else warm_up_compiler()
    lines = [
        "# Loss speed: forward+backward against cross-entropy, eager and compiled",
        "",
        f"Measured {date.today()} on {cpu_model()}, torch {torch.__version__}, {args.threads} "
        f"thread(s), median of {args.reps} repetitions; load average before the run "
        f"{load_before}, after it LOAD_AFTER, on {os.cpu_count()} cores. Rerun: "
        f"`python benchmarks/loss_speed.py --threads {args.threads}`.",
        "Ratio = time / time of `F.cross_entropy` measured in the same run. Eager: the "
        "hand-fused kernels (`compile=False`); compiled: `compile=True` (torch.compile, "
        "inductor), timed after its first call, whose time is the compile column (a cold "
        "inductor cache; the process's compiler start-up, "
        + (f"{startup:.1f} s, spent before the first loss)." if startup is not None else "n/a).")
        + " Memory = peak RSS growth of one forward+backward in a fresh process (MiB).",
        "",
    ]
    targets: list[str] = []
    for workload, (shape, ignore) in WORKLOADS.items():
        logits, labels = make_inputs(shape, ignore)
        lines += [f"## {workload}", "",
                  "| loss | eager ms | eager / CE | compiled ms | compiled / CE | compile s "
                  "| eager MiB | compiled MiB |", "|---|---|---|---|---|---|---|---|"]
        ce_ms = ce_mib = None
        for name in names:
            cells = [name]
            try:
                ms = time_loss(build(name, ignore), logits, labels, args.reps)
                mib = child(["--memory-child", name, workload, "0"], args.threads)["extra_mib"]
                ce_ms, ce_mib = ce_ms or ms, ce_mib or mib
                cells += [f"{ms:.1f}", f"{ms / ce_ms:.2f}x"]
                if name in SURROGATES and not args.no_compiled:
                    loss_fn = build(name, ignore, compiled=True)
                    seconds = first_call(loss_fn, logits, labels)
                    cms = time_loss(loss_fn, logits, labels, args.reps)
                    cmib = child(["--memory-child", name, workload, "1"],
                                 args.threads)["extra_mib"]
                    cells += [f"{cms:.1f}", f"{cms / ce_ms:.2f}x", f"{seconds:.1f}", f"{mib:.0f}",
                              f"{cmib:.0f}"]
                    if name in TARGETS:
                        ok = cms / ce_ms <= TARGETS[name] and cmib <= 3 * ce_mib
                        targets.append(f"| {workload} | {name} | <= {TARGETS[name]}x | "
                                       f"{cms / ce_ms:.2f}x | {cmib / ce_mib:.1f}x | "
                                       f"{'met' if ok else 'missed'} |")
                else:
                    cells += ["", "", "", f"{mib:.0f}", ""]
            except Exception as err:  # a loss that does not fit this workload
                cells = [name, f"error: {type(err).__name__}: {err}", "", "", "", "", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
        lines.append("")
    if targets:
        lines += ["## Targets (issue #12): compiled time / CE, peak extra memory <= 3x CE's", "",
                  "| workload | loss | target | compiled / CE | memory / CE's | |",
                  "|---|---|---|---|---|---|", *targets, ""]
    if not args.no_compiled:
        workload = next(iter(WORKLOADS))
        lines += [f"## Compile time, new process ({workload})", "",
                  "First forward+backward in a new process (compiler start-up, compilation "
                  "or cache load, one run; after the imports).", "",
                  "| loss | cold cache s | warm cache s |", "|---|---|---|"]
        for name in NEW_PROCESS:
            if name not in names:
                continue
            times = []
            with tempfile.TemporaryDirectory(prefix="loss-speed-new-") as fresh:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh
                for _ in range(2):  # cold, then warm on what the first left
                    times.append(child(["--first-call-child", name, workload], args.threads))
            lines.append(f"| {name} | {times[0]['seconds']:.1f} | {times[1]['seconds']:.1f} |")
            print(lines[-1], flush=True)
        lines.append("")
    load_after = Path("/proc/loadavg").read_text().split()[0]
    text = "\n".join(lines).replace("LOAD_AFTER", load_after)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
