"""Search configuration: :class:`SearchConfig` (flat experiment YAML and CLI), the target
parser, the joint space of a composite target, and the space and proxy a config names. No optuna
here (see ``autoloss.search.run``)."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from autoloss.core.metrics import METRIC_NAMES, MetricOptions
from autoloss.core.programs import is_user_reference
from autoloss.data import data_slug
from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean
from autoloss.search.rescore import EXPORT_RULES
from autoloss.search.spaces import SearchSpace, load_space
from autoloss.utils.cache import default_cache_dir
from autoloss.utils.typed_fields import check_field_types
from autoloss.utils.yaml_files import read_mapping

__all__ = ["SAMPLERS", "CompositeSpace", "PPOOptions", "Proxy", "SearchConfig", "SearchResult",
           "check_user_code", "load_experiment", "make_proxy", "make_space", "parse_target",
           "resolve_config"]

SAMPLERS = ("tpe", "cmaes", "random", "qmc", "ppo")  # built by autoloss.search.run.SAMPLER_BUILDERS
STARTUPS = ("uniform", "prior")


class Proxy(Protocol):
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


@dataclass(frozen=True)
class PPOOptions:
    """The options of :class:`~autoloss.search.ppo.PPOSampler` (its defaults are these):
    ``sigma`` (std of the truncated normals), ``generation_size`` (trials per policy update),
    ``clip`` (PPO ratio clip), ``lr`` and ``update_steps`` (of each update), ``include_pruned``
    (pruned trials count, at their last reported value)."""

    sigma: float = 0.2
    generation_size: int = 32
    clip: float = 0.2
    lr: float = 0.2
    update_steps: int = 60
    include_pruned: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, where="ppo option ")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> PPOOptions:
        """From a mapping of its fields (an unknown key is an error with a did-you-mean)."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                raise InvalidValueError(f"ppo option {key!r} is unknown: expected one of {names}"
                                        f"{did_you_mean(key, names)}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SearchConfig:
    """Every option of a search; settable from a flat experiment YAML and from the CLI.

    ``metric``: a metric, a weighted sum ``"miou+0.5*bf1"`` or a list (with
    ``multi_objective``). ``storage``: any SQLAlchemy URL or ``journal:PATH`` (default
    ``sqlite:///<out>/study.db``). ``sampler``: a name of :data:`SAMPLERS`, or (Python) an
    optuna sampler instance used as it is (with ``workers > 1`` each worker process gets a
    pickled copy). ``proxy``: overrides of the proxy config (:class:`~autoloss.train.proxy.
    ProxyConfig`; ``model`` may be your own builder, ``docs/own_model.md``); ``proxy_factory``:
    a callable, or its ``"module:attr"`` / ``"path/to/file.py:attr"`` name (files, CLI), called
    as ``factory(proxy_config, cache_dir=...)`` instead of ``autoloss.train.proxy.build_proxy``
    to make a :class:`Proxy` of your own (it must pickle by reference for workers: a
    module-level function or class). ``cache``: proxy cache folder (default: the shared one,
    :mod:`autoloss.utils.cache`).
    ``heartbeat``: seconds between heartbeats of a running trial (SQL storages). ``ppo``:
    :class:`PPOOptions` of :class:`~autoloss.search.ppo.PPOSampler` (a mapping of its fields is
    converted).
    ``plots``: draw the run's plots (:func:`autoloss.search.run_plots.plot_run`) into ``<out>/plots`` at the
    end. ``startup``: how a ``tpe`` study's first (random) trials are drawn: ``uniform`` in the
    bounds (optuna's default) or ``prior``, from the distribution PPO starts with (a truncated
    normal with std 0.2 around the space's initial point; see :func:`prior_points`).
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

    Frozen: change a copy with :func:`dataclasses.replace`. The field types are checked (from
    these annotations, :mod:`autoloss.utils.typed_fields`) by :func:`resolve_config`.
    """

    metric: str | list[str] = "miou"
    data: str = "shapes"
    trials: int = 20
    timeout: float | None = None
    sampler: Any = "tpe"  # a name of SAMPLERS or an optuna.samplers.BaseSampler (checked)
    pruner: bool = True
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    seed: int = 0
    out: Path | str | None = None
    space: str | None = None
    proxy: dict[str, Any] = field(default_factory=dict)
    multi_objective: bool = False
    enqueue_references: bool = True
    proxy_factory: Any = None  # "module:attr", a callable, or None (checked)
    cache: Path | str | None = None
    heartbeat: int = 30
    ppo: PPOOptions = field(default_factory=lambda: PPOOptions())
    plots: bool = True
    startup: str = "uniform"
    rescore_top: int = 5
    rescore_seeds: int = 5
    export_rule: str = "beat-identity"
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
    check_field_types(cfg)
    if cfg.trials < 1 or cfg.workers < 1 or cfg.heartbeat < 1:
        raise InvalidValueError(f"trials, workers and heartbeat must be >= 1, but got trials="
                         f"{cfg.trials}, workers={cfg.workers}, heartbeat={cfg.heartbeat}")
    if cfg.rescore_top < 0 or cfg.rescore_seeds < 0:
        raise InvalidValueError(f"rescore_top and rescore_seeds must be >= 0 (0: no re-scoring), but "
                         f"got rescore_top={cfg.rescore_top}, rescore_seeds={cfg.rescore_seeds}")
    if cfg.export_rule not in EXPORT_RULES:
        raise InvalidValueError(f"export_rule must be one of {list(EXPORT_RULES)}, but got "
                                f"{cfg.export_rule!r}{did_you_mean(cfg.export_rule, EXPORT_RULES)}")
    if cfg.timeout is not None and cfg.timeout <= 0:
        raise InvalidValueError(f"timeout must be > 0 seconds or None, but got {cfg.timeout}")
    if cfg.startup not in STARTUPS:
        raise InvalidValueError(f"startup must be one of {list(STARTUPS)}, but got {cfg.startup!r}"
                         f"{did_you_mean(cfg.startup, STARTUPS)}")
    if not (cfg.proxy_factory is None or isinstance(cfg.proxy_factory, str)
            or callable(cfg.proxy_factory)):
        raise InvalidTypeError(f"proxy_factory must be a callable, its 'module:attr' name or None, "
                               f"but got {type(cfg.proxy_factory).__name__}")
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
                          f"ppo generation_size", stacklevel=2)
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
        metrics, cfg = metrics, dataclasses.replace(cfg, metric=metrics[0])
    if cfg.multi_objective != isinstance(cfg.metric, list):
        raise InvalidValueError("multi_objective=True needs a list of >= 2 metrics and a list needs "
                         f"multi_objective=True, but got metric={cfg.metric!r}, "
                         f"multi_objective={cfg.multi_objective}")
    if cfg.multi_objective and any("+" in m or "*" in m for m in metrics):
        raise InvalidValueError(f"multi-objective metrics must be plain names, but got {metrics}")
    if cfg.multi_objective and cfg.sampler in ("ppo", "cmaes"):
        raise InvalidValueError(f"sampler {cfg.sampler!r} is single-objective; use tpe, random or qmc")
    if cfg.space is not None and (cfg.multi_objective or len(parse_target(metrics[0])) > 1):
        raise InvalidValueError("space applies to a single-metric search; a composite target uses "
                         "each metric's built-in space (autoloss/search_spaces/<metric>.yaml)")
    name = "+".join(metrics) if cfg.multi_objective else metrics[0]
    data = data_slug(cfg.data)
    out = Path(cfg.out) if cfg.out is not None else Path("results") / f"search-{_slug(name)}-{data}"
    out = out.expanduser().resolve()
    return dataclasses.replace(
        cfg, out=out, storage=cfg.storage or f"sqlite:///{out / 'study.db'}",
        study=cfg.study or f"{_slug(name)}-{data}",
        cache=Path(cfg.cache).expanduser().resolve() if cfg.cache else default_cache_dir())


