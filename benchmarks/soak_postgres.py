"""Soak test of a search shared by several processes on one PostgreSQL study, under kills.

Three ``autoloss search`` processes (two workers each) work on one study of ``--trials`` trials
with the fake proxy of the tests (``tests/fake_proxy.py``: no training, a score from the curves);
a killer SIGKILLs a random search process or worker every ``--kill-every`` seconds (2), and starts a
killed search process again with the same command (the way a scheduler would). At the end every
process must have exited cleanly and the study must hold exactly ``--trials`` counted trials,
no two trials with the same parameters, and no completed trial lost.

    python benchmarks/soak_postgres.py                 # a throwaway server (initdb, pg_ctl)
    python benchmarks/soak_postgres.py --storage postgresql+psycopg2://user:PW@host/db

Writes ``results/soak_postgres.md`` and ``.json`` (the command, the counts, the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

EXPERIMENT = """\
metric: miou
data: shapes
trials: {trials}
sampler: tpe
seed: 0
workers: 2
rescore_top: 0
plots: false
out: {out}
storage: {storage}
cache: {cache}
study: soak
proxy_factory: fake_proxy:FakeProxy
proxy: {{sleep: 0.15}}
"""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _budget_reached(storage: str, trials: int) -> bool:
    import optuna

    from autoloss.search.budget import finished
    from autoloss.search.storage import make_storage

    try:
        study = optuna.load_study(study_name="soak", storage=make_storage(storage))
    except KeyError:  # not created yet
        return False
    return finished(study) >= trials


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
           "AUTOLOSS_TRUST_CODE": "1"}
    code = "import sys; from autoloss.cli.app import main; sys.exit(main(sys.argv[1:]))"
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-c", code, "search", "--config", str(config),
                                 "--no-progress"], env=env, stdout=out, stderr=subprocess.STDOUT)


def soak(storage: str, *, trials: int, processes: int, kill_every: float, timeout: float,
         seed: int) -> dict:
    import optuna

    from autoloss.search.budget import DISCARDED
    from autoloss.search.storage import make_storage

    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="autoloss-soak-"))
    configs = []
    for i in range(processes):
        path = folder / f"p{i}.yaml"
        path.write_text(EXPERIMENT.format(trials=trials, out=folder / f"out{i}", storage=storage,
                                          cache=folder / f"cache{i}"))
        configs.append(path)
    started = time.monotonic()
    procs = {i: _start(path, folder / f"p{i}.log") for i, path in enumerate(configs)}
    kills = {"search process": 0, "worker": 0}
    restarts = 0
    next_kill = time.monotonic() + kill_every
    while time.monotonic() - started < timeout:
        time.sleep(0.2)
        alive = {i: p for i, p in procs.items() if p.poll() is None}
        if not alive:
            break
        if time.monotonic() >= next_kill and not _budget_reached(storage, trials):
            # (once the study has its trials, the processes only wait, export and summarise)
            next_kill = time.monotonic() + kill_every
            i, proc = rng.choice(sorted(alive.items()))
            workers = _children(proc.pid)
            if workers and rng.random() < 0.7:
                os.kill(rng.choice(workers), 9)
                kills["worker"] += 1
            else:
                proc.kill()
                proc.wait()
                kills["search process"] += 1
                procs[i] = _start(configs[i], folder / f"p{i}.log")  # as a scheduler would
                restarts += 1
    wall = time.monotonic() - started
    codes = {i: p.poll() for i, p in procs.items()}
    study = optuna.load_study(study_name="soak", storage=make_storage(storage))
    states = [t.state.name for t in study.trials]
    ran = [t for t in study.trials if DISCARDED not in t.user_attrs]
    params = [tuple(sorted(t.params.items())) for t in ran if t.params]
    counted = sum(s in ("COMPLETE", "PRUNED") for s in states)
    summaries = {(folder / f"out{i}" / "summary.md").is_file() for i in range(processes)}
    return {
        "command": "python benchmarks/soak_postgres.py" + (
            "" if os.environ.get("SOAK_STORAGE_GIVEN") is None else " --storage URL"),
        "storage": ("the given PostgreSQL URL" if os.environ.get("SOAK_STORAGE_GIVEN")
                    else "a throwaway PostgreSQL server on 127.0.0.1 (tests/postgres_server.py)"),
        "trials_requested": trials, "processes": processes, "workers_per_process": 2,
        "kill_every_s": kill_every, "kills": kills, "restarts": restarts,
        "exit_codes_of_last_processes": codes,
        "trials_counted": counted, "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed_killed": sum(1 for t in study.trials if t.state.name == "FAIL"
                             and DISCARDED not in t.user_attrs),
        "discarded": sum(1 for t in study.trials if DISCARDED in t.user_attrs),
        "waiting_or_running_left": states.count("WAITING") + states.count("RUNNING"),
        "duplicate_parameter_sets": len(params) - len(set(params)),
        "lost_completed": max(0, trials - counted) if all(c == 0 for c in codes.values()) else None,
        "every_process_wrote_a_summary": summaries == {True},
        "wall_time_s": round(wall, 1),
    }


def _report(result: dict) -> str:
    ok = (result["trials_counted"] == result["trials_requested"]
          and result["duplicate_parameter_sets"] == 0 and result["waiting_or_running_left"] == 0
          and all(c == 0 for c in result["exit_codes_of_last_processes"].values()))
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items() if k != "command")
    return (f"# Soak test: one PostgreSQL study, {result['processes']} processes x 2 workers, "
            f"random SIGKILLs\n\nProduced by `{result['command']}` (fake proxy of the tests: no "
            f"training; what is tested is the bookkeeping).\n\n**{'PASS' if ok else 'FAIL'}**: "
            f"{result['trials_counted']} counted trials for {result['trials_requested']} "
            f"requested, {result['duplicate_parameter_sets']} duplicate parameter sets, "
            f"{result['kills']['worker']} workers and {result['kills']['search process']} search "
            f"processes killed, {result['wall_time_s']} s.\n\n| quantity | value |\n|---|---|\n"
            f"{rows}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "results" / "soak_postgres"))
    args = parser.parse_args()
    options = dict(trials=args.trials, processes=args.processes, kill_every=args.kill_every,
                   timeout=args.timeout, seed=args.seed)
    if args.storage:
        os.environ["SOAK_STORAGE_GIVEN"] = "1"
        result = soak(args.storage, **options)
    else:
        from postgres_server import fresh_database, postgres_url

        server = postgres_url()
        url = next(server)
        try:
            result = soak(fresh_database(url, "soak"), **options)
        finally:
            server.close()
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(_report(result))
    print(_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
