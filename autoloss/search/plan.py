"""What a search config resolves to, once, before anything is written: :class:`SearchPlan`.

:func:`plan_search` checks the config (:func:`~autoloss.search.config.resolve_config`), parses
the target, loads the typed space (:class:`~autoloss.search.space_types.Space`), reads the boundary
options the target's surrogates share, resolves the start point (``init_from``) and the proxy's
options, and validates them as a :class:`~autoloss.train.proxy.ProxyConfig` when autoloss's own
proxy runs the trials (a misspelt option fails here). Everything after it takes the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoloss.core.metrics import METRIC_NAMES, MetricOptions
from autoloss.core.programs import is_user_reference
from autoloss.errors import InvalidTypeError, InvalidValueError
from autoloss.search.config import ProxyLike, SearchConfig, parse_target, resolve_config
from autoloss.search.samplers import SamplerSettings, make_pruner, make_sampler
from autoloss.search.space_types import CompositeSpace, Space
from autoloss.search.spaces import load_space

if TYPE_CHECKING:
    import optuna

    from autoloss.train.proxy import ProxyConfig

__all__ = ["SearchPlan", "plan_search"]


@dataclass(frozen=True)
class SearchPlan:
    """A resolved search: its checked ``config`` (derived defaults filled in) and what it names.

    Attributes:
        config: the resolved :class:`~autoloss.search.config.SearchConfig`.
        targets: the objectives' ``(metric, weight)`` terms: one objective, the weighted sum of
            all terms, or (``multi_objective``) one objective per term, each of weight 1.
        space: the typed search space of the target.
        start: where the search starts (``init_from``'s curves, else the space's initial point).
        metric_options: the boundary options (``tol``, ``drop_bg``) of the target's surrogates,
            with which the proxy scores the trials too.
        proxy_options: the options the proxy is built from (``data`` included).
        proxy_config: ``proxy_options`` as autoloss's checked proxy config; None when a
            ``proxy_factory`` makes the proxy (its options are its own to check).
    """

    config: SearchConfig
    targets: tuple[tuple[str, float], ...]
    space: Space
    start: dict[str, float]
    metric_options: MetricOptions
    proxy_options: dict[str, Any]
    proxy_config: ProxyConfig | None

    @property
    def n_objectives(self) -> int:
        return len(self.targets) if self.config.multi_objective else 1

    def objective_values(self, metrics: Mapping[str, float]) -> list[float]:
        """The objective values of a proxy's scores ``metrics`` (one per objective)."""
        values = []
        for name, weight in self.targets:
            if name not in metrics:
                raise InvalidValueError(f"the proxy reported no {name!r}; it reports "
                                        f"{sorted(metrics)}")
            values.append(weight * float(metrics[name]))
        return values if self.config.multi_objective else [sum(values)]

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        cfg = self.config
        return make_sampler(cfg.sampler, SamplerSettings(
            seed=cfg.seed, trials=cfg.trials, workers=cfg.workers, start=self.start,
            ppo=cfg.ppo.to_dict()))

    def make_pruner(self, eval_steps: list[int]) -> optuna.pruners.BasePruner:
        cfg = self.config
        return make_pruner(prune=cfg.pruner and not cfg.multi_objective, eval_steps=eval_steps)

    def make_proxy(self) -> ProxyLike:
        """Build the proxy (``proxy_factory``, else ``autoloss.train.proxy.build_proxy``); it
        trains nothing yet."""
        cfg = self.config
        if self.proxy_config is not None:
            from autoloss.train.proxy import build_proxy

            return build_proxy(self.proxy_config, cache_dir=cfg.cache)
        factory = cfg.proxy_factory
        if isinstance(factory, str):
            from autoloss.utils.trust import import_reference

            factory = import_reference(cfg.proxy_factory, what="proxy_factory")
            if not callable(factory):
                raise InvalidTypeError(f"proxy_factory={cfg.proxy_factory!r} must name a callable "
                                       f"factory(proxy_options, *, cache_dir), but it is a "
                                       f"{type(factory).__name__}")
        return factory(dict(self.proxy_options), cache_dir=cfg.cache)


