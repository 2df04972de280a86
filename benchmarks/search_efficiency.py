"""Search efficiency: the best proxy score each sampler reaches against trials and compute.

Runs one complete ``autoloss.search.run.run_search`` per (arm, seed) on the same proxy and data set,
then reports best-so-far curves, the trials each arm needs to reach the score PPO (the Auto
Seg-Loss policy) reaches in ``--trials`` trials, and the compute spent. Arms: ``tpe+pruning``
(the default search), ``tpe+pruning+prior`` (its startup trials drawn around the space's initial
point like PPO's first generation: ``startup: prior``), ``tpe`` (no pruning), ``cmaes``,
``random``, ``ppo`` (G = 32, lr 0.2, clip 0.2, 60 updates: the paper's settings); only the
first two prune.

Paired design: repeat ``s`` runs every arm with ``seed=s``, which seeds the sampler *and* the
proxy training (common random numbers within a study), so in one repeat all arms optimise the
same deterministic function; repeats differ in both.

Resumable: each run is an optuna study under ``--work``; a rerun resumes unfinished studies
and skips finished ones (``--report-only`` only reads them).

    python benchmarks/search_efficiency.py                      # 5 arms x 5 seeds x 96 trials
    python benchmarks/search_efficiency.py --seeds 0 1 2 5      # other repeats (resumes the rest)
    python benchmarks/search_efficiency.py --report-only
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from machine_info import machine_summary

ROOT = Path(__file__).resolve().parents[1]
ARMS: dict[str, dict[str, Any]] = {  # arm -> search config options
    "tpe+pruning": {"sampler": "tpe", "pruner": True},
    "tpe+pruning+prior": {"sampler": "tpe", "pruner": True, "startup": "prior"},
    "tpe": {"sampler": "tpe", "pruner": False},
    "cmaes": {"sampler": "cmaes", "pruner": False},
    "random": {"sampler": "random", "pruner": False},
    "ppo": {"sampler": "ppo", "pruner": False},
}
# A cheap proxy with a real loss landscape: the embedded shapes data at 32x32, a small UNet
# trained from a seeded initialisation for 40 SGD steps (no warm start: the candidate loss
# shapes the whole training, so scores spread widely), mIoU on the 128 val images at steps 20
# and 40 (the pruner decides at step 20). ~1.5 s per trial on one thread.
PROXY: dict[str, Any] = {
    "size": 32, "warm_start": False, "width": 8, "depth": 2, "steps": 40, "lr": 0.05,
    "eval_every": 20, "metrics": ["miou"], "num_threads": 1,
}


def run_one(arm: str, seed: int, trials: int, work: Path, data: str) -> dict[str, Any]:
    """One search (resumed if its study exists); returns where its study is."""
    import torch

    from autoloss.search.config import SearchConfig
    from autoloss.search.run import run_search

    torch.set_num_threads(1)
    out = work / f"{arm.replace('+', '_')}-seed{seed}"
    cfg = SearchConfig(metric="miou", data=data, trials=trials, seed=seed, out=out,
                       study=f"{arm}-seed{seed}", proxy=dict(PROXY), plots=False, **ARMS[arm])
    started = time.perf_counter()
    result = run_search(cfg, progress=False)
    return {"arm": arm, "seed": seed, "storage": result.storage, "study": result.study,
            "wall": time.perf_counter() - started}


def _run_task(task: tuple[str, int, int, Path, str]) -> dict[str, Any]:
    return run_one(*task)


def read_run(storage: str, study_name: str) -> dict[str, Any]:
    """Per-trial records of a finished study: number, state, value, seconds, reference label.
    Trials interrupted by killing the benchmark are left out: they are not search trials."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    records = []
    for t in study.get_trials(deepcopy=False):
        seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
                   if t.datetime_complete and t.datetime_start else None)
        if t.state.name in ("RUNNING", "WAITING"):
            continue  # a trial of a killed run that was never finished
        if t.state.name == "FAIL" and "fail_reason" not in t.user_attrs:
            continue  # a killed worker's trial (failed by heartbeat, then retried)
        steps = max(t.intermediate_values) if t.intermediate_values else None
        records.append({"number": t.number, "state": t.state.name, "value": t.value,
                        "seconds": seconds, "steps": steps,
                        "reference": t.user_attrs.get("reference")})
    return {"baseline_ce": study.user_attrs.get("baseline_ce"), "trials": records}


