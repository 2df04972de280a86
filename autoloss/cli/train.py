"""The ``autoloss train``, ``autoloss evaluate`` and ``autoloss compare`` subcommands, and the
retraining experiment files they read (:mod:`autoloss.retrain.experiment`; wired in by
``autoloss.cli.app``).

    autoloss train --loss asl-voc-miou --data shapes --steps 300 --out runs/asl
    autoloss evaluate --checkpoint runs/asl/checkpoint.pt --data shapes
    autoloss compare --losses cross_entropy,lovasz_softmax,asl-voc-miou --data shapes --seeds 2
    autoloss compare --config experiments/retrain_camvid.yaml --seeds 1     # a flag wins
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
from collections.abc import Mapping
from pathlib import Path

from autoloss.errors import InvalidValueError
from autoloss.retrain.experiment import (
    DEFAULT_TRAIN,
    DEFAULT_WIDTH,
    PROTOCOLS,
    Experiment,
    experiment_from_dict,
    read_experiment,
)

__all__ = ["format_scores", "register"]

# ---- printing --------------------------------------------------------------------------------


def _pp(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:6.2f}"


def format_scores(metrics: Mapping[str, float], *, per_class: Mapping[str, float] | None = None,
                  extra: Mapping[str, str] | None = None) -> str:
    """An aligned text table of metrics (percent), then per-class IoU, then ``extra`` lines."""
    width = max([len(k) for k in [*metrics, *(per_class or {}), *(extra or {}), "metric"]])
    lines = [f"{'metric':<{width}}  value (%)"]
    lines += [f"{k:<{width}}  {_pp(v)}" for k, v in metrics.items()]
    if per_class:
        lines += ["", f"{'class':<{width}}  IoU (%)"]
        lines += [f"{k:<{width}}  {_pp(v)}" for k, v in per_class.items()]
    if extra:
        lines += [""] + [f"{k:<{width}}  {v}" for k, v in extra.items()]
    return "\n".join(lines)


# ---- commands --------------------------------------------------------------------------------

# flag dest -> experiment/TrainConfig key
_FLAGS = ("data", "model", "width", "depth", "steps", "batch_size", "crop", "lr", "eval_every",
          "init_from", "device", "num_threads", "seeds", "losses", "tol", "protocol", "jobs",
          "reference", "plots")


def _experiment(args: argparse.Namespace) -> Experiment:
    from autoloss.utils.trust import code_file, trust_code

    values = read_experiment(args.config) if args.config else {}
    for name in _FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if args.model is not None and code_file(args.model) is not None:
        trust_code(args.model)  # a builder file named in the command: the user's own words
    return experiment_from_dict(values, source=args.config or "options")


def _cmd_train(args: argparse.Namespace) -> int:
    from autoloss.retrain.compare import loss_slug, train_run

    exp = _experiment(args)
    if args.loss is None and len(exp.losses) != 1:
        raise InvalidValueError(f"train needs --loss SPEC (the experiment lists "
                         f"{list(exp.losses) or 'no'} losses)")
    loss = args.loss or exp.losses[0]
    seed = 0 if args.seed is None else args.seed
    out = Path(args.out) if args.out else exp.out_dir() / "runs" / loss_slug(loss) / f"seed{seed}"
    args.resume_hint = f"from {out / 'checkpoint.pt'}"  # printed by autoloss.cli.app.main
    result = train_run(loss, exp.data, config=exp.train_config(seed=seed), out=out,
                       model=exp.model, width=exp.width, depth=exp.depth,
                       init_from=exp.init_from, tol=exp.tol, val_split=exp.val_split,
                       test_split=exp.test_split, progress=not args.no_progress,
                       tensorboard_dir=args.tensorboard)
    state = "finished earlier, not retrained" if result.cached else "trained"
    print(f"{loss} seed {seed}: {state}; {out / 'metrics.json'}")
    scores, split = result.metrics, exp.test_split
    if exp.test_split is None:  # nothing scored at the end: the last validation
        scores = result.history[-1][1] if result.history else {}
        split = f"{exp.val_split} (last validation; test_split: null scores no test split)"
    print(format_scores(scores, extra={"train time": f"{result.train_time:.1f} s",
                                       "split": split}))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from autoloss.core.metrics import check_tol
    from autoloss.retrain.compare import evaluate_checkpoint

    check_tol(args.tol, name="--tol")  # before loading anything
    data = args.data
    run_json = Path(args.checkpoint).parent / "run.json"
    if data is None and run_json.is_file():  # a run folder of train / compare
        from autoloss.utils.json_files import read_json

        record = read_json(run_json, fix="pass --data SPEC")
        data = record.get("data") if isinstance(record, dict) else None
    if data is None:
        raise InvalidValueError(f"evaluate needs --data (there is no run.json naming the data "
                         f"next to {args.checkpoint} to take it from)")
    scores = evaluate_checkpoint(args.checkpoint, data, split=args.split, tol=args.tol,
                                 device=args.device)
    per_class = dict(zip(scores.class_names, scores.per_class_iou))
    if args.json:
        def plain(d: Mapping[str, float]) -> dict[str, float | None]:
            return {k: (v if math.isfinite(v) else None) for k, v in d.items()}
        print(json.dumps({"checkpoint": str(args.checkpoint), "data": data,
                          "split": args.split, "tol": args.tol, "images": scores.images,
                          "metrics": plain(scores.metrics), "per_class_iou": plain(per_class)},
                         indent=2))
        return 0
    print(f"{args.checkpoint} on {data} split {args.split} ({scores.images} images, "
          f"tol {args.tol} px)")
    print(format_scores(scores.metrics, per_class=per_class))
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The compare command as a user would retype it (the flags that were given)."""
    words = ["autoloss", "compare"]
    if args.config:
        words += ["--config", str(args.config)]
    for name in _FLAGS:
        value = getattr(args, name, None)
        if isinstance(value, bool):  # a switch: --no-plots
            words += [f"--{'' if value else 'no-'}{name.replace('_', '-')}"]
        elif value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(words)


