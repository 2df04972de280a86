"""Search configuration: :class:`SearchConfig` (flat experiment YAML and CLI), its checks
(:func:`resolve_config`), the target parser, and :class:`ProxyLike`, the protocol a proxy of your
own implements. What a config resolves to (space, proxy options) is
:class:`autoloss.search.plan.SearchPlan`. No optuna here."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from autoloss.data import data_slug
from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean
from autoloss.search.ppo import PPOOptions
from autoloss.search.rescore import EXPORT_RULES
from autoloss.search.samplers import SAMPLERS
from autoloss.utils.cache import default_cache_dir
from autoloss.utils.typed_fields import at_least, check_fields, from_mapping, one_of, positive
from autoloss.utils.yaml_files import read_mapping

__all__ = ["ProxyLike", "SearchConfig", "SearchResult", "check_user_code",
           "load_experiment", "parse_target", "resolve_config"]

STARTUPS = ("uniform", "prior")


class ProxyLike(Protocol):
    """What the search needs from a proxy: autoloss's own (:mod:`autoloss.train.proxy`) or
    yours, made by a ``proxy_factory(proxy_options: dict, *, cache_dir: Path)``
    (``docs/own_model.md``; :func:`autoloss.search.check_proxy` tests one against this
    contract).

    Attributes:
        num_classes: classes C of the data; the search builds every loss for them.
        ignore_index: the label of ignored pixels (None: none); passed to every loss.
        eval_steps: the increasing steps at which :meth:`run` calls ``on_eval``; the pruner
            compares trials there, so every run must report at exactly these steps.

    Optional: ``image_size`` (``(H, W)`` of the training images) and ``config`` (with
    ``to_dict()`` and ``crop``) are recorded in the exported loss's provenance when present;
    ``model_record()`` too.
    """

    num_classes: int
    ignore_index: int | None
    eval_steps: list[int]

    def prepare(self, *, progress: bool = False) -> None:
        """Everything shared by the trials (e.g. a warm start), once, before the first; called
        in every worker process, so it must be safe to call concurrently and again
        (``progress`` is optional: show a progress bar)."""

    def run(self, loss: nn.Module, *, seed: int,
            on_eval: Callable[[int, dict[str, float]], None] | None = None
            ) -> dict[str, float]:
        """Train with ``loss`` (``loss(logits [N,C,H,W], labels [N,H,W] int64) -> scalar``)
        from the seed-``seed`` start and return the final scores ``{metric: value in [0, 1]}``
        on the proxy-validation split (the target metric's name among the keys). Call
        ``on_eval(step, scores)`` at each of :attr:`eval_steps` and let what it raises (the
        pruning signal) propagate; a NaN loss raises
        :class:`~autoloss.errors.NonFiniteLossError`."""


def __getattr__(name: str) -> Any:
    """``Proxy``, the protocol's old name, still imports (with a DeprecationWarning)."""
    if name == "Proxy":
        warnings.warn("autoloss.search.config.Proxy is now ProxyLike", DeprecationWarning,
                      stacklevel=2)
        return ProxyLike
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class SearchConfig:
    """Every option of a search; settable from a flat experiment YAML and from the CLI.

    ``metric``: a metric, a weighted sum ``"miou+0.5*bf1"`` or a list (with
    ``multi_objective``). ``storage``: any SQLAlchemy URL or ``journal:PATH`` (default
    ``sqlite:///<out>/study.db``). ``sampler``: a name of
    :data:`~autoloss.search.samplers.SAMPLERS`, or (Python) an
    optuna sampler instance used as it is (with ``workers > 1`` each worker process gets a
    pickled copy). ``proxy``: overrides of the proxy config (:class:`~autoloss.train.proxy.
    ProxyConfig`; ``model`` may be your own builder, ``docs/own_model.md``); ``proxy_factory``:
    a callable, or its ``"module:attr"`` / ``"path/to/file.py:attr"`` name (files, CLI), called
    as ``factory(proxy_config, cache_dir=...)`` instead of ``autoloss.train.proxy.build_proxy``
    to make a :class:`ProxyLike` of your own (it must pickle by reference for workers: a
    module-level function or class). ``cache``: proxy cache folder (default: the shared one,
    :mod:`autoloss.utils.cache`).
    ``heartbeat``: seconds between heartbeats of a running trial (SQL storages). ``ppo``:
    :class:`PPOOptions` of :class:`~autoloss.search.ppo.PPOSampler` (a mapping of its fields is
    converted).
    ``plots``: draw the run's plots (:func:`autoloss.search.run_plots.plot_run`) into ``<out>/plots`` at the
    end. ``startup``: how a ``tpe`` study's first (random) trials are drawn: ``uniform`` in the
    bounds (optuna's default) or ``prior``, from the distribution PPO starts with (a truncated
    normal with std 0.2 around the space's initial point; see
    :func:`~autoloss.search.samplers.prior_points`).
    ``rescore_top`` / ``rescore_seeds``: before exporting, score the best ``rescore_top``
    trials, the reference points (the plain soft metric, the published curves) and
    cross-entropy again with ``rescore_seeds`` other proxy seeds (:mod:`autoloss.search.rescore`;
    0 exports the single best trial as scored, compared with nothing). ``export_rule``: how the
    export is chosen among the re-scored trials (:data:`~autoloss.search.rescore.EXPORT_RULES`):
    ``beat-identity`` exports the best searched trial only if it beats the plain soft metric
    with its 95 % interval above zero, else the plain soft metric; ``best-mean`` the best mean
    (a reference point if it scores best); ``best-searched`` the best searched trial's mean.
    ``init_from``: a loss file (e.g. searched on another dataset) whose curves are the first
    trial of a new study and the centre of PPO's policy and of ``prior`` startup points.

    Frozen: change a copy with :func:`dataclasses.replace`. The field types and the rules on
    the fields (ranges, choices; :mod:`autoloss.utils.typed_fields`) are checked by
    :func:`resolve_config`.
    """

    metric: str | list[str] = "miou"
    data: str = "shapes"
    trials: int = field(default=20, metadata=at_least(1))
    timeout: float | None = field(default=None, metadata=positive(finite=False))  # seconds
    sampler: Any = "tpe"  # a name of SAMPLERS or an optuna.samplers.BaseSampler (checked)
    pruner: bool = True
    storage: str | None = None
    study: str | None = None
    workers: int = field(default=1, metadata=at_least(1))
    seed: int = 0
    out: Path | str | None = None
    space: str | None = None
    proxy: dict[str, Any] = field(default_factory=dict)
    multi_objective: bool = False
    enqueue_references: bool = True
    proxy_factory: Any = None  # "module:attr", a callable, or None (checked)
    cache: Path | str | None = None
    heartbeat: int = field(default=30, metadata=at_least(1))
    ppo: PPOOptions = field(default_factory=lambda: PPOOptions())
    plots: bool = True
    startup: str = field(default="uniform", metadata=one_of(*STARTUPS))
    rescore_top: int = field(default=5, metadata=at_least(0))  # 0: no re-scoring
    rescore_seeds: int = field(default=5, metadata=at_least(0))
    export_rule: str = field(default="beat-identity", metadata=one_of(*EXPORT_RULES))
    init_from: str | Path | None = None

    def __post_init__(self) -> None:
        # the two sections arrive as mappings (YAML, CLI, Python): own copies, the PPO one typed
        if isinstance(self.ppo, Mapping):
            object.__setattr__(self, "ppo", PPOOptions.from_dict(self.ppo))
        if isinstance(self.proxy, Mapping):
            object.__setattr__(self, "proxy", dict(self.proxy))


@dataclass
class SearchResult:
    """What a search produced (``best_value`` is a list for multi-objective searches;
    ``gain``: the exported trial against cross-entropy, paired over the re-scoring seeds, as one
    sentence with its interval and the seed noise; ``gain_over_identity``: the best searched
    trial against the plain soft metric, the same way; ``export_reason``: the export rule's
    decision; each None without a re-scoring)."""

    study: str
    storage: str
    best_value: float | list[float] | None
    best_trial: int | None
    baseline_ce: float | list[float] | None
    out: Path
    loss_path: Path | None
    counts: dict[str, int]
    wall_time: float
    gain: str | None = None
    gain_over_identity: str | None = None
    export_reason: str | None = None


def parse_target(metric: str) -> list[tuple[str, float]]:
    """``"miou+0.5*bf1"`` -> ``[("miou", 1.0), ("bf1", 0.5)]``."""
    terms = []
    for part in metric.split("+"):
        m = re.fullmatch(r"\s*(?:([0-9.eE-]+)\s*\*\s*)?([^*]+?)\s*", part)
        if m is None or not m.group(2):
            raise InvalidValueError(f"metric term {part!r} of {metric!r} must be NAME or WEIGHT*NAME")
        try:
            weight = float(m.group(1)) if m.group(1) else 1.0
        except ValueError:
            raise InvalidValueError(f"metric term {part!r}: weight {m.group(1)!r} is not a number"
                             ) from None
        if weight <= 0:
            raise InvalidValueError(f"metric term {part!r}: weight must be > 0, but got {weight}")
        terms.append((m.group(2), weight))
    return terms


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def resolve_config(cfg: SearchConfig) -> SearchConfig:
    """A checked copy of ``cfg`` (types, ranges, names) with the derived defaults filled in:
    ``out``, ``storage``, ``study``, ``cache``."""
    check_fields(cfg)
    _check_proxy_factory(cfg)
    _check_sampler(cfg)
    cfg, metrics = _checked_metric(cfg)
    name = "+".join(metrics) if cfg.multi_objective else metrics[0]
    data = data_slug(cfg.data)
    out = Path(cfg.out) if cfg.out is not None else Path("results") / f"search-{_slug(name)}-{data}"
    out = out.expanduser().resolve()
    return dataclasses.replace(
        cfg, out=out, storage=cfg.storage or f"sqlite:///{out / 'study.db'}",
        study=cfg.study or f"{_slug(name)}-{data}",
        cache=Path(cfg.cache).expanduser().resolve() if cfg.cache else default_cache_dir())


def _check_proxy_factory(cfg: SearchConfig) -> None:
    if not (cfg.proxy_factory is None or isinstance(cfg.proxy_factory, str)
            or callable(cfg.proxy_factory)):
        raise InvalidTypeError(f"proxy_factory must be a callable, its 'module:attr' name or None, "
                               f"but got {type(cfg.proxy_factory).__name__}")


def _check_sampler(cfg: SearchConfig) -> None:
    """A name of :data:`~autoloss.search.samplers.SAMPLERS` or an optuna sampler instance; a
    warning when PPO would never update its policy."""
    if not isinstance(cfg.sampler, str):
        import optuna

        if not isinstance(cfg.sampler, optuna.samplers.BaseSampler):
            raise InvalidTypeError(f"sampler must be one of {list(SAMPLERS)} or an optuna sampler "
                                   f"instance, but got {type(cfg.sampler).__name__}")
    elif cfg.sampler not in SAMPLERS:
        raise InvalidValueError(f"sampler must be one of {list(SAMPLERS)}, but got {cfg.sampler!r}"
                                f"{did_you_mean(cfg.sampler, SAMPLERS)}")
    if cfg.sampler == "ppo":
        generation = cfg.ppo.generation_size
        if cfg.trials < generation:
            warnings.warn(f"sampler ppo: trials={cfg.trials} is less than one generation "
                          f"(generation_size={generation}), so the policy is never updated and "
                          f"the search samples around its start only; raise --trials or set "
                          f"ppo generation_size", stacklevel=3)


def _checked_metric(cfg: SearchConfig) -> tuple[SearchConfig, list[str]]:
    """``cfg`` with a one-metric list as its name, and its metrics; the target's checks."""
    metrics = cfg.metric if isinstance(cfg.metric, list) else [cfg.metric]
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise InvalidValueError(f"metric must be a name or a list of names, but got {cfg.metric!r}")
    if not isinstance(cfg.metric, list):
        parse_target(cfg.metric)
    twice = sorted({m for m in metrics if metrics.count(m) > 1})
    if twice:
        raise InvalidValueError(f"metric names {twice} more than once, but got metric="
                                f"{','.join(metrics)!r}; a multi-objective search needs "
                                "different metrics (one metric: --metric NAME)")
    if isinstance(cfg.metric, list) and len(metrics) == 1:
        cfg = dataclasses.replace(cfg, metric=metrics[0])
    if cfg.multi_objective != isinstance(cfg.metric, list):
        raise InvalidValueError("multi_objective=True needs a list of >= 2 metrics and a list "
                                f"needs multi_objective=True, but got metric={cfg.metric!r}, "
                                f"multi_objective={cfg.multi_objective}")
    if cfg.multi_objective and any("+" in m or "*" in m for m in metrics):
        raise InvalidValueError(f"multi-objective metrics must be plain names, but got {metrics}")
    if cfg.multi_objective and cfg.sampler in ("ppo", "cmaes"):
        raise InvalidValueError(f"sampler {cfg.sampler!r} is single-objective; use tpe, random "
                                "or qmc")
    if cfg.space is not None and (cfg.multi_objective or len(parse_target(metrics[0])) > 1):
        raise InvalidValueError("space applies to a single-metric search; a composite target "
                                "uses each metric's built-in space "
                                "(autoloss/search_spaces/<metric>.yaml)")
    return cfg, metrics


def load_experiment(path: str | Path) -> SearchConfig:
    """Read and check a flat experiment YAML (keys: the :class:`SearchConfig` fields). Derived
    defaults stay unset (see :func:`resolve_config`), so command-line overrides can change them."""
    data = read_mapping(path)
    try:
        config = from_mapping(SearchConfig, data)
        check_user_code(data, source=str(path))  # before anything runs
        resolve_config(config)
    except ValueError as err:
        raise InvalidValueError(f"{path}: {err}") from None
    return config


def check_user_code(values: Mapping[str, Any], *, source: str, prefix: str = "") -> None:
    """The trust gate for the user code a shared file's search options name: ``proxy_factory``
    and the proxy's ``model`` builder (``module:name`` needs ``--trust-code``, ``file.py:name``
    a trusted file; :func:`autoloss.utils.trust.require_trusted_reference`)."""
    from autoloss.utils.trust import require_trusted_reference

    require_trusted_reference(values.get("proxy_factory"), option=f"{prefix}proxy_factory",
                              source=source)
    proxy = values.get("proxy")
    if isinstance(proxy, Mapping):
        require_trusted_reference(proxy.get("model"), option=f"{prefix}proxy: model",
                                  source=source)
