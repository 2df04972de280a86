"""The ``autoloss search`` and ``autoloss export`` subcommands (wired in by ``autoloss.cli.app``).

    autoloss search --metric miou --data shapes --trials 50
    autoloss search --config experiments/search_miou_shapes.yaml --trials 100   # flag wins
    autoloss export results/search-miou-shapes                                   # best trial
    autoloss export --storage sqlite:///study.db --study miou-shapes --trial 7 --to t7.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError, MissingFileError

__all__ = ["register"]

# CLI flag -> proxy config key, for the common proxy knobs (anything else: --proxy KEY=VALUE).
_PROXY_FLAGS = {"proxy_steps": "steps", "proxy_model": "model", "proxy_crop": "crop",
                "proxy_subset": "subset", "proxy_eval_every": "eval_every",
                "proxy_batch_size": "batch_size", "width": "width", "depth": "depth",
                "tol": "tol", "device": "device", "num_threads": "num_threads"}


def _proxy_default(key: str) -> Any:
    """The default of proxy option ``key``, from the one place it is defined (ProxyConfig)."""
    from autoloss.train.proxy import ProxyConfig

    return {f.name: f.default for f in dataclasses.fields(ProxyConfig)}[key]


def _search_default(key: str) -> Any:
    """The default of search option ``key``, from SearchConfig."""
    from autoloss.search.config import SearchConfig

    return {f.name: f.default for f in dataclasses.fields(SearchConfig)}[key]


def _deprecated(old: str, new: str) -> None:
    print(f"autoloss: {old} is deprecated and will be removed; use {new}", file=sys.stderr)


def _crop(text: str) -> tuple[int, int]:
    from autoloss.utils.typed_fields import parse_size

    try:
        return parse_size(text, name="crop")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, but got {text!r}")
    from autoloss.utils.yaml_files import parse_value  # 1e-5 a number, invalid YAML one line

    try:
        return key, parse_value(value, what=key)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _config_from_args(args: argparse.Namespace) -> Any:
    from autoloss.search.config import SearchConfig, load_experiment
    from autoloss.utils.trust import code_file, trust_code

    cfg = load_experiment(args.config) if args.config else SearchConfig()
    given: dict[str, Any] = {}
    for name in ("data", "trials", "timeout", "sampler", "storage", "study", "workers", "seed",
                 "out", "space", "cache", "proxy_factory", "multi_objective",
                 "enqueue_references", "plots", "startup", "rescore_top", "rescore_seeds",
                 "export_rule", "init_from"):
        value = getattr(args, name)
        if value is not None:
            given[name] = value
    if args.metric is not None:
        from autoloss.search.config import parse_target

        metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
        if not metrics:
            raise InvalidValueError(f"--metric names no metric, but got {args.metric!r}; pass "
                                    f"e.g. --metric miou (autoloss losses lists the metrics)")
        # a user program named in the command itself is the user's own words: trusted
        trust_code(*[name for m in metrics for name, _ in parse_target(m)
                     if code_file(name) is not None])
        given["metric"] = metrics if len(metrics) > 1 else metrics[0]
        if args.multi_objective is None:  # a comma list means multi-objective
            given["multi_objective"] = len(metrics) > 1
    if args.pruner is not None:
        if isinstance(args.pruner, str):  # the spelling of autoloss 0.1: --pruner on|off
            _deprecated(f"--pruner {args.pruner}", "--pruner" if args.pruner == "on"
                        else "--no-pruner")
            given["pruner"] = args.pruner == "on"
        else:
            given["pruner"] = args.pruner
    proxy = dict(cfg.proxy)
    for flag, key in _PROXY_FLAGS.items():
        if getattr(args, flag) is not None:
            proxy[key] = getattr(args, flag)
    proxy.update(dict(args.proxy or []))
    # user code named in the command itself (a builder, a factory file) is the user's own words
    trust_code(*[ref for ref in (proxy.get("model"), given.get("proxy_factory"))
                 if isinstance(ref, str) and code_file(ref) is not None])
    given["proxy"] = proxy
    return dataclasses.replace(cfg, **given)


def _cmd_search(args: argparse.Namespace) -> int:
    from autoloss.search.run import run_search
    from autoloss.utils.urls import mask_password

    argv = getattr(args, "argv", None)  # set by autoloss.cli.app.main
    command = None if argv is None else shlex.join(["autoloss", *argv])
    result = run_search(_config_from_args(args), progress=not args.no_progress, command=command,
                        overwrite=args.overwrite)
    print(f"study {result.study} in {mask_password(result.storage)}")
    if result.loss_path is not None:
        from autoloss.losses import read_spec

        prov = read_spec(result.loss_path).get("provenance") or {}
        how = f"rule {prov['export_rule']}" if "rescore" in prov else "best score"
        print(f"exported loss (trial {prov.get('trial', result.best_trial)}, {how}): "
              f"{result.loss_path}")
    if result.gain is not None:
        print(f"gain over cross-entropy: {result.gain}")
    if result.gain_over_identity is not None:
        print(f"gain over the plain soft metric: {result.gain_over_identity}")
    if result.export_reason is not None:
        print(f"export: {result.export_reason}")
    elif result.loss_path is not None:
        print("export: not re-scored (--rescore-top 0), so not compared with the plain soft "
              "metric: it may be no better than the identity curves")
    print(f"summary: {result.out / 'summary.md'}")
    if any((result.out / "plots").glob("*.png")):
        print(f"plots: {result.out / 'plots'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from autoloss.search.run_folder import RunFolder
    from autoloss.search.storage import storage_errors

    storage, study_name, folder = args.storage, args.study, Path(".")
    if args.run_dir is not None and storage is None:
        folder = Path(args.run_dir)
        if not RunFolder(folder).info_path.is_file():
            raise MissingFileError(f"{str(folder)!r} is not a search run folder (it has no "
                                    "run.json); pass --storage URL [--study NAME] instead")
        # the folder's own study.db when the recorded SQLite path is not on this machine
        found = RunFolder(folder).storage()
        if found is None:
            raise MissingFileError(f"run folder {str(folder)!r} holds no study database; pass "
                                    "--storage URL [--study NAME]")
        storage, study_name = found[0], study_name or found[1]
    elif storage is None:
        raise InvalidValueError("export needs a run folder or --storage URL")
    elif args.run_dir is not None:
        folder = Path(args.run_dir)
    with storage_errors(storage):
        return _export(args, storage, study_name, folder)


def _export(args: argparse.Namespace, storage: str, study_name: str | None, folder: Path) -> int:
    from autoloss.search.export import export_trial
    from autoloss.search.run_folder import RunFolder
    from autoloss.search.storage import open_study

    study = open_study(storage, study_name)
    rescored = None
    if (args.rescore_top is not None or args.rescore_seeds is not None
            or args.export_rule is not None):
        if args.trial is not None:
            raise InvalidValueError("--trial exports that trial as it is; re-scoring (--rescore-top, "
                             "--rescore-seeds, --export-rule) chooses the trial, so pass one or "
                             "the other")
        rescored = _rescore_for_export(study, storage, folder, args)
    name = "best_loss.yaml" if args.trial is None else f"trial_{args.trial}_loss.yaml"
    if args.out is not None:
        _deprecated("export --out FILE", "export --to FILE (--out names folders elsewhere)")
    target = args.to or args.out
    path = export_trial(study, args.trial, Path(target) if target else folder / name,
                        storage=storage)
    print(f"exported {study.study_name} trial "
          f"{'best' if args.trial is None else args.trial} to {path}")
    run_folder = RunFolder(folder)
    if args.run_dir is not None and path.resolve() == run_folder.loss_path.resolve():
        from autoloss.search.rescore import rescore_summary
        from autoloss.search.run import rewrite_summary

        argv = getattr(args, "argv", None)  # set by autoloss.cli.app.main
        rewrite_summary(study, run_folder, storage=storage,
                        rescored=rescored or rescore_summary(study),
                        command=None if argv is None else shlex.join(["autoloss", *argv]))
        print(f"summary: {run_folder.summary_path}")
    return 0


def _rescore_for_export(study: Any, storage: str, folder: Path,
                        args: argparse.Namespace) -> dict[str, Any] | None:
    """Re-score ``study``'s top trials with the proxy it was searched with (its recorded
    config; the shared proxy cache, :mod:`autoloss.utils.cache`), before the export picks the best
    mean."""
    from autoloss.search.config import SearchConfig
    from autoloss.search.plan import plan_search
    from autoloss.search.run import rescore
    from autoloss.search.samplers import SAMPLERS

    stored = dict(study.user_attrs.get("config") or {})
    if not stored:
        raise InvalidValueError(f"study {study.study_name!r} records no search config (user attr "
                         "'config'); was it made by autoloss search?")
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    values = {k: v for k, v in stored.items() if k in fields}
    values.pop("cache", None)  # a path of the machine that searched: use this one's cache
    values.pop("init_from", None)  # where the search started: the re-scoring starts nothing
    if values.get("sampler") not in SAMPLERS:  # a sampler instance (recorded by its name): the
        values.pop("sampler", None)            # re-scoring samples nothing
    values.update(storage=storage, study=study.study_name, out=folder)
    for name in ("rescore_top", "rescore_seeds", "export_rule"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    plan = plan_search(SearchConfig(**values))
    proxy = plan.make_proxy()
    proxy.prepare()
    return rescore(plan, study, proxy, progress=True)


def _add_rescore_flags(p: argparse.ArgumentParser) -> None:
    from autoloss.search.rescore import EXPORT_RULES

    p.add_argument("--rescore-top", type=int, help="before exporting, score the best K trials, "
                   "the plain soft metric, the published curves and cross-entropy again with "
                   f"other proxy seeds (default {_search_default('rescore_top')}; 0: export the "
                   "single best trial as scored, compared with nothing)")
    p.add_argument("--rescore-seeds", type=int, help="proxy seeds of the re-scoring (default "
                   f"{_search_default('rescore_seeds')})")
    p.add_argument("--export-rule", choices=EXPORT_RULES, help="beat-identity (default): export "
                   "the best searched trial only if it beats the plain soft metric with its 95 %% "
                   "interval above zero, else the plain soft metric; best-mean: the best "
                   "re-scored mean (a reference point if it scores best); best-searched: the "
                   "searched trial with the best re-scored mean")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``search`` and ``export`` subcommands to ``autoloss``'s subparsers."""
    from autoloss.search.samplers import SAMPLERS

    p = sub.add_parser("search", help="search a surrogate loss for a metric (optuna study)",
                       description="Search a surrogate loss. Flags given explicitly override "
                       "the --config experiment file; every option has a default.")
    p.add_argument("--config", help="flat experiment YAML (experiments/search_*.yaml)")
    p.add_argument("--metric", help="metric (miou, bf1, ...), weighted sum 'miou+0.5*bf1', or "
                   "a comma list 'miou,bf1' (multi-objective)")
    p.add_argument("--data", help="dataset spec, e.g. shapes, camvid:PATH (default "
                   f"{_search_default('data')})")
    p.add_argument("--trials", type=int,
                   help=f"finished trials to reach (default {_search_default('trials')})")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--sampler", choices=SAMPLERS, help=f"default {_search_default('sampler')}")
    p.add_argument("--no-pruner", dest="pruner", action="store_const", const=False,
                   help="never stop a trial early (by default the bottom quarter is pruned)")
    # --pruner turns it back on; "--pruner on|off" is autoloss 0.1's spelling (deprecated)
    p.add_argument("--pruner", nargs="?", const=True, choices=("on", "off", True),
                   help=argparse.SUPPRESS)
    p.add_argument("--storage", help="SQLAlchemy URL or journal:PATH "
                   "(default sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name (default METRIC-DATA)")
    p.add_argument("--workers", type=int, help="worker processes on this host (default "
                   f"{_search_default('workers')})")
    p.add_argument("--seed", type=int,
                   help=f"sampler and proxy seed (default {_search_default('seed')})")
    p.add_argument("--out", help="run folder (default results/search-METRIC-DATA); one folder "
                   "holds one search: another study or storage there is refused")
    p.add_argument("--overwrite", action="store_true", help="delete the search the run folder "
                   "holds (run.json, its study file, exported losses, summary, plots; a study on "
                   "a database server is kept) and start a new one")
    p.add_argument("--space", help="search space YAML, by path (default: the metric's "
                   "built-in space, autoloss/search_spaces/METRIC.yaml, wherever the search "
                   "starts)")
    p.add_argument("--cache", help="proxy cache folder (default: $AUTOLOSS_CACHE or "
                   "~/.cache/autoloss, shared by every search)")
    p.add_argument("--multi-objective", dest="multi_objective", action="store_const",
                   const=True, help="one objective per metric of a comma list")
    p.add_argument("--no-references", dest="enqueue_references", action="store_const",
                   const=False, help="do not evaluate the identity / published curves first")
    p.add_argument("--proxy-steps", type=int,
                   help=f"proxy fine-tuning steps (default {_proxy_default('steps')})")
    p.add_argument("--proxy-model", metavar="MODEL", help="proxy model: unet, deeplab, or "
                   "your own builder build(in_channels, num_classes) -> nn.Module as "
                   "module:function or path/to/file.py:function (default "
                   f"{_proxy_default('model')}; docs/own_model.md)")
    p.add_argument("--proxy-crop", type=_crop, metavar="HxW",
                   help="proxy training crop (default: whole images)")
    p.add_argument("--width", type=int,
                   help=f"proxy model width (default {_proxy_default('width')})")
    p.add_argument("--depth", type=int,
                   help=f"proxy model depth (default {_proxy_default('depth')})")
    p.add_argument("--tol", type=int, help="boundary tolerance in pixels of the proxy's "
                   f"BIoU / BF1 scores (default {_proxy_default('tol')})")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--num-threads", type=int, help="torch CPU threads per worker "
                   "(default: torch's)")
    p.add_argument("--proxy-subset", type=int, help="proxy training images (default: all)")
    p.add_argument("--proxy-eval-every", type=int, help="steps between proxy evaluations "
                   f"(default {_proxy_default('eval_every')})")
    p.add_argument("--proxy-batch-size", type=int,
                   help=f"proxy batch size (default {_proxy_default('batch_size')})")
    p.add_argument("--proxy", type=_key_value, action="append", metavar="KEY=VALUE",
                   help="any other proxy option (repeatable), e.g. init=PATH: start every "
                   "trial from that state dict instead of the cross-entropy warm start")
    p.add_argument("--proxy-factory", metavar="FACTORY", help="your own proxy instead of "
                   "autoloss's: FACTORY (module:attr or path/to/file.py:attr) is called as "
                   "factory(proxy_options, cache_dir=DIR) and returns an object with "
                   "num_classes, ignore_index, eval_steps, prepare() and run(loss, seed=, "
                   "on_eval=) (the ProxyLike protocol, docs/own_model.md; test it with "
                   "autoloss.search.check_proxy)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or summary print")
    p.add_argument("--startup", choices=("uniform", "prior"),
                   help="tpe's first trials: uniform in the bounds (default) or around the "
                   "space's initial point, like PPO's first generation")
    p.add_argument("--no-plots", dest="plots", action="store_const", const=False,
                   help="do not draw the plots into OUT/plots at the end")
    p.add_argument("--init-from", help="loss file (e.g. searched on another dataset) whose "
                   "curves are the first trial and the centre of PPO's policy")
    _add_rescore_flags(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("export", help="export a search trial (default: the best) as a loss YAML")
    p.add_argument("run_dir", nargs="?", help="search run folder (reads its run.json)")
    p.add_argument("--storage", help="storage URL of the study (instead of a run folder)")
    p.add_argument("--study", help="study name (needed when the storage holds several)")
    p.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    p.add_argument("--to", help="output YAML file (default RUN_DIR/best_loss.yaml or "
                   "trial_N_loss.yaml)")
    p.add_argument("--out", help=argparse.SUPPRESS)  # autoloss 0.1's name for --to
    _add_rescore_flags(p)
    p.set_defaults(func=_cmd_export)
