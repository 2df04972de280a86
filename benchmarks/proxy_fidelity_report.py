"""The markdown report of ``proxy_fidelity.py``: pure formatting of the numbers it computed
(imported by that script: ``python benchmarks/<script>.py`` puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

SHOWN = ("finetune", "steps", "lr", "eval_every", "warm_start_steps", "warm_start_lr",
         "warm_start_seed", "batch_size")


def _pp(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _r(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _changed(config: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    diff = {k: v for k, v in config.items() if base.get(k) != v}
    return f"`{json.dumps(diff)}`" if diff else "no change"


def report_text(state: Mapping[str, Any], summary: Mapping[str, Any], *,
                bounds: Mapping[str, Any] | None, full: Mapping[str, Any] | None,
                default: str | None, full_path: str, goal: float) -> str:
    """Command, protocol, summary table, findings, per-loss tables and time, as markdown."""
    settings = state["settings"]
    configs = {n: settings["configs"][n] for n in summary}
    base = configs.get(default) or next(iter(configs.values()))
    losses, s0 = settings["losses"], settings["seed0"]
    split = (full or {}).get("split") or "test"
    other = (full or {}).get("other_split") or ("val" if split == "test" else "test")
    lines = [
        "Commands (resumable: every finished proxy run is stored at once in "
        "`proxy_fidelity.json`, the raw numbers; a rerun skips what is there; everything between "
        "the markers is regenerated):", "",
        f"    nice -n 19 python benchmarks/proxy_fidelity.py --jobs 2 --losses {' '.join(losses)}",
        f"    python benchmarks/proxy_fidelity.py --report-only --full {full_path} --full-split "
        f"{split}", "",
        "**Protocol.**", "",
    ]
    if full is not None:
        tc, pre = full["train_config"], full["pretrain_config"]
        start = (f"per seed a cross-entropy UNet pretrained ({pre.get('steps')} steps, "
                 f"lr {pre.get('lr')}, batch {pre.get('batch_size')}), then every loss trains on "
                 "from it" if full["protocol"] == "finetune" else
                 f"protocol `{full['protocol']}`: every loss trains from its seed's weights")
        lines.append(
            f"- Full reference (read, not trained here): `{full['source']}`, an `autoloss "
            f"compare` run on `{full['data']}` with {full['seeds']} seeds per loss: {start} "
            f"({tc.get('steps')} SGD steps, lr {tc.get('lr')}, batch {tc.get('batch_size')}, "
            f"poly), scored on `{full.get('split') or full['test_split']}` (the last validation "
            f"of each run for `val`). Full score of a loss = mean over its seeds. Losses of the "
            f"panel missing there: "
            f"{', '.join(x for x in losses if x not in full['losses']) or 'none'}.")
    else:
        lines.append(f"- Full reference: **not available yet** (`{full_path}` does not exist); "
                     "`--report-only --full PATH` fills in the correlations once it does.")
    lines += [
        f"- Proxy (`autoloss.train.proxy`): data `{settings['data']}` (resized by `max_side`; "
        f"CamVid: to 90x120), {len(losses)} losses ({', '.join(losses)}), {settings['seeds']} seeds "
        f"per loss and variant (seeds {s0}..{s0 + settings['seeds'] - 1}: no proxy run shares "
        "a batch order with a full run), scored on `val` (CamVid: 101 images; the proxy never "
        "sees the test split), one torch thread per run. Proxy score of a loss = mean over its seeds. "
        f"Default proxy `{default}` (= `ProxyConfig()`): "
        f"`{json.dumps({k: base[k] for k in SHOWN})}`; the other variants change:",
        *[f"  - `{n}`: {_changed(c, base)}" for n, c in configs.items() if n != default],
        "- Spearman = `scipy.stats.spearmanr`, Kendall = `scipy.stats.kendalltau` (tau-b) of the "
        "proxy means against the full means over the losses in both; top 3 = the 3 best proxy "
        f"means; goal: Spearman >= {goal} for mIoU and for BF1. Seed std: sample std over a "
        "loss's seeds; pairwise gap: |difference of means| over all pairs of losses (points).",
        "", "## Summary", "",
        "| proxy | metric | Spearman | Kendall | goal | proxy top 3 holds full top 1 | single "
        f"seed Spearman | Spearman vs full {other} | median seed std | median pairwise gap | "
        "CPU s / trial |", "|---|---|---:|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for name, per_metric in summary.items():
        for metric, s in per_metric.items():
            met = ("n/a" if "spearman" not in s else
                   "**met**" if s["spearman"] >= goal else "not met")
            top = ("n/a" if "top3_has_full_top1" not in s else
                   f"{'yes' if s['top3_has_full_top1'] else 'no'} ({s['full_top1']})")
            single = ", ".join(_r(v) for v in s.get("spearman_single_seed", [])) or "n/a"
            lines.append(
                f"| `{name}` | {metric} | **{_r(s.get('spearman'))}** | {_r(s.get('kendall'))} | "
                f"{met} | {top} | {single} | {_r(s.get('spearman_vs_full_other'))} | "
                f"{_pp(s.get('median_seed_std'))} | {_pp(s.get('median_pair_gap'))} | "
                f"{s['cpu_per_trial']:.0f} |")
    lines += ["", "## Findings (generated from the numbers)", "",
              *findings(summary, bounds, goal), "", "## Per loss", ""]
    for name, per_metric in summary.items():
        for metric, s in per_metric.items():
            lines += [f"### `{name}`, {metric} (points)", "",
                      "| loss | proxy mean ± std (seeds) | proxy rank | full mean ± std | full rank "
                      f"| full {other} | proxy CPU s |", "|---|---|---:|---:|---:|---:|---:|"]
            for r in s["rows"]:
                lines.append(f"| {r['loss']} | {_pp(r['proxy_mean'])} ± {_pp(r['proxy_std'])} "
                             f"({len(r['per_seed'])}) | {r.get('proxy_rank', 'n/a')} | "
                             f"{_pp(r['full'])} ± {_pp(r['full_std'])} | "
                             f"{r.get('full_rank', 'n/a')} | {_pp(r['full_other'])} | "
                             f"{r['cpu']:.0f} |")
            if s["failed"]:
                lines.append(f"\nFailed runs (left out): {'; '.join(s['failed'])}")
            lines.append("")
    lines += ["## Time", "", *time_lines(state, list(summary))]
    return "\n".join(lines)


def findings(summary: Mapping[str, Any], bounds: Mapping[str, Any] | None,
             goal: float) -> list[str]:
    """Verdict per variant, then what bounds the numbers (sample size, full-run noise, val vs
    test), then the variants whose seed noise is not below the gaps between losses."""
    if bounds is None:
        return ["- No full results yet: only the proxy side (means, seed noise, cost) is known."]
    out, met = [], []
    for name, per_metric in summary.items():
        parts = [f"{metric} Spearman {s['spearman']:.2f} / Kendall {s['kendall']:.2f} "
                 f"(p = {s['spearman_p']:.3f}), top 3 "
                 f"{'holds' if s['top3_has_full_top1'] else 'misses'} the full top 1"
                 for metric, s in per_metric.items() if "spearman" in s]
        ok = all(s.get("spearman", -2.0) >= goal for s in per_metric.values())
        met += [name] if ok else []
        out.append(f"- `{name}`: {'; '.join(parts) or 'no overlap with the full losses'}: goal "
                   f"**{'met' if ok else 'not met'}**.")
    out.append(f"- Goal (Spearman >= {goal} for both metrics) met by: "
               f"{', '.join(f'`{n}`' for n in met) if met else '**no variant**'}.")
    n = bounds["n"]
    out.append(
        f"- Sample size: n = {n} losses; one swap of two adjacent ranks costs "
        f"{12 / (n * (n * n - 1)):.3f} Spearman and {2 / (n * (n - 1)):.3f} Kendall; Spearman "
        f"above {_r(bounds['spearman_critical_5pct'])} is significant at 5 % (two-sided); a "
        f"measured Spearman has a standard error of roughly {1 / math.sqrt(max(n - 1, 1)):.2f}.")
    for metric, m in bounds["metrics"].items():
        val = (f"; their val means rank the losses like their test means with Spearman "
               f"{m['val_vs_test_spearman']:.2f} (the proxy is scored on its own val runs)"
               if m.get("val_vs_test_spearman") is not None
               else "; the runs' val scores were not found (val vs test unknown)")
        out.append(
            f"- Full-run noise, {metric}: median seed std {_pp(m['median_seed_std'])} points vs "
            f"median gap between adjacent losses {_pp(m['median_adjacent_gap'])} (over all "
            f"pairs {_pp(m['median_pair_gap'])}); one full seed ranks the losses like the mean "
            f"of the other seeds with Spearman {_r(m['reliability'])}{val}.")
    for name, per_metric in summary.items():
        noisy = [f"{metric} (seed std {_pp(s['median_seed_std'])} vs gap "
                 f"{_pp(s['median_pair_gap'])})" for metric, s in per_metric.items()
                 if s.get("median_seed_std", 0.0) >= s.get("median_pair_gap", math.inf)]
        if noisy:
            out.append(f"- `{name}`: proxy seed noise not below the gaps for {', '.join(noisy)}.")
    return out


def time_lines(state: Mapping[str, Any], variants: list[str]) -> list[str]:
    """CPU time per variant and warm start, the machine, the wall time of the sessions."""
    settings, runs = state["settings"], state["runs"]
    lines = []
    for name in variants:
        cpu = [r["cpu"] for k, r in runs.items() if k.startswith(f"proxy-{name}/")
               and k.split("/")[1] in settings["losses"]]
        if cpu:
            lines.append(f"- `{name}`: {len(cpu)} trials, {sum(cpu) / 60:.1f} CPU min (median "
                         f"{np.median(cpu):.0f}, max {max(cpu):.0f} CPU s per trial)")
    for w in state.get("warm_starts", {}).values():
        shared = [n for n in w.get("variants", []) if n in variants]
        if shared:
            val = w.get("val_metrics") or {}
            how = (f"{w['cpu'] / 60:.1f} CPU min, {w['wall'] / 60:.1f} min wall" if w["trained"]
                   else "found in the cache (cost not measured)")
            lines.append(f"- warm start of {', '.join(f'`{n}`' for n in shared)} ({w['steps']} "
                         f"cross-entropy steps, trained once, cached): {how}; val "
                         f"mIoU {_pp(val.get('miou'))}, BF1 {_pp(val.get('bf1'))}")
    sessions = ", ".join(f"{w / 60:.1f} min" for w in state.get("wall_sessions", []))
    lines += [f"- machine: {settings.get('machine', 'n/a')}; one torch thread per run, 2 "
              "workers, niced, sharing the cores with the reference retraining",
              f"- wall time of the benchmark sessions: {sessions or 'n/a'}"]
    return lines
