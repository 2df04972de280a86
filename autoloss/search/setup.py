"""A search's study before its trials: created, or loaded and checked, and prepared.

The creator of a study (the storage's unique study name makes exactly one of several processes
starting together the creator) records its config and identity and queues the first trials
(``init_from``, the reference points, TPE's ``prior`` points). Every other process waits for
that, refuses a study whose identity differs from its own (what a trial's score depends on:
target, data, proxy settings, seed, space), fails the trials of dead processes, queues again
the reference points stopped with their process, and the first one scores the cross-entropy
baseline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autoloss.errors import InvalidValueError
from autoloss.search.budget import discarded, fail_dead_trials
from autoloss.search.config import ProxyLike
from autoloss.search.objective import cross_entropy
from autoloss.search.plan import SearchPlan
from autoloss.search.run_folder import portable_cache, portable_storage
from autoloss.search.samplers import prior_points, tpe_startup_trials
from autoloss.utils.urls import mask_password

__all__ = ["data_info", "identity", "identity_digest", "load_or_create", "model_record",
           "plugin_name", "prepare", "resolved_proxy_config", "setup_study"]


def load_or_create(plan: SearchPlan, sampler: optuna.samplers.BaseSampler,
                   pruner: optuna.pruners.BasePruner, storage: Any) -> tuple[optuna.Study, bool]:
    """The study, and whether this process created it."""
    cfg, n_obj = plan.config, plan.n_objectives
    try:
        study = optuna.create_study(study_name=cfg.study, storage=storage, sampler=sampler,
                                    pruner=pruner, directions=["maximize"] * n_obj)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=cfg.study, storage=storage, sampler=sampler,
                                  pruner=pruner)
        created = False
    if len(study.directions) != n_obj:
        raise InvalidValueError(f"study {cfg.study!r} has {len(study.directions)} objective(s), "
                                f"but this search has {n_obj}; use another --study or --out")
    if not study.metric_names:  # named objectives in optuna-dashboard and the callbacks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(cfg.metric) if cfg.multi_objective else [cfg.metric])
    return study, created


# proxy options that change how fast a trial runs, not its result
_EXECUTION_OPTIONS = ("device", "num_threads", "compile_loss")
# proxy options added after studies were recorded, with the value those studies ran with: a
# study without the option resumes when the option has that value
_ADDED_PROXY_OPTIONS = {"drop_bg": False, "init": None}
# 2: the identity's proxy entry holds every resolved proxy setting (1, unversioned: only the
# overrides of the search config)
_IDENTITY_VERSION = 2


def _optional(proxy: ProxyLike, name: str) -> Any:
    """An optional member of :class:`~autoloss.search.config.ProxyLike` (``config``,
    ``image_size``, ``model_record``), None where a user's proxy has none."""
    return getattr(proxy, name, None)


def resolved_proxy_config(plan: SearchPlan, proxy: ProxyLike) -> dict[str, Any]:
    """Every proxy setting a trial ran with: autoloss's proxy config (defaults filled in); for
    a user's proxy its own ``config.to_dict()`` when it has one, else the overrides of
    ``plan.config.proxy``."""
    if plan.proxy_config is not None:
        return dict(plan.proxy_config.to_dict())
    config = _optional(proxy, "config")
    if callable(getattr(config, "to_dict", None)):
        return dict(config.to_dict())
    return plain_proxy_options(plan.config.proxy)


def data_info(plan: SearchPlan, proxy: ProxyLike) -> dict[str, Any]:
    """What an exported loss records of the data it was searched on: ``num_classes``,
    ``ignore_index`` and ``train_size`` (``[H, W]`` the loss saw: the crop, else the images)."""
    config = plan.proxy_config if plan.proxy_config is not None else _optional(proxy, "config")
    crop = getattr(config, "crop", None)
    size = _optional(proxy, "image_size")
    train_size = list(crop) if crop is not None else (list(size) if size is not None else None)
    return {"num_classes": proxy.num_classes, "ignore_index": proxy.ignore_index,
            "train_size": train_size}


def identity(plan: SearchPlan, proxy: ProxyLike) -> dict[str, Any]:
    """What must not change when a study is resumed, because a trial's score depends on it: the
    target, the data, every proxy setting that affects the scores (so a change of autoloss's
    proxy defaults is caught too), the proxy seed every trial trains with, the parameter bounds
    and the whole space (:meth:`~autoloss.search.space_types.Space.identity`: curve families,
    fixed options, the cross-entropy weight). Budget, sampler, workers and the like may change
    between runs."""
    cfg, space = plan.config, plan.space
    settings = {k: v for k, v in resolved_proxy_config(plan, proxy).items()
                if k not in _EXECUTION_OPTIONS}
    ident = {
        "version": _IDENTITY_VERSION, "metric": cfg.metric, "data": cfg.data,
        "proxy": settings, "params": {n: list(b) for n, b in space.bounds().items()},
        "space_options": space.fixed_options(), "space": space.identity(), "seed": cfg.seed}
    record = model_record(proxy)
    if record is not None and (record["model"].get("builder") or record.get("init")):
        # a user's network or starting point: its file's content scores the trials too
        ident["model"] = {"model": record["model"], "init_sha256": record.get("init_sha256")}
    return json.loads(json.dumps(ident))


