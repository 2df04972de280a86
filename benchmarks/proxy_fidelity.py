"""Proxy fidelity: do proxy scores rank losses like full retraining does?

For a fixed panel of losses, runs (1) the proxy (``autoloss.proxy``) with several seeds, for one
or more proxy variants, and (2) full retraining from scratch on the whole train split, evaluated
on the test split; then reports the Spearman rank correlation (``scipy.stats.spearmanr``) between
the proxy means and the full-retraining scores for mIoU and BF1, and the proxy's seed-to-seed
standard deviation against the typical gap between losses.

Resumable: every finished run is stored in ``--json`` at once (atomic rewrite); rerunning the same
command skips the runs already there (a changed setting invalidates only the runs it affects).
Runs go to ``--jobs`` worker processes (one torch thread each).

    python benchmarks/proxy_fidelity.py --jobs 2                     # run or continue
    python benchmarks/proxy_fidelity.py --report-only                # tables from the JSON
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = f"camvid:{ROOT.parent / 'shared' / 'datasets' / 'camvid'}"
PANEL = ["cross_entropy", "lovasz_softmax", "jaccard_metric", "asl-voc-miou", "asl-voc-bf1",
         "soft-miou", "soft-bf1"]
METRICS = ["miou", "bf1"]
# proxy variants compared against the same full retraining (name -> ProxyConfig overrides)
VARIANTS: dict[str, dict[str, Any]] = {
    "all": {"finetune": "all", "steps": 60, "eval_every": 20, "lr": 0.02},
    "last": {"finetune": "last", "steps": 150, "eval_every": 50, "lr": 0.05},
    # from scratch: no warm start; seeds offset by 10 so no proxy run shares its initial weights
    # and batch order with the full run of seed 0
    "scratch": {"warm_start": False, "steps": 100, "eval_every": 50, "lr": 0.05},
}
SEED_OFFSET = {"scratch": 10}
FULL = {"model": "unet", "width": 16, "depth": 3, "steps": 400, "batch_size": 8, "lr": 0.05,
        "size": [90, 120]}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


# ---- work done in the worker processes ------------------------------------------------------

_PROXIES: dict[str, Any] = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _proxy_task(data: str, cache: str, variant: dict[str, Any], loss_name: str,
                seed: int) -> dict[str, Any]:
    from autoloss.losses import load_loss
    from autoloss.proxy import build_proxy

    key = _digest(variant)
    if key not in _PROXIES:
        t0 = time.perf_counter()
        proxy = build_proxy({"data": data, "num_threads": 1, "metrics": METRICS, **variant},
                            cache_dir=Path(cache))
        proxy.prepare()
        _PROXIES[key] = proxy
        setup = time.perf_counter() - t0
    else:
        setup = 0.0
    proxy = _PROXIES[key]
    loss = load_loss(loss_name, ignore_index=proxy.ignore_index)
    c0, t0 = time.process_time(), time.perf_counter()
    history: list[list[Any]] = []
    metrics = proxy.run(loss, seed=seed, on_eval=lambda s, m: history.append([s, m]))
    return {"metrics": metrics, "history": history, "wall": time.perf_counter() - t0,
            "cpu": time.process_time() - c0, "setup_wall": setup, "pid": os.getpid(),
            "trained_warm_start": proxy.trained_warm_start, **proxy.last_run}


def _full_task(data: str, full: dict[str, Any], loss_name: str, seed: int) -> dict[str, Any]:
    from autoloss.data import load_dataset
    from autoloss.losses import load_loss
    from autoloss.models import UNetConfig, build_model
    from autoloss.trainer import TrainConfig, evaluate, fit

    spec = f"{data}{'&' if '?' in data else '?'}size={full['size'][0]}x{full['size'][1]}"
    train = load_dataset(spec, "train")
    model = build_model(UNetConfig(num_classes=train.num_classes, width=full["width"],
                                   depth=full["depth"]), seed=seed)
    loss = load_loss(loss_name, ignore_index=train.ignore_index)
    config = TrainConfig(steps=full["steps"], batch_size=full["batch_size"], lr=full["lr"],
                         eval_every=full["steps"], seed=seed, num_threads=1)
    c0, t0 = time.process_time(), time.perf_counter()
    result = fit(model, loss, train, config=config, progress=False)
    train_wall = time.perf_counter() - t0
    test = evaluate(model, load_dataset(spec, "test"), metrics=METRICS)
    val = evaluate(model, load_dataset(spec, "val"), metrics=METRICS)
    return {"metrics": test, "val_metrics": val, "train_wall": train_wall,
            "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "seconds_per_step": result.seconds_per_step, "final_loss": result.final_loss}


# ---- orchestration ----------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": {}}


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=1, default=float))
    os.replace(tmp, path)


def _tasks(args: argparse.Namespace) -> list[tuple[str, str, Any, tuple]]:
    """(run key, settings digest, function, arguments) for every run, interleaved so that full
    retraining and proxy runs share the workers from the start."""
    full_cfg = {**FULL, "data": args.data}
    fulls = [(f"full/{loss}/seed{s}", _digest(full_cfg), _full_task, (args.data, FULL, loss, s))
             for loss in args.losses for s in range(args.full_seeds)]
    proxies = []
    for name in args.variants:
        variant = VARIANTS[name]
        digest = _digest({**variant, "data": args.data, "metrics": METRICS})
        offset = SEED_OFFSET.get(name, 0)
        proxies += [(f"proxy-{name}/{loss}/seed{s + offset}", digest, _proxy_task,
                     (args.data, str(args.cache), variant, loss, s + offset))
                    for s in range(args.seeds) for loss in args.losses]
    out: list[tuple[str, str, Any, tuple]] = []
    ratio = max(1, round(len(proxies) / max(1, len(fulls))))
    while fulls or proxies:
        out += proxies[:ratio]
        proxies = proxies[ratio:]
        if fulls:
            out.append(fulls.pop(0))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    state = _load(args.json)
    runs = state["runs"]
    todo = [t for t in _tasks(args) if runs.get(t[0], {}).get("digest") != t[1]]
    print(f"{len(todo)} runs to do ({len(runs)} stored)", flush=True)
    started = time.perf_counter()
    if todo:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(fn, *fargs): (key, digest) for key, digest, fn, fargs in todo}
            for future in cf.as_completed(futures):
                key, digest = futures[future]
                result = future.result()
                runs[key] = {"digest": digest, **result}
                state["load_after_last_run"] = os.getloadavg()
                _save(args.json, state)
                m = result["metrics"]
                print(f"[{time.perf_counter() - started:7.0f}s] {key}: miou {m['miou']:.4f} "
                      f"bf1 {m['bf1']:.4f} ({result['wall']:.0f}s wall, {result['cpu']:.0f}s cpu)",
                      flush=True)
    state["settings"] = {"data": args.data, "losses": args.losses, "seeds": args.seeds,
                         "full_seeds": args.full_seeds, "variants":
                         {n: VARIANTS[n] for n in args.variants}, "full": FULL}
    state.setdefault("wall_sessions", []).append(time.perf_counter() - started)
    _save(args.json, state)
    return state


# ---- report -----------------------------------------------------------------------------------


def _ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out = [0] * len(values)
    for r, i in enumerate(order):
        out[i] = r + 1
    return out


def summarize(state: dict[str, Any]) -> dict[str, Any]:
    """Per variant and metric: proxy mean/std over seeds, full score, Spearman, noise vs gap."""
    from scipy.stats import spearmanr

    settings, runs = state["settings"], state["runs"]
    losses = settings["losses"]
    out: dict[str, Any] = {}
    for name in settings["variants"]:
        per_metric = {}
        for metric in METRICS:
            rows = []
            for loss in losses:
                offset = SEED_OFFSET.get(name, 0)
                proxy_runs = [runs[k] for s in range(offset, offset + settings["seeds"])
                              if (k := f"proxy-{name}/{loss}/seed{s}") in runs]
                full_runs = [runs[k] for s in range(settings["full_seeds"])
                             if (k := f"full/{loss}/seed{s}") in runs]
                if not proxy_runs or not full_runs:
                    continue
                proxy = [r["metrics"][metric] for r in proxy_runs]
                rows.append({"per_seed": proxy,
                    "loss": loss, "proxy_mean": float(np.mean(proxy)), "proxy_n": len(proxy),
                    "proxy_std": float(np.std(proxy, ddof=1)) if len(proxy) > 1 else math.nan,
                    "full": float(np.mean([r["metrics"][metric] for r in full_runs])),
                    "full_val": float(np.mean([r["val_metrics"][metric] for r in full_runs])),
                    "proxy_wall": float(np.mean([r["wall"] for r in proxy_runs])),
                    "proxy_cpu": float(np.mean([r["cpu"] for r in proxy_runs])),
                })
            if len(rows) < 3:
                continue
            pm, fm = [r["proxy_mean"] for r in rows], [r["full"] for r in rows]
            for r, a, b in zip(rows, _ranks(pm), _ranks(fm)):
                r["proxy_rank"], r["full_rank"] = a, b
            rho = spearmanr(pm, fm).statistic
            rho_val = spearmanr(pm, [r["full_val"] for r in rows]).statistic
            gaps = np.diff(sorted(pm))
            n_seeds = min(len(r["per_seed"]) for r in rows)
            single = [spearmanr([r["per_seed"][i] for r in rows], fm).statistic
                      for i in range(n_seeds)]
            per_metric[metric] = {
                "rows": rows, "spearman": float(rho),
                "spearman_single_seed": [float(v) for v in single],
                "spearman_vs_full_val": float(rho_val),
                "median_seed_std": float(np.nanmedian([r["proxy_std"] for r in rows])),
                "median_gap_adjacent": float(np.median(gaps)),
                "median_gap_pairs": float(np.median([abs(a - b) for i, a in enumerate(pm)
                                                     for b in pm[i + 1:]])),
            }
        out[name] = per_metric
    return out


START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def _full_self_agreement(state: dict[str, Any], metric: str) -> float:
    """Spearman between the full runs' val and test scores (how well even the full run, scored on
    the proxy-validation split, predicts its own test ranking)."""
    from scipy.stats import spearmanr

    rows = [r for k, r in state["runs"].items() if k.startswith("full/")
            and k.split("/")[1] in state["settings"]["losses"]]
    return float(spearmanr([r["val_metrics"][metric] for r in rows],
                           [r["metrics"][metric] for r in rows]).statistic)


def report_text(state: dict[str, Any]) -> str:
    """The generated part of the report: verdicts, tables, budgets, wall and CPU time."""
    summary = summarize(state)
    settings, runs = state["settings"], state["runs"]
    pct = 100.0
    lines = ["| proxy | metric | Spearman vs full (test) | single seed (each) | vs full (val) | "
             "median seed std | median pairwise gap | median adjacent gap | goal met | "
             "proxy CPU s / trial |", "|---|---|---:|---|---:|---:|---:|---:|---|---:|"]
    for name, per_metric in summary.items():
        for metric, s in per_metric.items():
            ok = s["spearman"] >= 0.7 and s["median_seed_std"] < s["median_gap_pairs"]
            cpu = np.mean([r["proxy_cpu"] for r in s["rows"]])
            each = ", ".join(f"{v:.2f}" for v in s["spearman_single_seed"])
            lines.append(f"| `{name}` | {metric} | **{s['spearman']:.2f}** | {each} | "
                         f"{s['spearman_vs_full_val']:.2f} | {pct * s['median_seed_std']:.2f} | "
                         f"{pct * s['median_gap_pairs']:.2f} | "
                         f"{pct * s['median_gap_adjacent']:.2f} | {'yes' if ok else 'no'} | "
                         f"{cpu:.0f} |")
    lines += ["", "Reference: Spearman between the full runs' own val and test scores: mIoU "
              f"{_full_self_agreement(state, 'miou'):.2f}, BF1 "
              f"{_full_self_agreement(state, 'bf1'):.2f} (val is one sequence, test two others).",
              ""]
    for name, per_metric in summary.items():
        for metric, s in per_metric.items():
            lines += [f"### proxy `{name}`, {metric} (points)", "",
                      "| loss | proxy mean ± std (seeds) | proxy rank | full (test) | full rank | "
                      "full (val) | proxy wall s | proxy CPU s |",
                      "|---|---|---:|---:|---:|---:|---:|---:|"]
            for r in s["rows"]:
                lines.append(f"| {r['loss']} | {pct * r['proxy_mean']:.2f} ± "
                             f"{pct * r['proxy_std']:.2f} ({r['proxy_n']}) | {r['proxy_rank']} | "
                             f"{pct * r['full']:.2f} | {r['full_rank']} | "
                             f"{pct * r['full_val']:.2f} | {r['proxy_wall']:.0f} | "
                             f"{r['proxy_cpu']:.0f} |")
            lines.append("")
    fulls = [r for k, r in runs.items() if k.startswith("full/")]
    proxies = [r for k, r in runs.items() if k.startswith("proxy-")]
    lines += [
        "### Budgets and time", "",
        f"- data: `{settings['data']}`; losses: {', '.join(settings['losses'])}; proxy seeds: "
        f"{settings['seeds']}; full-retraining seeds: {settings['full_seeds']}",
        f"- full retraining: `{json.dumps(settings['full'])}` (from scratch, SGD momentum 0.9, "
        "poly lr, random scale/crop/flip, whole train split, scored on test and val)",
        *[f"- proxy `{n}`: `{json.dumps(v)}` (other options: ProxyConfig defaults)"
          for n, v in settings["variants"].items()],
        f"- runs stored: {len(fulls)} full, {len(proxies)} proxy; CPU time: full "
        f"{sum(r['cpu'] for r in fulls) / 60:.1f} min, proxy "
        f"{sum(r['cpu'] for r in proxies) / 60:.1f} min (one thread per run; warm starts and "
        "feature caches not included)",
        f"- wall time of the benchmark sessions: "
        f"{', '.join(f'{w / 60:.1f} min' for w in state.get('wall_sessions', []))} "
        f"(2 workers on a 2-core machine shared with other jobs)",
    ]
    return "\n".join(lines)


def write_report(state: dict[str, Any], path: Path) -> None:
    """Replace the generated block of ``path`` (between the markers), keeping the rest."""
    block = f"{START}\n{report_text(state)}\n{END}"
    text = path.read_text() if path.is_file() else f"# Proxy fidelity\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    path.write_text(head + block + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset spec (no size option)")
    p.add_argument("--losses", nargs="+", default=PANEL)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, default=3, help="proxy seeds per loss")
    p.add_argument("--full-seeds", type=int, default=1, help="full-retraining seeds per loss")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (1 thread each)")
    p.add_argument("--json", type=Path, default=ROOT / "results" / "proxy_fidelity.json")
    p.add_argument("--md", type=Path, default=ROOT / "results" / "proxy_fidelity.md")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "autoloss-proxy")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny budgets, to check the pipeline")
    args = p.parse_args(argv)
    if args.smoke:
        FULL.update(steps=3, size=[32, 32])
        for v in VARIANTS.values():
            v.update(steps=3, eval_every=3, warm_start_steps=3, size=[32, 32])
    state = _load(args.json) if args.report_only else run(args)
    write_report(state, args.md)
    print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
