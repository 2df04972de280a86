"""What a search leaves behind: the exported loss YAML and the summary table.

``export_trial`` turns a trial (the best by default) into a self-describing loss file
(``autoloss.losses.save_loss`` schema) whose ``provenance`` says where it came from: dataset,
reward split, proxy settings, score and cross-entropy baseline, study, storage, trial, seed,
sampler, date and package versions. ``autoloss.load_loss(path)`` needs nothing but torch and
pyyaml to use it. This module takes a study object but never imports optuna.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError
from autoloss.utils.trial_attrs import discarded

__all__ = ["best_trial", "export_trial", "fail_reason", "summarize"]


def _state_of(trial: Any) -> str:
    """The trial's state name; ``"DISCARDED"`` for a trial that never ran (autoloss.search.budget)."""
    return "DISCARDED" if discarded(trial) else trial.state.name


def _complete(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if _state_of(t) == "COMPLETE"]


def best_trial(study: Any) -> Any:
    """The best COMPLETE trial; for a multi-objective study, the Pareto-front trial with the
    highest sum of objective values."""
    if len(study.directions) > 1:
        front = study.best_trials
        if not front:
            raise InvalidValueError(f"study {study.study_name!r} has no complete trial to export")
        return max(front, key=lambda t: (sum(t.values), -t.number))
    if not _complete(study):
        raise InvalidValueError(f"study {study.study_name!r} has no complete trial to export")
    return study.best_trial


def _trial(study: Any, number: int | None) -> Any:
    if number is None:
        return best_trial(study)
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise InvalidValueError(f"study {study.study_name!r} has no trial {number} (it has "
                     f"{len(study.trials)} trials, numbered from 0)")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _value(trial: Any) -> float | list[float] | None:
    if trial.values is None:
        return None
    return trial.values[0] if len(trial.values) == 1 else list(trial.values)


def fail_reason(trial: Any) -> str:
    """Why a FAILED trial failed (a trial with no recorded reason was left running by a worker
    that stopped and was failed through its stale heartbeat)."""
    return trial.user_attrs.get("fail_reason", "interrupted (its worker stopped)")