def plan_search(config: SearchConfig) -> SearchPlan:
    """Check ``config`` and resolve everything it names (see the module docstring)."""
    cfg = resolve_config(config)
    if cfg.multi_objective:
        targets = tuple((m, 1.0) for m in cfg.metric)
    else:
        targets = tuple(parse_target(cfg.metric))
    space = _space(cfg, targets)
    options = _metric_options(cfg, space)
    proxy_options = _proxy_options(cfg, [m for m, _ in targets], options)
    proxy_config = None
    if cfg.proxy_factory is None:
        from autoloss.train.proxy import ProxyConfig

        proxy_config = ProxyConfig.from_dict(proxy_options)
    return SearchPlan(cfg, targets, space, _start(cfg, space), options, proxy_options,
                      proxy_config)


def _space(cfg: SearchConfig, targets: tuple[tuple[str, float], ...]) -> Space:
    """The search space of the target: a metric's, or the metrics' spaces joined (mixing
    weights searched for a multi-objective search)."""
    if cfg.multi_objective:
        return CompositeSpace(tuple((m, None, load_space(m)) for m, _ in targets))
    if len(targets) == 1:
        return load_space(cfg.space or targets[0][0])
    return CompositeSpace(tuple((m, w, load_space(m)) for m, w in targets))


def _start(cfg: SearchConfig, space: Space) -> dict[str, float]:
    """Where the search starts: the curves of ``cfg.init_from`` (a loss file), else the space's
    initial point."""
    if cfg.init_from is None:
        return space.initial_params()
    from autoloss.losses import read_spec

    if len(space.metric_spaces()) > 1:
        raise InvalidValueError(f"init_from needs a single-metric search space, but the target "
                                f"{cfg.metric!r} combines several")
    try:
        return space.params_of_loss(read_spec(cfg.init_from))
    except ValueError as err:
        raise InvalidValueError(f"init_from={str(cfg.init_from)!r}: {err}") from None


def _metric_options(cfg: SearchConfig, space: Space) -> MetricOptions:
    """The boundary-metric options (``tol``, ``drop_bg``) of the target's surrogates, read from
    their spaces; the proxy scores the trial's reward with the same (:func:`_proxy_options`), so
    a trial's loss and its score agree on what BIoU / BF1 are (BIoU's space: ``drop_bg``)."""
    found = {MetricOptions.of(s.options) for s in space.metric_spaces()
             if s.metric in ("biou", "bf1") or {"tol", "drop_bg"} & set(s.options)}
    if len(found) > 1:
        seen = ", ".join(sorted(str(o.to_dict()) for o in found))
        raise InvalidValueError(f"the surrogates of {cfg.metric!r} disagree on the boundary options "
                                f"in their search spaces ({seen}); the proxy scores the target "
                                "with one set: give the spaces the same tol and drop_bg")
    return found.pop() if found else MetricOptions()


def _proxy_options(cfg: SearchConfig, metrics: list[str],
                   metric_options: MetricOptions) -> dict[str, Any]:
    """The proxy's options: the target's ``metric_options`` (an option the config sets itself
    must agree with them), and a user metric of the target added to the metrics it reports
    (next to every built-in one, or to the ``metrics`` the config names)."""
    options = dict(cfg.proxy)
    for key, value in metric_options.to_dict().items():
        if key in options and options[key] != value:
            raise InvalidValueError(
                f"proxy {key}={options[key]!r} disagrees with the search space's {key}={value!r}: "
                "the reward would score another metric than the surrogate optimises; set "
                f"{key} in the space (options: {key}: ...) and leave it out of proxy")
        if key not in options and value != getattr(MetricOptions, key):
            options[key] = value  # only then: custom proxies keep the options they know
    users = [m for m in metrics if is_user_reference(m)]
    if users:
        given = options.get("metrics")
        reported = (list(METRIC_NAMES) if given is None
                    else [given] if isinstance(given, str) else list(given))
        options["metrics"] = reported + [m for m in users if m not in reported]
    return {"data": cfg.data, **options}


def replace_config(plan: SearchPlan, **changes: Any) -> SearchPlan:
    """``plan`` with fields of its config changed that resolve to nothing else (the budget's
    ``timeout``, say)."""
    return dataclasses.replace(plan, config=dataclasses.replace(plan.config, **changes))