def load_experiment(path: str | Path) -> SearchConfig:
    """Read and check a flat experiment YAML (keys: the :class:`SearchConfig` fields). Derived
    defaults stay unset (see :func:`resolve_config`), so command-line overrides can change them."""
    data = read_mapping(path)
    names = [f.name for f in dataclasses.fields(SearchConfig)]
    for key in data:
        if key not in names:
            raise InvalidValueError(f"{path}: unknown option {key!r}, expected one of {names}"
                                    f"{did_you_mean(key, names)}")
    check_user_code(data, source=str(path))
    try:
        config = SearchConfig(**data)
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


# ----------------------------------------------------------------------------- building blocks
@dataclass(frozen=True)
class CompositeSpace:
    """Several metrics' spaces joined: loss ``sum_i w_i * (1 - surrogate_i)`` (+ CE as in the first
    term's space). ``weights[i]`` is a number (weighted-sum target: the loss mixes the surrogates
    with the objective's weights) or None (searched as ``mix.<metric>`` in [0, 1]; the weights are
    normalised to sum 1, used for multi-objective searches so the Pareto front spans trade-offs).
    """

    terms: tuple[tuple[str, float | None, SearchSpace], ...]

    def _prefixed(self) -> list[tuple[str, SearchSpace, float | None]]:
        return [(f"{m}.", s, w) for m, w, s in self.terms]

    def param_names(self) -> list[str]:
        names = [p + n for p, s, _ in self._prefixed() for n in s.param_names()]
        return names + [f"mix.{m}" for m, w, _ in self.terms if w is None]

    def bounds(self) -> dict[str, tuple[float, float]]:
        out = {p + n: b for p, s, _ in self._prefixed() for n, b in s.bounds().items()}
        out.update({f"mix.{m}": (0.0, 1.0) for m, w, _ in self.terms if w is None})
        return out

    def _join(self, per_term: Sequence[Mapping[str, float]]) -> dict[str, float]:
        out = {p + n: v for (p, _, _), params in zip(self._prefixed(), per_term)
               for n, v in params.items()}
        out.update({f"mix.{m}": 0.5 for m, w, _ in self.terms if w is None})
        return out

    def identity_params(self) -> dict[str, float]:
        return self._join([s.identity_params() for _, _, s in self.terms])

    def initial_params(self) -> dict[str, float]:
        return self._join([s.initial_params() for _, _, s in self.terms])

    def reference_points(self) -> dict[str, dict[str, float]]:
        return {"identity": self.identity_params()}

    def identity(self) -> dict[str, Any]:
        """Every term's metric, weight (None: searched) and :meth:`SearchSpace.identity`."""
        return {"terms": [[m, w, s.identity()] for m, w, s in self.terms]}

    def loss_spec(self, params: Mapping[str, float], *, ignore_index: int | None = None
                  ) -> dict[str, Any]:
        weights = [w if w is not None else float(params[f"mix.{m}"]) for m, w, _ in self.terms]
        if any(w is None for _, w, _ in self.terms):
            total = sum(weights)
            weights = [w / total if total > 0 else 1 / len(weights) for w in weights]
        parts = []
        for (prefix, space, _), w in zip(self._prefixed(), weights):
            sub = {n[len(prefix):]: v for n, v in params.items() if n.startswith(prefix)}
            parts.append(space.loss_spec(sub, ignore_index=ignore_index, weight=w))
        first = self.terms[0][2]
        ce = (params.get(f"{self.terms[0][0]}.ce_weight") if first.ce_weight.searched
              else first.ce_weight.fixed)
        if ce and ce > 0:
            part: dict[str, Any] = {"name": "cross_entropy", "weight": float(ce)}
            if ignore_index is not None:
                part["ignore_index"] = ignore_index
            parts.append(part)
        return {"combine": parts}

    def build_loss(self, params: Mapping[str, float], *, ignore_index: int | None = None
                   ) -> nn.Module:
        from autoloss.losses import load_loss

        return load_loss(self.loss_spec(params, ignore_index=ignore_index))


