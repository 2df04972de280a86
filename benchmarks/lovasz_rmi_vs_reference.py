"""Lovasz-Softmax and RMI against their reference implementations (issue #28): forward+backward
time and peak extra memory, per workload, for this checkout, an earlier autoloss commit and the
reference code.

Run:  python benchmarks/lovasz_rmi_vs_reference.py --references DIR [--before-rev 6217a05]
          [--reps 9] [--out results/benchmarks/lovasz_rmi.md]

``DIR`` holds the reference files, as in the golden set (``/work/shared/golden/README.md``):
``lovasz_losses.py`` (bermanmaxim/LovaszSoftmax 7d48792, ``pytorch/lovasz_losses.py``) and
``rmi.py``, ``rmi_utils.py`` (ZJULearning/RMI 10a40cd, ``losses/rmi/``). RMI is patched here, in
memory, to run on CPU as the golden set's was (``torch.cuda.DoubleTensor`` -> ``torch.DoubleTensor``,
``import rmi_utils``). Without ``--references`` only this checkout and ``--before-rev`` run.

Losses: ``lovasz_softmax`` (``classes="present"``, the batch, the reference
``lovasz_softmax(softmax(x), y, ignore=...)``) and ``rmi`` (the class defaults: max pooling 3x3;
the reference ``RMILoss(num_classes=C)``, whose labels >= C are ignored, so its ignored pixels
are given label 255). Workloads and inputs: ``benchmarks/loss_speed.py``'s. Time: the median of
``--reps`` forward+backward passes after 2 warm-ups, the implementations interleaved pass by
pass in one process (a change of the machine's load hits all alike), ``torch.set_num_threads
(--threads)``. Memory: peak resident-set growth of one forward+backward in a fresh process per
implementation (``loss_speed.peak_extra_mib``), with ``MALLOC_MMAP_THRESHOLD_`` set low so that
large freed blocks go back to the OS at once and the peak counts only live buffers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import types
import warnings
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loss_speed import WORKLOADS, make_inputs, peak_extra_mib  # noqa: E402
from machine_info import machine_summary  # noqa: E402

from autoloss.losses import load_loss  # noqa: E402

FAMILIES = ("lovasz_softmax", "rmi")
SOURCES = {"lovasz_softmax": "autoloss/losses/lovasz.py", "rmi": "autoloss/losses/rmi.py"}
MMAP_THRESHOLD = str(64 * 1024)  # bytes; glibc's default grows to 32 MiB after a free


def _module(name: str, text: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's "is 'present'" SyntaxWarning
        exec(compile(text, name, "exec"), module.__dict__)
    return module


def _before(family: str, rev: str) -> types.ModuleType:
    """The loss's module at ``rev`` (it imports its helpers from this checkout)."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{SOURCES[family]}"],
                          capture_output=True, text=True, check=True).stdout
    return _module(f"_before_{family}", text)


def _reference(family: str, folder: Path) -> types.ModuleType:
    if family == "lovasz_softmax":
        return _module("lovasz_losses", (folder / "lovasz_losses.py").read_text())
    _module("rmi_utils", (folder / "rmi_utils.py").read_text())
    text = (folder / "rmi.py").read_text()
    for old, new in (("from RMI.losses.rmi import rmi_utils", "import rmi_utils"),
                     ("torch.cuda.DoubleTensor", "torch.DoubleTensor")):
        if old not in text:
            raise SystemExit(f"{folder / 'rmi.py'}: expected {old!r} (the 10a40cd file)")
        text = text.replace(old, new)
    return _module("rmi_reference", text)


def build(family: str, impl: str, shape: tuple[int, ...], ignore: int, args) -> tuple:
    """``(loss_fn, label_map)``: ``loss_fn(logits, labels)``, and the labels it takes."""
    classes = shape[1]
    if impl == "autoloss":
        return load_loss(family, ignore_index=ignore), lambda y: y
    if impl == "before":
        module = _before(family, args.before_rev)
        if family == "lovasz_softmax":
            return module.LovaszSoftmaxLoss(ignore_index=ignore), lambda y: y
        return module.RMILoss(ignore_index=ignore), lambda y: y
    module = _reference(family, args.references)
    if family == "lovasz_softmax":
        return (lambda x, y: module.lovasz_softmax(torch.softmax(x, dim=1), y, ignore=ignore),
                lambda y: y)
    loss = module.RMILoss(num_classes=classes)
    return loss, lambda y: torch.where(y == ignore, 255, y)


def implementations(args) -> list[str]:
    return ["autoloss", "before"] + (["reference"] if args.references else [])


