"""Several processes on one study (the way to use more machines), with the fake proxy: the
trial budget is global, no two trials share parameters, the first trials are queued once, and a
restart fails the trials of its dead processes at once.

No wait here or in the code under test depends on a sleep being long enough (issue 26, item 12):
a trial about to be discarded is not waited for (``budget.doomed``), references queued twice run
once. Stress check on the 2-core machine, two busy loops beside (the first sessions: other
jobs or ``python -c "import itertools; all(itertools.count(1))"`` instead of ``yes``):

    nice -n -5 yes > /dev/null &   # twice
    for i in $(seq 1 20); do
        python -m pytest -q -x tests/test_scale_out.py tests/test_interrupt.py || break
    done

2026-12-07, code of commit 1d9156f: 5 runs in a row passed (21 tests each, 8-11 min a run); the
loop was stopped there for time, not by a failure (20 runs not yet reached). Later that day, code
of commit 8001557 (21 tests each), beside two one-thread CamVid pretrainings (load 3.4-5.8 on the 2
cores) instead of the busy loops: 13 runs in a row passed (247-341 s a run); stopped there for
the session's time, not by a failure. Code of commit 0f8a6a2, the scale-out and the kill tests
together (``tests/test_scale_out.py tests/test_interrupt.py``, 32 tests a run), beside two
one-thread CamVid pretrainings at nice -5 and other jobs (load 4-7 on the 2 cores): 6 runs in a
row passed (722-1023 s a run); the next session, same code and command beside two busy ``yes``
loops at nice -5, runs 7-9 passed too (756-875 s) and run 10 **failed**: one process of the
three-process test ran all 12 trials before the other two had started (a test that relied on the
load letting them start in time; since be326a9 each process's first trial waits for the
others). At be326a9 run 2 **failed**: the three processes, starting their trials together, took
the same queued trial from SQLite and the slower one stopped on ``UpdateFinishedTrialError``
(a race in the search, fixed in 8070005:
``test_a_queued_trial_another_process_finished_first_does_not_stop_the_search``). Code of commit
7470fa2 (the SIGTERM-with-workers test's workers also wait for each other), the same command
beside two busy ``yes`` loops at nice -5 (and, for runs 1-3, the full suite of a CI check:
load 3-6): 5 runs in a row passed (826-989 s a run, 34 tests each); stopped there for the
session's time, not by a failure. The next session, same code and command, run 6 passed (702 s)
and run 7 **failed**: the SIGTERM-with-workers test polled the study for two running trials
among more than three, and the search (12 trials of 0.6 s) finished between two polls, so the
SIGTERM reached a search that had exited 0 (a test that relied on the load letting its poll see
the moment). Since then the fake proxy can *hold* a scale-out test's trials (``hold_while``,
``hold_after``): after their first few, the workers' trials wait while a file exists, so the
SIGTERM and the SIGKILL tests stop a search that cannot have finished, however fast or slow the
machine, and remove the file before resuming. At 420763e runs 1-2 passed (901 and 829 s); the
CI-equivalent suite beside them then failed the SIGKILL test on PostgreSQL: its poll opened the
new database while the two searches created it, and optuna's ``StorageInternalError`` (a
failed commit of the version rows) was not retried (a race of the product; since 70df672
``make_storage`` retries it: ``test_opening_a_storage_retries_a_commit_another_process_raced``).
Code of 70df672, the same command beside two busy ``yes`` loops: 2 runs in a row passed (634 and
739 s, 35 tests each, load 3-4); stopped there for the session's time, not by a failure."""

from __future__ import annotations

import difflib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from fake_proxy import fast_tmp_dir
from optuna.trial import TrialState
from postgres_server import fresh_database, postgres_url

from autoloss.errors import StorageError
from autoloss.search.budget import DISCARDED, OWNER, over_budget
from autoloss.search.config import SearchConfig
from autoloss.search.run import run_search
from autoloss.search.storage import make_storage

TESTS = Path(__file__).resolve().parent
EXPERIMENT = """\
metric: miou
data: shapes
trials: {trials}
sampler: {sampler}
seed: 0
rescore_top: 0
plots: false
out: {out}
storage: {storage}
cache: {cache}
proxy_factory: fake_proxy:FakeProxy
proxy: {{sleep: 0.05}}
"""


@pytest.fixture()
def folder() -> Iterator[Path]:
    yield from fast_tmp_dir()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    yield from postgres_url()


