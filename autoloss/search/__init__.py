"""The outer search: an optuna study over the curve parameters of a target metric's surrogate,
each trial scored by proxy training on ``val``, the best exported as a loss file.

    config      SearchConfig and its validation, the target, space and proxy it resolves to;
                the Proxy protocol a proxy of your own implements
    check_proxy the contract test of a proxy (check_proxy(proxy))
    spaces      the search spaces (package data ``autoloss/search_spaces/*.yaml``)
    storage     optuna storages from a URL; opening a stored study
    run_folder  the run folder (run.json, study.db, best_loss.yaml, summary.md, plots/)
    budget      the study-wide trial budget shared by processes and hosts
    trial_seeds, pruning, ppo   sampler seeding, the pruner, the PPO sampler
    rescore     re-scoring the top trials over more seeds
    export      the exported loss file and summary.md
    run         search_study (only the search) -> SearchRun -> finish_run (re-score, export,
                summary, plots, on the objects in memory); run_search does both
    run_plots   the figures of a search (plot_search, in memory) or of a run folder (plot_run)
"""

from autoloss.search.check_proxy import ProxyCheck, ProxyContractError, check_proxy
from autoloss.search.config import (
    Proxy,
    SearchConfig,
    SearchResult,
    load_experiment,
    resolve_config,
)
from autoloss.search.export import export_trial, summarize
from autoloss.search.run import SearchRun, finish_run, run_search, search_study
from autoloss.search.run_folder import RunFolder
from autoloss.search.run_plots import plot_run, plot_search
from autoloss.search.spaces import SearchSpace, default_space, load_space
from autoloss.search.storage import make_storage, open_study

__all__ = ["Proxy", "ProxyCheck", "ProxyContractError", "RunFolder", "SearchConfig",
           "SearchResult", "SearchRun", "SearchSpace", "check_proxy",
           "default_space", "export_trial", "finish_run", "load_experiment", "load_space",
           "make_storage", "open_study", "plot_run", "plot_search", "resolve_config",
           "run_search", "search_study", "summarize"]
