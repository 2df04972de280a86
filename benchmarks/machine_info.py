"""What the benchmarks report about the machine they ran on (imported by the scripts in this
folder: ``python benchmarks/<script>.py`` puts the folder on ``sys.path``)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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
