"""The loss search: an optuna study over a search space, scored by proxy training.

Each trial samples the raw curve parameters of the space (``autoloss.search.spaces``), builds the
surrogate loss (valid by construction, never rejected), fine-tunes the proxy with it and returns
the exact target metric on the proxy-validation split (Li et al., "Auto Seg-Loss", ICLR 2021).
This is the only module (with ``autoloss.search.ppo``) that imports optuna.

Choices:

- **Workers**: ``workers=N`` processes (spawned) share the storage; each runs its share of the
  missing trials, and stops once the study has ``trials`` finished ones. Queued trials run in the
  parent process first (SQLite has no row locks, so two workers could take the same one).
  Several searches (hosts) may share one study: the budget is the study's (``autoloss.search.budget``),
  sampler randomness is keyed by the trial number (``autoloss.search.trial_seeds``), the study's
  creator queues the first trials.
- **Resumable**: the study lives in a storage (default ``sqlite:///<out>/study.db``); running the
  same command again loads it and runs only the trials missing to reach ``trials`` finished ones
  (COMPLETE + PRUNED + FAIL with a reason; an interrupted trial does not count). SQL storages
  record a heartbeat per running trial; a trial whose worker died is failed once its heartbeat is
  ``3 * heartbeat`` seconds old, and re-queued once with the same parameters. (``journal:PATH``
  storages have no heartbeat: a killed worker's trial stays RUNNING and is simply not counted.)
- **Pruner**: :class:`~autoloss.search.pruning.BottomQuantilePruner` (0.25) -- a trial is stopped at an
  evaluation only when it is in the bottom quarter of all trials that reported at that step
  (pruned ones included, after 5 of them; optuna's ``PercentilePruner`` compares with completed
  trials only, survivors of earlier pruning, and stopped half of the trials in the efficiency
  benchmark). Proxy scores are noisy and early ranks only loosely predict final ones, so the
  median rule wastes good losses; the bottom quarter catches the broken ones (collapsed
  predictions) early. The last evaluation never prunes.
- **Seeds**: every trial trains the proxy with the same seed (common random numbers), so score
  differences between trials come from the losses, not from the initialisation.
- **Targets**: ``"miou"``; a weighted sum ``"miou+0.5*bf1"`` (one objective; the loss mixes the
  metrics' surrogates with the same weights); a list with ``multi_objective=True`` (one objective
  per metric, no pruning, the mixing weights are searched, the result is the Pareto front).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from torch import nn

from autoloss.errors import (
    InvalidValueError,
    MissingDependencyError,
    SearchError,
)
from autoloss.search.budget import (
    DISCARDED,
    OWNER,
    discarded,
    doomed,
    fail_orphans,
    finished,
    over_budget,
    owner,
)
from autoloss.search.config import (
    SAMPLERS,
    Proxy,
    SearchConfig,
    SearchResult,
    load_experiment,
    make_proxy,
    make_space,
    parse_target,
    resolve_config,
)
from autoloss.search.pruning import BottomQuantilePruner
from autoloss.search.rescore import (
    gain_line,
    identity_gain_line,
    rescore_seeds,
    rescore_summary,
    rescore_top,
)
from autoloss.search.run_folder import RunFolder, portable_cache, portable_storage
from autoloss.search.storage import make_storage, open_study, storage_errors
from autoloss.search.trial_seeds import TrialSeededSampler
from autoloss.utils.atomic import write_text_atomic
from autoloss.utils.signals import sigterm_as_interrupt
from autoloss.utils.urls import mask_password, mask_password_in

__all__ = ["SAMPLERS", "SAMPLER_BUILDERS", "Proxy", "SearchConfig", "SearchResult", "SearchRun",
           "build_objective", "finish_run", "identity_digest", "load_experiment", "make_proxy",
           "make_storage", "open_study", "parse_target", "rescore", "resolve_config",
           "run_search", "search_study"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def tpe_startup_trials(cfg: SearchConfig) -> int:
    """Trials before TPE models the results (random ones; references and ``prior`` points
    included): a quarter of the budget, 3 to 10."""
    return min(10, max(3, cfg.trials // 4))


def initial_params(cfg: SearchConfig, space: Any) -> dict[str, float]:
    """Where a search starts: the curves of ``cfg.init_from`` (a loss file), else the space's
    initial point."""
    if cfg.init_from is None:
        return space.initial_params()
    from autoloss.losses import read_spec

    if not hasattr(space, "params_of_loss"):
        raise InvalidValueError(f"init_from needs a single-metric search space, but the target "
                         f"{cfg.metric!r} combines several")
    try:
        return space.params_of_loss(read_spec(cfg.init_from))
    except ValueError as err:
        raise InvalidValueError(f"init_from={str(cfg.init_from)!r}: {err}") from None


def prior_points(space: Any, n: int, *, seed: int, sigma: float = 0.2,
                 center: dict[str, float] | None = None) -> list[dict[str, float]]:
    """``n`` points drawn like PPO's first generation: every parameter from a normal with std
    ``sigma`` around ``center`` (default ``space.initial_params()``), truncated to its bounds
    (seeded)."""
    from scipy.stats import truncnorm

    rng = np.random.default_rng([seed, 20211])
    center, bounds = (space.initial_params() if center is None else center), space.bounds()
    points = []
    for _ in range(n):
        point = {}
        for name, (low, high) in bounds.items():
            mean = min(max(center[name], low), high)
            a, b = (low - mean) / sigma, (high - mean) / sigma
            point[name] = float(truncnorm.rvs(a, b, loc=mean, scale=sigma, random_state=rng))
        points.append(point)
    return points


def _tpe(cfg: SearchConfig, space: Any) -> optuna.samplers.BaseSampler:
    startup, liar = tpe_startup_trials(cfg), cfg.workers > 1
    return TrialSeededSampler(lambda s: optuna.samplers.TPESampler(
        seed=s, multivariate=True, n_startup_trials=startup, constant_liar=liar), cfg.seed)


def _cmaes(cfg: SearchConfig, space: Any) -> optuna.samplers.BaseSampler:
    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise MissingDependencyError("sampler 'cmaes' needs the cmaes package: "
                                     "pip install cmaes") from None
    # starts at the centre of the box (x0/sigma0 are deprecated in optuna 4.9); the enqueued
    # reference points are evaluated first all the same
    return TrialSeededSampler(lambda s: optuna.samplers.CmaEsSampler(seed=s), cfg.seed)


def _random(cfg: SearchConfig, space: Any) -> optuna.samplers.BaseSampler:
    return TrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), cfg.seed)


def _qmc(cfg: SearchConfig, space: Any) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # one shared sequence, indexed by the trial number
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=cfg.seed, scramble=True,
                                          warn_asynchronous_seeding=False)


def _ppo(cfg: SearchConfig, space: Any) -> optuna.samplers.BaseSampler:
    from autoloss.search.ppo import PPOSampler  # draws with a generator seeded by the trial number

    return PPOSampler(initial_params=initial_params(cfg, space), seed=cfg.seed,
                      **cfg.ppo.to_dict())


#: sampler name (:data:`SAMPLERS`, the names the CLI and files accept) -> its builder
SAMPLER_BUILDERS: dict[str, Callable[[SearchConfig, Any], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "cmaes": _cmaes, "random": _random, "qmc": _qmc, "ppo": _ppo}


def make_sampler(cfg: SearchConfig, space: Any) -> optuna.samplers.BaseSampler:
    """The sampler named by ``cfg.sampler`` (:data:`SAMPLER_BUILDERS`), its randomness keyed by
    the trial number (:mod:`autoloss.search.trial_seeds`): processes and workers sharing a study
    never sample the same stream, and trial ``k`` of a seed is the same however many of them
    there are. A sampler instance in ``cfg.sampler`` is used as it is."""
    if not isinstance(cfg.sampler, str):
        return cfg.sampler
    return SAMPLER_BUILDERS[cfg.sampler](cfg, space)


def make_pruner(cfg: SearchConfig, eval_steps: list[int]) -> optuna.pruners.BasePruner:
    """See the module docstring for the choice."""
    if not cfg.pruner or cfg.multi_objective or not eval_steps:
        return optuna.pruners.NopPruner()
    return BottomQuantilePruner(0.25, n_startup_trials=5, n_warmup_steps=min(eval_steps))


def _objective_values(metrics: dict[str, float], cfg: SearchConfig) -> list[float]:
    names = cfg.metric if cfg.multi_objective else None
    terms = [(m, 1.0) for m in names] if names else parse_target(cfg.metric)
    values = []
    for name, weight in terms:
        if name not in metrics:
            raise InvalidValueError(f"the proxy reported no {name!r}; it reports {sorted(metrics)}")
        values.append(weight * float(metrics[name]))
    return values if names else [sum(values)]


def _fail_reason(err: BaseException) -> str:
    kind = type(err).__name__
    prefix = "non-finite loss: " if kind == "NonFiniteLossError" else ""
    return f"{prefix}{kind}: {err}"[:500]


def build_objective(cfg: SearchConfig, space: Any, proxy: Proxy) -> Callable[[Any], Any]:
    """The trial function: sample, build the loss, train the proxy, return the target."""
    last_step = max(proxy.eval_steps) if proxy.eval_steps else None

    def objective(trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr(OWNER, owner())
        if over_budget(trial.study, trial.number, cfg.trials):
            trial.set_user_attr(DISCARDED, "the study had its trial budget when it started")
            trial.study.stop()
            raise BudgetReached(f"trial {trial.number} discarded: the study has its "
                                f"{cfg.trials} trials")
        first = _first_copy(trial.study, trial.number, trial.user_attrs.get("reference"))
        if first is not None:
            trial.set_user_attr(DISCARDED, f"a copy of reference trial {first}")
            raise BudgetReached(f"trial {trial.number} discarded: it repeats trial {first}")
        params = {n: trial.suggest_float(n, lo, hi) for n, (lo, hi) in space.bounds().items()}
        history: list[list[Any]] = []
        spec: dict[str, Any] | None = None

        def record(metrics: dict[str, float] | None = None) -> None:
            # few writes per trial: each one is a storage commit
            trial.set_user_attr("loss", spec)
            trial.set_user_attr("evals", history)
            if metrics is not None or history:
                trial.set_user_attr("metrics", metrics if metrics is not None else history[-1][1])

        def on_eval(step: int, metrics: dict[str, float]) -> None:
            history.append([int(step), {k: float(v) for k, v in metrics.items()}])
            if cfg.multi_objective:
                return
            trial.report(_objective_values(history[-1][1], cfg)[0], step)
            if (last_step is None or step < last_step) and trial.should_prune():
                record()
                raise optuna.TrialPruned(f"pruned at step {step}")

        try:
            spec = space.loss_spec(params, ignore_index=proxy.ignore_index)
            from autoloss.losses import load_loss

            final = proxy.run(load_loss(spec), seed=cfg.seed, on_eval=on_eval)
            metrics = {k: float(v) for k, v in final.items()}
            values = _objective_values(metrics, cfg)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("fail_reason", _fail_reason(err))
            record()
            raise
        record(metrics)
        return values if cfg.multi_objective else values[0]

    return objective


def _load_or_create(cfg: SearchConfig, space: Any, sampler: Any, pruner: Any,
                    storage: Any) -> tuple[optuna.Study, bool]:
    """The study, and whether this process created it (the storage's unique study name makes
    exactly one of several processes starting together the creator)."""
    n_obj = len(cfg.metric) if cfg.multi_objective else 1
    try:
        study = optuna.create_study(study_name=cfg.study, storage=storage, sampler=sampler,
                                    pruner=pruner, directions=["maximize"] * n_obj)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=cfg.study, storage=storage, sampler=sampler,
                                  pruner=pruner)
        created = False
    if len(study.directions) != n_obj:
        raise InvalidValueError(f"study {cfg.study!r} has {len(study.directions)} objective(s), but "
                         f"this search has {n_obj}; use another --study or --out")
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


def resolved_proxy_config(cfg: SearchConfig, proxy: Proxy) -> dict[str, Any]:
    """Every proxy setting a trial ran with: the proxy's own ``config.to_dict()`` (defaults
    filled in) when it has one, else the overrides of ``cfg.proxy``."""
    config = getattr(proxy, "config", None)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    return plain_proxy_options(cfg.proxy)


def data_info(proxy: Proxy) -> dict[str, Any]:
    """What an exported loss records of the data it was searched on: ``num_classes``,
    ``ignore_index`` and ``train_size`` (``[H, W]`` the loss saw: the crop, else the images)."""
    config = getattr(proxy, "config", None)
    crop = getattr(config, "crop", None)
    size = getattr(proxy, "image_size", None)
    train_size = list(crop) if crop is not None else (list(size) if size is not None else None)
    return {"num_classes": getattr(proxy, "num_classes", None),
            "ignore_index": getattr(proxy, "ignore_index", None), "train_size": train_size}


def _identity(cfg: SearchConfig, space: Any, proxy: Proxy) -> dict[str, Any]:
    """What must not change when a study is resumed, because a trial's score depends on it: the
    target, the data, every proxy setting that affects the scores (so a change of autoloss's
    proxy defaults is caught too), the proxy seed every trial trains with, the parameter bounds
    and the whole space (:meth:`~autoloss.search.spaces.SearchSpace.identity`: curve families,
    fixed options, the cross-entropy weight). Budget, sampler, workers and the like may change
    between runs."""
    settings = {k: v for k, v in resolved_proxy_config(cfg, proxy).items()
                if k not in _EXECUTION_OPTIONS}
    ident = {
        "version": _IDENTITY_VERSION, "metric": cfg.metric, "data": cfg.data,
        "proxy": settings, "params": {n: list(b) for n, b in space.bounds().items()},
        "space_options": _space_options(space), "space": space.identity(), "seed": cfg.seed}
    record = model_record(proxy)
    if record is not None and (record["model"].get("builder") or record.get("init")):
        # a user's network or starting point: its file's content scores the trials too
        ident["model"] = {"model": record["model"], "init_sha256": record.get("init_sha256")}
    return json.loads(json.dumps(ident))


def model_record(proxy: Proxy) -> dict[str, Any] | None:
    """The proxy's :meth:`~autoloss.train.proxy.Proxy.model_record` (its network and starting
    point), or None for a proxy without one (a user's proxy may not have it)."""
    method = getattr(proxy, "model_record", None)
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


def _space_options(space: Any) -> dict[str, Any]:
    """The fixed surrogate options of the space (``classes``, ``tol``, ``drop_bg``, ...), per
    metric for a composite target: a trial's loss depends on them as much as on its
    parameters."""
    if hasattr(space, "terms"):
        return {metric: dict(term.options) for metric, _, term in space.terms}
    return dict(getattr(space, "options", {}))


#: identity entries added after studies were recorded: a study without one resumes and gets it
#: recorded (nothing to compare it with)
_ADDED_IDENTITY_KEYS = ("space_options", "space", "seed")
#: study attribute: identity_digest() of the recorded identity, the study's fingerprint (two
#: studies with one digest score their trials alike)
_DIGEST = "identity_digest"


def _record_identity(study: optuna.Study, ident: dict[str, Any]) -> None:
    study.set_user_attr("identity", ident)
    study.set_user_attr(_DIGEST, identity_digest(ident))


def _check_identity(cfg: SearchConfig, study: optuna.Study, ident: dict[str, Any]) -> None:
    """Refuse to resume a study made with another target, data, proxy, seed or space (bounds,
    curve families, fixed options). A study made by an older autoloss (unversioned identity:
    proxy overrides only) is checked the old way, with a warning, and its identity upgraded; one
    recorded before an entry of :data:`_ADDED_IDENTITY_KEYS` existed gets it recorded."""
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
        raise InvalidValueError(f"study {cfg.study!r} in {mask_password(cfg.storage)} was created with "
                         f"other {diff} ({ {k: stored.get(k) for k in diff} }); use another --study "
                         "or --out to start a new search")
    if "version" not in stored:
        warnings.warn(f"study {cfg.study!r} was made by an older autoloss that recorded only the "
                      "proxy overrides; resuming it with the current proxy defaults "
                      f"({ident['proxy']})", stacklevel=3)
    if stored != ident or _DIGEST not in study.user_attrs:
        _record_identity(study, ident)  # from now on, a change is caught


_QUEUED = "queued"  # study attribute: the first trials (references, init, prior) are enqueued


def _setup_study(cfg: SearchConfig, space: Any, study: optuna.Study, proxy: Proxy, *,
                 created: bool, progress: bool = False) -> None:
    """Record (creator) or check the study's config, enqueue the first trials once (creator),
    fail stale trials and compute the CE baseline once."""
    ident = _identity(cfg, space, proxy)
    if created:
        _record_config(cfg, study, ident, proxy)
        _enqueue_first_trials(cfg, space, study)
    else:
        _wait_for_creator(study)
        if "identity" not in study.user_attrs:  # an empty study made outside autoloss
            _record_config(cfg, study, ident, proxy)
        _check_identity(cfg, study, ident)
        if _QUEUED not in study.user_attrs and not study.get_trials(deepcopy=False):
            _enqueue_first_trials(cfg, space, study)  # its creator stopped before queueing
    if "data_info" not in study.user_attrs:
        study.set_user_attr("data_info", data_info(proxy))
    if "model" not in study.user_attrs and model_record(proxy) is not None:
        study.set_user_attr("model", model_record(proxy))
    _fail_dead_trials(study)
    if not created:
        _requeue_interrupted_references(study)
    if "baseline_ce" not in study.user_attrs:
        prepare(proxy, progress=progress)
        if progress:
            print("scoring the cross-entropy baseline", flush=True)
        metrics = {k: float(v) for k, v in proxy.run(_cross_entropy(proxy), seed=cfg.seed).items()}
        values = _objective_values(metrics, cfg)
        study.set_user_attr("baseline_ce", values if cfg.multi_objective else values[0])
        study.set_user_attr("baseline_ce_metrics", metrics)


def _first_copy(study: optuna.Study, number: int, label: str | None) -> int | None:
    """The number of an earlier live or finished trial of reference point ``label``, if any:
    two processes that both found the study unprepared (its creator stalled past
    :func:`_wait_for_creator`) each queue the first trials, and only the lowest-numbered copy
    of each runs (the later ones are discarded), so no wait has to be long enough."""
    if label is None:
        return None
    for t in study.get_trials(deepcopy=False):
        if (t.number < number and t.user_attrs.get("reference") == label and not discarded(t)
                and not (t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs)):
            return t.number
    return None


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


def _fail_dead_trials(study: optuna.Study) -> None:
    """Fail the running trials whose process is gone: at once for this host's dead processes
    (:func:`autoloss.search.budget.fail_orphans`), by their stale heartbeat for other hosts'."""
    fail_orphans(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def prepare(proxy: Proxy, *, progress: bool) -> None:
    """``proxy.prepare()``, with its progress shown when it takes ``progress`` (a user's proxy
    may not)."""
    if "progress" in inspect.signature(proxy.prepare).parameters:
        proxy.prepare(progress=progress)
    else:
        proxy.prepare()


def _record_config(cfg: SearchConfig, study: optuna.Study, ident: dict[str, Any],
                   proxy: Proxy) -> None:
    """The study's record of its search: the config with the run folder's paths relative to
    it (``out`` is ``"."``, the storage file and the cache as :mod:`autoloss.search.run_folder` records
    them), so a copied folder names no path of the machine that made it."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    fields.update(sampler=plugin_name(cfg.sampler), proxy_factory=plugin_name(cfg.proxy_factory),
                  ppo=cfg.ppo.to_dict(), proxy=plain_proxy_options(cfg.proxy))
    config = json.loads(json.dumps({k: (str(v) if isinstance(v, Path) else v)
                                    for k, v in fields.items()}))
    storage = portable_storage(cfg.storage, cfg.out)[0]
    config.update(storage=storage, out=".", cache=portable_cache(cfg.cache, cfg.out))
    _record_identity(study, ident)
    study.set_user_attr("config", config)
    study.set_user_attr("proxy_config", resolved_proxy_config(cfg, proxy))
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
    of each runs (:func:`_first_copy`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attrs = study.user_attrs
        if _QUEUED in attrs or ("identity" in attrs and study.get_trials(deepcopy=False)):
            return
        time.sleep(0.2)


def _enqueue_first_trials(cfg: SearchConfig, space: Any, study: optuna.Study) -> None:
    """The trials a new study starts with: ``init_from``, the reference points, TPE's prior
    points; then the study attribute that says so."""
    queued = 0
    if cfg.init_from is not None:
        study.enqueue_trial(initial_params(cfg, space),
                            user_attrs={"reference": f"init:{Path(cfg.init_from).name}"})
        queued += 1
    if cfg.enqueue_references:
        for label, params in space.reference_points().items():
            study.enqueue_trial(params, user_attrs={"reference": label})
            queued += 1
    if cfg.startup == "prior" and cfg.sampler == "tpe":
        for params in prior_points(space, max(0, tpe_startup_trials(cfg) - queued),
                                   seed=cfg.seed, center=initial_params(cfg, space)):
            study.enqueue_trial(params, user_attrs={"startup": "prior"})
    study.set_user_attr(_QUEUED, True)


def _cross_entropy(proxy: Proxy) -> nn.Module:
    """The baseline: ``load_loss("cross_entropy")`` (torch's CrossEntropyLoss if that baseline is
    not available)."""
    from autoloss.losses import load_loss

    ignore = proxy.ignore_index
    try:
        return load_loss({"name": "cross_entropy",
                          **({"ignore_index": ignore} if ignore is not None else {})})
    except ValueError:
        return nn.CrossEntropyLoss(ignore_index=ignore if ignore is not None else -100)


def _worker(cfg: SearchConfig, n_trials: int,
            callbacks: Sequence[Callable[[Any, Any], None]] = ()) -> None:
    """Entry point of a spawned worker process: load the study and run ``n_trials``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = make_space(cfg)
    proxy = make_proxy(cfg)
    proxy.prepare()
    storage = make_storage(cfg.storage, heartbeat=cfg.heartbeat)
    study = optuna.load_study(study_name=cfg.study, storage=storage,
                              sampler=make_sampler(cfg, space),
                              pruner=make_pruner(cfg, proxy.eval_steps))
    _optimize(study, cfg, build_objective(cfg, space, proxy), n_trials, list(callbacks))


class BudgetReached(Exception):
    """Raised in a trial started once the study had its budget (by other processes); the trial
    is failed and marked discarded (:mod:`autoloss.search.budget`), and the process stops."""


class _HideDiscarded(logging.Filter):
    """Drops optuna's two "Trial k failed" warnings of a discarded trial (it never ran) and of
    a trial stopped by Ctrl-C or SIGTERM (its traceback; the command says "interrupted" in one
    line and the trial runs again on resume)."""

    def __init__(self) -> None:
        super().__init__()
        self._hidden: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        head = " ".join(message.split()[:2])  # "Trial 12"
        if BudgetReached.__name__ in message or "KeyboardInterrupt" in message:
            self._hidden.add(head)
            return False
        if head in self._hidden and "failed with value" in message:
            self._hidden.discard(head)
            return False
        return True


logging.getLogger("optuna.study._optimize").addFilter(_HideDiscarded())


def _optimize(study: optuna.Study, cfg: SearchConfig, objective: Callable[[Any], Any],
              n_trials: int, callbacks: list[Any]) -> None:
    def stop(study: optuna.Study, trial: Any) -> None:
        if finished(study) >= cfg.trials:
            study.stop()

    def ran(callback: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        def call(study: optuna.Study, trial: Any) -> None:
            if not discarded(trial):
                callback(study, trial)
        return call

    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,),
                           callbacks=[stop, *map(ran, callbacks)], gc_after_trial=False)
            return
        except ValueError as err:
            # SQLite has no row locks: two processes can take the same queued trial, and the
            # slower one cannot record it; go on (the budget check ends the loop)
            if "Cannot tell a" not in str(err):
                raise


def _run_until_budget(cfg: SearchConfig, study: optuna.Study, space: Any, proxy: Proxy,
                      started: float, bar: Any, tick: Callable[[Any, Any], None],
                      callbacks: Sequence[Callable[[Any, Any], None]], *, progress: bool) -> None:
    """Run trials here and in workers until the study (shared with other processes) has its
    budget, then wait for the trials others still run. A round gives this process the missing
    trials; if others' trials then fail (a killed process), the next round runs their share.
    Stops at the timeout, or after a round in which no trial finished or was discarded."""
    while True:
        remaining = max(0, cfg.trials - finished(study))
        left = None if cfg.timeout is None else cfg.timeout - (time.monotonic() - started)
        if not remaining or (left is not None and left <= 0):
            return
        before = _settled(study)
        now = cfg if left is None else dataclasses.replace(cfg, timeout=left)
        # With workers, the queued trials (references, retries) run here first: two processes
        # could both pop one WAITING trial from SQLite (no row locks there).
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        here = remaining if cfg.workers == 1 else min(remaining, waiting)
        if here:
            _optimize(study, now, build_objective(cfg, space, proxy), here, [tick, *callbacks])
        remaining = max(0, cfg.trials - finished(study))
        if remaining and cfg.workers > 1:
            _run_workers(now, study, remaining, bar, callbacks)
        _wait_for_running(study, cfg, progress=progress)
        if _settled(study) == before:
            return


def _settled(study: optuna.Study) -> int:
    """Trials that count toward the budget plus discarded ones: a round of trials that all were
    discarded (copies of a reference point) has made progress; one whose trials all failed by
    themselves has not."""
    return finished(study) + sum(1 for t in study.get_trials(deepcopy=False) if discarded(t))


def _wait_for_running(study: optuna.Study, cfg: SearchConfig, *, progress: bool) -> None:
    """With the budget reached or given out, wait for the trials other processes still run, so
    that every process re-scores, exports and summarises the same finished study. Stale trials
    (their process dead) are failed on the way. A running trial that its process is about to
    discard (it started too late, :func:`autoloss.search.budget.doomed`) is not waited for: its
    state is known already, however long its process stalls."""
    said = False
    while True:
        _fail_dead_trials(study)
        skip = doomed(study, cfg.trials)
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.number not in skip]
        if not running:
            return
        if progress and not said:
            print(f"waiting for {len(running)} trial(s) running in other processes", flush=True)
            said = True
        time.sleep(0.5)


