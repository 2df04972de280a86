"""Cost of one proxy trial (fine-tuning + every evaluation) with the default proxy settings.

Builds the proxy for ``--data`` (CamVid by default, from ``../shared``), trains or loads its
cross-entropy warm start (a one-time cost, reported apart), then times ``--trials`` trials per
loss (cross-entropy, a searched mIoU loss and the published BF1 surrogate) and reports wall
seconds per trial, CPU seconds, seconds per training step, trials per hour, and the machine
load. With ``compile_loss=True`` (``--proxy compile_loss=true``) a surrogate's first trial in
the process also compiles its graph (``compile_time``, on the inductor cache as it is); trials per hour count
the later trials, which is what a search worker runs. ``--md`` also writes a markdown table.

    python benchmarks/proxy_cost.py                          # CamVid, 2 threads, defaults
    python benchmarks/proxy_cost.py --proxy compile_loss=true --out results/proxy_cost_compiled.json
    python benchmarks/proxy_cost.py --proxy compile_loss=false --out results/proxy_cost_eager.json
    python benchmarks/proxy_cost.py --threads 1 --proxy metrics=[miou]
    python benchmarks/proxy_cost.py --data shapes --out results/proxy_cost_shapes.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from machine_info import cpu_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = f"camvid:{os.path.relpath(ROOT.parent / 'shared' / 'datasets' / 'camvid')}"
LOSSES = ["cross_entropy", "results/search-miou-camvid/best_loss.yaml", "asl-voc-bf1"]


def main(argv: list[str] | None = None) -> int:
    from autoloss.losses import load_loss
    from autoloss.train.proxy import build_proxy

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--trials", type=int, default=2, help="timed trials per loss")
    p.add_argument("--losses", nargs="+", default=LOSSES)
    p.add_argument("--proxy", action="append", default=[], metavar="KEY=VALUE",
                   help="proxy option override (YAML value), repeatable")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "autoloss-proxy")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "proxy_cost.json")
    p.add_argument("--md", type=Path, default=None, help="also write a markdown table here")
    args = p.parse_args(argv)
    overrides = {}
    for text in args.proxy:
        key, _, value = text.partition("=")
        overrides[key] = yaml.safe_load(value)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    proxy = build_proxy({"data": args.data, "num_threads": args.threads, **overrides},
                        cache_dir=args.cache)
    build_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    proxy.prepare()
    prepare_time = time.perf_counter() - t0
    print(f"proxy on {proxy.data}: eval steps {proxy.eval_steps}; build {build_time:.1f} s, "
          f"prepare {prepare_time:.1f} s (warm start trained here: {proxy.trained_warm_start})",
          flush=True)

    trials = []
    for name in args.losses:
        spec = str(ROOT / name) if name.endswith((".yaml", ".yml")) else name
        loss = load_loss(spec, ignore_index=proxy.ignore_index)
        for seed in range(args.trials):
            c0, t0 = time.process_time(), time.perf_counter()
            metrics = proxy.run(loss, seed=seed)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            trials.append({"loss": name, "seed": seed, "wall": wall, "cpu": cpu,
                           "miou": metrics.get("miou"), **proxy.last_run})
            print(f"{name} seed {seed}: {wall:.1f} s wall, {cpu:.1f} s cpu, "
                  f"{proxy.last_run['seconds_per_step']:.3f} s/step, "
                  f"eval {proxy.last_run['eval_time']:.1f} s, "
                  f"compile {proxy.last_run['compile_time']:.1f} s", flush=True)
    walls = [t["wall"] for t in trials]
    per_loss = {}
    for name in args.losses:
        runs = [t for t in trials if t["loss"] == name]
        later = runs[1:] or runs  # a worker's steady state: its first trial compiled
        per_loss[name] = {
            "first_trial_wall": runs[0]["wall"], "compile_time": runs[0]["compile_time"],
            "wall": statistics.median(t["wall"] for t in later),
            "seconds_per_step": statistics.median(t["seconds_per_step"] for t in later),
            "trials_per_hour": 3600 / statistics.median(t["wall"] for t in later)}
    result = {
        "data": proxy.data, "proxy": proxy.config.to_dict(), "eval_steps": proxy.eval_steps,
        "threads": args.threads, "build_time": build_time, "prepare_time": prepare_time,
        "warm_start_trained_here": proxy.trained_warm_start, "trials": trials,
        "median_wall": statistics.median(walls), "max_wall": max(walls),
        "median_cpu": statistics.median(t["cpu"] for t in trials),
        "trials_per_hour": 3600 / statistics.median(walls), "per_loss": per_loss,
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "load_before": load_before, "load_after": os.getloadavg(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.md is not None:
        rows = [f"| {name} | {r['seconds_per_step']:.3f} | {r['wall']:.1f} | "
                f"{r['trials_per_hour']:.0f} | {r['first_trial_wall']:.1f} | "
                f"{r['compile_time']:.1f} |" for name, r in per_loss.items()]
        args.md.write_text("\n".join([
            f"Proxy on `{proxy.data}`, {args.threads} thread(s), compile_loss="
            f"{proxy.config.compile_loss}, {args.trials} trials per loss; {result['date']}; "
            f"load {load_before[0]:.2f} before, {result['load_after'][0]:.2f} after. Command: "
            f"`python benchmarks/proxy_cost.py {' '.join(argv or sys.argv[1:])}`.", "",
            "| loss | s / step | s / trial | trials / hour | first trial s | compile s |",
            "|---|---:|---:|---:|---:|---:|", *rows, ""]))
    print(f"median {result['median_wall']:.1f} s per trial ({result['trials_per_hour']:.0f} per "
          f"hour), max {result['max_wall']:.1f} s; load {load_before} -> {result['load_after']}; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