@pytest.fixture(params=["sqlite", "postgresql", "journal"])
def storage(request, folder) -> str:
    """A new study storage: a SQLite file, a database on a real PostgreSQL server, or optuna's
    file journal."""
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'study.db'}"
    if request.param == "journal":
        return f"journal:{folder / 'journal.log'}"
    server = request.getfixturevalue("postgres_server")
    return fresh_database(server, f"t{abs(hash(request.node.name)) % 10**8}")


def _start(config: Path, *, new_session: bool = False) -> subprocess.Popen[str]:
    """``autoloss search --config CONFIG`` in a new process (``new_session``: in its own process
    group, so that ``os.killpg`` reaches its workers too)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get(
        "PYTHONPATH", "")]), "AUTOLOSS_TRUST_CODE": "1"}  # proxy_factory imports a module
    code = "import sys; from autoloss.cli.app import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "search", "--config", str(config),
                             "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=new_session)


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    """The output of ``proc`` once it ends; on a timeout it is killed and the test fails with
    what it printed."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the search did not end in {timeout} s; its output:\n{proc.communicate()[0]}")


def _all_succeed(procs: list[subprocess.Popen[str]]) -> list[str]:
    """The outputs of processes that must all exit with 0; else the test fails with the whole
    output of each failed one (an assertion message would be cut)."""
    outputs = [_finish(p) for p in procs]
    failed = [f"process {i} exited with {p.returncode}:\n{out}"
              for i, (p, out) in enumerate(zip(procs, outputs)) if p.returncode != 0]
    if failed:
        pytest.fail("\n\n".join(failed), pytrace=False)
    return outputs


def _study(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="miou-shapes", storage=make_storage(storage))


def _study_or_none(storage: str) -> optuna.Study | None:
    """:func:`_study`, or None while the search has not created it yet."""
    try:
        return _study(storage)
    except KeyError:
        return None


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_three_processes_finish_exactly_the_budget_without_duplicates(folder, storage, sampler):
    configs = []
    for i in range(3):  # one study, three run folders (as on three hosts)
        path = folder / f"p{i}.yaml"
        text = EXPERIMENT.format(trials=12, sampler=sampler, out=folder / f"out{i}",
                                 storage=storage, cache=folder / f"cache{i}")
        # each process's first trial waits for the other two (however late the load lets them
        # start), so the three share the study for real
        path.write_text(text.replace("proxy: {sleep: 0.05}", "proxy: {sleep: 0.05, barrier_dir: "
                                     f"{folder / 'barrier'}, barrier_count: 3}}"))
        configs.append(path)
    procs = [_start(path) for path in configs]
    _all_succeed(procs)
    study = _study(storage)
    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 12  # the budget is the study's, not each process's
    ran = [t for t in study.trials if DISCARDED not in t.user_attrs]
    assert all(t.state != TrialState.FAIL for t in ran)
    params = [tuple(sorted(t.params.items())) for t in ran]
    assert len(set(params)) == len(params), "two trials sampled the same parameters"
    refs = [t.user_attrs["reference"] for t in ran if "reference" in t.user_attrs]
    assert refs == ["identity", "paper:asl-voc-miou"]  # each ran once (a second queue's copies
    # are discarded: test_search.py::test_a_reference_queued_twice_runs_once)
    summaries = [_without_wall_time(folder / f"out{i}" / "summary.md") for i in range(3)]
    for i in (1, 2):  # each process waited for the others' trials, then wrote the same
        _assert_same(summaries[0], summaries[i])
    assert "running" not in summaries[0]  # a trial about to be discarded is shown as one
    assert f"- trials: {sum(t.state == TrialState.COMPLETE for t in counted)} complete" in (
        summaries[0])
    pids = {t.user_attrs[OWNER]["pid"] for t in ran}
    assert len(pids) == 3, "each process should have run trials"


def _assert_same(first: str, second: str) -> None:
    assert first == second, "\n".join(difflib.unified_diff(
        first.splitlines(), second.splitlines(), "first", "second", lineterm=""))


def _without_wall_time(path: Path) -> str:
    """A summary without what differs between the processes of one study: their wall time, the
    command each was started with, and how many discarded trials each saw (a process can still
    start, and discard, a trial after another wrote its summary)."""
    return "\n".join(re.sub(r" \(\d+ more discarded: [^)]*\)", "", line)
                     for line in path.read_text().splitlines()
                     if not line.startswith(("- wall time", "Produced by `")))


