"""Ctrl-C and SIGTERM mean the same for every long command (``train``, ``compare``, ``study``,
``search``): one exit code, one line "interrupted; run the same command to resume"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from autoloss.cli import app as cli

pytestmark = pytest.mark.usefixtures("single_thread")

# each command, its arguments, and the function it runs the job in (replaced by one that is
# interrupted the way the test says)
COMMANDS = {
    "train": (["train", "--loss", "soft-miou", "--data", "shapes"],
              "autoloss.retrain.compare", "train_run"),
    "compare": (["compare", "--losses", "cross_entropy,soft-miou", "--data", "shapes"],
                "autoloss.retrain.compare", "compare_losses"),
    "study": (["study", "--config", "study.yaml"], "autoloss.workflow", "run_study"),
    "search": (["search", "--metric", "miou", "--data", "shapes"], "autoloss.search.run",
               "run_search"),
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_signal_interrupts_every_command_alike(command, signum, monkeypatch, capsys, tmp_path):
    import importlib

    argv, module, name = COMMANDS[command]

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(30)  # the signal arrives first
        raise AssertionError("the signal did not interrupt the command")

    monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    monkeypatch.chdir(tmp_path)
    # a shell's background job (``cmd &``) starts with SIGINT ignored and Python keeps it so:
    # give the test Python's own Ctrl-C handler, as an interactive run has, and restore it
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGTERM)
        assert cli.main(argv) == cli.EXIT_INTERRUPTED == 130
    finally:
        signal.signal(signal.SIGINT, previous_int)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"autoloss {command}: interrupted; run the same command to resume")
    assert signal.getsignal(signal.SIGTERM) is before  # restored for the caller


def test_sigterm_stops_a_real_training_process_like_ctrl_c(tmp_path):
    """A real ``autoloss train`` process: SIGTERM once its first checkpoint is written gives the
    line and exit code of Ctrl-C, no traceback, and the checkpoint to resume from."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "autoloss.cli", "train", "--loss", "soft-miou", "--data",
            "shapes?n=16&size=32", "--width", "4", "--depth", "2", "--steps", "100000",
            "--batch-size", "2", "--eval-every", "2", "--num-threads", "1", "--no-progress",
            "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOLOSS_COMPILE": "0"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    checkpoint = out / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (f"autoloss train: interrupted; run the same command "
                                            f"to resume (from {checkpoint})")
    assert "Traceback" not in err and checkpoint.is_file()



@pytest.mark.parametrize("group", [False, True], ids=["main-process", "process-group"])
def test_sigterm_to_a_search_with_workers_is_one_line(tmp_path, group):
    """A real ``autoloss search --workers 2`` that gets SIGTERM mid-trial, in its main process
    (``kill PID``) or in its whole process group (a terminal, a scheduler): exit 130, the one
    line, no optuna traceback of the stopped trial, no resource_tracker warning, no process
    left (issue 26, items 8 and 10)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "autoloss.cli", "search", "--out", str(out), "--data",
            "shapes", "--trials", "40", "--workers", "2", "--sampler", "random",
            "--rescore-top", "0", "--no-plots", "--no-progress", "--proxy-factory",
            "fake_proxy:FakeProxy", "--proxy", "sleep=1", "--cache", str(tmp_path / "cache")]
    env = {**os.environ, "AUTOLOSS_TRUST_CODE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not _running_trials(out):
        time.sleep(0.2)
    time.sleep(0.5)
    (os.killpg if group else os.kill)(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "autoloss search: interrupted; run the same command to resume"], err
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # the workers are gone too


def _running_trials(run) -> int:
    """Trials in state RUNNING in ``run/study.db`` (0 while it does not exist yet)."""
    import sqlite3

    if not (run / "study.db").is_file():
        return 0
    try:
        with sqlite3.connect(run / "study.db", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:  # tables not created yet
        return 0
