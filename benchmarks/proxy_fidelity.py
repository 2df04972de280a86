"""Proxy fidelity: do proxy scores rank losses like the full retraining protocol does?

The full side is **read**, not trained: ``--full`` names the ``compare.json`` of an ``autoloss
compare`` run (the reference panel: per seed a cross-entropy UNet trained to convergence, then
fine-tuned with every loss, scored on the test split); a loss's full score is the mean of its
seeds' test metrics. The proxy side runs here: every loss of the panel with ``--seeds`` proxy
seeds (10, 11, ...) per proxy variant (``VARIANTS``: ``ProxyConfig`` overrides), scored on
``val`` by ``autoloss.train.proxy``. The report gives, per variant and metric, Spearman
(``scipy.stats.spearmanr``) and Kendall (``scipy.stats.kendalltau``) of the proxy means against
the full means, whether the proxy's top 3 holds the full top 1, seed noise against the gaps
between losses, and the CPU time per trial.

Resumable: every finished proxy run is stored in ``--json`` at once (atomic rewrite); rerunning
the same command skips the runs already there (a changed setting invalidates only the runs it
affects). Runs go to ``--jobs`` worker processes (one torch thread each). Relative paths in
``--data`` and ``--full`` are read from the repository root.

    python benchmarks/proxy_fidelity.py --jobs 2                     # run or continue
    python benchmarks/proxy_fidelity.py --report-only --full ../main/results/retrain-camvid/compare.json
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "camvid:../shared/datasets/camvid"  # path relative to the repository root
DEFAULT_FULL = "results/retrain-camvid/compare.json"
PANEL = ["cross_entropy", "focal", "lovasz_softmax", "paddleseg-lovasz-softmax-ce", "jdt-ce",
         "rmi-train", "asl-voc-miou", "asl-voc-bf1", "soft-miou", "soft-bf1"]
METRICS = ("miou", "bf1")
GOAL = 0.8  # Spearman wanted for both metrics
SEED0 = 10  # proxy seeds 10, 11, ...: no proxy run shares a batch order with a full run (0..2)
# proxy variants (name -> ProxyConfig overrides; the benchmark adds data, metrics, num_threads)
VARIANTS: dict[str, dict[str, Any]] = {
    # ProxyConfig() until this benchmark made converged-lr0.03 the default (2026-12-01)
    "previous-default": {"warm_start_steps": 300, "warm_start_lr": 0.05, "steps": 60,
                         "lr": 0.02, "eval_every": 20},
    # warm start from a converged cross-entropy UNet like the reference protocol's (2000 steps,
    # lr 0.05; seed 10, not one of the reference's pretrain seeds), then a short fine-tune at
    # the protocol's fine-tuning lr, or 3x that to move a converged model further in 60 steps
    "converged": {"warm_start_steps": 2000, "warm_start_lr": 0.05, "warm_start_seed": 10,
                  "steps": 60, "lr": 0.01, "eval_every": 30},
    "converged-lr0.03": {"warm_start_steps": 2000, "warm_start_lr": 0.05, "warm_start_seed": 10,
                         "steps": 60, "lr": 0.03, "eval_every": 30},
}
# ProxyConfig fields that do not change the warm start (variants differing only here share it)
_FINETUNE_ONLY = {"steps", "lr", "eval_every", "metrics", "eval_subset", "tol", "device",
                  "num_threads"}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _rooted(spec: str) -> str:
    """A dataset spec ``KIND:PATH?OPTIONS`` with a relative PATH made absolute from the root."""
    head, q, query = spec.partition("?")
    kind, colon, path = head.partition(":")
    if colon and path and not Path(path).expanduser().is_absolute():
        path = str((ROOT / path).resolve())
    return f"{kind}{colon}{path}{q}{query}"


def _display_path(path: Path) -> str:
    """``path`` relative to the repository root (results files hold no absolute paths)."""
    return os.path.relpath(path.resolve(), ROOT)


def proxy_config(name: str, data: str) -> dict[str, Any]:
    """The resolved ``ProxyConfig`` of variant ``name`` as a plain dict (data as given)."""
    from autoloss.train.proxy import ProxyConfig

    config = ProxyConfig.from_dict({"data": data, "metrics": list(METRICS), **VARIANTS[name]})
    return {k: v for k, v in config.to_dict().items() if k not in ("device", "num_threads")}


# ---- work done in the worker processes ------------------------------------------------------

_PROXIES: dict[str, Any] = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _proxy(config: dict[str, Any], cache: str) -> Any:
    from autoloss.train.proxy import build_proxy

    key = _digest(config)
    if key not in _PROXIES:
        _PROXIES[key] = build_proxy({**config, "data": _rooted(config["data"]), "num_threads": 1},
                                    cache_dir=Path(cache))
    return _PROXIES[key]


def _prepare_task(config: dict[str, Any], cache: str) -> dict[str, Any]:
    """Train (or find) the variant's warm start; its cost and val scores."""
    c0, t0 = time.process_time(), time.perf_counter()
    proxy = _proxy(config, cache)
    proxy.prepare()
    info_path = proxy.warm_start_path.with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return {"trained": proxy.trained_warm_start, "cpu": time.process_time() - c0,
            "wall": time.perf_counter() - t0, "key": proxy.key(),
            "steps": config["warm_start_steps"], "val_metrics": info.get("val_metrics")}