def _cmd_compare(args: argparse.Namespace) -> int:
    from autoloss.retrain.compare import compare_losses

    exp = _experiment(args)
    if not exp.losses:
        raise InvalidValueError("compare needs --losses SPEC,SPEC,... (or 'losses:' in --config)")
    if args.out:
        exp = dataclasses.replace(exp, out=args.out)
    # printed by autoloss.cli.app.main on Ctrl-C or SIGTERM
    args.resume_hint = "finished runs are kept, the interrupted one resumes from its checkpoint"
    result = compare_losses(exp, command=_command_line(args), progress=not args.no_progress,
                            tensorboard_dir=args.tensorboard)
    print()
    print(result.table)
    print(f"wrote {result.markdown_path}, {result.csv_path.name}, {result.json_path.name} "
          f"({result.wall_time:.0f} s)")
    if exp.plots and (result.markdown_path.parent / "plots").is_dir():
        print(f"plots: {result.markdown_path.parent / 'plots'}")
    return 0


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="flat experiment YAML (experiments/retrain_*.yaml); "
                   "flags override it")
    p.add_argument("--data", help="dataset spec, e.g. shapes, 'camvid:PATH?size=90x120' "
                   "(default shapes)")
    p.add_argument("--model", help="unet (default), deeplab, or your own builder "
                   "build(in_channels, num_classes) -> nn.Module as module:function or "
                   "path/to/file.py:function (docs/own_model.md)")
    p.add_argument("--width", type=int, help=f"model width (default {DEFAULT_WIDTH})")
    p.add_argument("--depth", type=int, help="model depth (default: the model's, 3)")
    p.add_argument("--steps", type=int, help=f"optimizer steps (default {DEFAULT_TRAIN.steps})")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULT_TRAIN.batch_size}")
    p.add_argument("--crop", help="training crop HxW (default: whole images)")
    p.add_argument("--lr", type=float, help=f"learning rate (default {DEFAULT_TRAIN.lr}, SGD, "
                   "poly schedule)")
    p.add_argument("--eval-every", type=int, help="steps between validations and checkpoints "
                   f"(default {DEFAULT_TRAIN.eval_every})")
    p.add_argument("--tol", type=int, help="boundary tolerance in pixels (default 5)")
    p.add_argument("--init-from", help="warm-start checkpoint (matching weights are copied)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--num-threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``evaluate`` and ``compare`` subcommands to ``autoloss``'s subparsers."""
    p = sub.add_parser("train", help="train a model with one loss, score it on the test split",
                       description="Train with one loss, validate every --eval-every steps, score "
                       "the test split; rerunning resumes an interrupted run and does not redo a "
                       "finished one.")
    p.add_argument("--loss", help="preset, baseline name or loss YAML file")
    p.add_argument("--seed", type=int, help="model init, batch order, augmentation (default 0)")
    p.add_argument("--out", help="run folder (default OUT/runs/<loss>/seed<s>, "
                   "OUT = results/retrain-<data>)")
    p.add_argument("--tensorboard", metavar="DIR", help="also write the training curves as "
                   "TensorBoard scalars into DIR (needs: pip install tensorboard)")
    _add_training_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint with every metric (and per-class IoU)")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by train")
    p.add_argument("--data", help="dataset spec (default: the run's, from run.json)")
    p.add_argument("--split", default="test", help="split to score (default test)")
    p.add_argument("--tol", type=int, default=5, help="boundary tolerance in pixels (default 5)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("compare", help="train several losses x seeds, table of mean ± std",
                       description="Train every loss with seeds 0..N-1, score the test split, "
                       "write OUT/compare.md, compare.csv, compare.json. Resumable.")
    p.add_argument("--losses", help="comma-separated loss specs")
    p.add_argument("--seeds", type=int, help="runs per loss (default 3)")
    p.add_argument("--protocol", choices=PROTOCOLS, help="scratch (default) or finetune: per "
                   "seed a cross-entropy model trained first ('pretrain:' options in --config), "
                   "every loss trains on from it")
    p.add_argument("--reference", help="loss every other is paired with (default "
                   "cross_entropy)")
    p.add_argument("--jobs", type=int, help="runs trained at once, in worker processes (default "
                   "1; threads per run default to cores // jobs)")
    p.add_argument("--out", help="output folder (default results/retrain-<data>)")
    p.add_argument("--no-plots", dest="plots", action="store_const", const=False,
                   help="do not draw the figures into OUT/plots at the end (autoloss plot OUT "
                   "draws them later)")
    p.add_argument("--tensorboard", metavar="DIR", help="also write every run's training curves "
                   "as TensorBoard scalars, DIR/<loss>/seed<s> (needs: pip install tensorboard)")
    _add_training_flags(p)
    p.set_defaults(func=_cmd_compare)