def interleaved_ms(fns: dict, logits, reps: int) -> dict[str, float]:
    """Median ms of ``reps`` forward+backward passes of each ``fns[name] = (fn, labels)``,
    after 2 warm-ups, taking the implementations in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(reps + 2):
        for name, (fn, labels) in fns.items():
            x = logits.clone().requires_grad_(True)
            start = time.perf_counter()
            fn(x, labels).backward()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] * 1000 for name, t in times.items()}


def agreement(fns: dict, logits) -> dict[str, tuple[float, float]]:
    """Per implementation: |loss - reference's| / |reference's| and max |grad - reference's| /
    max |reference's grad| (the reference: the last implementation)."""
    out = {}
    for name, (fn, labels) in fns.items():
        x = logits.clone().requires_grad_(True)
        loss = fn(x, labels)
        loss.backward()
        out[name] = (float(loss.detach()), x.grad)
    ref_loss, ref_grad = out[list(fns)[-1]]
    scale = float(ref_grad.abs().max())
    return {name: (abs(value - ref_loss) / abs(ref_loss), float((grad - ref_grad).abs().max())
                   / scale) for name, (value, grad) in out.items()}


def memory_child(family: str, impl: str, workload: str, args) -> None:
    torch.set_num_threads(1)
    shape, ignore = WORKLOADS[workload]
    logits, labels = make_inputs(shape, ignore)
    fn, label_map = build(family, impl, shape, ignore, args)
    labels = label_map(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cholesky is deprecated (the reference)
        print(json.dumps({"extra_mib": peak_extra_mib(fn, logits, labels)}))


def memory_mib(family: str, impl: str, workload: str, args) -> float:
    command = [sys.executable, __file__, "--memory-child", family, impl, workload,
               "--before-rev", args.before_rev]
    if args.references:
        command += ["--references", str(args.references)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=Path, help="folder with the reference files")
    parser.add_argument("--before-rev", default="6217a05", help="earlier autoloss commit")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "results" / "benchmarks" / "lovasz_rmi.md")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args)
        return
    warnings.filterwarnings("ignore", message=".*cholesky.*")
    impls = implementations(args)
    load_before = os.getloadavg()
    shown = ["python", "benchmarks/lovasz_rmi_vs_reference.py", "--before-rev", args.before_rev,
             "--reps", str(args.reps), "--threads", str(args.threads)]
    if args.references:
        shown += ["--references", "REFS"]
    lines = ["# Lovasz-Softmax and RMI against the reference implementations (issue #28)", "",
             f"Measured {date.today()} on {machine_summary()}; {args.threads} thread(s), median "
             f"of {args.reps} interleaved forward+backward passes. Command: `{' '.join(shown)}`"
             + (" (REFS: a folder with the reference files, see the script's docstring; "
                "sha256 prefixes " + ", ".join(f"`{p}` {_digest(args.references / p)}"
                                               for p in ("lovasz_losses.py", "rmi.py",
                                                         "rmi_utils.py")) + ")"
                if args.references else "") + ".",
             f"`before` is autoloss at `{args.before_rev}`. Memory: peak RSS growth of one "
             f"forward+backward in a fresh process, `MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}`. "
             "Agreement: relative loss difference and max gradient difference / max gradient, "
             f"against `{impls[-1]}`.", "",
             "LOAD_LINE", ""]
    for workload, (shape, ignore) in WORKLOADS.items():
        logits, labels = make_inputs(shape, ignore)
        lines += [f"## {workload}, ignore {ignore}", "",
                  f"| loss | implementation | ms | time / {impls[-1]}'s | peak extra MiB "
                  f"| MiB / {impls[-1]}'s | loss rel. diff | grad diff / max |",
                  "|---|---|---|---|---|---|---|---|"]
        for family in FAMILIES:
            fns = {}
            for impl in impls:
                fn, label_map = build(family, impl, shape, ignore, args)
                fns[impl] = (fn, label_map(labels))
            ms = interleaved_ms(fns, logits, args.reps)
            agree = agreement(fns, logits)
            mib = {impl: memory_mib(family, impl, workload, args) for impl in impls}
            for impl in impls:
                lines.append(f"| {family} | {impl} | {ms[impl]:.1f} | "
                             f"{ms[impl] / ms[impls[-1]]:.2f} | {mib[impl]:.0f} | "
                             f"{mib[impl] / mib[impls[-1]]:.2f} | {agree[impl][0]:.1e} | "
                             f"{agree[impl][1]:.1e} |")
                print(lines[-1], flush=True)
        lines.append("")
    load_after = os.getloadavg()
    busy = max(load_before[0], load_after[0]) >= 0.5
    lines[lines.index("LOAD_LINE")] = (
        f"Load average (1, 5, 15 min) before the run {', '.join(f'{v:.2f}' for v in load_before)}"
        f", after it {', '.join(f'{v:.2f}' for v in load_after)}, on {os.cpu_count()} cores"
        + (": the machine was loaded by other jobs, so times are noisy (the ratios, taken from "
           "interleaved passes, less so)." if busy else "."))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