def make_space(cfg: SearchConfig) -> SearchSpace | CompositeSpace:
    """The search space of the config's target."""
    if cfg.multi_objective:
        return CompositeSpace(tuple((m, None, load_space(m)) for m in cfg.metric))
    terms = parse_target(cfg.metric)
    if len(terms) == 1:
        return load_space(cfg.space or terms[0][0])
    return CompositeSpace(tuple((m, w, load_space(m)) for m, w in terms))


def target_metrics(cfg: SearchConfig) -> list[str]:
    """The metric names the search's objective reads (``"miou+0.5*bf1"`` -> miou, bf1)."""
    return list(cfg.metric) if cfg.multi_objective else [n for n, _ in parse_target(cfg.metric)]


def metric_options(cfg: SearchConfig) -> MetricOptions:
    """The boundary-metric options (``tol``, ``drop_bg``) of the target's surrogates, read from
    their spaces; the proxy scores the trial's reward with the same (:func:`_proxy_config`), so
    a trial's loss and its score agree on what BIoU / BF1 are (BIoU's space: ``drop_bg``)."""
    space = make_space(cfg)
    spaces = [s for _, _, s in space.terms] if isinstance(space, CompositeSpace) else [space]
    found = {MetricOptions.of(s.options) for s in spaces
             if s.metric in ("biou", "bf1") or {"tol", "drop_bg"} & set(s.options)}
    if len(found) > 1:
        seen = ", ".join(sorted(str(o.to_dict()) for o in found))
        raise InvalidValueError(f"the surrogates of {cfg.metric!r} disagree on the boundary options "
                                f"in their search spaces ({seen}); the proxy scores the target "
                                "with one set: give the spaces the same tol and drop_bg")
    return found.pop() if found else MetricOptions()