def _best_text(study: optuna.Study) -> str:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done or len(study.directions) > 1:
        return "-"
    return f"{max(t.value for t in done):.4f}"


def _draw_plots(run: SearchRun, spec: dict[str, Any] | None) -> None:
    """The run's plots under ``<out>/plots``, from the study and exported loss ``spec`` in
    memory; a plotting error is a warning, never a lost search."""
    from autoloss.losses import load_loss
    from autoloss.report.names import search_name
    from autoloss.search.run_plots import plot_search

    folder = run.folder
    try:
        plot_search(run.study, None if spec is None else load_loss(spec), dest=folder.plots_dir,
                    name=search_name(folder.path), logs=sorted(folder.path.glob("*.jsonl")))
    except Exception as err:  # the search itself has succeeded
        warnings.warn(f"the search finished, but drawing its plots failed: {err!r}; retry with "
                      f"autoloss plot {folder.path}", stacklevel=3)


@dataclass
class SearchRun:
    """A search held in memory: what :func:`search_study` returns and :func:`finish_run` takes.
    ``config`` is resolved; ``started``: ``time.monotonic()`` when the search began."""

    config: SearchConfig
    study: optuna.Study
    space: Any
    proxy: Proxy
    folder: RunFolder
    started: float


@contextlib.contextmanager
def _search_session(cfg: SearchConfig) -> Iterator[None]:
    """Quiet optuna logging, SIGTERM as Ctrl-C, and a storage failure (e.g. a full disk under
    SQLite) as a :class:`~autoloss.errors.StorageError` that says how to resume."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with storage_errors(cfg.storage), sigterm_as_interrupt():
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def search_study(config: SearchConfig, *, progress: bool = True,
                 callbacks: Sequence[Callable[[Any, Any], None]] = (),
                 overwrite: bool = False) -> SearchRun:
    """Only the search: create (or load and check) the study of ``config`` in its storage,
    score the cross-entropy baseline once, and run trials until the study has ``trials``
    finished ones (in ``workers`` processes). Records ``run.json`` in the run folder; writes
    nothing else there (see :func:`finish_run`). ``callbacks``: as for :func:`run_search`.

    One run folder holds one search: a folder whose ``run.json`` names another study or
    storage, or whose study file is missing, empty or corrupt, is refused
    (:meth:`RunFolder.check_search`) unless ``overwrite``, which deletes that search's files
    first (:meth:`RunFolder.clear`)."""
    from tqdm.auto import tqdm

    cfg = resolve_config(config)
    started = time.monotonic()
    folder = RunFolder(cfg.out)
    if overwrite:
        folder.clear(cfg.storage)
    folder.check_search(cfg.storage, cfg.study)
    with _search_session(cfg):
        space = make_space(cfg)
        initial_params(cfg, space)  # a bad init_from fails before the warm start trains
        proxy = make_proxy(cfg)  # builds, trains nothing yet
        storage = make_storage(cfg.storage, heartbeat=cfg.heartbeat)
        study, created = _load_or_create(cfg, space, make_sampler(cfg, space), make_pruner(
            cfg, proxy.eval_steps), storage)
        folder.write_info(cfg.storage, cfg.study,  # once the study it names exists
                          proxy_factory=plugin_name(cfg.proxy_factory),
                          model=model_record(proxy))
        _setup_study(cfg, space, study, proxy, created=created, progress=progress)
        done = finished(study)
        if cfg.trials > done:  # a finished study (rerun to redraw or export) needs no warm start
            prepare(proxy, progress=progress)
        bar = tqdm(total=cfg.trials, initial=min(done, cfg.trials), desc=f"search {cfg.study}",
                   unit="trial", disable=not progress, dynamic_ncols=True)

        def tick(study: optuna.Study, trial: Any) -> None:
            bar.update(1)
            bar.set_postfix(best=_best_text(study))

        try:
            _run_until_budget(cfg, study, space, proxy, started, bar, tick, callbacks,
                              progress=progress)
            _discard_leftover_queue(study, cfg)
        finally:
            bar.close()
    return SearchRun(cfg, study, space, proxy, folder, started)


def finish_run(run: SearchRun, *, progress: bool = True,
               command: str | None = None) -> SearchResult:
    """The steps after a search, on the objects it holds in memory: re-score the top trials
    (``rescore_top``), export the chosen one to ``<out>/best_loss.yaml``, write
    ``<out>/summary.md`` (``command`` named at its top) and draw the plots (``plots``)."""
    from autoloss.losses import save_loss
    from autoloss.search.export import export_record, summarize

    cfg, study, folder = run.config, run.study, run.folder
    with _search_session(cfg):
        loss_path, spec = None, None
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            rescored = rescore(cfg, study, run.proxy, progress=progress)
            spec, provenance = export_record(study, None, folder.loss_path, storage=cfg.storage)
            loss_path = save_loss(spec, folder.loss_path, provenance=provenance)
            _export_identity(study, rescored, folder, cfg.storage)
        wall = time.monotonic() - run.started
        text = summarize(study, wall_time=wall, discarding=doomed(study, cfg.trials),
                         command=None if command is None else mask_password_in(command,
                                                                                cfg.storage))
        write_text_atomic(folder.summary_path, text)
        if progress:
            print(text)
        if cfg.plots:
            _draw_plots(run, spec)
    return _result(cfg, study, loss_path, wall)


def rewrite_summary(study: optuna.Study, folder: RunFolder, *, storage: str,
                    rescored: dict[str, Any] | None, command: str | None = None) -> None:
    """After ``autoloss export DIR`` has written ``DIR/best_loss.yaml`` (after re-scoring with
    ``--rescore-top``, say): write ``identity_loss.yaml`` and ``summary.md`` from the study as
    it is now, so the folder's files agree. The summary keeps the search's command and wall time
    (read from the old one) and names ``command``, the export that rewrote it."""
    import re

    from autoloss.search.export import summarize

    old = folder.summary_path.read_text() if folder.summary_path.is_file() else ""
    search_command = re.search(r"^Produced by `(.*)`\.$", old, re.M)
    wall = re.search(r"^- wall time: ([0-9.]+) s$", old, re.M)
    _export_identity(study, rescored, folder, storage)
    write_text_atomic(folder.summary_path, summarize(
        study, wall_time=float(wall.group(1)) if wall else None,
        command=search_command.group(1) if search_command else None,
        rescored_by=None if command is None else mask_password_in(command, storage)))


def _export_identity(study: optuna.Study, rescored: dict[str, Any] | None, folder: RunFolder,
                     storage: str) -> None:
    """Write the search's control, the re-scored plain soft metric (identity curves), to
    ``<out>/identity_loss.yaml`` (a stale one is removed), so it can be retrained beside the
    export (``autoloss study`` does)."""
    from autoloss.losses import save_loss
    from autoloss.search.export import export_record
    from autoloss.search.rescore import IDENTITY

    number = next((int(k) for k, label in ((rescored or {}).get("references") or {}).items()
                   if label == IDENTITY), None)
    if number is None:
        folder.identity_loss_path.unlink(missing_ok=True)
        return
    spec, provenance = export_record(study, number, folder.identity_loss_path, storage=storage)
    provenance["export_reason"] = ("the search's control: its plain soft metric (identity "
                                   "curves), re-scored next to the export")
    provenance["export_rule"] = "control"
    save_loss(spec, folder.identity_loss_path, provenance=provenance)


def run_search(config: SearchConfig, *, progress: bool = True,
               callbacks: Sequence[Callable[[Any, Any], None]] = (),
               command: str | None = None, overwrite: bool = False) -> SearchResult:
    """Run (or resume) a search and finish its run folder: :func:`search_study`, then
    :func:`finish_run` (re-scoring, ``<out>/best_loss.yaml``, ``<out>/summary.md``, and with
    ``plots`` the figures in ``<out>/plots``).

    ``callbacks``: optuna callbacks ``f(study, frozen_trial)`` called after every trial of the
    search (e.g. ``optuna_integration.MLflowCallback``); with ``workers > 1`` each worker
    process gets a copy, so they must pickle. The study's objectives are named after the
    metrics (``study.metric_names``) and it holds the cross-entropy baseline as the user
    attribute ``baseline_ce`` (reference trials carry ``reference``). ``command``: how the search
    was started, named at the top of ``summary.md`` (its storage password masked).
    ``overwrite``: see :func:`search_study`."""
    run = search_study(config, progress=progress, callbacks=callbacks, overwrite=overwrite)
    return finish_run(run, progress=progress, command=command)


def rescore(cfg: SearchConfig, study: optuna.Study, proxy: Proxy, *,
            progress: bool = True) -> dict[str, Any] | None:
    """Re-score the study's ``cfg.rescore_top`` best trials, its reference points and
    cross-entropy with ``cfg.rescore_seeds`` other proxy seeds
    (:func:`autoloss.search.rescore.rescore_top`); the export is chosen by ``cfg.export_rule``."""
    if cfg.multi_objective or cfg.rescore_top < 1 or cfg.rescore_seeds < 1:
        return None

    def run_proxy(loss: nn.Module, seed: int) -> float:
        return _objective_values({k: float(v) for k, v in proxy.run(loss, seed=seed).items()},
                                 cfg)[0]

    say = (lambda text: print(text, flush=True)) if progress else None
    return rescore_top(study, run_proxy, baseline=_cross_entropy(proxy), top=cfg.rescore_top,
                       seeds=rescore_seeds(cfg.seed, cfg.rescore_seeds), rule=cfg.export_rule,
                       progress=say)


def _run_workers(cfg: SearchConfig, study: optuna.Study, remaining: int, bar: Any,
                 callbacks: Sequence[Callable[[Any, Any], None]] = ()) -> None:
    """Run the ``remaining`` trials in ``cfg.workers`` spawned processes. A worker that dies
    (killed, out of memory) costs only its running trial: that trial is failed and the missing
    trials run in new workers, until the budget is reached or the timeout has passed. An error
    when workers fail by themselves (exit code > 0) and no trial finished (they would fail
    again), or after 5 rounds of killed workers without a finished trial."""
    started, stalls = time.monotonic(), 0
    while remaining > 0:
        before = finished(study)
        codes = _worker_round(cfg, study, remaining, bar, callbacks)
        dead = [code for code in codes if code != 0]
        if not dead:
            return  # the workers stopped by themselves: budget reached, or the timeout
        lost = fail_orphans(study)
        remaining = max(0, cfg.trials - finished(study))
        timed_out = cfg.timeout is not None and time.monotonic() - started >= cfg.timeout
        stalls = stalls + 1 if finished(study) == before else 0
        # workers that failed by themselves (exit code > 0) without a finished trial would fail
        # again; killed ones (a signal: code < 0) are retried, up to 5 rounds without progress
        if stalls and (all(code > 0 for code in dead) or stalls >= 5):
            raise SearchError(f"{len(dead)} search worker(s) exited with codes {dead} and no "
                               "trial finished; the study is kept, resume it with the same "
                               "command")
        warnings.warn(f"{len(dead)} search worker(s) exited with codes {dead}; their running "
                      f"trial(s) {lost} were failed" + (
                          f", {remaining} missing trial(s) run in new workers"
                          if remaining and not timed_out else ""), stacklevel=3)
        if timed_out:
            return


def _worker_round(cfg: SearchConfig, study: optuna.Study, remaining: int, bar: Any,
                  callbacks: Sequence[Callable[[Any, Any], None]]) -> list[int]:
    """One set of worker processes sharing ``remaining`` trials; their exit codes. On an
    exception here (Ctrl-C, SIGTERM) the workers are terminated: the study stays resumable."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    workers = min(cfg.workers, remaining)
    shares = [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]
    procs = [ctx.Process(target=_worker, args=(cfg, n, tuple(callbacks)), daemon=False)
             for n in shares]
    for p in procs:
        p.start()
    seen = finished(study)
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            now = finished(study)
            if now > seen:
                bar.update(now - seen)
                bar.set_postfix(best=_best_text(study))
                seen = now
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
    return [int(p.exitcode or 0) for p in procs]


