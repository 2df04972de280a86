"""The whole job behind ``autoloss study``: search a loss for a metric, re-score and export it,
retrain it against cross-entropy and the baselines, and write one report with the verdict.

    autoloss study --config experiments/study_miou_camvid.yaml

The experiment file has two sections, each the options of the command that runs the stage::

    out: results/study-miou-camvid     # the report (report.md, study.json, plots/)
    search:                            # autoloss search options (SearchConfig fields)
      metric: miou
      data: camvid:../shared/datasets/camvid
      trials: 64
    retrain:                           # autoloss compare options (experiments/retrain_*.yaml)
      config: experiments/retrain_camvid.yaml   # optional: start from an experiment file
      losses: [cross_entropy, lovasz_softmax]   # the baselines; the exported loss is added
      data: camvid:../shared/datasets/camvid?size=90x120
      seeds: 3
      protocol: finetune
      ...

Stages, each resumable because the command it runs is (a finished stage is not redone, an
interrupted one continues): (1) ``search`` into ``search.out`` (default ``OUT/search``), with
the re-scoring of its top trials and the export of ``best_loss.yaml``; (2) ``retrain``: the
comparison of the exported loss with the baselines (runs in ``retrain.out``, default
``OUT/retrain``; tables and figures in ``OUT/retrain``, ``retrain: {plots: false}`` skips the
figures), every loss paired with ``cross_entropy`` by seed;
(3) the report ``OUT/report.md``: the search (best and re-scored proxy scores, learned curves,
history), the retraining table with paired intervals, and per target metric the verdict
"beats cross-entropy by X ± Y points" or "within noise". ``OUT/study.json`` keeps the wall time
of every stage, summed over the runs of the command (a rerun with nothing left to do adds
seconds).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError, SearchError
from autoloss.report.compare_report import format_paired, format_table, metric_names
from autoloss.retrain.compare import compare_losses
from autoloss.retrain.experiment import experiment_from_dict
from autoloss.search.config import SearchConfig, check_user_code, parse_target, resolve_config
from autoloss.search.run import run_search
from autoloss.utils.atomic import write_text_atomic
from autoloss.utils.stats import paired_difference
from autoloss.utils.trust import require_trusted_reference
from autoloss.utils.typed_fields import from_mapping, reject_unknown
from autoloss.utils.yaml_files import read_mapping

__all__ = ["StudyResult", "read_study", "run_study", "strongest_baseline", "verdict"]

_TOP_KEYS = ("out", "search", "retrain", "reference")


@dataclass
class StudyResult:
    """What :func:`run_study` produced: the exported loss, the report and the stage times."""

    loss_path: Path
    report_path: Path
    verdicts: dict[str, str]
    times: dict[str, float]


def read_study(path: str | Path) -> dict[str, Any]:
    """The raw sections of a study file, checked for unknown keys (errors name the file).

    A section may name an experiment file of its command with ``config: PATH`` (relative to the
    working directory); its options are read first and the section's other keys replace them."""
    data = read_mapping(path)
    reject_unknown(data, _TOP_KEYS, where=f"{path}: ")
    for key in ("search", "retrain"):
        section = data.get(key)
        if not isinstance(section, Mapping):
            raise InvalidValueError(f"{path}: '{key}:' must be a mapping of the {key} options, but got "
                             f"{section!r}")
        section = dict(section)
        if "config" in section:
            data[key] = {**read_mapping(section.pop("config")), **section}
    return data


def _search_config(values: Mapping[str, Any], out: Path, source: str) -> SearchConfig:
    try:
        config = from_mapping(SearchConfig, {"out": out / "search", **values})
        check_user_code(values, source=source, prefix="search: ")  # before anything runs
        return resolve_config(config)
    except (TypeError, ValueError) as err:
        raise InvalidValueError(f"{source}: search: {err}") from None


def verdict(runs: Sequence[Any], loss: str, reference: str, metric: str) -> str:
    """One line: does ``loss`` beat ``reference`` on ``metric`` (runs paired by seed)?"""
    by_seed = {r.seed: 100 * r.metrics.get(metric, float("nan")) for r in runs if r.loss == loss}
    ref = {r.seed: 100 * r.metrics.get(metric, float("nan")) for r in runs
           if r.loss == reference}
    d = paired_difference(by_seed, ref)
    if d.mean is None:
        return f"{metric}: no paired runs of {loss} and {reference}"
    if d.low is None:
        return (f"{metric}: {d.mean:+.2f} points against {reference} from one seed: no interval "
                f"(run more seeds)")
    half = (d.high - d.low) / 2
    text = (f"{d.mean:+.2f} ± {half:.2f} points (95 % interval [{d.low:+.2f}, {d.high:+.2f}], "
            f"better on {d.wins}/{d.n} seeds)")
    if d.significant and d.mean > 0:
        return f"{metric}: **beats {reference}** by {text}"
    if d.significant:
        return f"{metric}: **worse than {reference}** by {text}"
    return f"{metric}: within noise of {reference}: {text}"


