"""Forward+backward time and peak extra memory of every loss, against cross-entropy; surrogates
both eager and compiled (``torch.compile``, :mod:`autoloss.losses.compiled`).

Run:  python benchmarks/loss_speed.py --threads 2 [--reps 15] [--blocks 5] [--only NAME ...]
          [--workloads camvid proxy] [--out results/benchmarks/loss_speed.md]

Workloads: logits [8,12,180,240] (CamVid-like: 11 classes + ignore label 11, ~4% ignored) and
[16,21,128,128] (the Auto Seg-Loss proxy crops, 21 classes + ignore 255), with
``torch.set_num_threads(--threads)``.

Time, two methods, each with ``F.cross_entropy`` (CE) **interleaved** with the loss's eager and
compiled forms, so that a change of the machine's load hits the loss and CE alike (a CE timed
once at the start of a run is no yardstick for a loss timed minutes later on a loaded machine):

* median: the median of ``--reps`` single forward+backward calls (inputs cloned outside the
  timer) after 2 untimed rounds, CE, eager and compiled taken in turn call by call;
* blocks: ``torch.utils.benchmark.Timer(...).timeit(5)`` (5 calls back to back timed as one
  block, the leaf's ``.grad`` reset in the statement), ``--blocks`` rounds with CE, eager and
  compiled in turn; the mean time per call over all blocks (outliers, page faults and garbage
  collection included).

Both ratios are in the table and a target (compiled time / CE, issue #12) must hold in both; the
two ratios agreeing within 15 % is checked too, and the compiled loss's minor page faults per
call are shown beside them. Why (issue #28): the run of 2026-12-02 gave 6.47x CE for compiled
``asl-voc-bf1`` on camvid, a fresh process 9.8-10.0x. That run timed CE once at the start of a
workload, minutes before the loss, at load ~1 on 2 cores with 2 threads, so its ratios mixed two
loads; and a compiled BF1 call's time depends on the heap it finds: in a fresh process with
glibc's defaults each call faulted 16-22 thousand pages back in (its 16-19 MiB buffers are
trimmed or unmapped when freed), and the median of single calls was 13.0x CE against 10.4x for
back-to-back blocks; with ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296``
(no fault) both gave 10.3-10.4x (one thread, on a machine loaded by other jobs: indications).

Allocator: the times are those of the allocator settings in the run's environment, which the
results state (:data:`ALLOCATOR_VARS`). ``THP_MEM_ALLOC_ENABLE=1 python benchmarks/loss_speed.py
--out results/benchmarks/loss_speed_thp.md`` times the setting docs/losses.md recommends for CPU
training (PyTorch's transparent huge pages: a fault per 2 MiB); the memory processes never get
such a setting, so their figures are the same in both runs.

A compiled surrogate is timed after its compiling first call, whose time is reported apart
("compile s": in this process, on the inductor cache this run starts empty, so each graph
compiles cold; the process's one-time compiler start-up is spent on a warm-up graph first and
reported on its own).

Memory, as a user pays it: in a fresh subprocess per loss and form (``--threads`` threads,
``MALLOC_MMAP_THRESHOLD_`` = :data:`MMAP_THRESHOLD` so that glibc returns every large freed
block to the OS at once and a peak counts live buffers only, not a heap grown earlier), the
inputs are made, then three forward+backward calls each measure their peak resident-set growth
(Linux: ``VmHWM`` reset to the current RSS through ``/proc/self/clear_refs`` before the call).
"first" is the first call (for a compiled loss: dynamo, inductor's cache load on the cache this
run filled, the compiled code's load, and one run: what a search's later worker pays once);
"step" is the larger of the second and third calls, what every training step pays.
"Compile time, new process" times what a new process (a search worker) pays at its first call:
in a fresh subprocess, on an empty inductor cache (cold) and on the cache that run left (warm).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

from machine_info import cpu_model, git_commit, out_option  # noqa: E402

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
MMAP_THRESHOLD = str(64 * 1024)  # bytes; glibc's default grows to 32 MiB after a free
# settings of the CPU allocator a run may be given in its environment (docs/losses.md, page
# faults): stated in the results, passed to the timing processes, kept from the memory ones
ALLOCATOR_VARS = ("THP_MEM_ALLOC_ENABLE", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                  "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX", "LD_PRELOAD")
BLOCK_CALLS = 5  # back-to-back calls per timed block
DEFAULT_OUT = ROOT / "results" / "benchmarks" / "loss_speed.md"


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
    """Median ms of ``reps`` forward+backward calls of one loss after 2 untimed ones."""
    return interleaved_ms({"loss": loss_fn}, logits, labels, reps)["loss"]


def interleaved_ms(fns: dict, logits, labels, reps: int,
                   faults: dict[str, float] | None = None) -> dict[str, float]:
    """Median ms of ``reps`` single forward+backward calls of each ``fns[name]`` after 2
    untimed rounds, the losses taken in turn call by call (inputs cloned outside the timer);
    ``faults``, if given, receives each loss's median number of minor page faults per call
    (pages the allocator had given back and the call touched again)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    counts: dict[str, list[int]] = {name: [] for name in fns}
    for i in range(reps + 2):
        for name, fn in fns.items():
            x = logits.clone().requires_grad_(True)
            before = _minor_faults()
            start = time.perf_counter()
            fn(x, labels).backward()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
                counts[name].append(_minor_faults() - before)
    if faults is not None:
        faults.update({name: sorted(c)[len(c) // 2] for name, c in counts.items()})
    return {name: sorted(t)[len(t) // 2] * 1000 for name, t in times.items()}


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def blocked_ms(fns: dict, logits, labels, blocks: int, threads: int,
               calls: int = BLOCK_CALLS) -> dict[str, float]:
    """Mean ms per call of each ``fns[name]`` over ``blocks`` blocks of ``calls`` back-to-back
    forward+backward calls (``torch.utils.benchmark.Timer.timeit``), the losses taken in turn
    block by block."""
    from torch.utils.benchmark import Timer

    timers = {}
    for name, fn in fns.items():
        x = logits.clone().requires_grad_(True)
        timers[name] = Timer("fn(x, y).backward(); x.grad = None",
                             globals={"fn": fn, "x": x, "y": labels}, num_threads=threads)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(blocks):
        for name, timer in timers.items():
            times[name].append(timer.timeit(calls).mean)
    return {name: sum(t) / len(t) * 1000 for name, t in times.items()}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_mib(loss_fn, logits, labels) -> float:
    """Peak resident-set growth (MiB) of one forward+backward, from inputs that already exist
    (Linux: the peak ``VmHWM`` is reset to the current RSS through ``/proc/self/clear_refs``)."""
    x = logits.clone().requires_grad_(True)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    base = _status_kib("VmRSS")
    loss_fn(x, labels).backward()
    return (_status_kib("VmHWM") - base) / 1024


def memory_steps(loss_fn, logits, labels, calls: int = 3) -> dict[str, float]:
    """``{"first": MiB, "step": MiB}``: :func:`peak_extra_mib` of the first of ``calls``
    forward+backward calls, and the largest of the later ones."""
    peaks = [peak_extra_mib(loss_fn, logits, labels) for _ in range(calls)]
    return {"first": peaks[0], "step": max(peaks[1:])}


def peak_memory_child(name: str, workload: str, compiled: bool) -> None:
    shape, ignore = WORKLOADS[workload]
    logits, labels = make_inputs(shape, ignore)
    print(json.dumps(memory_steps(build(name, ignore, compiled), logits, labels)))


def fresh_memory(name: str, workload: str, compiled: bool, threads: int) -> dict[str, float]:
    """:func:`memory_steps` of a loss in a fresh process, ``MALLOC_MMAP_THRESHOLD_`` lowered and
    no other allocator setting (the same figures whatever the timing ran under)."""
    return child(["--memory-child", name, workload, "1" if compiled else "0"], threads,
                 allocator=False, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)


def first_call_child(name: str, workload: str) -> None:
    """A new process's first compiled call (compiler start-up included)."""
    shape, ignore = WORKLOADS[workload]
    logits, labels = make_inputs(shape, ignore)
    seconds = first_call(build(name, ignore, True), logits, labels)
    print(json.dumps({"seconds": seconds}))


def allocator_settings() -> list[str]:
    """The allocator settings of this process's environment, ``NAME=value`` (empty: glibc's
    defaults)."""
    return [f"{name}={os.environ[name]}" for name in ALLOCATOR_VARS if os.environ.get(name)]


def child_env(allocator: bool, **env: str) -> dict[str, str]:
    """This process's environment updated with ``env``; without ``allocator``, none of
    :data:`ALLOCATOR_VARS` except those ``env`` sets."""
    base = {k: v for k, v in os.environ.items() if allocator or k not in ALLOCATOR_VARS}
    return dict(base, **env)


def child(args: list[str], threads: int, allocator: bool = True, **env: str) -> dict:
    """Run this script with ``args`` in a fresh process (:func:`child_env`) and return the JSON
    it prints last."""
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), *args],
                         capture_output=True, text=True, check=True,
                         env=child_env(allocator, **env))
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm_up_compiler() -> float:
    """Seconds to compile and run a trivial graph: the process's compiler start-up."""
    start = time.perf_counter()
    fn = torch.compile(lambda x: (x * 2).sum(), fullgraph=True, dynamic=False)
    fn(torch.ones(8))
    return time.perf_counter() - start


def measure(name: str, workload: str, args) -> dict:
    """Times (both methods, CE interleaved), compile seconds and fresh-process memory of one
    loss: keys ``eager``/``compiled`` -> ``{"ms", "ratio", "block_ratio", "mib"}``."""
    shape, ignore = WORKLOADS[workload]
    logits, labels = make_inputs(shape, ignore)
    fns = {"ce": build("cross_entropy_torch", ignore), "eager": build(name, ignore)}
    out: dict = {}
    if name in SURROGATES and not args.no_compiled:
        fns["compiled"] = build(name, ignore, compiled=True)
        out["compile_s"] = first_call(fns["compiled"], logits, labels)
    if name == "cross_entropy_torch":
        del fns["eager"]  # CE against itself
    faults: dict[str, float] = {}
    median = interleaved_ms(fns, logits, labels, args.reps, faults)
    blocks = blocked_ms(fns, logits, labels, args.blocks, args.threads)
    for form in fns:
        if form == "ce" and name != "cross_entropy_torch":
            continue
        key = "eager" if form == "ce" else form
        out[key] = {"ms": median[form], "ratio": median[form] / median["ce"],
                    "block_ratio": blocks[form] / blocks["ce"], "faults": faults[form],
                    "mib": fresh_memory(name, workload, form == "compiled", args.threads)}
    return out


def _cells(result: dict | None) -> list[str]:
    if result is None:
        return ["", "", "", ""]
    mib = result["mib"]
    return [f"{result['ms']:.1f}", f"{result['ratio']:.2f}x", f"{result['block_ratio']:.2f}x",
            f"{mib['first']:.0f} / {mib['step']:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="single calls timed (median)")
    parser.add_argument("--blocks", type=int, default=5,
                        help=f"blocks of {BLOCK_CALLS} back-to-back calls timed (mean)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="*", help="subset of loss names")
    parser.add_argument("--workloads", nargs="*", choices=[w.split()[0] for w in WORKLOADS],
                        help="subset of workloads (default: all)")
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
    workloads = [w for w in WORKLOADS if not args.workloads or w.split()[0] in args.workloads]
    load_before = Path("/proc/loadavg").read_text().split()[0]
    settings = allocator_settings()
    startup = None if args.no_compiled else warm_up_compiler()
    lines = [
        "# Loss speed: forward+backward against cross-entropy, eager and compiled",
        "",
        f"Measured {date.today()} at commit {git_commit()} on {cpu_model()}, torch "
        f"{torch.__version__}, {args.threads} "
        f"thread(s); load average before the run {load_before}, after it LOAD_AFTER, on "
        f"{os.cpu_count()} cores. Rerun: `{' '.join([*settings, 'python'])} "
        f"benchmarks/loss_speed.py --threads {args.threads} --reps {args.reps} --blocks "
        f"{args.blocks}{out_option(args.out, DEFAULT_OUT)}`.",
        "",
        "Allocator (times and page faults): "
        + (f"`{' '.join(settings)}` in the environment (docs/losses.md, page faults)."
           if settings else "glibc's defaults, no setting in the environment."),
        "",
        "Time: `F.cross_entropy` (CE) interleaved with each loss's eager and compiled forms. "
        f"/ CE = median of {args.reps} single forward+backward calls after 2 untimed rounds; "
        f"/ CE blocks = mean per call over {args.blocks} blocks of {BLOCK_CALLS} back-to-back "
        "calls (`torch.utils.benchmark.Timer.timeit`), taken after the single calls. Eager: "
        "the hand-fused kernels (`compile=False`); compiled: `compile=True` (torch.compile, "
        "inductor), timed after its first call, whose time is the compile column (a cold "
        "inductor cache; the process's compiler start-up, "
        + (f"{startup:.1f} s, spent before the first loss)." if startup is not None else "n/a)."),
        "",
        "Memory (MiB), first / step: peak RSS growth of a forward+backward in a fresh process "
        f"per loss and form, {args.threads} thread(s), `MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}` "
        "(freed large blocks go back to the OS at once); first = the first call (compiled: "
        "dynamo, inductor's cache load, one run), step = the larger of the 2nd and 3rd calls, "
        "what each training step pays.",
        "",
    ]
    targets: list[str] = []
    for workload in workloads:
        lines += [f"## {workload}", "",
                  "| loss | eager ms | eager / CE | eager / CE blocks | eager MiB | compiled ms "
                  "| compiled / CE | compiled / CE blocks | compiled MiB | compile s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        ce_step = None
        for name in names:
            try:
                out = measure(name, workload, args)
            except Exception as err:  # a loss that does not fit this workload
                lines.append(f"| {name} | error: {type(err).__name__}: {err} |" + " |" * 8)
                print(lines[-1], flush=True)
                continue
            ce_step = ce_step or out["eager"]["mib"]["step"]
            compiled = out.get("compiled")
            cells = [name, *_cells(out["eager"]), *_cells(compiled),
                     f"{out['compile_s']:.1f}" if compiled else ""]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
            if compiled and name in TARGETS:
                ratios = (compiled["ratio"], compiled["block_ratio"])
                agree = max(ratios) / min(ratios) - 1
                mem = compiled["mib"]["step"]
                ok = max(ratios) <= TARGETS[name] and mem <= 3 * ce_step
                targets.append(f"| {workload} | {name} | <= {TARGETS[name]}x | {ratios[0]:.2f}x "
                               f"| {ratios[1]:.2f}x | {agree:.0%} | {compiled['faults']:.0f} | "
                               f"{mem / ce_step:.1f}x | "
                               f"{mem:.0f} / {out['eager']['mib']['step']:.0f} | "
                               f"{'met' if ok else 'missed'} |")
        lines.append("")
    if targets:
        lines += ["## Targets (issue #12): compiled time / CE by both methods, step memory "
                  "<= 3x CE's", "",
                  "| workload | loss | target | / CE | / CE blocks | methods differ by "
                  "| page faults / call | step memory / CE's | compiled / eager step MiB | |",
                  "|---|---|---|---|---|---|---|---|---|---|", *targets, "",
                  "Page faults / call: the compiled loss's median minor page faults per single "
                  "call (CE: 0). glibc gives freed blocks back (trim, munmap) and a call that "
                  "touches them again pays a fault per 4 KiB page: the heap's state, not the "
                  "loss, and the main reason why the two methods, or two processes, can "
                  "disagree (issue #28: with `MALLOC_MMAP_THRESHOLD_=33554432 "
                  "MALLOC_TRIM_THRESHOLD_=4294967296` compiled BF1 faulted 0 times per call "
                  "and both methods agreed; with `THP_MEM_ALLOC_ENABLE=1` it faults a few "
                  "hundred times at most: `results/benchmarks/page_faults.md`).", ""]
    if not args.no_compiled:
        workload = workloads[0]
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
