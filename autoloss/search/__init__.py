"""The outer search: an optuna study over the curve parameters of a target metric's surrogate,
each trial scored by proxy training on ``val``, the best exported as a loss file.

    config      SearchConfig and its validation, the target parser; the ProxyLike protocol a
                proxy of your own implements
    plan        SearchPlan: a config resolved once (target, space, proxy options)
    check_proxy the contract test of a proxy (check_proxy(proxy))
    spaces      search-space files: the built-in ones (package data
                ``autoloss/search_spaces/*.yaml``), any other named by path; parsing and checks
    space_types the Space protocol, SearchSpace and CompositeSpace (also importable from spaces)
    storage     optuna storages from a URL; opening a stored study
    run_folder  the run folder (run.json, study.db, best_loss.yaml, summary.md, plots/)
    samplers    the sampler names and builders, the pruner, the startup points
    objective   the trial function
    setup       a study created or loaded: identity, resume checks, first trials, baseline
    workers     trials run here and in worker processes up to the budget
    budget      the study-wide trial budget shared by processes and hosts; dead trials
    trial_seeds, pruning, ppo   sampler seeding, the pruner, the PPO sampler
    rescore     re-scoring the top trials over more seeds
    export      the exported loss file and summary.md
    run         search_study (only the search) -> SearchRun -> finish_run (re-score, export,
                summary, plots, on the objects in memory); run_search does both
    run_plots   which figures a search gets (plot_search, in memory) or a run folder (plot_run);
                drawn by autoloss.report (a study's: autoloss.report.search_plots)
"""

import warnings
from typing import Any

from autoloss.search.check_proxy import ProxyCheck, ProxyContractError, check_proxy
from autoloss.search.config import (
    ProxyLike,
    SearchConfig,
    SearchResult,
    load_experiment,
    resolve_config,
)
from autoloss.search.export import export_trial, summarize
from autoloss.search.plan import SearchPlan, plan_search
from autoloss.search.run import SearchRun, finish_run, run_search, search_study
from autoloss.search.run_folder import RunFolder
from autoloss.search.run_plots import plot_run, plot_search
from autoloss.search.space_types import CompositeSpace, SearchSpace, Space
from autoloss.search.spaces import default_space, load_space
from autoloss.search.storage import make_storage, open_study

__all__ = ["CompositeSpace", "ProxyCheck", "ProxyContractError", "ProxyLike", "RunFolder",
           "SearchConfig", "SearchPlan", "SearchResult", "SearchRun", "SearchSpace", "Space",
           "check_proxy", "default_space", "export_trial", "finish_run", "load_experiment",
           "load_space", "make_storage", "open_study", "plan_search", "plot_run", "plot_search",
           "resolve_config", "run_search", "search_study", "summarize"]


def __getattr__(name: str) -> Any:
    """``Proxy``, the protocol's old name, still imports (with a DeprecationWarning)."""
    if name == "Proxy":
        warnings.warn("autoloss.search.Proxy is now autoloss.search.ProxyLike",
                      DeprecationWarning, stacklevel=2)
        return ProxyLike
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
