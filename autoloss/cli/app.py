"""The ``autoloss`` command.

Each subcommand is a small function over the Python API; heavy modules are imported inside
them so that ``autoloss --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from autoloss.utils.signals import sigterm_as_interrupt

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> int:
    from autoloss.data import describe_dataset, format_description

    print(format_description(describe_dataset(args.data)))
    return 0



def _cmd_check(args: argparse.Namespace) -> int:
    from autoloss.losses import load_loss
    from autoloss.losses.check import check_loss

    loss = load_loss(args.loss)  # a loss file's error names the file
    if args.trials is not None:
        print("autoloss: check --trials is deprecated and will be removed; use --cases "
              "(--trials counts finished trials in search)", file=sys.stderr)
    cases = args.cases if args.trials is None else args.trials
    results = check_loss(loss, trials=cases, seed=args.seed)
    for result in results:
        print(f"{result.verdict}  {result.name}: {result.detail}")
    failed = [r.name for r in results if not r.passed]
    print(f"{args.loss}: " + ("all checks passed" if not failed else f"FAILED {failed}"))
    return 0 if not failed else 1


def _cmd_losses(args: argparse.Namespace) -> int:
    from autoloss.core.programs import BUILTIN_PROGRAMS
    from autoloss.losses import loss_names

    for kind, names in loss_names().items():
        print(f"{kind}: {', '.join(names)}")
    print("metrics: " + ", ".join(f"{n} ({p.description})" for n, p in BUILTIN_PROGRAMS.items()))
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from autoloss.utils.cache import clear_cache, default_cache_dir, list_cache

    folder = args.dir or default_cache_dir()
    if args.action == "clear":
        print(f"deleted {clear_cache(folder)} warm start(s) from {folder}")
        return 0
    entries = list_cache(folder)
    print(f"{folder}: {len(entries)} warm start(s), "
          f"{sum(e.size for e in entries) / 1e6:.1f} MB")
    for e in entries:
        trained = f"{e.wall_time / 60:.1f} min to train" if e.wall_time else "?"
        print(f"  {e.path.name}  {e.size / 1e6:.1f} MB  {e.data}  {e.model}  "
              f"{e.steps} steps  {trained}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from autoloss.workflow import run_study

    args.resume_hint = "finished trials and runs are kept"
    run_study(args.config, progress=not args.no_progress)
    return 0


class _VersionAction(argparse.Action):
    """``--version``: print ``autoloss X.Y.Z (torch A.B.C)`` and exit; imports the package only
    when asked, so that ``autoloss --help`` stays fast."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        import torch

        from autoloss._version import __version__

        print(f"autoloss {__version__} (torch {torch.__version__})")
        parser.exit()


_TRUST_HELP = ("let files run the user Python code they name (metric: file.py:name, "
               "proxy_factory); without it such a file is an error (autoloss.utils.trust)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoloss",
        description="Search differentiable surrogate losses for segmentation metrics.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--trust-code", action="store_true", help=_TRUST_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="summarise a dataset (splits, size, classes, frequencies)")
    p.add_argument("data", help="dataset spec, e.g. shapes, camvid:PATH, npz:PATH, voc:PATH")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("check", help="check a loss's constraints (truth table, monotonicity)")
    p.add_argument("loss", help="preset name or loss YAML file")
    p.add_argument("--cases", type=int, default=8, help="random cases per property (default 8)")
    p.add_argument("--trials", type=int, help=argparse.SUPPRESS)  # autoloss 0.1's --cases
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("losses", help="list the loss presets, baselines and metrics")
    p.set_defaults(func=_cmd_losses)

    p = sub.add_parser("cache", help="list or clear the shared proxy cache (warm starts)",
                       description="The cross-entropy warm starts every search shares "
                       "($AUTOLOSS_CACHE, else ~/.cache/autoloss; autoloss.utils.cache).")
    p.add_argument("action", choices=("list", "clear"), help="list the entries or delete them")
    p.add_argument("--dir", help="cache folder (default: $AUTOLOSS_CACHE or ~/.cache/autoloss)")
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("study", help="search a loss, retrain it against the baselines, report",
                       description="The whole job in one resumable command: search (with "
                       "re-scoring and export), retraining of the exported loss against "
                       "cross-entropy and the baselines, and OUT/report.md with the verdict.")
    p.add_argument("--config", required=True, help="study file (experiments/study_*.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_study)

    from autoloss.cli.plot import register as register_plot
    from autoloss.cli.search import register as register_search
    from autoloss.cli.train import register as register_train

    register_train(sub)
    register_search(sub)
    register_plot(sub)
    for command in sub.choices.values():  # also after the subcommand: autoloss check F --trust-code
        command.add_argument("--trust-code", action="store_true", default=argparse.SUPPRESS,
                             help=_TRUST_HELP)
    return parser


def _one_line(err: BaseException) -> str:
    """The message of ``err`` for the terminal; an ``OSError`` names its file (``strerror``)."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return f"{err.strerror}: {err.filename}"
    return str(err) or type(err).__name__


#: the exit code of an interrupted command, by Ctrl-C (SIGINT) or SIGTERM alike
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    import os

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the reports that name it
    if args.trust_code:
        from autoloss.utils.trust import ENV_ALL

        os.environ[ENV_ALL] = "1"  # inherited by the worker processes of a search
    from autoloss.errors import AutoLossError

    try:
        with sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except (AutoLossError, OSError) as err:  # the user's to fix, or the machine's (disk, rights)
        print(f"autoloss {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every command resumes when run again
        hint = getattr(args, "resume_hint", None)
        print(f"autoloss {args.command}: interrupted; run the same command to resume"
              + (f" ({hint})" if hint else ""), file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