def _discard_leftover_queue(study: optuna.Study, cfg: SearchConfig) -> None:
    """A study with its budget keeps no queued trial (e.g. a heartbeat retry of a trial whose
    worker died after the budget was reached): each is taken and discarded."""
    while finished(study) >= cfg.trials and study.get_trials(deepcopy=False,
                                                              states=(TrialState.WAITING,)):
        trial = study.ask()  # takes a queued trial first
        trial.set_user_attr(DISCARDED, "queued after the study had its trial budget")
        study.tell(trial, state=TrialState.FAIL)


def _result(cfg: SearchConfig, study: optuna.Study, loss_path: Path | None,
            wall: float) -> SearchResult:
    counts = {s.name.lower(): sum(1 for t in study.get_trials(deepcopy=False, states=(s,))
                                  if not discarded(t)) for s in FINISHED}
    best_value, best_trial = None, None
    if counts["complete"]:
        if cfg.multi_objective:
            front = study.best_trials
            best = max(front, key=lambda t: sum(t.values))
            best_value, best_trial = list(best.values), best.number
        else:
            best_value, best_trial = study.best_value, study.best_trial.number
    baseline = study.user_attrs.get("baseline_ce")
    rescored = rescore_summary(study)
    gain = None if rescored is None else gain_line(rescored)
    gain_identity = None if rescored is None else identity_gain_line(rescored)
    return SearchResult(cfg.study, cfg.storage, best_value, best_trial, baseline, cfg.out,
                        loss_path, counts, wall, gain, gain_identity,
                        None if rescored is None else rescored.get("reason"))
