"""How much does a search space spread on the proxy, against one trial's seed noise?

A search can only beat its own start (the plain soft metric, identity curves) if the space holds
points whose proxy score is higher by more than the noise of scoring one trial. This benchmark
measures that on a finished study: it takes trials spread over the study's ranking (the top,
the middle, the bottom, a few at random, and the reference points: identity and the published
curves), scores each again with ``--seeds`` fresh proxy seeds (1, 2, ...; the search used its
own seed 0), with the proxy the study recorded, together with cross-entropy, and reports:

- per trial: its search rank and score, the re-scored mean ± std, and its paired difference to
  the plain soft metric (95 % t-interval over the seeds, seeds won);
- the spread of the trial means against the noise: a two-way analysis of variance without
  replication (trial x seed; ``scipy.stats.f``): the seed effect is shared by every trial (same
  warm start, batch order), so the noise of a *paired* comparison is the residual, not one
  trial's std over seeds; both are reported;
- Spearman of the search scores against the re-scored means (does one seed rank the trials?).

Resumable: every (trial, seed) score is stored in ``OUT.json`` at once; rerunning skips them.
Relative paths (``--run``, the study's data path) are read from the repository root.

    python benchmarks/space_spread.py --run results/study-miou-camvid/search \
        --out results/space_spread/miou-camvid
    python benchmarks/space_spread.py --run ... --out ... --report-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def pick_trials(study: Any, *, top: int = 3, middle: int = 3, bottom: int = 2, random: int = 2,
                seed: int = 0) -> dict[int, str]:
    """``{trial number: role}``: the ``top`` best complete trials, ``middle`` around the median,
    the ``bottom`` worst, ``random`` others drawn with ``seed``, and every reference trial."""
    done = sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                  key=lambda t: (-t.value, t.number))
    picks: dict[int, str] = {}
    for t in study.trials:
        if "reference" in t.user_attrs and t.state.name == "COMPLETE":
            picks[t.number] = str(t.user_attrs["reference"])
    mid = len(done) // 2 - middle // 2
    for role, chosen in (("top", done[:top]), ("middle", done[mid:mid + middle]),
                         ("bottom", done[len(done) - bottom:])):
        for t in chosen:
            picks.setdefault(t.number, role)
    rest = [t for t in done if t.number not in picks]
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(rest), size=min(random, len(rest)), replace=False):
        picks.setdefault(rest[int(i)].number, "random")
    return picks


def _objective(metrics: dict[str, float], target: str) -> float:
    from autoloss.search.config import parse_target

    return sum(w * float(metrics[name]) for name, w in parse_target(target))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from autoloss.losses import load_loss
    from autoloss.search.run_folder import RunFolder
    from autoloss.search.storage import open_study
    from autoloss.train.proxy import build_proxy
    from autoloss.utils.cache import default_cache_dir

    torch.set_num_threads(1)
    os.chdir(ROOT)  # the study records its data path relative to the repository root
    storage, name = RunFolder(args.run).storage()
    study = open_study(storage, name)
    config = study.user_attrs["config"]
    target = config["metric"]
    picks = pick_trials(study)
    json_path = Path(f"{args.out}.json")
    state = json.loads(json_path.read_text()) if json_path.is_file() else {}
    state.update(run=str(args.run), study=study.study_name, target=target,
                 proxy=study.user_attrs["proxy_config"], seeds=list(range(1, args.seeds + 1)),
                 command=" ".join(["python", "benchmarks/space_spread.py", *sys.argv[1:]]))
    trials = {t.number: t for t in study.trials}
    ranked = sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                    key=lambda t: (-t.value, t.number))
    rank = {t.number: i + 1 for i, t in enumerate(ranked)}
    state["trials"] = {str(n): {"role": role, "rank": rank.get(n), "of": len(ranked),
                                "search_value": trials[n].value,
                                "params": dict(trials[n].params)}
                       for n, role in sorted(picks.items())}
    scores = state.setdefault("scores", {})
    proxy = build_proxy({**study.user_attrs["proxy_config"], "num_threads": 1},
                        cache_dir=Path(args.cache) if args.cache else default_cache_dir())
    proxy.prepare()
    jobs = [(str(n), trials[n].user_attrs["loss"]) for n in sorted(picks)]
    jobs.append(("cross_entropy", "cross_entropy"))
    started = time.perf_counter()
    for seed in state["seeds"]:  # seed-major: a partial result already pairs every trial
        for key, spec in jobs:
            if str(seed) in scores.get(key, {}):
                continue
            t0 = time.perf_counter()
            metrics = proxy.run(load_loss(spec, ignore_index=proxy.ignore_index), seed=seed)
            value = _objective(metrics, target)
            scores.setdefault(key, {})[str(seed)] = value
            state.setdefault("wall", {})[f"{key}/{seed}"] = time.perf_counter() - t0
            _save(json_path, state)
            print(f"[{time.perf_counter() - started:6.0f}s] trial {key} seed {seed}: "
                  f"{value:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    state["machine_load_at_end"] = os.getloadavg()
    _save(json_path, state)
    return state


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def analyse(state: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the report (points = 100 x the objective)."""
    from scipy import stats

    from autoloss.utils.stats import paired_difference

    scores = state["scores"]
    # a partial run (seed-major) is analysed on the seeds every picked trial has
    seeds = [str(s) for s in state["seeds"]
             if all(str(s) in scores.get(k, {}) for k in state["trials"])]
    keys = [k for k in state["trials"] if all(s in scores.get(k, {}) for s in seeds)]
    identity = next((k for k, t in state["trials"].items() if t["role"] == "identity"), None)
    table = np.array([[100 * scores[k][s] for s in seeds] for k in keys])  # [trials, seeds]
    out: dict[str, Any] = {"complete_trials": keys, "seeds": len(seeds)}
    if len(keys) < 2 or len(seeds) < 2:
        return out
    t_n, s_n = table.shape
    grand = table.mean()
    trial_means, seed_means = table.mean(axis=1), table.mean(axis=0)
    ss_trial = s_n * ((trial_means - grand) ** 2).sum()
    ss_seed = t_n * ((seed_means - grand) ** 2).sum()
    ss_resid = ((table - grand) ** 2).sum() - ss_trial - ss_seed
    df_trial, df_resid = t_n - 1, (t_n - 1) * (s_n - 1)
    ms_trial, ms_resid = ss_trial / df_trial, ss_resid / df_resid
    f_value = ms_trial / ms_resid if ms_resid > 0 else math.inf
    out.update({
        "spread_of_means_std": float(trial_means.std(ddof=1)),
        "spread_of_means_range": float(trial_means.max() - trial_means.min()),
        "one_trial_seed_std_median": float(np.median(table.std(axis=1, ddof=1))),
        "seed_effect_std": float(seed_means.std(ddof=1)),
        "paired_noise_std": float(math.sqrt(ms_resid)),
        "trial_variance_component": float(max(0.0, (ms_trial - ms_resid) / s_n)),
        "anova_f": float(f_value), "anova_df": [df_trial, df_resid],
        "anova_p": float(stats.f.sf(f_value, df_trial, df_resid)),
    })
    search = [state["trials"][k]["search_value"] for k in keys]
    out["spearman_search_vs_rescored"] = float(stats.spearmanr(search, trial_means).statistic)
    if identity in keys:
        base = {s: 100 * scores[identity][s] for s in seeds}
        out["vs_identity"] = {k: paired_difference({s: 100 * scores[k][s] for s in seeds}, base)
                              .to_dict() for k in keys if k != identity}
    if "cross_entropy" in scores and all(s in scores["cross_entropy"] for s in seeds):
        out["cross_entropy_mean"] = float(np.mean([100 * scores["cross_entropy"][s]
                                                   for s in seeds]))
    out["trial_means"] = dict(zip(keys, trial_means.tolist()))
    out["trial_stds"] = dict(zip(keys, table.std(axis=1, ddof=1).tolist()))
    return out


