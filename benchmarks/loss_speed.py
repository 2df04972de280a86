"""Forward+backward time and peak extra memory of every loss, against cross-entropy.

Run:  python benchmarks/loss_speed.py [--reps 15] [--out results/benchmarks/loss_speed.md]

Workloads: logits [8,12,180,240] (CamVid-like: 11 classes + ignore label 11, ~4% ignored) and
[16,21,128,128] (the Auto Seg-Loss proxy crops, 21 classes + ignore 255). Each loss is timed as
the median of ``--reps`` forward+backward passes after 2 warm-up passes, with
``torch.set_num_threads(2)``; ``F.cross_entropy`` is measured in the same run and every time is
also given as a ratio to it. Peak extra memory is the peak resident-set growth during one
forward+backward, measured in a fresh subprocess per loss (Linux: the peak ``VmHWM`` is reset
through ``/proc/self/clear_refs`` once the inputs exist, so only the loss's own memory counts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


def build(name: str, ignore: int):
    if name == "cross_entropy_torch":
        return lambda x, y: F.cross_entropy(x, y, ignore_index=ignore)
    return load_loss(name, ignore_index=ignore)


def time_loss(name: str, shape, ignore: int, reps: int) -> float:
    logits, labels = make_inputs(shape, ignore)
    loss_fn = build(name, ignore)
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


def peak_memory_child(name: str, workload: str) -> None:
    torch.set_num_threads(1)
    shape, ignore = WORKLOADS[workload]
    logits, labels = make_inputs(shape, ignore)
    loss_fn = build(name, ignore)
    x = logits.clone().requires_grad_(True)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    base = _status_kib("VmRSS")
    loss_fn(x, labels).backward()
    peak = _status_kib("VmHWM")
    print(json.dumps({"extra_mib": (peak - base) / 1024}))


def peak_memory(name: str, workload: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", name, workload],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "loss_speed.md")
    parser.add_argument("--only", nargs="*", help="subset of loss names")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(*args.memory_child)
        return
    torch.set_num_threads(args.threads)
    names = args.only or loss_names()
    if "cross_entropy_torch" not in names:
        names = ["cross_entropy_torch", *names]
    cpu = cpu_model()
    lines = [
        "# Loss speed: forward+backward against cross-entropy",
        "",
        f"Measured {date.today()} on {cpu}, torch {torch.__version__}, {args.threads} thread(s), "
        f"median of {args.reps} repetitions, load average before the run "
        f"{Path('/proc/loadavg').read_text().split()[0]} on 2 cores. Rerun: "
        f"`python benchmarks/loss_speed.py --threads {args.threads}`.",
        "Ratio = time / time of `F.cross_entropy` measured in the same run. Memory = peak RSS growth "
        "of one forward+backward in a fresh process (MiB).",
        "",
    ]
    for workload, (shape, ignore) in WORKLOADS.items():
        lines += [f"## {workload}", "", "| loss | ms | ratio to CE | extra MiB |", "|---|---|---|---|"]
        ce_ms = None
        for name in names:
            try:
                ms = time_loss(name, shape, ignore, args.reps)
                mib = peak_memory(name, workload)
            except Exception as err:  # a loss that does not fit this workload
                lines.append(f"| {name} | error: {type(err).__name__}: {err} | | |")
                continue
            ce_ms = ce_ms or ms
            lines.append(f"| {name} | {ms:.1f} | {ms / ce_ms:.2f}x | {mib:.0f} |")
            print(lines[-1], flush=True)
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
