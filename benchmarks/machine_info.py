"""What the benchmarks report about the machine they ran on (imported by the scripts in this
folder: ``python benchmarks/<script>.py`` puts the folder on ``sys.path``)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_summary() -> str:
    """One line: CPU model, logical CPUs, torch and Python versions."""
    import torch

    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, Python "
            f"{platform.python_version()}")


def git_commit() -> str:
    """The repository's short commit hash (``unknown`` outside a git checkout)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                         capture_output=True, check=False)
    return out.stdout.strip() or "unknown"


def out_option(out: Path, default: Path) -> str:
    """`` --out PATH`` for a rerun command (relative to the repository when inside it), or
    nothing when ``out`` is the script's default."""
    if out.resolve() == default.resolve():
        return ""
    try:
        return f" --out {out.resolve().relative_to(ROOT)}"
    except ValueError:
        return f" --out {out.name}"