def test_a_trial_past_the_budget_is_discarded(folder):
    study = optuna.create_study(direction="maximize")
    for value in (0.1, 0.2):
        trial = study.ask()
        study.tell(trial, value)
    running = study.ask()  # another process's running trial counts
    assert over_budget(study, running.number + 1, 3)
    assert not over_budget(study, running.number + 1, 4)
    assert not over_budget(study, running.number, 3)  # it sees only the trials before it


def test_restart_fails_the_trials_of_dead_processes_at_once(folder):
    """A trial left RUNNING by a killed process of this host is failed when the search
    restarts (no 90 s grace, no WAITING retry), and a new trial takes its place."""
    cfg = SearchConfig(metric="miou", data="shapes", trials=3, sampler="random", plots=False,
                       rescore_top=0, out=folder / "run", cache=folder / "cache",
                       proxy_factory="fake_proxy:FakeProxy")
    run_search(cfg, progress=False)
    study = _study(f"sqlite:///{folder / 'run' / 'study.db'}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask()  # what a SIGKILLed process leaves behind
    trial.set_user_attr(OWNER, {"host": os.uname().nodename, "pid": dead.pid})
    started = time.monotonic()
    result = run_search(SearchConfig(**{**cfg.__dict__, "trials": 4}), progress=False)
    assert time.monotonic() - started < 60
    study = _study(result.storage)
    assert study.trials[trial.number].state == TrialState.FAIL
    assert result.counts["complete"] == 4
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


def test_storage_errors_are_one_clear_line_without_the_password(monkeypatch):
    with pytest.raises(StorageError, match=r"cannot open the storage nosuch://u:\*\*\*@x/db"):
        make_storage("nosuch://u:hunter2@x/db")
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # not installed
    with pytest.raises(ImportError, match=r"needs the database driver psycopg2.*autoloss\[postgres\]"
                       ) as err:
        make_storage("postgresql://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(err.value)


def test_a_killed_worker_costs_only_its_trial(folder, storage):
    """SIGKILL of one of two workers mid-trial: its trial is failed (not counted), new workers
    run the missing trials, and the search ends with its budget, summary and export."""
    cfg = SearchConfig(metric="miou", data="shapes", trials=8, sampler="random", plots=False,
                       storage=storage,
                       rescore_top=0, workers=2, out=folder / "run", cache=folder / "cache",
                       proxy_factory="fake_proxy:FakeProxy", proxy={"kill_once": True,
                                                                    "sleep": 0.02})
    with pytest.warns(UserWarning, match=r"1 search worker\(s\) exited with codes \[-9\]"):
        result = run_search(cfg, progress=False)
    assert (folder / "cache" / "killed").is_file()
    study = _study(result.storage)
    assert result.counts["complete"] + result.counts["pruned"] == 8
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and "fail_reason" not in failed[0].user_attrs
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))
    assert (folder / "run" / "best_loss.yaml").is_file()
    assert "1 failed" in (folder / "run" / "summary.md").read_text()


def test_sigterm_stops_the_workers_and_the_study_resumes(folder):
    out = folder / "run"
    config = folder / "search.yaml"
    hold = folder / "hold"
    hold.touch()
    config.write_text(EXPERIMENT.format(trials=12, sampler="random", out=out,
                                        storage=f"sqlite:///{out / 'study.db'}",
                                        cache=folder / "cache").replace(
        "sleep: 0.05", f"sleep: 0.05, hold_while: {hold}, hold_after: 4") + "workers: 2\n")
    proc = _start(config)
    deadline = time.monotonic() + 600
    while True:  # trials finished, both workers run one; and, since their first 4 trials,
        study = _study_or_none(f"sqlite:///{out / 'study.db'}")  # they hold each next one:
        if study is not None and len(study.get_trials(states=(TrialState.RUNNING,))) == 2 and (
                len(_counted(study)) >= 4):  # the search cannot finish before the SIGTERM
            break
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the workers did not reach their held trials"
        time.sleep(0.2)
    proc.terminate()
    proc.communicate(timeout=60)
    assert proc.returncode != 0  # the search joined its workers before it exited
    pids = {t.user_attrs[OWNER]["pid"] for t in _study(f"sqlite:///{out / 'study.db'}").trials
            if OWNER in t.user_attrs}
    for pid in pids:  # no worker outlives its search
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    hold.unlink()
    resumed = _start(config)  # the same command: fails the killed trials at once, finishes
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    study = _study(f"sqlite:///{out / 'study.db'}")
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 12
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))
    assert (out / "summary.md").is_file()


