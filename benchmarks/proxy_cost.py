"""Cost of one proxy trial (fine-tuning + every evaluation) with the default proxy settings.

Builds the proxy for ``--data`` (CamVid by default, from ``../shared``), trains or loads its
cross-entropy warm start (a one-time cost, reported apart), then times ``--trials`` trials per
loss (cross-entropy and surrogates with region and boundary operators) and reports wall seconds
per trial, CPU seconds, trials per hour, and the machine load.

    python benchmarks/proxy_cost.py                          # CamVid, 2 threads, defaults
    python benchmarks/proxy_cost.py --threads 1 --proxy metrics=[miou]
    python benchmarks/proxy_cost.py --data shapes --out results/proxy_cost_shapes.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml
from machine_info import cpu_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = f"camvid:{ROOT.parent / 'shared' / 'datasets' / 'camvid'}"
LOSSES = ["cross_entropy", "soft-miou", "asl-voc-bf1"]


def main(argv: list[str] | None = None) -> int:
    from autoloss.losses import load_loss
    from autoloss.proxy import build_proxy

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--trials", type=int, default=2, help="timed trials per loss")
    p.add_argument("--losses", nargs="+", default=LOSSES)
    p.add_argument("--proxy", action="append", default=[], metavar="KEY=VALUE",
                   help="proxy option override (YAML value), repeatable")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "autoloss-proxy")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "proxy_cost.json")
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
        loss = load_loss(name, ignore_index=proxy.ignore_index)
        for seed in range(args.trials):
            c0, t0 = time.process_time(), time.perf_counter()
            metrics = proxy.run(loss, seed=seed)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            trials.append({"loss": name, "seed": seed, "wall": wall, "cpu": cpu,
                           "miou": metrics.get("miou"), **proxy.last_run})
            print(f"{name} seed {seed}: {wall:.1f} s wall, {cpu:.1f} s cpu, "
                  f"{proxy.last_run['seconds_per_step']:.3f} s/step, "
                  f"eval {proxy.last_run['eval_time']:.1f} s", flush=True)
    walls = [t["wall"] for t in trials]
    result = {
        "data": proxy.data, "proxy": proxy.config.to_dict(), "eval_steps": proxy.eval_steps,
        "threads": args.threads, "build_time": build_time, "prepare_time": prepare_time,
        "warm_start_trained_here": proxy.trained_warm_start, "trials": trials,
        "median_wall": statistics.median(walls), "max_wall": max(walls),
        "median_cpu": statistics.median(t["cpu"] for t in trials),
        "trials_per_hour": 3600 / statistics.median(walls),
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "load_before": load_before, "load_after": os.getloadavg(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"median {result['median_wall']:.1f} s per trial ({result['trials_per_hour']:.0f} per "
          f"hour), max {result['max_wall']:.1f} s; load {load_before} -> {result['load_after']}; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