def strongest_baseline(runs: Sequence[Any], metric: str, exclude: Sequence[str], *,
                       split: str = "val") -> str | None:
    """The loss with the best mean ``metric`` over its runs, among those not in ``exclude``
    (the reference, the searched loss and its plain soft metric): the hand-designed loss a
    searched one must beat. Chosen on ``split``: ``"val"`` (default: the last validation of
    each run, so the test split is read only by the final tables) or ``"test"``."""
    if split not in ("val", "test"):
        raise InvalidValueError(f"split must be 'val' or 'test', but got split={split!r}")
    means: dict[str, list[float]] = {}
    for run in runs:
        if split == "test":
            value = run.metrics.get(metric, float("nan"))
        else:
            value = run.history[-1][1].get(metric, float("nan")) if run.history else float("nan")
        if run.loss not in exclude and value == value:  # not NaN
            means.setdefault(run.loss, []).append(value)
    if not means:
        return None
    return max(means, key=lambda name: sum(means[name]) / len(means[name]))


def _load_times(path: Path) -> dict[str, float]:
    if path.is_file():
        return dict(json.loads(path.read_text()).get("times", {}))
    return {}


def _plot_line(path: Path, out: Path, title: str) -> list[str]:
    if not path.is_file():
        return []
    try:
        rel = path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        rel = path.as_posix()
    return [f"![{title}]({rel})", ""]


def run_study(path: str | Path, *, progress: bool = True) -> StudyResult:
    """Run (or resume) the study of experiment file ``path``; see the module docstring."""
    source = str(path)
    data = read_study(path)
    out = Path(data.get("out") or Path("results") / f"study-{Path(path).stem}")
    search_cfg = _search_config(data["search"], out, source)
    if search_cfg.multi_objective:
        raise InvalidValueError(f"{source}: a study retrains one exported loss; a multi-objective "
                         f"search exports a Pareto front (use a weighted sum 'miou+0.5*bf1')")
    require_trusted_reference(data["retrain"].get("model"), option="retrain: model",
                              source=source)
    exp = experiment_from_dict({"out": str(out / "retrain"), **data["retrain"]},
                               source=f"{source}: retrain")
    reference = data.get("reference", "cross_entropy")
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "study.json"
    times = _load_times(state_path)

    def save(stage: str, seconds: float) -> None:
        times[stage] = round(times.get(stage, 0.0) + seconds, 1)
        write_text_atomic(state_path, json.dumps({"config": source, "times": times}, indent=2))

    say = print if progress else (lambda *a, **k: None)
    say(f"[study 1/3] search {search_cfg.study} ({search_cfg.trials} trials) in "
        f"{search_cfg.out}", flush=True)
    t0 = time.perf_counter()
    search = run_search(search_cfg, progress=progress)
    if search.loss_path is None:
        raise SearchError(f"the search {search_cfg.study} has no complete trial to retrain; "
                            "see its summary.md for the failed trials")
    save("search", time.perf_counter() - t0)

    loss = _display_path(Path(search.loss_path))
    identity = _identity_loss(search)
    losses = list(dict.fromkeys([reference, *exp.losses, loss, *([identity] if identity else [])]))
    say(f"[study 2/3] retrain {len(losses)} losses x {exp.seeds} seeds ({exp.protocol})",
        flush=True)
    t0 = time.perf_counter()
    panel = dataclasses.replace(exp, losses=tuple(losses), reference=reference,
                                report=out / "retrain")
    compare = compare_losses(panel, command=f"autoloss study --config {shlex.quote(source)}",
                             progress=progress)
    save("retrain", time.perf_counter() - t0)

    say("[study 3/3] report", flush=True)
    targets = [name for name, _ in parse_target(search_cfg.metric)]
    verdicts = {m: verdict(compare.runs, loss, reference, m) for m in targets}
    rows = dict(verdicts)
    for m in targets:
        if identity is not None:
            rows[f"{m} (plain soft metric)"] = verdict(compare.runs, loss, identity, m)
        else:
            rows[f"{m} (plain soft metric)"] = (
                f"{m}: the export is the plain soft metric itself (the search's export rule "
                "kept it: no searched trial beat it on the re-scoring seeds)"
                if _exported_identity(search) else
                f"{m}: no plain soft metric to compare with (the search re-scored none)")
        best = strongest_baseline(compare.runs, m, exclude=[reference, loss, identity or ""])
        if best is not None:
            rows[f"{m} (best baseline)"] = verdict(compare.runs, loss, best, m)
    report = _report(out, source, search_cfg, search, compare, loss, reference, rows, times)
    path_md = out / "report.md"
    write_text_atomic(path_md, report)
    say(f"wrote {path_md}", flush=True)
    for line in verdicts.values():
        say(line.replace("**", ""), flush=True)
    return StudyResult(Path(search.loss_path), path_md, verdicts, times)