def _two_by_two(folder: Path, storage: str, trials: int, proxy: str) -> list[Path]:
    """Two process configs (two run folders, as on two hosts) of two workers each on one study;
    one shared cache folder, so ``kill_once`` kills one worker of the four."""
    configs = []
    for i in range(2):
        path = folder / f"p{i}.yaml"
        path.write_text(EXPERIMENT.format(trials=trials, sampler="tpe", out=folder / f"out{i}",
                                          storage=storage, cache=folder / "cache").replace(
            "proxy: {sleep: 0.05}", f"proxy: {proxy}") + "workers: 2\n")
        configs.append(path)
    return configs


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_two_processes_of_two_workers_survive_a_killed_worker(folder, storage):
    """2 processes x 2 workers on one study, one worker SIGKILLed mid-trial: exactly the budget
    is finished, no parameter set twice, only the killed trial failed, one summary."""
    configs = _two_by_two(folder, storage, 12, "{sleep: 0.05, kill_once: true}")
    procs = [_start(path) for path in configs]
    outputs = _all_succeed(procs)
    assert (folder / "cache" / "killed").is_file()  # a worker did die
    assert "exited with codes [-9]" in "".join(outputs)
    study = _study(storage)
    assert len(_counted(study)) == 12
    ran = [t for t in study.trials if DISCARDED not in t.user_attrs]
    failed = [t for t in ran if t.state == TrialState.FAIL]
    assert len(failed) == 1, [(t.number, t.state) for t in ran]
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))
    params = [tuple(sorted(t.params.items())) for t in ran if t.state != TrialState.FAIL]
    assert len(set(params)) == len(params), "two trials sampled the same parameters"
    _assert_same(*(_without_wall_time(folder / f"out{i}" / "summary.md") for i in range(2)))
    assert all((folder / f"out{i}" / "best_loss.yaml").is_file() for i in range(2))


def test_killing_every_process_and_worker_then_resuming(folder, storage):
    """SIGKILL of both processes and all their workers mid-search; one process started again
    finishes the budget: no completed trial lost, nothing left RUNNING or WAITING."""
    hold = folder / "hold"
    hold.touch()
    configs = _two_by_two(folder, storage, 10, f"{{sleep: 0.05, hold_while: {hold}, hold_after: 3}}")
    procs = [_start(path, new_session=True) for path in configs]
    deadline = time.monotonic() + 600
    while True:  # trials finished and workers run others; since the workers' first 3 trials
        study = _study_or_none(storage)  # they hold each next one: the search cannot finish
        if study is not None and len(_counted(study)) >= 3 and study.get_trials(  # before the kill
                states=(TrialState.RUNNING,)):
            break
        assert all(proc.poll() is None for proc in procs), [p.communicate()[0] for p in procs]
        assert time.monotonic() < deadline, "the workers did not reach their held trials"
        time.sleep(0.2)
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    before = {t.number: t.value for t in _study(storage).trials if t.state == TrialState.COMPLETE}
    assert before, "nothing had finished before the kill"
    hold.unlink()
    resumed = _start(configs[0])
    output = _finish(resumed)
    assert resumed.returncode == 0, output
    study = _study(storage)
    assert len(_counted(study)) == 10
    left = study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))
    assert not left, [(t.number, t.state.name, t.user_attrs, t.datetime_start) for t in left]
    after = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    assert all(after.get(number) == value for number, value in before.items())
    assert (folder / "out0" / "summary.md").is_file()


def test_an_orphan_another_process_failed_first_is_skipped(monkeypatch):
    """Two processes may fail the same dead worker's trial at once; the one the database
    refuses (the trial is already finished) skips it instead of stopping its search."""
    import socket

    from autoloss.search.budget import fail_orphans

    study = optuna.create_study()
    trial = study.ask()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr(OWNER, {"host": socket.gethostname(), "pid": dead.pid})

    def finished_elsewhere(*args, **kwargs):
        raise optuna.exceptions.UpdateFinishedTrialError("Trial#0 has already finished")

    monkeypatch.setattr(study, "tell", finished_elsewhere)
    assert fail_orphans(study) == []
    monkeypatch.undo()
    assert fail_orphans(study) == [trial.number]
    assert study.trials[0].state == TrialState.FAIL


