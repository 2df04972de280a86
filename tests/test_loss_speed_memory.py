"""``benchmarks/loss_speed.py``'s memory measurement, in a fresh process as the benchmark runs
it (Linux: ``/proc/self/clear_refs``), on a toy loss whose buffers are known."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

_CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
import torch
import loss_speed as ls

def loss(x, y):  # a 32 MiB copy, then its exp (32 MiB) saved for the backward
    return torch.exp(x.repeat(8, 1, 1)).sum()

print(json.dumps(ls.memory_steps(loss, torch.zeros(1024, 1024), None)))
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's /proc/self/clear_refs")
def test_memory_steps_count_live_buffers_in_a_fresh_process(monkeypatch):
    monkeypatch.syspath_prepend(str(_BENCH))
    import loss_speed

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=loss_speed.MMAP_THRESHOLD)
    out = subprocess.run([sys.executable, "-c", _CHILD.format(bench=str(_BENCH))], env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    mib = json.loads(out.stdout.strip().splitlines()[-1])
    # every call holds the copy and the exp at once (64 MiB); with the threshold lowered, the
    # later calls pay it again instead of reusing a grown heap
    assert 60 <= mib["step"] <= 200, mib
    assert mib["first"] >= 60, mib


def test_memory_processes_never_get_the_timing_runs_allocator_settings(monkeypatch):
    """A run timed with ``THP_MEM_ALLOC_ENABLE=1`` (or glibc settings) states them, passes them to
    its timing processes and keeps them from its memory processes, whose figures then do not
    depend on them."""
    monkeypatch.syspath_prepend(str(_BENCH))
    import loss_speed

    for name in loss_speed.ALLOCATOR_VARS:
        monkeypatch.delenv(name, raising=False)
    assert loss_speed.allocator_settings() == []
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4294967296")
    assert loss_speed.allocator_settings() == ["THP_MEM_ALLOC_ENABLE=1",
                                               "MALLOC_TRIM_THRESHOLD_=4294967296"]
    timing = loss_speed.child_env(True)
    assert timing["THP_MEM_ALLOC_ENABLE"] == "1" and timing["MALLOC_TRIM_THRESHOLD_"] == "4294967296"
    memory = loss_speed.child_env(False, MALLOC_MMAP_THRESHOLD_=loss_speed.MMAP_THRESHOLD)
    assert "THP_MEM_ALLOC_ENABLE" not in memory and "MALLOC_TRIM_THRESHOLD_" not in memory
    assert memory["MALLOC_MMAP_THRESHOLD_"] == loss_speed.MMAP_THRESHOLD
    assert memory["PATH"] == os.environ["PATH"]