def _trial_task(config: dict[str, Any], cache: str, loss_name: str, seed: int) -> dict[str, Any]:
    from autoloss.retrain.compare import build_loss
    from autoloss.train.trainer import NonFiniteLossError

    t0 = time.perf_counter()
    proxy = _proxy(config, cache)
    proxy.prepare()
    setup = time.perf_counter() - t0
    loss = build_loss(loss_name, ignore_index=proxy.ignore_index)
    c0, t0 = time.process_time(), time.perf_counter()
    history: list[list[Any]] = []
    try:
        metrics: dict[str, float] | None = proxy.run(
            loss, seed=seed, on_eval=lambda s, m: history.append([s, m]))
        error = None
    except NonFiniteLossError as err:
        metrics, error = None, str(err)
    return {"metrics": metrics, "error": error, "history": history,
            "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "setup_wall": setup, "pid": os.getpid(), **proxy.last_run}


# ---- orchestration ----------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": {}}


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN and infinities -> None, numpy scalars -> float."""
    if isinstance(obj, Mapping):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(state), indent=1))
    os.replace(tmp, path)


def _warm_key(config: Mapping[str, Any]) -> str:
    return _digest({k: v for k, v in config.items() if k not in _FINETUNE_ONLY})


def _tasks(args: argparse.Namespace, runs: Mapping[str, Any]) -> list[tuple[str, str, Any, tuple]]:
    """(key, settings digest, function, arguments) of every run still to do: the warm starts
    first (one per distinct warm start, so that they train in parallel), then the trials
    variant by variant."""
    prepares: dict[str, tuple] = {}
    trials = []
    for name in args.variants:
        config = proxy_config(name, args.data)
        digest = _digest(config)
        todo = [(f"proxy-{name}/{loss}/seed{s}", digest, _trial_task,
                 (config, str(args.cache), loss, s))
                for s in range(SEED0, SEED0 + args.seeds) for loss in args.losses
                if runs.get(f"proxy-{name}/{loss}/seed{s}", {}).get("digest") != digest]
        warm = _warm_key(config)
        if todo and config["warm_start"] and warm not in prepares:
            prepares[warm] = (f"warm-start/{name}", warm, _prepare_task, (config, str(args.cache)))
        trials += todo
    ordered = sorted(prepares.values(), key=lambda t: -t[3][0]["warm_start_steps"])
    return ordered + trials


def run(args: argparse.Namespace) -> dict[str, Any]:
    from autoloss.losses import load_loss

    for loss in args.losses:  # fail on a typo before any training
        load_loss(loss)
    state = _load(args.json)
    runs = state.setdefault("runs", {})
    warm_starts = state.setdefault("warm_starts", {})
    todo = _tasks(args, runs)
    print(f"{len(todo)} tasks to do ({len(runs)} runs stored)", flush=True)
    started = time.perf_counter()
    if todo:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(fn, *fargs): (key, digest) for key, digest, fn, fargs in todo}
            for future in cf.as_completed(futures):
                key, digest = futures[future]
                result = future.result()
                stamp = f"[{time.perf_counter() - started:7.0f}s] {key}:"
                if key.startswith("warm-start/"):
                    if result["trained"] or digest not in warm_starts:
                        warm_starts[digest] = result
                    print(f"{stamp} {'trained' if result['trained'] else 'cached'} "
                          f"({result['wall']:.0f}s wall, {result['cpu']:.0f}s cpu)", flush=True)
                    continue
                runs[key] = {"digest": digest, **result}
                state["load_after_last_run"] = os.getloadavg()
                _save(args.json, state)
                m = result["metrics"]
                scores = (f"miou {m['miou']:.4f} bf1 {m['bf1']:.4f}" if m
                          else f"failed: {result['error']}")
                print(f"{stamp} {scores} ({result['wall']:.0f}s wall, {result['cpu']:.0f}s cpu)",
                      flush=True)
    from machine_info import cpu_model  # benchmarks/ is on sys.path when run as a script

    old = state.get("settings", {})
    configs = {**old.get("configs", {}), **{n: proxy_config(n, args.data) for n in args.variants}}
    state["settings"] = {
        "data": args.data, "seeds": args.seeds, "seed0": SEED0,
        "losses": args.losses + [x for x in old.get("losses", []) if x not in args.losses],
        "variants": {**old.get("variants", {}), **{n: VARIANTS[n] for n in args.variants}},
        "configs": configs, "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs"}
    for key, w in warm_starts.items():  # which variants share each warm start
        w["variants"] = [n for n, c in configs.items() if _warm_key(c) == key]
    state.setdefault("wall_sessions", []).append(time.perf_counter() - started)
    _save(args.json, state)
    return state


# ---- the full reference -----------------------------------------------------------------------


def read_full(compare: Mapping[str, Any], losses: Sequence[str],
              run_dir: Path | None = None, *, split: str = "test") -> dict[str, Any]:
    """Per loss of ``losses`` found in a ``compare.json`` object: the mean and the per-seed
    scores of each metric on ``split`` (missing or null values skipped), and the mean on the
    other split under ``<metric>_other``. ``"test"`` scores come from ``compare.json``,
    ``"val"`` scores (the last validation of each run) from the runs' ``metrics.json`` under
    ``run_dir`` (``<run_dir>/runs/<loss>/seed<s>``); ``split="val"`` needs them."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', but got {split=}")
    out: dict[str, Any] = {}
    for loss in losses:
        runs = sorted((r for r in compare["runs"] if r["loss"] == loss), key=lambda r: r["seed"])
        if not runs:
            continue
        tests = [r["metrics"] for r in runs]
        vals = None
        if run_dir is not None:
            paths = [run_dir / Path(*Path(r["dir"]).parts[-3:]) / "metrics.json" for r in runs]
            if all(path.is_file() for path in paths):
                vals = [json.loads(path.read_text()).get("val") or {} for path in paths]
        if split == "val" and vals is None:
            raise FileNotFoundError(f"the val scores of {loss!r} need its runs' metrics.json "
                                    f"under {run_dir}/runs/ (pass the comparison's folder)")
        chosen, other = (vals, tests) if split == "val" else (tests, vals)
        row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
        for metric in METRICS:
            values = [float(x[metric]) for x in chosen
                      if x.get(metric) is not None and math.isfinite(x[metric])]
            row[metric] = float(np.mean(values)) if values else None
            row[f"{metric}_per_seed"] = values
            if other is not None:
                v = [x[metric] for x in other if x.get(metric) is not None]
                row[f"{metric}_other"] = float(np.mean(v)) if v else None
        out[loss] = row
    return out