def test_a_trial_about_to_be_discarded_is_not_waited_for_nor_shown_running(folder):
    """Once the budget is reached, another process's trial that started too late is known to
    be discarded: the wait before the summary does not wait for it (however long its process
    stalls), and the summary does not call it running."""
    from autoloss.search.budget import doomed
    from autoloss.search.export import summarize
    from autoloss.search.workers import _wait_for_running

    study = optuna.create_study(direction="maximize")
    for value in (0.1, 0.2):
        study.tell(study.ask(), value)
    late = study.ask()  # a stalled process's trial, not yet discarded
    assert doomed(study, 2) == {late.number}
    assert doomed(study, 3) == frozenset()  # within a budget of 3 it runs
    started = time.monotonic()
    _wait_for_running(study, 2, progress=False)
    assert time.monotonic() - started < 5
    text = summarize(study, discarding=doomed(study, 2))
    assert "- trials: 2 complete, 0 pruned, 0 failed (1 more discarded" in text
    assert "running" not in text


@pytest.mark.parametrize("when", ["before-its-tell", "during-its-tell"])
def test_a_queued_trial_another_process_finished_first_does_not_stop_the_search(folder, when,
                                                                              monkeypatch):
    """Two processes that start together can both take the same queued trial from SQLite (no
    row locks); the slower one cannot record its result, and goes on with the next trial.
    Optuna refuses with a ValueError when the trial had finished before its tell read it, the
    database with ``UpdateFinishedTrialError`` when it finished during the tell (stress run 2
    at be326a9: that error ended one of three processes)."""
    from types import SimpleNamespace

    from autoloss.search.workers import _optimize

    storage = f"sqlite:///{folder / 'study.db'}"
    study = optuna.create_study(storage=make_storage(storage), study_name="s")
    study.enqueue_trial({"x": 0.5})
    other = optuna.load_study(study_name="s", storage=make_storage(storage))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 0 and when == "before-its-tell":
            other.tell(0, 1.0)  # the other process, which took trial 0 too, records it first
        return x

    record = study._storage.set_trial_state_values

    def racing(trial_id, state, values=None):
        if (when == "during-its-tell" and state.is_finished()
                and study._storage.get_trial_number_from_id(trial_id) == 0):
            other.tell(0, 1.0)  # between this process's read of the trial and its write
        return record(trial_id, state, values)

    monkeypatch.setattr(study._storage, "set_trial_state_values", racing)
    plan = SimpleNamespace(config=SimpleNamespace(trials=3, timeout=None))
    _optimize(study, plan, objective, 3, [])
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    assert trials[0].number == 0 and trials[0].value == 1.0  # the other process's result


def _rdb_failing(times: int):
    """A stand-in for ``optuna.storages.RDBStorage`` whose construction fails ``times`` times as
    optuna's does when another process commits the new database's version rows at the same
    moment (CI at 420763e: the test's poll and two searches opening one new PostgreSQL database)."""
    import sqlalchemy.exc

    calls = []

    def rdb(url, **kwargs):
        calls.append(url)
        if len(calls) <= times:
            try:
                raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("could not serialize"))
            except sqlalchemy.exc.OperationalError as err:
                raise optuna.exceptions.StorageInternalError(
                    "An exception is raised during the commit.") from err
        return ("storage", url)

    return rdb, calls


def test_opening_a_storage_retries_a_commit_another_process_raced(monkeypatch):
    import autoloss.search.storage as storage_module

    monkeypatch.setattr(storage_module.time, "sleep", lambda seconds: None)
    rdb, calls = _rdb_failing(2)
    monkeypatch.setattr(optuna.storages, "RDBStorage", rdb)
    assert make_storage("sqlite:///:memory:") == ("storage", "sqlite:///:memory:")
    assert len(calls) == 3
    rdb, calls = _rdb_failing(100)  # not a race after all: one error, its cause named
    monkeypatch.setattr(optuna.storages, "RDBStorage", rdb)
    with pytest.raises(StorageError, match=r"cannot open the storage sqlite:///:memory:: An "
                                           r"exception is raised during the commit\. \(.*serialize"):
        make_storage("sqlite:///:memory:")
    assert len(calls) == 5
