"""A run's per-step log plain or compressed (autoloss.utils.run_logs): deterministic gzip,
finished runs only, readers and a resumed run, and ``benchmarks/compress_logs.py``."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from autoloss.utils.run_logs import (
    compress_finished_logs,
    compress_log,
    gz_path,
    is_log_file,
    read_log_text,
    run_log,
)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compress_logs.py"


def _run(folder: Path, steps: int = 6, *, finished: bool = True) -> Path:
    """A run folder: a log of ``steps`` records (an evaluation every 2 steps), and metrics.json
    when ``finished``."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, steps + 1)]
    lines += [json.dumps({"step": s, "eval": {"miou": 0.1 * s}}) for s in range(2, steps + 1, 2)]
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    if finished:
        (folder / "metrics.json").write_text("{}")
    return folder / "log.jsonl"


def test_a_compressed_log_reads_like_the_plain_one_and_is_deterministic(tmp_path):
    plain = _run(tmp_path / "a")
    twin = _run(tmp_path / "b")
    text = plain.read_text()
    gz = compress_log(plain)
    assert gz == gz_path(plain) and gz.name == "log.jsonl.gz" and not plain.exists()
    assert read_log_text(gz) == text and gzip.decompress(gz.read_bytes()).decode() == text
    assert compress_log(twin).read_bytes() == gz.read_bytes()  # no time, no name in the header
    assert gz.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime field
    assert not list(tmp_path.rglob(".*.tmp"))


def test_run_log_prefers_the_plain_file(tmp_path):
    folder = _run(tmp_path / "r").parent
    assert run_log(folder) == folder / "log.jsonl"
    compress_log(folder / "log.jsonl")
    assert run_log(folder) == folder / "log.jsonl.gz"
    (folder / "log.jsonl").write_text("")  # a resumed run writes a plain log again
    assert run_log(folder) == folder / "log.jsonl"
    assert run_log(tmp_path / "none") is None
    assert is_log_file("a/log.jsonl") and is_log_file("log.jsonl.gz") and not is_log_file("x.gz")


def test_only_finished_runs_are_compressed_and_once(tmp_path):
    done = _run(tmp_path / "runs" / "ce" / "seed0")
    running = _run(tmp_path / "runs" / "ce" / "seed1", finished=False)
    kept = _run(tmp_path / "preregistered" / "runs" / "seed0")
    first = compress_finished_logs(tmp_path, skip=["preregistered"])
    assert [c.path for c in first] == [gz_path(done)]
    assert first[0].plain_bytes > first[0].gz_bytes > 0
    assert running.is_file() and kept.is_file() and not done.exists()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert compress_finished_logs(tmp_path, skip=["preregistered"]) == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_the_readers_read_a_compressed_log(tmp_path):
    from autoloss.report import plots
    from autoloss.retrain.runs import _read_evals

    log = _run(tmp_path / "runs" / "ce" / "seed0")
    plain_curves = plots.read_training_log(log)
    plain_evals = _read_evals(log.parent)
    gz = compress_log(log)
    assert plots.read_training_log(gz) == plain_curves
    assert plots.read_training_log(log) == plain_curves  # the absent plain name finds the .gz
    assert _read_evals(log.parent) == plain_evals == [(2, {"miou": 0.2}), (4, {"miou": 0.4}),
                                                      (6, {"miou": pytest.approx(0.6)})]
    other = _run(tmp_path / "runs" / "focal" / "seed0")
    labels = plots.run_labels([log, other])  # both plain
    assert plots.run_labels([gz, compress_log(other)]) == labels == ["ce", "focal"]
    assert plots.run_labels([log, gz_path(other)]) == labels  # one of each


def test_a_resumed_run_writes_a_plain_log_again(tmp_path):
    from autoloss.train.callbacks import JsonlWriter

    log = _run(tmp_path / "r")
    compress_log(log)
    writer = JsonlWriter(log, start=3)
    writer.write({"step": 4, "loss": 0.0})
    writer.close()
    assert not gz_path(log).exists()
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 2, 4]
    compress_log(log)
    JsonlWriter(log, start=0).close()  # a new run: the old compressed log is stale
    assert not gz_path(log).exists() and log.read_text() == ""


def test_the_script_compresses_finished_runs_and_leaves_preregistered(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("compress_logs", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    done = _run(tmp_path / "results" / "cmp" / "runs" / "ce" / "seed0")
    kept = _run(tmp_path / "results" / "preregistered" / "runs" / "ce" / "seed0")
    assert script.main([str(tmp_path / "results")]) == 0
    assert gz_path(done).is_file() and kept.is_file()
    assert "compressed" in capsys.readouterr().out
    assert script.main([str(tmp_path / "results")]) == 0
    assert "no uncompressed log" in capsys.readouterr().out