def _report(out: Path, source: str, cfg: SearchConfig, search: Any, compare: Any, loss: str,
            reference: str, verdicts: Mapping[str, str], times: Mapping[str, float]) -> str:
    from autoloss.losses import load_loss

    provenance = load_loss(loss).provenance or {}
    rescored = provenance.get("rescore")
    names = metric_names(compare.runs)
    lines = [f"# Study: {cfg.study}", "",
             f"Produced by `autoloss study --config {source}` (resumable: run it again to "
             f"continue or to redraw this report).", "",
             "## Verdict (retraining, reported split, paired by seed)", "",
             "Against cross-entropy, against the search's own start (the plain soft metric, "
             "identity curves: did searching help?), then against the strongest hand-designed "
             "loss of the panel on each target metric (the best mean on the validation split):",
             ""]
    lines += [f"- {text}" for text in verdicts.values()]
    lines += ["", "## Search (proxy scores on the proxy-validation split)", "",
              f"- target `{cfg.metric}` on `{cfg.data}`, {search.counts.get('complete', 0)} "
              f"complete / {search.counts.get('pruned', 0)} pruned / "
              f"{search.counts.get('fail', 0)} failed trials, sampler {cfg.sampler}",
              f"- cross-entropy proxy baseline {_fmt(search.baseline_ce)}; best trial "
              f"{search.best_trial} scored {_fmt(search.best_value)}"]
    if rescored:
        chosen = rescored["trials"][str(rescored["chosen"])]
        base = (rescored.get("baseline") or {}).get("mean")
        lines.append(f"- re-scored the top {rescored['top']} trials and the reference points "
                     f"with proxy seeds {rescored['seeds']}: exported trial "
                     f"{rescored['chosen']}, mean {_fmt(chosen['mean'])} against {_fmt(base)} "
                     f"for cross-entropy; {provenance.get('export_reason', '')}")
        from autoloss.search.rescore import identity_gain_line

        line = identity_gain_line(rescored)
        if line is not None:
            lines.append(f"- on the proxy, {line}")
    lines += [f"- exported loss: `{loss}`", ""]
    lines += _plot_line(cfg.out / "plots" / "curves.png", out, "learned curves")
    lines += _plot_line(cfg.out / "plots" / "history.png", out, "search history")
    lines += ["## Retraining (test scores, mean ± std over seeds, points)", "",
              format_table(compare.runs, reference=reference, metrics=names),
              f"Paired difference to {reference} (points, 95 % t-interval, seeds won):", "",
              format_paired(compare.runs, reference=reference, metrics=names),
              f"Full tables (per-class IoU, validation plateau): "
              f"[{compare.markdown_path.name}](retrain/{compare.markdown_path.name})", ""]
    lines += _plot_line(out / "retrain" / "plots" / "bars.png", out, "retraining scores")
    lines += ["## Cost (wall time of each stage, summed over the runs of the command)", "",
              "| stage | wall time |", "|---|---:|"]
    lines += [f"| {stage} | {seconds / 60:.1f} min |" for stage, seconds in times.items()]
    total = sum(times.values())
    lines += [f"| total | {total / 60:.1f} min |", ""]
    return "\n".join(lines)


def _exported_identity(search: Any) -> bool:
    """Whether the search exported its plain soft metric (identity curves) itself."""
    from autoloss.losses import read_spec

    provenance = read_spec(search.loss_path).get("provenance") or {}
    references = (provenance.get("rescore") or {}).get("references") or {}
    return references.get(str(provenance.get("trial"))) == "identity"


def _identity_loss(search: Any) -> str | None:
    """The search's plain soft metric loss file (``identity_loss.yaml``) to retrain beside the
    export, or None: the search re-scored none, or exported it itself."""
    path = Path(search.out) / "identity_loss.yaml"
    if not path.is_file() or _exported_identity(search):
        return None
    return _display_path(path)


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (tables hold no absolute
    paths of the machine that made them)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _fmt(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{100 * value:.2f}"
    return "-" if value is None else str(value)