def best_so_far(records: list[dict[str, Any]], n: int) -> np.ndarray:
    """``[n]``: the best COMPLETE value among the first k+1 trials (NaN before the first)."""
    best, out = -math.inf, np.full(n, np.nan)
    for k, rec in enumerate(sorted(records, key=lambda r: r["number"])[:n]):
        if rec["state"] == "COMPLETE" and rec["value"] is not None:
            best = max(best, rec["value"])
        if best > -math.inf:
            out[k] = best
    return out


def cumulative_seconds(records: list[dict[str, Any]], n: int) -> np.ndarray:
    """``[n]``: proxy seconds spent up to and including trial k."""
    ordered = sorted(records, key=lambda r: r["number"])[:n]
    return np.cumsum([rec["seconds"] or 0.0 for rec in ordered])


def cumulative_compute(records: list[dict[str, Any]], n: int) -> np.ndarray:
    """``[n]``: proxy compute up to and including trial k, in full trials (a trial pruned after
    20 of 40 steps counts 0.5): the load-independent measure of what pruning saves."""
    ordered = sorted(records, key=lambda r: r["number"])[:n]
    full = PROXY["steps"]
    return np.cumsum([(rec["steps"] or full) / full for rec in ordered])


def trials_to_reach(curve: np.ndarray, target: float) -> int | None:
    """How many trials a best-so-far curve needs to reach ``target`` (None: never)."""
    hits = np.nonzero(curve >= target - 1e-12)[0]
    return int(hits[0]) + 1 if len(hits) else None


def analyse(runs: dict[str, dict[int, dict[str, Any]]], trials: int) -> dict[str, Any]:
    """Curves, per-seed trials to reach PPO's best in ``trials``, compute per arm."""
    seeds = sorted(set.intersection(*(set(r) for r in runs.values())))
    curves = {arm: {s: best_so_far(runs[arm][s]["trials"], trials) for s in seeds} for arm in runs}
    targets = {s: float(curves["ppo"][s][-1]) for s in seeds}
    arms: dict[str, Any] = {}
    for arm in runs:
        reach, reach_compute, compute, seconds, states = {}, {}, {}, {}, {}
        for s in seeds:
            recs = runs[arm][s]["trials"]
            k = trials_to_reach(curves[arm][s], targets[s])
            reach[s] = k
            cum = cumulative_compute(recs, trials)
            reach_compute[s] = float(cum[k - 1]) if k else None
            compute[s] = float(cum[-1])
            seconds[s] = float(cumulative_seconds(recs, trials)[-1])
            states[s] = {st: sum(r["state"] == st for r in recs[:trials])
                         for st in ("COMPLETE", "PRUNED", "FAIL")}
        stacked = np.stack([curves[arm][s] for s in seeds])
        arms[arm] = {
            "mean_curve": np.nanmean(stacked, axis=0).tolist(),
            "min_curve": np.nanmin(stacked, axis=0).tolist(),
            "max_curve": np.nanmax(stacked, axis=0).tolist(),
            "final": {s: float(curves[arm][s][-1]) for s in seeds},
            "trials_to_ppo_best": reach, "compute_to_ppo_best": reach_compute,
            "compute": compute, "seconds": seconds, "states": states,
        }
    baseline = {s: runs["ppo"][s]["baseline_ce"] for s in seeds}
    return {"seeds": seeds, "trials": trials, "ppo_best": targets, "baseline_ce": baseline,
            "arms": arms}


def _fmt_reach(values: dict[int, int | None]) -> str:
    return ", ".join("-" if v is None else str(v) for v in values.values())