def model_record(proxy: ProxyLike) -> dict[str, Any] | None:
    """The proxy's :meth:`~autoloss.train.proxy.Proxy.model_record` (its network and starting
    point), or None for a proxy without one (a user's proxy may not have it)."""
    method = _optional(proxy, "model_record")
    return json.loads(json.dumps(method(), default=str)) if callable(method) else None


def plain_proxy_options(options: dict[str, Any]) -> dict[str, Any]:
    """The ``proxy`` overrides of a search config as JSON data: a model builder callable by its
    ``module:qualname``."""
    from autoloss.train.user_models import model_name

    out = dict(options)
    if "model" in out and not isinstance(out["model"], str):
        out["model"] = model_name(out["model"])
    return out


def identity_digest(ident: dict[str, Any]) -> str:
    """A short digest of a study identity (canonical JSON): equal digests, same identity."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


#: identity entries added after studies were recorded: a study without one resumes and gets it
#: recorded (nothing to compare it with)
_ADDED_IDENTITY_KEYS = ("space_options", "space", "seed")
#: study attribute: identity_digest() of the recorded identity, the study's fingerprint (two
#: studies with one digest score their trials alike)
_DIGEST = "identity_digest"


def _record_identity(study: optuna.Study, ident: dict[str, Any]) -> None:
    study.set_user_attr("identity", ident)
    study.set_user_attr(_DIGEST, identity_digest(ident))


def check_identity(plan: SearchPlan, study: optuna.Study, ident: dict[str, Any]) -> None:
    """Refuse to resume a study made with another target, data, proxy, seed or space (bounds,
    curve families, fixed options). A study made by an older autoloss (unversioned identity:
    proxy overrides only) is checked the old way, with a warning, and its identity upgraded; one
    recorded before an entry of :data:`_ADDED_IDENTITY_KEYS` existed gets it recorded."""
    cfg = plan.config
    stored = json.loads(json.dumps(study.user_attrs["identity"]))
    current = json.loads(json.dumps(ident))
    if isinstance(stored.get("proxy"), dict) and isinstance(current.get("proxy"), dict):
        for key, value in _ADDED_PROXY_OPTIONS.items():  # recorded before the option existed
            if (key not in stored["proxy"] and key in current["proxy"]
                    and current["proxy"][key] == value):
                del current["proxy"][key]
    if "version" not in stored:
        current = {**{k: v for k, v in current.items() if k != "version"},
                   "proxy": json.loads(json.dumps(plain_proxy_options(cfg.proxy)))}
    missing = [key for key in _ADDED_IDENTITY_KEYS if key not in stored]
    for key in missing:
        current.pop(key, None)
    if stored != current:
        diff = [k for k in current if json.dumps(stored.get(k)) != json.dumps(current[k])]
        raise InvalidValueError(f"study {cfg.study!r} in {mask_password(cfg.storage)} was "
                                f"created with other {diff} "
                                f"({ {k: stored.get(k) for k in diff} }); use another --study "
                                "or --out to start a new search")
    if "version" not in stored:
        warnings.warn(f"study {cfg.study!r} was made by an older autoloss that recorded only the "
                      "proxy overrides; resuming it with the current proxy defaults "
                      f"({ident['proxy']})", stacklevel=3)
    if stored != ident or _DIGEST not in study.user_attrs:
        _record_identity(study, ident)  # from now on, a change is caught


_QUEUED = "queued"  # study attribute: the first trials (references, init, prior) are enqueued


def setup_study(plan: SearchPlan, study: optuna.Study, proxy: ProxyLike, *,
                created: bool, progress: bool = False) -> None:
    """Record (creator) or check the study's config, enqueue the first trials once (creator),
    fail stale trials and compute the CE baseline once."""
    cfg = plan.config
    ident = identity(plan, proxy)
    if created:
        _record_config(plan, study, ident, proxy)
        _enqueue_first_trials(plan, study)
    else:
        _wait_for_creator(study)
        if "identity" not in study.user_attrs:  # an empty study made outside autoloss
            _record_config(plan, study, ident, proxy)
        check_identity(plan, study, ident)
        if _QUEUED not in study.user_attrs and not study.get_trials(deepcopy=False):
            _enqueue_first_trials(plan, study)  # its creator stopped before queueing
    if "data_info" not in study.user_attrs:
        study.set_user_attr("data_info", data_info(plan, proxy))
    if "model" not in study.user_attrs and model_record(proxy) is not None:
        study.set_user_attr("model", model_record(proxy))
    fail_dead_trials(study)
    if not created:
        _requeue_interrupted_references(study)
    if "baseline_ce" not in study.user_attrs:
        prepare(proxy, progress=progress)
        if progress:
            print("scoring the cross-entropy baseline", flush=True)
        metrics = {k: float(v) for k, v in proxy.run(cross_entropy(proxy), seed=cfg.seed).items()}
        values = plan.objective_values(metrics)
        study.set_user_attr("baseline_ce", values if cfg.multi_objective else values[0])
        study.set_user_attr("baseline_ce_metrics", metrics)


def _requeue_interrupted_references(study: optuna.Study) -> None:
    """Queue again each reference point (the plain soft metric, the published curves, the
    ``init_from`` point) whose trial was stopped with its process (Ctrl-C, SIGTERM, a kill: failed
    with no recorded reason, so not counted) and has no live or finished copy: without it the
    search would have no control. A reference that failed by itself (a crash, a non-finite
    loss) is a result and is not run again."""
    trials = study.get_trials(deepcopy=False)

    def stopped(t: Any) -> bool:
        return t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs

    have = {t.user_attrs["reference"] for t in trials if "reference" in t.user_attrs
            and not stopped(t)}
    for t in trials:
        label = t.user_attrs.get("reference")
        if label is None or label in have or not stopped(t) or discarded(t):
            continue
        study.enqueue_trial(t.params, user_attrs={"reference": label})
        have.add(label)


def prepare(proxy: ProxyLike, *, progress: bool) -> None:
    """``proxy.prepare()``, with its progress shown when it takes ``progress`` (a user's proxy
    may not)."""
    if "progress" in inspect.signature(proxy.prepare).parameters:
        proxy.prepare(progress=progress)
    else:
        proxy.prepare()


def _record_config(plan: SearchPlan, study: optuna.Study, ident: dict[str, Any],
                   proxy: ProxyLike) -> None:
    """The study's record of its search: the config with the run folder's paths relative to
    it (``out`` is ``"."``, the storage file and the cache as :mod:`autoloss.search.run_folder`
    records them), so a copied folder names no path of the machine that made it."""
    cfg = plan.config
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    fields.update(sampler=plugin_name(cfg.sampler), proxy_factory=plugin_name(cfg.proxy_factory),
                  ppo=cfg.ppo.to_dict(), proxy=plain_proxy_options(cfg.proxy))
    config = json.loads(json.dumps({k: (str(v) if isinstance(v, Path) else v)
                                    for k, v in fields.items()}))
    storage = portable_storage(cfg.storage, cfg.out)[0]
    config.update(storage=storage, out=".", cache=portable_cache(cfg.cache, cfg.out))
    _record_identity(study, ident)
    study.set_user_attr("config", config)
    study.set_user_attr("proxy_config", resolved_proxy_config(plan, proxy))
    study.set_user_attr("storage", storage)


def plugin_name(value: Any) -> Any:
    """How a study records a sampler or proxy factory: a name as it is, an object (a sampler
    instance, a factory callable) by its ``module:qualified name``."""
    if value is None or isinstance(value, str):
        return value
    kind = value if isinstance(value, type) or inspect.isroutine(value) else type(value)
    return f"{kind.__module__}:{kind.__qualname__}"


def _wait_for_creator(study: optuna.Study, timeout: float = 30.0) -> None:
    """Wait (up to ``timeout`` s) until the process that created ``study`` a moment ago has
    recorded its config and queued its first trials; a study that already has trials is ready
    at once (so is one made by an older autoloss, which recorded no ``queued`` mark). If the
    creator stalls longer, the first trials may be queued twice: harmless, only the first copy
    of each runs (:func:`autoloss.search.budget.first_copy`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attrs = study.user_attrs
        if _QUEUED in attrs or ("identity" in attrs and study.get_trials(deepcopy=False)):
            return
        time.sleep(0.2)


def _enqueue_first_trials(plan: SearchPlan, study: optuna.Study) -> None:
    """The trials a new study starts with: ``init_from``, the reference points, TPE's prior
    points; then the study attribute that says so."""
    cfg, space = plan.config, plan.space
    queued = 0
    if cfg.init_from is not None:
        study.enqueue_trial(plan.start, user_attrs={"reference": f"init:{Path(cfg.init_from).name}"})
        queued += 1
    if cfg.enqueue_references:
        for label, params in space.reference_points().items():
            study.enqueue_trial(params, user_attrs={"reference": label})
            queued += 1
    if cfg.startup == "prior" and cfg.sampler == "tpe":
        for params in prior_points(space, max(0, tpe_startup_trials(cfg.trials) - queued),
                                   seed=cfg.seed, center=plan.start):
            study.enqueue_trial(params, user_attrs={"startup": "prior"})
    study.set_user_attr(_QUEUED, True)