def _proxy_config(cfg: SearchConfig) -> dict[str, Any]:
    """The proxy's options: the target's :func:`metric_options` (an option the config sets
    itself must agree with them), and a user metric of the target added to the metrics it
    reports (next to every built-in one, or to the ``metrics`` the config names)."""
    options = dict(cfg.proxy)
    for key, value in metric_options(cfg).to_dict().items():
        if key in options and options[key] != value:
            raise InvalidValueError(
                f"proxy {key}={options[key]!r} disagrees with the search space's {key}={value!r}: "
                "the reward would score another metric than the surrogate optimises; set "
                f"{key} in the space (options: {key}: ...) and leave it out of proxy")
        if key not in options and value != getattr(MetricOptions, key):
            options[key] = value  # only then: custom proxies keep the options they know
    users = [m for m in target_metrics(cfg) if is_user_reference(m)]
    if users:
        given = options.get("metrics")
        reported = (list(METRIC_NAMES) if given is None
                    else [given] if isinstance(given, str) else list(given))
        options["metrics"] = reported + [m for m in users if m not in reported]
    return {"data": cfg.data, **options}


def make_proxy(cfg: SearchConfig) -> Proxy:
    """Build the proxy (``proxy_factory`` or ``autoloss.train.proxy.build_proxy``)."""
    if cfg.proxy_factory is None:
        from autoloss.train.proxy import build_proxy

        return build_proxy(_proxy_config(cfg), cache_dir=cfg.cache)
    if callable(cfg.proxy_factory):
        return cfg.proxy_factory(_proxy_config(cfg), cache_dir=cfg.cache)
    from autoloss.utils.trust import import_reference

    factory = import_reference(cfg.proxy_factory, what="proxy_factory")
    if not callable(factory):
        raise InvalidTypeError(f"proxy_factory={cfg.proxy_factory!r} must name a callable "
                               f"factory(proxy_options, *, cache_dir), but it is a "
                               f"{type(factory).__name__}")
    return factory(_proxy_config(cfg), cache_dir=cfg.cache)