def report(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    n, seeds = summary["trials"], summary["seeds"]
    marks = [m for m in (12, 24, 48, n) if m <= n]
    lines = [
        "# Search efficiency: best proxy score against trials and compute",
        "",
        "Command (resumable; the studies live in the work folder, not committed):",
        "",
        f"    {meta['command']}",
        "",
        f"**Protocol.** Target: mIoU on the embedded `shapes` data (6 classes), proxy "
        f"`{json.dumps(PROXY)}` (from scratch, one thread per run), search space "
        f"`autoloss/search_spaces/miou.yaml`. {n} trials per run, seeds {seeds}; in each run the first "
        "two trials are the enqueued reference points (identity curves, published Auto Seg-Loss "
        "curves), the same for every arm. Repeat `s` gives every arm `seed=s` (sampler and proxy "
        "training), so within a repeat all arms optimise the same deterministic function. "
        "`tpe+pruning` is the default search (multivariate TPE, bottom-quarter pruner "
        "`autoloss.search.pruning.BottomQuantilePruner` at step 20 of 40); `tpe+pruning+prior` is "
        "the same with `startup: prior` (after the two references, TPE's 8 startup trials are "
        "drawn around the space's initial point like PPO's first generation instead of "
        "uniformly); the other arms do not prune; `ppo` uses the paper's settings (G = 32, "
        f"lr 0.2, clip 0.2, 60 updates), i.e. {n // 32} generations.",
        "",
        f"**Goal**: `tpe+pruning` reaches the best score `ppo` reaches in N = {n} trials within "
        f"N/2 = {n // 2} trials.",
        "",
    ]
    reach = summary["arms"]["tpe+pruning"]["trials_to_ppo_best"]
    met = all(k is not None and k <= n // 2 for k in reach.values())
    lines += [f"**Result: goal {'met' if met else 'not met'}**: trials `tpe+pruning` needed per "
              f"seed: {_fmt_reach(reach)} (PPO's best in {n}: "
              + ", ".join(f"{v:.4f}" for v in summary["ppo_best"].values())
              + "; cross-entropy baseline: "
              + ", ".join(f"{v:.4f}" for v in summary["baseline_ce"].values()) + ").", ""]
    total_minutes = sum(sum(a["seconds"].values()) for a in summary["arms"].values()) / 60
    ppo_mean = float(np.mean(list(summary["ppo_best"].values())))
    within = sum(k is not None and k <= n // 2 for k in reach.values())
    mean_reach = {arm: trials_to_reach(np.asarray(a["mean_curve"]), ppo_mean)
                  for arm, a in summary["arms"].items()}
    lines += [f"Per seed, `tpe+pruning` reached that seed's PPO best within N/2 trials in {within} "
              f"of {len(reach)} seeds. On the mean over seeds, the mean best-so-far reaches PPO's "
              f"mean best @ {n} ({ppo_mean:.4f}) after: "
              + ", ".join(f"{arm} {'-' if k is None else k}" for arm, k in mean_reach.items())
              + " trials.", ""]
    head = " | ".join(f"best @ {m}" for m in marks)
    lines += [f"| arm | {head} | trials to PPO's best @ {n} (per seed) | compute to PPO's best "
              "(mean, full trials) | compute per run (mean, full trials) | trial wall s per run "
              "(mean) | complete / pruned / failed |",
              "|---|" + "---:|" * len(marks) + "---|---:|---:|---:|---|"]
    for arm, a in summary["arms"].items():
        curves = [summary_curve(summary, arm, s) for s in seeds]
        cells = [f"{np.mean([c[m - 1] for c in curves]):.4f} ± {np.std([c[m - 1] for c in curves]):.4f}"
                 for m in marks]
        hits = [v for v in a["compute_to_ppo_best"].values() if v is not None]
        to_best = f"{np.mean(hits):.1f}" + (f" ({len(hits)} of {len(seeds)} seeds)"
                                             if len(hits) < len(seeds) else "") if hits else "-"
        counts = "/".join(str(sum(a["states"][s][k] for s in seeds))
                          for k in ("COMPLETE", "PRUNED", "FAIL"))
        lines.append(f"| {arm} | " + " | ".join(cells)
                     + f" | {_fmt_reach(a['trials_to_ppo_best'])} | {to_best}"
                     + f" | {np.mean(list(a['compute'].values())):.1f}"
                     + f" | {np.mean(list(a['seconds'].values())):.0f} | {counts} |")
    lines += [
        "",
        "best @ k: mean ± std over seeds of the best mIoU among the first k trials. Trials to "
        "PPO's best: the first k at which the arm's best reaches that seed's PPO best @ N "
        "('-': not within N). Compute in full trials: a trial pruned at step 20 of 40 counts "
        "0.5 (load-independent). Trial wall seconds: the sum of the trials' wall times with "
        "one thread each; they depend on the machine's load at the time (the runs of a first, "
        "interrupted invocation shared the 2 cores with up to 4 processes).",
        "",
        "![best so far](search_efficiency.png)",
        "",
        f"Machine: {meta['machine']}; {meta['jobs']} runs in parallel (one thread each); load "
        f"average before / after: {meta['load_before']} / {meta['load_after']}; "
        f"wall time of the last invocation {meta['wall'] / 60:.1f} min; {meta['date']}. All "
        f"runs together: {total_minutes:.0f} min of trial time (one thread each). Raw per-trial "
        "records: `search_efficiency.json`.",
        "",
    ]
    return "\n".join(lines)


def summary_curve(summary: dict[str, Any], arm: str, seed: int) -> list[float]:
    return summary["curves"][arm][str(seed)]


def _gap_on_grid(curve: list[float], compute: np.ndarray, grid: np.ndarray,
                 target: float) -> np.ndarray:
    """A best-so-far curve minus ``target``, as a step function of compute sampled on ``grid``
    (NaN before the first trial's compute)."""
    index = np.searchsorted(compute, grid, side="right") - 1
    values = np.asarray(curve, dtype=float) - target
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)


def plot(summary: dict[str, Any], runs: dict[str, Any], path: Path) -> None:
    """Left: mean best-so-far against trials. Middle: mean gap to each seed's PPO best @ N
    against compute in full trials (0 = the goal's target reached). Right: the spread over
    seeds of that gap after N trials (one dot per seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, seeds = summary["trials"], summary["seeds"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8),
                                        gridspec_kw={"width_ratios": [1, 1, 0.75]})
    x = np.arange(1, n + 1)
    grid = np.linspace(0, n, 4 * n + 1)
    for arm, a in summary["arms"].items():
        style = "--" if arm == "tpe" else "-"  # drawn over tpe+pruning, which it nearly equals
        (line,) = ax1.step(x, a["mean_curve"], where="post", label=arm, lw=1.8, ls=style)
        gaps = np.stack([_gap_on_grid(summary_curve(summary, arm, s),
                                      cumulative_compute(runs[arm][s]["trials"], n), grid,
                                      summary["ppo_best"][s]) for s in seeds])
        with warnings.catch_warnings():  # NaN before an arm's first trial: "mean of empty slice"
            warnings.simplefilter("ignore", RuntimeWarning)
            ax2.plot(grid, 100 * np.nanmean(gaps, axis=0), color=line.get_color(),
                     lw=1.8, ls=style, label=arm)
        finals = [100 * (a["final"][str(s)] - summary["ppo_best"][s]) for s in seeds]
        k = list(summary["arms"]).index(arm)
        ax3.plot(np.full(len(finals), k) + np.linspace(-0.15, 0.15, len(finals)), finals, "o",
                 color=line.get_color(), ms=5, alpha=0.8)
        ax3.plot([k - 0.3, k + 0.3], [np.mean(finals)] * 2, color=line.get_color(), lw=2.2)
    ce = float(np.mean(list(summary["baseline_ce"].values())))
    ax1.axhline(ce, color="k", ls=":", lw=1, label="cross-entropy (mean)")
    ax1.axvline(n // 2, color="grey", ls="--", lw=0.8, label=f"N/2 = {n // 2}")
    ax1.set(xlabel="trials", ylabel="best proxy mIoU so far",
            title=f"mean over seeds {seeds}")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set(xlabel="proxy compute (full trials; a trial pruned halfway counts 0.5)",
            ylabel=f"best so far - PPO's best in {n} (points)",
            title="mean gap to the target of the goal")
    ax3.axhline(0, color="k", lw=0.8)
    ax3.set_xticks(range(len(summary["arms"])), list(summary["arms"]), rotation=30, ha="right")
    ax3.set(ylabel=f"best in {n} - PPO's best in {n} (points)",
            title="seed spread: one dot per seed, bar = mean")
    ax3.grid(alpha=0.3)
    ax2.set_ylim(-5, 1.5)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Search efficiency on the shapes proxy (mIoU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=96, help="trials per run (N)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    p.add_argument("--data", default="shapes")
    p.add_argument("--work", type=Path, default=ROOT / "results" / "search_efficiency_runs",
                   help="folder of the studies (resumable)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "search_efficiency.md")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw the PNG from the committed JSON (no study needed)")
    args = p.parse_args(argv)
    if "ppo" not in args.arms:
        p.error("--arms must include ppo (the reference of the goal)")
    if args.trials < 2:
        p.error(f"--trials must be >= 2, but got {args.trials}")

    if args.plot_only:
        raw = json.loads(args.out.with_suffix(".json").read_text())
        summary = {**raw["summary"], "ppo_best": {int(k): v for k, v in
                                                  raw["summary"]["ppo_best"].items()}}
        runs = {arm: {int(s): r for s, r in v.items()} for arm, v in raw["runs"].items()}
        plot(summary, runs, args.out.with_suffix(".png"))
        print(args.out.with_suffix(".png"))
        return 0
    started, load_before = time.perf_counter(), os.getloadavg()
    jobs = [(arm, s) for s in args.seeds for arm in args.arms]
    located: dict[tuple[str, int], dict[str, Any]] = {}
    if args.report_only:
        for arm, s in jobs:
            out = args.work / f"{arm.replace('+', '_')}-seed{s}"
            located[arm, s] = {"storage": f"sqlite:///{out / 'study.db'}",
                               "study": f"{arm}-seed{s}"}
    else:
        from tqdm import tqdm

        # a killed benchmark (SIGTERM, Ctrl-C) takes its worker processes with it: Pool.__exit__
        # terminates them (a ProcessPoolExecutor's workers would go on with queued runs)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.jobs, maxtasksperchild=1) as pool:
            tasks = [(arm, s, args.trials, args.work, args.data) for arm, s in jobs]
            for res in tqdm(pool.imap_unordered(_run_task, tasks), total=len(tasks),
                            desc="runs", unit="run"):
                located[res["arm"], res["seed"]] = res
                tqdm.write(f"{res['arm']} seed {res['seed']}: {res['wall']:.0f} s")
    runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in args.arms}
    for (arm, s), where in located.items():
        runs[arm][s] = read_run(where["storage"], where["study"])
    summary = analyse(runs, args.trials)
    summary["curves"] = {arm: {str(s): best_so_far(runs[arm][s]["trials"], args.trials).tolist()
                               for s in summary["seeds"]} for arm in runs}
    command = "python benchmarks/search_efficiency.py"
    if args.trials != 96 or args.seeds != [0, 1, 2, 3, 4]:
        command += f" --trials {args.trials} --seeds {' '.join(map(str, args.seeds))}"
    meta = {"command": command, "machine": machine_summary(), "jobs": args.jobs,
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()],
            "wall": time.perf_counter() - started, "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    previous = args.out.with_suffix(".json")
    if args.report_only and previous.is_file():  # keep the machine facts of the run itself
        meta = {**json.loads(previous.read_text()).get("meta", meta), "command": command}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw = {"meta": meta, "proxy": PROXY, "summary": summary,
           "runs": {arm: {str(s): r for s, r in v.items()} for arm, v in runs.items()}}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    plot(summary, runs, args.out.with_suffix(".png"))
    args.out.write_text(report(summary, meta))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