def _travel(spec: dict[str, Any], info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The spec of a loss file that means the same on other data: without the search dataset's
    ignore index (returned, for the provenance), and with the boundary tolerance of a surrogate
    pinned to the image size it was searched at (``tol_at``: it scales with the diagonal)."""
    from autoloss.core.programs import get_program
    from autoloss.losses import portable_spec

    spec, dataset_options = portable_spec(spec)
    size = info.get("train_size")
    for part in spec.get("combine", [spec]):
        if part.get("name") != "surrogate" or size is None or "tol_at" in part:
            continue
        if "tol" in get_program(part["metric"]).options:
            part["tol_at"] = [int(v) for v in size]
            part.setdefault("tol", 5)
    return spec, dataset_options


def _reward_split(study: Any, config: dict[str, Any]) -> str:
    """The split the proxy scored the trials on: the resolved proxy config's ``eval_split``."""
    proxy = study.user_attrs.get("proxy_config") or config.get("proxy") or {}
    return str(proxy.get("eval_split") or "val")


def _storage_record(storage: str | None, folder: Path) -> dict[str, Any]:
    """Provenance of the study's storage: a file beside the loss file as a URL relative to that
    folder (``storage_relative_to``), any other URL password-masked."""
    from autoloss.search.run_folder import portable_storage

    if storage is None:
        return {"storage": None}
    url, relative = portable_storage(storage, folder)
    return {"storage": url, **({"storage_relative_to": "this file's folder"} if relative else {})}


def export_trial(study: Any, trial_number: int | None, path: str | Path, *,
                 storage: str | None = None) -> Path:
    """Write trial ``trial_number`` of ``study`` as a loss YAML at ``path``
    (:func:`export_record`: None picks the re-scored choice, else the best trial)."""
    from autoloss.losses import save_loss

    spec, provenance = export_record(study, trial_number, path, storage=storage)
    return save_loss(spec, path, provenance=provenance)


def export_record(study: Any, trial_number: int | None, path: str | Path, *,
                  storage: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(loss spec, provenance)`` of trial ``trial_number`` of ``study``, as
    :func:`export_trial` writes them to ``path`` (the storage is recorded relative to its
    folder). None: the trial a current re-scoring chose (:mod:`autoloss.search.rescore`,
    recorded under ``provenance.rescore``), else :func:`best_trial`.

    The file carries no setting of the search dataset that would silently change training
    elsewhere: its ignore index is recorded under ``provenance.dataset_options`` only (pass
    your own to ``load_loss``), and a boundary tolerance is stored with the image size it was
    searched at (``tol_at``), so it scales with the image diagonal."""
    from autoloss._version import __version__
    from autoloss.search.rescore import chosen_trial, rescore_summary, searched_gain

    rescored = rescore_summary(study) if trial_number is None else None
    trial = _trial(study, chosen_trial(study) if rescored is not None else trial_number)
    spec = trial.user_attrs.get("loss")
    if spec is None:
        raise InvalidValueError(f"trial {trial.number} of study {study.study_name!r} has no recorded "
                         "loss (user attr 'loss'); was it made by autoloss search?")
    config = study.user_attrs.get("config", {})
    info = dict(study.user_attrs.get("data_info") or {})
    spec, dataset_options = _travel(dict(spec), info)
    value = _value(trial)
    baseline = study.user_attrs.get("baseline_ce")
    provenance: dict[str, Any] = {
        "source": "autoloss search",
        "target": config.get("metric"),
        "score": value,
        "trial_state": _state_of(trial),
        "metrics": trial.user_attrs.get("metrics"),
        "baseline_ce": baseline,
        "dataset": config.get("data"),
        "dataset_options": dataset_options,
        "dataset_classes": info.get("num_classes"),
        "train_size": info.get("train_size"),
        "reward_split": _reward_split(study, config),
        "proxy": study.user_attrs.get("proxy_config", config.get("proxy")),
        # who scored the trials: a user's proxy factory (None: autoloss's proxy) and network
        "proxy_factory": config.get("proxy_factory"),
        "model": study.user_attrs.get("model"),
        "study": study.study_name,
        **_storage_record(storage or study.user_attrs.get("storage"), Path(path).parent),
        "trial": trial.number,
        "params": dict(trial.params),
        "seed": config.get("seed"),
        "sampler": config.get("sampler"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"autoloss": __version__, "torch": _version("torch"),
                     "optuna": _version("optuna"), "python": platform.python_version()},
    }
    if isinstance(value, float) and isinstance(baseline, (int, float)):
        provenance["gain_over_ce_points"] = round(100 * (value - baseline), 4)
    if rescored is not None:
        provenance["rescore"] = rescored
        mean = rescored["trials"][str(trial.number)]["mean"]
        base = (rescored.get("baseline") or {}).get("mean")
        provenance["rescored_score"] = mean
        if base is not None:
            provenance["rescored_gain_over_ce_points"] = round(100 * (mean - base), 4)
        provenance["export_rule"] = rescored.get("rule", "best-mean")
        provenance["export_reason"] = rescored.get("reason", "the best re-scored mean")
        searched = searched_gain(rescored)
        if searched is not None and searched[1].mean is not None:
            provenance["best_searched_vs_identity"] = {
                "trial": searched[0], **{k: v if not isinstance(v, float) else round(100 * v, 4)
                                         for k, v in searched[1].to_dict().items()
                                         if k != "significant"},
                "unit": "points"}
    elif trial_number is not None:
        provenance["export_rule"] = "asked"
        provenance["export_reason"] = f"trial {trial_number}, as asked (not chosen by a rule)"
    else:
        provenance["export_rule"] = "best search score (not re-scored)"
        provenance["export_reason"] = ("the best single search score, not re-scored, so not "
                                       "compared with the plain soft metric")
    return spec, provenance


# ------------------------------------------------------------------------------------ summary
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(f"{v:.4f}" for v in value) + ")"
    return f"{value:.4f}"


def _params_text(params: dict[str, float], width: int = 90) -> str:
    groups: dict[str, list[str]] = {}
    for name, v in params.items():
        head, _, _ = name.rpartition(".")
        groups.setdefault(head or name, []).append(f"{v:.2f}")
    text = " ".join(f"{k}=[{' '.join(vs)}]" if len(vs) > 1 else f"{k}={vs[0]}"
                    for k, vs in groups.items())
    return text if len(text) <= width else text[:width - 3] + "..."


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _rescore_lines(study: Any) -> list[str]:
    from autoloss.search.rescore import gain_line, identity_gain_line, rescore_summary

    summary = rescore_summary(study)
    if summary is None:
        return []
    seeds = summary["seeds"]
    references = summary.get("references") or {}
    lines = ["", f"## Re-scoring: the top {summary['top']} trials and the reference points with "
             f"proxy seeds {seeds}", "",
             "The search scored each trial once (seed of the search); the best of many noisy "
             "scores is biased upward, so the top trials were scored again with other seeds, "
             "next to the search's own start (the plain soft metric, identity curves), the "
             "published curves and cross-entropy.", "",
             f"**Export:** trial {summary['chosen']}; "
             f"{summary.get('reason', 'the best re-scored mean')}.", ""]
    rows = []
    for number, t in summary["trials"].items():
        label = f" ({references[number]})" if number in references else ""
        mark = " **exported**" if int(number) == summary["chosen"] else ""
        rows.append((f"{number}{label}{mark}", _fmt(t["search_value"]), _fmt(t["mean"]),
                     _fmt(t["std"]), " ".join(_fmt(v) for v in t["values"])))
    base = summary.get("baseline")
    if base is not None:
        rows.append(("cross-entropy", "-", _fmt(base["mean"]), _fmt(base["std"]),
                     " ".join(_fmt(v) for v in base["values"])))
    lines += _table(["trial", "search score", "re-scored mean", "std", "per seed"], rows)
    identity = identity_gain_line(summary)
    if identity is not None:
        lines += ["", f"**Gain over the plain soft metric:** {identity}."]
    gain = gain_line(summary)
    return lines + ([] if gain is None else ["", f"**Gain over cross-entropy:** {gain}."])


def summarize(study: Any, *, wall_time: float | None = None, top: int = 5,
              command: str | None = None, discarding: Collection[int] = (),
              rescored_by: str | None = None) -> str:
    """A markdown summary: the command that ran it (when given), counts, cross-entropy
    baseline, best trial and its gain over CE, the top trials, the reference points and the
    failed trials. ``discarding``: numbers of running trials that their process is about to
    discard (:func:`autoloss.search.budget.doomed`), counted as discarded. The count of
    discarded trials is the one thing two processes of a study may see differently: a process
    can still start (and discard) a trial after another has written its summary.
    ``rescored_by``: the ``autoloss export`` command that re-scored and exported it since."""
    trials = study.get_trials(deepcopy=False)

    def _state(trial: Any) -> str:
        return "DISCARDED" if trial.number in discarding else _state_of(trial)

    states = [_state(t) for t in trials]
    count = {s: states.count(s)
             for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING", "DISCARDED")}
    config = study.user_attrs.get("config", {})
    baseline = study.user_attrs.get("baseline_ce")
    multi = len(study.directions) > 1
    lines = [f"# Search summary: {study.study_name}", "",
             *([f"Produced by `{command}`.", ""] if command else []),
             *([f"Re-scored and exported by `{rescored_by}`.", ""] if rescored_by else []),
             f"- target: {config.get('metric')} on {config.get('data')} (proxy-validation "
             f"split), sampler {config.get('sampler')}",
             f"- trials: {count['COMPLETE']} complete, {count['PRUNED']} pruned, "
             f"{count['FAIL']} failed" + (f", {count['RUNNING']} running" if count['RUNNING']
                                          else "") +
             (f", {count['WAITING']} waiting" if count["WAITING"] else "") +
             (f" ({count['DISCARDED']} more discarded: started by a process after the study "
              "had its trial budget)" if count["DISCARDED"] else ""),
             f"- cross-entropy baseline: {_fmt(baseline)}"]
    if wall_time is not None:
        lines.append(f"- wall time: {wall_time:.1f} s")
    done = [t for t in trials if _state(t) == "COMPLETE"]
    if done:
        best = best_trial(study)
        gain = ""
        if not multi and isinstance(baseline, (int, float)):
            gain = f" ({100 * (best.value - baseline):+.2f} points over cross-entropy)"
        lines.append(f"- best: trial {best.number}, {_fmt(_value(best))}{gain}"
                     + ("; exported: see the re-scoring below" if _rescore_lines(study) else
                        "" if multi else "; exported as scored: not re-scored, so not compared "
                        "with the plain soft metric"))
        ranked = (sorted(study.best_trials, key=lambda t: -sum(t.values)) if multi
                  else sorted(done, key=lambda t: -t.value))
        title = "Pareto front" if multi else f"Top {min(top, len(ranked))} trials"
        lines += ["", f"## {title}", ""]
        lines += _table(["trial", "value", "state", "params"],
                        [(t.number, _fmt(_value(t)), _state(t), _params_text(t.params))
                         for t in ranked[:top if not multi else None]])
    else:
        lines.append("- best: none (no complete trial)")
    lines += _rescore_lines(study)
    refs = [t for t in trials if "reference" in t.user_attrs]
    if refs:
        lines += ["", "## Reference points", ""]
        lines += _table(["reference", "trial", "state", "value"],
                        [(t.user_attrs["reference"], t.number, _state(t), _fmt(_value(t)))
                         for t in refs])
    failed = [t for t in trials if _state(t) == "FAIL"]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += _table(["trial", "reason"],
                        [(t.number, fail_reason(t).replace("|", "/")) for t in failed])
    return "\n".join(lines) + "\n"