def load_full(path: Path, losses: Sequence[str], *, split: str = "val") -> dict[str, Any] | None:
    """The full reference for the report, scored on ``split`` (None when ``path`` does not
    exist yet)."""
    if not path.is_file():
        return None
    compare = json.loads(path.read_text())
    return {"source": _display_path(path), "data": compare.get("data"),
            "seeds": compare.get("seeds"), "test_split": compare.get("test_split"),
            "split": compare.get("val_split") if split == "val" else compare.get("test_split"),
            "other_split": compare.get("test_split") if split == "val"
            else compare.get("val_split"),
            "protocol": compare.get("protocol"),
            **{name: {k: v for k, v in (compare.get(name) or {}).items()
                      if k in ("steps", "lr", "batch_size", "optimizer", "crop")}
               for name in ("train_config", "pretrain_config")},
            "losses": read_full(compare, losses, run_dir=path.parent, split=split)}


# ---- statistics -------------------------------------------------------------------------------


def _top(values: Mapping[str, float], k: int) -> list[str]:
    return sorted(values, key=lambda name: -values[name])[:k]


def rank_stats(proxy: Mapping[str, float], full: Mapping[str, float]) -> dict[str, Any]:
    """Agreement of two scorings of the same losses (higher is better in both): Spearman,
    Kendall (tau-b) and their p-values, the proxy's top 3, the full top 1, and whether the first
    holds the second."""
    from scipy.stats import kendalltau, spearmanr

    names = [n for n in proxy if n in full]
    if len(names) < 3:
        raise ValueError(f"rank statistics need at least 3 losses scored by both, but got {names}")
    p, f = [proxy[n] for n in names], [full[n] for n in names]
    rho, tau = spearmanr(p, f), kendalltau(p, f)
    top3 = _top({n: proxy[n] for n in names}, 3)
    top1 = _top({n: full[n] for n in names}, 1)[0]
    return {"n": len(names), "spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "proxy_top3": top3, "full_top1": top1, "top3_has_full_top1": top1 in top3}


def median_pair_gap(means: Sequence[float]) -> float:
    """Median absolute difference over all pairs of losses."""
    m = list(means)
    return float(np.median([abs(a - b) for i, a in enumerate(m) for b in m[i + 1:]]))


def spearman_critical(n: int, alpha: float = 0.05) -> float:
    """The Spearman above which ``spearmanr`` (t approximation) calls a correlation significant
    at ``alpha`` (two-sided) for ``n`` losses."""
    from scipy.stats import t

    q = t.ppf(1 - alpha / 2, n - 2)
    return float(q / math.sqrt(n - 2 + q * q))


def full_reliability(full: Mapping[str, Any], metric: str) -> float | None:
    """How well one full seed ranks the losses like the other seeds: mean over seeds of the
    Spearman between that seed's scores and the mean of the others (None below 2 seeds)."""
    from scipy.stats import spearmanr

    rows = [r[f"{metric}_per_seed"] for r in full.values()]
    k = min(len(r) for r in rows)
    if k < 2 or len(rows) < 3:
        return None
    return float(np.mean([spearmanr([r[i] for r in rows],
                                    [np.mean(r[:i] + r[i + 1:k]) for r in rows]).statistic
                          for i in range(k)]))


def summarize(state: Mapping[str, Any], full: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per variant and metric: per-loss rows (proxy mean / std / per seed, full mean, ranks),
    rank statistics against the full means, seed noise and gaps, CPU time per trial."""
    from scipy.stats import spearmanr

    settings, runs = state["settings"], state["runs"]
    full_losses = (full or {}).get("losses", {})
    out: dict[str, Any] = {}
    for name in settings["variants"]:
        digest = _digest(settings["configs"][name])  # runs of older settings do not count
        per_metric: dict[str, Any] = {}
        for metric in METRICS:
            rows, failed, cpu = [], [], []
            for loss in settings["losses"]:
                done = [runs[k] for s in range(settings["seed0"],
                                               settings["seed0"] + settings["seeds"])
                        if (k := f"proxy-{name}/{loss}/seed{s}") in runs
                        and runs[k]["digest"] == digest]
                failed += [f"{loss}: {r['error']}" for r in done if r["metrics"] is None]
                done = [r for r in done if r["metrics"] is not None]
                cpu += [r["cpu"] for r in done]
                if not done:
                    continue
                seeds = [r["metrics"][metric] for r in done]
                f = full_losses.get(loss, {})
                rows.append({"loss": loss, "per_seed": seeds, "proxy_mean": float(np.mean(seeds)),
                             "proxy_std": float(np.std(seeds, ddof=1)) if len(seeds) > 1
                             else math.nan, "full": f.get(metric),
                             "full_std": float(np.std(f[f"{metric}_per_seed"], ddof=1))
                             if len(f.get(f"{metric}_per_seed", [])) > 1 else math.nan,
                             "full_other": f.get(f"{metric}_other"),
                             "cpu": float(np.mean([r["cpu"] for r in done]))})
            s: dict[str, Any] = {"rows": rows, "failed": failed,
                                 "cpu_per_trial": float(np.mean(cpu)) if cpu else math.nan,
                                 "cpu_per_trial_max": float(np.max(cpu)) if cpu else math.nan}
            if len(rows) >= 2:
                s["median_seed_std"] = float(np.nanmedian([r["proxy_std"] for r in rows]))
                s["median_pair_gap"] = median_pair_gap([r["proxy_mean"] for r in rows])
            both = [r for r in rows if r["full"] is not None]
            if len(both) >= 3:
                proxy_m = {r["loss"]: r["proxy_mean"] for r in both}
                full_m = {r["loss"]: r["full"] for r in both}
                s.update(rank_stats(proxy_m, full_m))
                order_p, order_f = _top(proxy_m, len(both)), _top(full_m, len(both))
                for r in both:
                    r["proxy_rank"] = order_p.index(r["loss"]) + 1
                    r["full_rank"] = order_f.index(r["loss"]) + 1
                k = min(len(r["per_seed"]) for r in both)
                s["spearman_single_seed"] = [
                    float(spearmanr([r["per_seed"][i] for r in both],
                                    [r["full"] for r in both]).statistic) for i in range(k)]
                if all(r["full_other"] is not None for r in both):
                    s["spearman_vs_full_other"] = float(spearmanr(
                        [r["proxy_mean"] for r in both],
                        [r["full_other"] for r in both]).statistic)
            per_metric[metric] = s
        out[name] = per_metric
    return out


def full_bounds(full: Mapping[str, Any]) -> dict[str, Any]:
    """What limits any proxy's agreement with the full means, per metric: the full seed noise
    against the gaps between losses, the full runs' seed-to-seed reliability, and (when the runs'
    val scores are there) the Spearman of their val against their test means."""
    from scipy.stats import spearmanr

    rows = full["losses"]
    out: dict[str, Any] = {"n": len(rows), "metrics": {}, "spearman_critical_5pct": (
        spearman_critical(len(rows)) if len(rows) > 3 else None)}
    for metric in METRICS:
        means = [r[metric] for r in rows.values() if r[metric] is not None]
        stds = [float(np.std(r[f"{metric}_per_seed"], ddof=1)) for r in rows.values()
                if len(r[f"{metric}_per_seed"]) > 1]
        m: dict[str, Any] = {
            "median_seed_std": float(np.median(stds)) if stds else None,
            "median_pair_gap": median_pair_gap(means) if len(means) > 1 else None,
            "median_adjacent_gap": float(np.median(np.diff(sorted(means))))
            if len(means) > 1 else None,
            "reliability": full_reliability(rows, metric) if len(means) == len(rows) else None,
            "val_vs_test_spearman": None}
        pairs = [(r[metric], r.get(f"{metric}_other")) for r in rows.values()]
        if len(pairs) >= 3 and all(t is not None and v is not None for t, v in pairs):
            m["val_vs_test_spearman"] = float(spearmanr(*zip(*pairs)).statistic)
        out["metrics"][metric] = m
    return out


def top_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{variant: {metric: {"spearman": x, "kendall": y}}}`` (None without full results)."""
    return {name: {metric: {"spearman": s.get("spearman"), "kendall": s.get("kendall")}
                   for metric, s in per_metric.items()} for name, per_metric in summary.items()}


# fields left out when matching a variant with ProxyConfig(): execution settings, and the warm
# start's seed (the variants use seed 10 so that no proxy warm start is the reference's seed-0
# pretraining run; the default's 0 is the same distribution)
_SEEDS = ("device", "num_threads", "warm_start_seed")


def default_variant(settings: Mapping[str, Any]) -> str | None:
    """The variant whose resolved config is ``ProxyConfig()`` with the benchmark's data and
    metrics (up to the warm start's seed)."""
    from autoloss.train.proxy import ProxyConfig

    plain = ProxyConfig.from_dict({"data": settings["data"], "metrics": list(METRICS)}).to_dict()
    plain = {k: v for k, v in plain.items() if k not in _SEEDS}
    return next((n for n, c in settings["configs"].items()
                 if {k: v for k, v in c.items() if k not in _SEEDS} == plain), None)


def write_outputs(state: dict[str, Any], args: argparse.Namespace) -> None:
    """Add the full reference and the summaries of ``args.losses`` and ``args.variants`` to
    ``state``, save it, write the markdown."""
    from proxy_fidelity_report import report_text  # benchmarks/ is on sys.path (script)

    settings = state["settings"]
    view = {**state, "settings": {**settings, "losses": args.losses, "variants": {
        n: v for n, v in settings["variants"].items() if n in args.variants}}}
    full = load_full(args.full, args.losses, split=args.full_split)
    summary = summarize(view, full)
    bounds = full_bounds(full) if full and len(full["losses"]) >= 3 else None
    state.update(full=full, full_bounds=bounds, details=summary, summary=top_summary(summary),
                 default_proxy=default_variant(settings))
    _save(args.json, state)
    text = report_text(view, summary, bounds=bounds, full=full,
                       default=state["default_proxy"], full_path=_display_path(args.full),
                       goal=GOAL)
    old = args.md.read_text() if args.md.is_file() else ""
    if START not in old or END not in old:
        old = f"{TITLE}\n\n{START}\n{END}\n"
    head, rest = old.split(START, 1)
    args.md.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")


START, END = "<!-- generated:start -->", "<!-- generated:end -->"
TITLE = "# Proxy fidelity on CamVid: does the proxy rank losses like the retraining protocol?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset spec (no size option)")
    p.add_argument("--full", type=Path, default=Path(DEFAULT_FULL),
                   help="compare.json of the reference retraining panel")
    p.add_argument("--full-split", choices=("val", "test"), default="val",
                   help="the split of the full runs the proxy is ranked against (default val: "
                   "the proxy is chosen without reading test; test only to compare with older "
                   "reports)")
    p.add_argument("--losses", nargs="+", help="default: the panel (report-only: the stored)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                   help="default: all (report-only: the stored ones)")
    p.add_argument("--seeds", type=int, default=3, help="proxy seeds per loss and variant")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (1 thread each)")
    p.add_argument("--json", type=Path, default=Path("results/proxy_fidelity.json"))
    p.add_argument("--md", type=Path, default=Path("results/proxy_fidelity.md"))
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "autoloss-proxy")
    p.add_argument("--report-only", action="store_true", help="rebuild md/json from the JSON")
    p.add_argument("--smoke", action="store_true", help="tiny budgets, to check the pipeline")
    args = p.parse_args(argv)
    if args.smoke:
        for v in VARIANTS.values():
            v.update(steps=3, eval_every=3, warm_start_steps=3, size=[32, 32])
    for name in ("full", "json", "md"):  # relative to the repository root
        path = getattr(args, name).expanduser()
        setattr(args, name, path if path.is_absolute() else ROOT / path)
    if args.seeds < 1 or args.jobs < 1:
        p.error(f"--seeds and --jobs must be positive, but got {args.seeds=}, {args.jobs=}")
    if args.report_only:
        state = _load(args.json)
        if "settings" not in state:
            p.error(f"{_display_path(args.json)} holds no finished session; run without "
                    "--report-only first")
        stored = state["settings"]
        args.losses = args.losses or stored["losses"]
        args.variants = args.variants or list(stored["variants"])
        for name in args.variants:
            if name not in stored["variants"]:
                p.error(f"variant {name!r} has no stored runs; stored: {list(stored['variants'])}")
    else:
        args.losses = args.losses or PANEL
        args.variants = args.variants or list(VARIANTS)
        state = run(args)
    write_outputs(state, args)
    print(f"wrote {_display_path(args.md)} and {_display_path(args.json)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