def report(state: dict[str, Any], out: str) -> str:
    a = analyse(state)
    lines = [f"# Spread of the search space on the proxy: {state['study']}", "",
             f"Produced by `{state['command']}` (resumable; `--report-only` redraws this page "
             f"from `{Path(out).name}.json`).", "",
             f"- study: `{state['run']}`, target `{state['target']}`, proxy-validation split "
             f"`{state['proxy'].get('eval_split', 'val')}`",
             f"- proxy: {state['proxy']['steps']} fine-tuning steps at lr {state['proxy']['lr']} "
             f"from a {state['proxy']['warm_start_steps']}-step cross-entropy warm start "
             f"(seed {state['proxy']['warm_start_seed']}), the study's own",
             f"- re-scoring seeds {state['seeds']} (the search used seed 0); analysed: "
             f"{len(a['complete_trials'])} trials x the {a['seeds']} seeds every trial has", ""]
    if "anova_f" not in a:
        return "\n".join(lines + ["Not enough runs yet for the analysis.", ""])
    ce = a.get("cross_entropy_mean")
    lines += ["## Spread against noise (points)", "",
              "| quantity | value |", "|---|---:|",
              f"| std of the trial means | {a['spread_of_means_std']:.3f} |",
              f"| range of the trial means | {a['spread_of_means_range']:.3f} |",
              f"| one trial's std over seeds (median) | {a['one_trial_seed_std_median']:.3f} |",
              f"| std of the seed effect (shared by every trial) | {a['seed_effect_std']:.3f} |",
              f"| paired noise (residual std of trial x seed) | {a['paired_noise_std']:.3f} |",
              f"| trial variance component (std) | "
              f"{math.sqrt(a['trial_variance_component']):.3f} |",
              f"| F (trial effect), df {a['anova_df'][0]}, {a['anova_df'][1]} | "
              f"{a['anova_f']:.2f} (p = {a['anova_p']:.2g}) |",
              f"| Spearman: search score vs re-scored mean | "
              f"{a['spearman_search_vs_rescored']:.2f} |",
              *([f"| cross-entropy mean | {ce:.2f} |"] if ce is not None else []), "",
              "## Per trial (points)", "",
              "| trial | role | search rank | search score | re-scored mean ± std | vs identity "
              "(paired, 95 % interval, seeds won) |", "|---|---|---:|---:|---:|---|"]
    vs = a.get("vs_identity", {})
    order = sorted(a["complete_trials"], key=lambda k: -a["trial_means"][k])
    for k in order:
        t = state["trials"][k]
        d = vs.get(k)
        diff = ("-" if d is None else f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}], "
                f"{d['wins']}/{d['n']}")
        lines.append(f"| {k} | {t['role']} | {t['rank']}/{t['of']} | "
                     f"{100 * t['search_value']:.2f} | {a['trial_means'][k]:.2f} ± "
                     f"{a['trial_stds'][k]:.2f} | {diff} |")
    return "\n".join(lines) + "\n"


def plot(state: dict[str, Any], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = analyse(state)
    if "vs_identity" not in a:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, d in a["vs_identity"].items():
        t = state["trials"][k]
        ax.errorbar(t["rank"], d["mean"], yerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]],
                    fmt="o", capsize=3, label=None)
        ax.annotate(t["role"].split(":")[0], (t["rank"], d["high"]), fontsize=7, ha="center",
                    va="bottom")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel(f"rank in the search (of {next(iter(state['trials'].values()))['of']})")
    ax.set_ylabel("re-scored minus plain soft metric (points)")
    ax.set_title(f"{state['study']}: paired gain over the identity, {len(state['seeds'])} seeds")
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="search run folder (holds run.json)")
    parser.add_argument("--out", required=True, help="output prefix (OUT.json, OUT.md, OUT.png)")
    parser.add_argument("--seeds", type=int, default=5, help="re-scoring seeds 1..N (default 5)")
    parser.add_argument("--cache", help="proxy cache folder (default: the shared one)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if args.report_only:
        state = json.loads(Path(f"{args.out}.json").read_text())
    else:
        state = run(args)
    Path(f"{args.out}.md").write_text(report(state, args.out))
    plot(state, args.out)
    print(f"wrote {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
