"""The search loop with a fake proxy: resume, references, failures, stale trials, workers,
targets, samplers, experiment files and the CLI."""

from __future__ import annotations

import argparse
import os
import sqlite3
import warnings
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from fake_proxy import FakeProxy, fast_tmp_dir
from optuna.trial import TrialState

from autoloss.errors import InvalidValueError
from autoloss.search.config import SearchConfig, load_experiment, parse_target, resolve_config
from autoloss.search.plan import plan_search
from autoloss.search.run import run_search
from autoloss.search.samplers import SAMPLERS
from autoloss.search.storage import make_storage, open_study

FACTORY = "fake_proxy:FakeProxy"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def out():
    """A run folder (on tmpfs when there is one)."""
    for path in fast_tmp_dir():
        yield path / "run"


def config(out: Path, **kw) -> SearchConfig:
    kw.setdefault("sampler", "random")
    kw.setdefault("plots", False)  # drawing costs ~2 s; test_search_draws_its_plots checks it
    kw.setdefault("rescore_top", 0)  # re-scoring runs more proxies; tests/test_rescore.py
    kw.setdefault("cache", out / "cache")  # the fake proxy logs its runs there
    return SearchConfig(out=out, proxy_factory=FACTORY, **kw)


def _proxy_options(cfg: SearchConfig) -> dict:
    return plan_search(cfg).proxy_options


def load(result) -> optuna.Study:
    return optuna.load_study(study_name=result.study, storage=make_storage(result.storage))


def runs(out: Path, kind: str) -> int:
    log = out / "cache" / "runs.log"
    return sum(1 for line in log.read_text().splitlines() if line.startswith(kind))


def test_resume_reaches_count_without_losing_trials(out):
    first = run_search(config(out, trials=4), progress=False)
    study = load(first)
    before = {t.number: (t.params, t.state, t.values) for t in study.trials}
    assert len(before) == 4
    second = run_search(config(out, trials=7), progress=False)
    study = load(second)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    assert sorted(t.number for t in finished) == list(range(7))
    assert len(study.trials) == 7
    for t in study.trials[:4]:
        assert (t.params, t.state, t.values) == before[t.number]
    # references enqueued once (new study only), the CE baseline computed once
    refs = [t.user_attrs["reference"] for t in study.trials if "reference" in t.user_attrs]
    assert refs == ["identity", "paper:asl-voc-miou"]
    assert [t.number for t in study.trials if "reference" in t.user_attrs] == [0, 1]
    assert runs(out, "baseline") == 1
    assert study.user_attrs["baseline_ce"] == pytest.approx(0.75, abs=2e-3)
    # a third run with the count reached runs nothing
    third = run_search(config(out, trials=7), progress=False)
    assert len(load(third).trials) == 7
    assert second.counts == third.counts


def test_identity_reference_is_the_plain_surrogate(out):
    result = run_search(config(out, trials=2), progress=False)
    identity = load(result).trials[0]
    assert identity.user_attrs["reference"] == "identity"
    # h(0.5) = 0.5 for the identity: the fake scores 0.8 - (0.5 - 0.7)^2 (+ tiny noise)
    assert identity.value == pytest.approx(0.76, abs=2e-3)
    spec = identity.user_attrs["loss"]
    assert spec["name"] == "surrogate" and spec["metric"] == "miou"
    assert spec["curves"]["inter"]["points"] == pytest.approx([0.25, 0.25, 0.5, 0.5, 0.75, 0.75])


def test_crash_is_failed_with_reason_and_study_goes_on(out):
    # random curves with h(0.5) above 0.55 crash (the identity has 0.5 and survives)
    result = run_search(config(out, trials=8, proxy={"crash_above": 0.55}), progress=False)
    study = load(result)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed, "some random trials should have crashed"
    assert all("RuntimeError: fake crash" in t.user_attrs["fail_reason"] for t in failed)
    assert all(t.user_attrs["loss"]["name"] == "surrogate" for t in failed)
    assert len(study.trials) == 8 and result.counts["fail"] == len(failed)
    summary = (out / "summary.md").read_text()
    assert "## Failed trials" in summary and "fake crash" in summary


def test_nonfinite_loss_is_failed_with_reason(out):
    result = run_search(config(out, trials=5, proxy={"nonfinite_below": 0.6}), progress=False)
    study = load(result)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) >= 1  # the identity (h(0.5) = 0.5) at least
    assert all(t.user_attrs["fail_reason"].startswith("non-finite loss: NonFiniteLossError")
               for t in failed)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED,
                                        TrialState.FAIL))) == 5


def test_stale_running_trial_is_failed_and_count_still_reached(out):
    result = run_search(config(out, trials=3), progress=False)
    storage = make_storage(result.storage)
    study = optuna.load_study(study_name=result.study, storage=storage)
    # a worker that died mid-trial: a RUNNING trial whose last heartbeat is an hour old
    trial_id = storage.create_new_trial(study._study_id)
    storage.set_trial_param(trial_id, "inter.0", 0.3,
                            optuna.distributions.FloatDistribution(0.0, 1.0))
    storage.record_heartbeat(trial_id)
    db = sqlite3.connect(out / "study.db")
    db.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour')")
    db.commit()
    db.close()
    result = run_search(config(out, trials=5), progress=False)
    study = load(result)
    stale = study.trials[3]
    assert stale.state == TrialState.FAIL
    assert "fail_reason" not in stale.user_attrs  # reported as "interrupted" in the summary
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    # the interrupted trial does not count toward trials=5: 5 others finished
    assert len(states) == 6 and sum(s in (TrialState.COMPLETE, TrialState.PRUNED)
                                    for s in states) == 5
    retried = study.trials[4]  # re-queued once with the same parameters
    assert retried.system_attrs.get("failed_trial") == 3
    assert retried.params["inter.0"] == 0.3
    assert "interrupted" in (out / "summary.md").read_text()


def test_two_workers_share_one_sqlite_study(out):
    result = run_search(config(out, trials=6, workers=2, proxy={"sleep": 0.02}), progress=False)
    study = load(result)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
               for t in study.trials)
    assert all("metrics" in t.user_attrs for t in study.trials)
    pids = {line.split()[1] for line in (out / "cache" / "runs.log").read_text().splitlines()
            if line.startswith("surrogate")}
    # the two queued references ran here, the 4 other trials in the two workers
    assert str(os.getpid()) in pids and len(pids - {str(os.getpid())}) == 2
    assert (out / "best_loss.yaml").is_file()


def test_weighted_sum_target(out):
    result = run_search(config(out, metric="miou+0.5*bf1", trials=3), progress=False)
    study = load(result)
    t = study.trials[0]
    assert t.user_attrs["reference"] == "identity"
    metrics = t.user_attrs["metrics"]
    assert t.value == pytest.approx(metrics["miou"] + 0.5 * metrics["bf1"])
    parts = t.user_attrs["loss"]["combine"]
    assert [(p["metric"], p["weight"]) for p in parts] == [("miou", 1.0), ("bf1", 0.5)]
    assert any(n.startswith("bf1.edge_or_x.") for n in t.params)


def test_multi_objective_pareto_front(out):
    cfg = config(out, metric=["miou", "bf1"], multi_objective=True, trials=6)
    result = run_search(cfg, progress=False)
    study = load(result)
    assert len(study.directions) == 2
    assert isinstance(result.best_value, list) and len(result.best_value) == 2
    assert isinstance(result.baseline_ce, list)
    assert "mix.miou" in study.trials[1].params
    assert "Pareto front" in (out / "summary.md").read_text()
    assert (out / "best_loss.yaml").is_file()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_run(out, sampler):
    """Every sampler name the CLI and files accept builds a sampler that finishes a search."""
    if sampler == "cmaes":
        pytest.importorskip("cmaes")
    cfg = config(out, trials=4, sampler=sampler, ppo={"generation_size": 2})
    result = run_search(cfg, progress=False)
    assert sum(result.counts.values()) == 4


def test_cmaes_missing_package_is_a_clear_error(out, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cmaes", None)
    with pytest.raises(ImportError, match="pip install cmaes"):
        run_search(config(out, trials=2, sampler="cmaes"), progress=False)


def test_pruner_prunes_bad_trials_and_can_be_off(out):
    # random sampling, 15 trials after the pruner's 5 startup ones: about a quarter of them are
    # in the bottom quarter (no pruning at all: 0.75^15, about 1 %, for an unlucky seed)
    result = run_search(config(out, trials=20, seed=3), progress=False)
    assert result.counts["pruned"] > 0
    off = run_search(config(out.parent / "off", trials=20, seed=3, pruner=False), progress=False)
    assert off.counts["pruned"] == 0


def test_pruner_stops_only_the_bottom_quarter(out):
    """With 8 completed trials scoring 0..7 at the first evaluation, a trial at 1.0 (bottom
    quarter) is pruned there and one at 2.5 is not; the last evaluation never prunes."""
    study = optuna.create_study(direction="maximize",
                                pruner=plan_search(config(out)).make_pruner([20, 40]))
    for value in range(8):
        trial = study.ask()
        trial.report(float(value), 20)
        study.tell(trial, float(value))
    low, middle = study.ask(), study.ask()
    low.report(1.0, 20)
    middle.report(2.5, 20)
    assert low.should_prune() and not middle.should_prune()


def test_journal_storage_resumes(out):
    storage = f"journal:{out / 'journal.log'}"
    run_search(config(out, trials=3, storage=storage), progress=False)
    result = run_search(config(out, trials=5, storage=storage), progress=False)
    assert sorted(t.number for t in open_study(storage).trials) == list(range(5))
    assert result.storage == storage


def test_resume_with_another_metric_is_refused(out):
    run_search(config(out, trials=2, study="s"), progress=False)
    with pytest.raises(ValueError, match="metric"):
        run_search(config(out, trials=3, study="s", metric="macc"), progress=False)


def test_resume_with_other_proxy_settings_is_refused(out):
    run_search(config(out, trials=2, study="s", proxy={"sleep": 0.0}), progress=False)
    with pytest.raises(ValueError, match="proxy"):
        run_search(config(out, trials=3, study="s", proxy={"sleep": 0.001}), progress=False)


def _miou_space_pair(folder: Path, line: str, changed: str) -> tuple[Path, Path]:
    """The shipped miou space as a file, and a copy with ``line`` replaced by ``changed``."""
    text = (Path(__file__).resolve().parents[1] / "autoloss" / "search_spaces" / "miou.yaml"
            ).read_text()
    assert line in text
    (folder / "a.yaml").write_text(text)
    (folder / "b.yaml").write_text(text.replace(line, changed))
    return folder / "a.yaml", folder / "b.yaml"


def test_a_search_uses_the_shipped_space_wherever_it_starts(out, tmp_path, monkeypatch):
    """A ``search_spaces/miou.yaml`` in the folder a search starts in is not read (one warning
    says so): the metric's shipped space is searched; the same file named by path is used."""
    shipped, _ = _miou_space_pair(tmp_path, "classes: present", "classes: all")
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "b.yaml").rename(tmp_path / "search_spaces" / "miou.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"metric 'miou': the built-in search space is used, not "
                      r"'search_spaces/miou.yaml' of the working folder \(name a space by path"):
        first = run_search(config(out / "a", trials=2), progress=False)
    assert load(first).user_attrs["identity"]["space_options"] == {"classes": "present"}
    named = run_search(config(out / "b", trials=2, space="search_spaces/miou.yaml"),
                       progress=False)
    assert load(named).user_attrs["identity"]["space_options"] == {"classes": "all"}
    assert shipped.is_file()


def test_resume_with_other_space_options_is_refused(out, tmp_path):
    """A space file whose fixed surrogate options changed (classes: present -> all) is another
    search, though its bounds are the same; a study recorded before the options were checked
    resumes and gets them recorded."""
    present, every = _miou_space_pair(tmp_path, "classes: present", "classes: all")
    first = run_search(config(out, trials=2, study="s", space=str(present)), progress=False)
    with pytest.raises(ValueError, match="space_options"):
        run_search(config(out, trials=3, study="s", space=str(every)), progress=False)
    study = load(first)
    old = {k: v for k, v in study.user_attrs["identity"].items() if k != "space_options"}
    study.set_user_attr("identity", old)
    run_search(config(out, trials=3, study="s", space=str(present)), progress=False)
    assert load(first).user_attrs["identity"]["space_options"] == {"classes": "present"}


def test_study_of_an_older_autoloss_resumes_with_a_warning(out):
    """An unversioned identity (proxy overrides only) is checked the old way and upgraded."""
    first = run_search(config(out, trials=2, study="s", proxy={"sleep": 0.0}), progress=False)
    study = load(first)
    legacy = {k: v for k, v in study.user_attrs["identity"].items() if k != "version"}
    study.set_user_attr("identity", {**legacy, "proxy": {"sleep": 0.0}})
    with pytest.warns(UserWarning, match="older autoloss"):
        result = run_search(config(out, trials=3, study="s", proxy={"sleep": 0.0}), progress=False)
    assert result.counts["complete"] + result.counts["pruned"] == 3
    assert load(result).user_attrs["identity"]["version"] == 2
    study.set_user_attr("identity", {**legacy, "proxy": {"sleep": 0.0}})
    with pytest.raises(ValueError, match="proxy"):
        run_search(config(out, trials=4, study="s", proxy={"sleep": 0.001}), progress=False)


def test_identity_holds_every_proxy_setting_but_execution_ones(out):
    """A resumed study is checked against the proxy's resolved settings (defaults included), so
    a change of autoloss's proxy defaults is caught; threads and device may change."""
    from autoloss.search.setup import identity, resolved_proxy_config
    from autoloss.train.proxy import ProxyConfig

    def plan(**options):
        return plan_search(SearchConfig(out=out, proxy=options))

    proxy = SimpleNamespace()  # autoloss's proxy: its settings are the plan's
    ident = identity(plan(steps=7, num_threads=1), proxy)
    assert ident["proxy"]["steps"] == 7 and ident["proxy"]["lr"] == ProxyConfig().lr
    assert "num_threads" not in ident["proxy"] and "device" not in ident["proxy"]
    assert identity(plan(steps=7, num_threads=2), proxy) == ident
    assert identity(plan(steps=7, lr=0.5), proxy) != ident
    assert resolved_proxy_config(plan(steps=7, num_threads=1), proxy)["num_threads"] == 1
    # a user's proxy_factory: its own config when it has one, else the overrides stand for it
    own = plan_search(SearchConfig(out=out, proxy={"steps": 7, "num_threads": 1},
                                   proxy_factory=FACTORY))
    assert resolved_proxy_config(own, proxy) == {"steps": 7, "num_threads": 1}
    config = SimpleNamespace(config=ProxyConfig.from_dict({"data": "shapes", "steps": 9}))
    assert resolved_proxy_config(own, config)["steps"] == 9


def test_default_study_and_folder_names_come_from_the_dataset_name():
    cfg = resolve_config(SearchConfig(metric="miou", data="camvid:../shared/datasets/camvid"))
    assert cfg.study == "miou-camvid" and cfg.out.name == "search-miou-camvid"
    cfg = resolve_config(SearchConfig(metric="bf1", data="npz:/data/roads.npz?num_classes=3"))
    assert cfg.study == "bf1-npz-roads.npz-num_classes-3"


def test_progress_bar_and_summary(out, capsys):
    result = run_search(config(out, trials=3), progress=True)
    captured = capsys.readouterr()
    assert "3/3" in captured.err  # tqdm writes to stderr
    summary = (out / "summary.md").read_text()
    assert "# Search summary" in summary and summary in captured.out
    for needle in ("cross-entropy baseline: 0.75", "points over cross-entropy", "## Top 3 trials",
                   "## Reference points", "wall time"):
        assert needle in summary
    assert result.loss_path == out / "best_loss.yaml"


def test_search_draws_its_plots(out):
    result = run_search(config(out, trials=8, plots=True), progress=False)
    names = {p.name for p in (result.out / "plots").iterdir()}
    assert {"curves.png", "history.png", "curves.svg", "history.svg"} <= names


def test_failed_plots_are_a_warning_not_a_lost_search(out, monkeypatch):
    import autoloss.search.run_plots

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(autoloss.search.run_plots, "plot_search", broken)
    with pytest.warns(UserWarning, match="drawing its plots failed"):
        result = run_search(config(out, trials=3, plots=True), progress=False)
    assert result.loss_path is not None and result.loss_path.is_file()


def test_prior_startup_draws_tpe_startup_trials_around_the_initial_point(out):
    from autoloss.search.samplers import prior_points, tpe_startup_trials

    cfg = config(out, trials=12, sampler="tpe", startup="prior", pruner=False)
    result = run_search(cfg, progress=False)
    trials = load(result).trials
    prior = [t for t in trials if t.user_attrs.get("startup") == "prior"]
    references = [t for t in trials if "reference" in t.user_attrs]
    assert len(prior) + len(references) == tpe_startup_trials(cfg.trials)
    space = plan_search(cfg).space
    center, bounds = space.initial_params(), space.bounds()
    for t in prior:
        assert all(bounds[k][0] <= v <= bounds[k][1] for k, v in t.params.items())
    spread = [abs(t.params[k] - center[k]) for t in prior for k in center]
    assert sum(spread) / len(spread) < 0.2  # uniform draws would average ~0.3 here
    assert prior_points(space, 3, seed=1) == prior_points(space, 3, seed=1)
    with pytest.raises(ValueError, match="startup"):
        resolve_config(config(out, startup="normal"))


def test_parse_target():
    assert parse_target("miou") == [("miou", 1.0)]
    assert parse_target("miou+0.5*bf1") == [("miou", 1.0), ("bf1", 0.5)]
    with pytest.raises(ValueError, match="NAME or WEIGHT"):
        parse_target("miou+x*bf1")
    with pytest.raises(ValueError, match="must be > 0"):
        parse_target("miou+0*bf1")


def test_config_errors(out):
    with pytest.raises(ValueError, match="did you mean 'tpe'"):
        run_search(config(out, sampler="tpee"), progress=False)
    with pytest.raises(ValueError, match="multi_objective"):
        run_search(config(out, metric=["miou", "bf1"]), progress=False)
    with pytest.raises(ValueError, match="trials"):
        run_search(config(out, trials=0), progress=False)
    with pytest.raises(ValueError, match="did you mean 'sigma'"):
        run_search(config(out, sampler="ppo", ppo={"sigm": 0.1}), progress=False)
    with pytest.raises(ValueError, match="workers must be int"):
        run_search(config(out, workers="2"), progress=False)


def test_load_experiment(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("metric: bf1\ntrials: 12\nsampler: ppo\nproxy: {steps: 50}\npruner: false\n")
    cfg = load_experiment(path)
    assert (cfg.metric, cfg.trials, cfg.sampler, cfg.proxy, cfg.pruner) == (
        "bf1", 12, "ppo", {"steps": 50}, False)
    assert cfg.out is None and cfg.study is None  # derived later, so CLI flags can change them
    cfg = resolve_config(cfg)
    assert cfg.study == "bf1-shapes" and cfg.out.name == "search-bf1-shapes"
    assert cfg.storage == f"sqlite:///{cfg.out / 'study.db'}"
    path.write_text("metrc: bf1\n")
    with pytest.raises(ValueError, match="did you mean 'metric'"):
        load_experiment(path)
    path.write_text("trials: ten\n")
    with pytest.raises(ValueError, match="trials must be int"):
        load_experiment(path)
    path.write_text("trials: [1\n")
    with pytest.raises(ValueError, match="line 2"):
        load_experiment(path)


def test_experiment_files_load():
    files = sorted((REPO / "experiments").glob("search_*.yaml"))
    assert files
    for path in files:
        load_experiment(path)


def _parser():
    from autoloss.cli.search import register

    parser = argparse.ArgumentParser(prog="autoloss")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_search_and_export(out, tmp_path, capsys, monkeypatch):
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"trials: 5\nsampler: random\nproxy_factory: {FACTORY}\n")
    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")  # what --trust-code sets: the file imports
    parser = _parser()
    args = parser.parse_args(["search", "--config", str(exp), "--trials", "3", "--out", str(out),
                              "--no-progress"])
    assert args.func(args) == 0
    study = open_study(f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3  # the explicit --trials overrides the file
    assert (out / "plots" / "history.png").is_file()  # the command draws the run's plots
    target = tmp_path / "trial1.yaml"
    args = parser.parse_args(["export", str(out), "--trial", "1", "--to", str(target)])
    assert args.func(args) == 0
    from autoloss.losses import load_loss

    assert load_loss(target).provenance["trial"] == 1
    args = parser.parse_args(["export", "--storage", f"sqlite:///{out / 'study.db'}",
                              "--out", str(tmp_path / "best.yaml")])
    assert args.func(args) == 0
    assert "best.yaml" in capsys.readouterr().out


def test_summary_names_the_command_that_ran_it(out, monkeypatch, capsys):
    from autoloss.cli.app import main

    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")
    argv = ["search", "--trials", "2", "--sampler", "random", "--proxy-factory", FACTORY,
            "--out", str(out), "--no-progress", "--no-plots", "--rescore-top", "0"]
    assert main(argv) == 0
    summary = (out / "summary.md").read_text()
    assert f"Produced by `autoloss search --trials 2 --sampler random --proxy-factory {FACTORY} " \
           f"--out {out} --no-progress --no-plots --rescore-top 0`." in summary


def test_fake_proxy_rejects_unknown_options(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        FakeProxy({"data": "shapes", "steps": 3}, cache_dir=tmp_path)


class _CountingCallback:
    """An optuna callback as MLflow's or W&B's would be (picklable for worker processes)."""

    def __init__(self, log):
        self.log = log

    def __call__(self, study, trial):
        with open(self.log, "a") as f:
            f.write(f"{trial.number} {trial.state.name} {study.metric_names}\n")


@pytest.mark.parametrize("workers", [1, 2])
def test_callbacks_see_every_trial_and_objectives_are_named(out, tmp_path, workers):
    log = tmp_path / "callback.log"
    result = run_search(config(out, trials=4, workers=workers, metric="miou+0.5*bf1"),
                        progress=False, callbacks=[_CountingCallback(log)])
    study = load(result)
    lines = log.read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == [t.number for t in study.trials]
    assert all(line.endswith("['miou+0.5*bf1']") for line in lines)
    assert study.metric_names == ["miou+0.5*bf1"] and "baseline_ce" in study.user_attrs


def test_cli_spelling_is_consistent(capsys):
    """Booleans are --x/--no-x, sizes HxW, the proxy takes train's model and device flags;
    autoloss 0.1's spellings still work once, with a deprecation message."""
    from autoloss.cli.app import build_parser
    from autoloss.cli.search import _config_from_args

    parser = build_parser()

    def cfg(*argv):
        return _config_from_args(parser.parse_args(["search", *argv]))

    assert cfg().pruner is True and cfg("--no-pruner").pruner is False
    assert cfg("--pruner").pruner is True
    capsys.readouterr()
    assert cfg("--pruner", "off").pruner is False
    assert "--pruner off is deprecated" in capsys.readouterr().err
    proxy = cfg("--proxy-crop", "48x64", "--width", "8", "--depth", "2", "--tol", "2",
                "--device", "cpu", "--num-threads", "1").proxy
    assert proxy == {"crop": (48, 64), "width": 8, "depth": 2, "tol": 2, "device": "cpu",
                     "num_threads": 1}
    assert cfg("--proxy-crop", "32").proxy == {"crop": (32, 32)}
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--proxy-crop", "big"])
    args = parser.parse_args(["check", "soft-miou", "--cases", "3"])
    assert args.cases == 3 and args.trials is None
    assert parser.parse_args(["export", "run", "--to", "x.yaml"]).to == "x.yaml"


def test_a_finished_search_reruns_without_preparing_the_proxy(out, monkeypatch):
    """Rerunning a complete study (to redraw, re-export, or on another machine without the
    warm start) trains nothing: the storage is opened and checked before any proxy work."""
    import fake_proxy

    run_search(config(out, trials=3), progress=False)
    calls = []
    monkeypatch.setattr(fake_proxy.FakeProxy, "prepare", lambda self: calls.append(1))
    result = run_search(config(out, trials=3), progress=False)
    assert calls == [] and result.loss_path is not None


def test_biou_proxy_scores_biou_as_its_surrogate_defines_it(out):
    """The BIoU space's surrogate leaves class 0's boundaries out (drop_bg); the proxy's reward
    BIoU does the same, so a trial's loss and its score agree on what BIoU is."""
    import torch

    from autoloss.core.metrics import evaluate as evaluate_labels
    from autoloss.data import load_dataset
    from autoloss.train.trainer import evaluate

    assert _proxy_options(SearchConfig(metric="biou"))["drop_bg"] is True
    assert "drop_bg" not in _proxy_options(SearchConfig(metric="miou"))
    assert _proxy_options(SearchConfig(metric="miou+0.5*biou"))["drop_bg"]
    with pytest.raises(InvalidValueError, match="proxy drop_bg=False disagrees with the search "
                       "space's drop_bg=True"):  # the reward would score another BIoU
        _proxy_options(SearchConfig(metric="biou", proxy={"drop_bg": False}))
    assert _proxy_options(SearchConfig(metric="biou", proxy={"drop_bg": True}))[
        "drop_bg"]  # agreeing with the space is allowed
    data = load_dataset("shapes?n=8&size=32", split="val")

    class Constant(torch.nn.Module):  # predicts class 1 everywhere
        def forward(self, x):
            logits = torch.zeros(x.shape[0], data.num_classes, *x.shape[2:])
            logits[:, 1] = 1.0
            return logits

    labels = torch.as_tensor(data.arrays()[1])
    pred = torch.ones_like(labels)
    scores = [evaluate(Constant(), data, metrics=["biou"], drop_bg=d)["biou"] for d in (False, True)]
    assert scores[0] != pytest.approx(scores[1], abs=1e-6)  # the option matters on this data
    for drop_bg in (False, True):
        expected = evaluate_labels(pred, labels, num_classes=data.num_classes,
                                   ignore_index=data.ignore_index, drop_bg=drop_bg,
                                   metrics=["biou"])["biou"]
        got = evaluate(Constant(), data, metrics=["biou"], drop_bg=drop_bg)["biou"]
        assert got == pytest.approx(expected, abs=1e-12)


def test_the_proxy_scores_with_the_tolerance_of_the_searched_space(tmp_path):
    """A space whose surrogate matches boundaries within 3 px makes the proxy's reward BF1 use 3
    px too (one MetricOptions for both); the default tolerance adds nothing to the options."""
    import dataclasses

    from autoloss.core.metrics import MetricOptions
    from autoloss.search.spaces import SPACES_DIR

    text = (SPACES_DIR / "bf1.yaml").read_text().replace("tol: 5", "tol: 3")
    assert "tol: 3" in text
    space = tmp_path / "bf1_tol3.yaml"
    space.write_text(text)
    cfg = SearchConfig(metric="bf1", space=str(space), out=tmp_path / "o")
    plan = plan_search(cfg)
    assert plan.metric_options == MetricOptions(tol=3, drop_bg=False)
    assert plan.proxy_options["tol"] == 3
    assert plan.proxy_config.tol == 3 and plan.proxy_config.drop_bg is False
    proxy = plan.make_proxy()
    assert proxy.config.tol == 3 and proxy.config.drop_bg is False
    assert "tol" not in _proxy_options(SearchConfig(metric="bf1", out=tmp_path))
    with pytest.raises(InvalidValueError, match="proxy tol=5 disagrees"):
        plan_search(dataclasses.replace(cfg, proxy={"tol": 5}))


def test_the_plan_resolves_target_space_and_proxy_once(out):
    """A config is resolved once into a plan: the parsed target, the typed space, the proxy's
    checked config; workers get the same plan (it pickles)."""
    import pickle

    from autoloss.search.space_types import CompositeSpace, SearchSpace

    plan = plan_search(SearchConfig(metric="miou+0.5*bf1", out=out))
    assert plan.targets == (("miou", 1.0), ("bf1", 0.5))
    assert isinstance(plan.space, CompositeSpace)
    assert plan.objective_values({"miou": 0.5, "bf1": 0.4}) == [pytest.approx(0.7)]
    assert plan.proxy_config is not None and plan.proxy_config.data == "shapes"
    assert pickle.loads(pickle.dumps(plan)) == plan
    single = plan_search(SearchConfig(metric="miou", out=out))
    assert isinstance(single.space, SearchSpace) and single.start == single.space.initial_params()
    multi = plan_search(SearchConfig(metric=["miou", "bf1"], multi_objective=True, out=out,
                                     sampler="random"))
    assert multi.n_objectives == 2
    assert multi.objective_values({"miou": 0.5, "bf1": 0.4}) == [0.5, 0.4]
    assert isinstance(multi.make_pruner([10, 20]), optuna.pruners.NopPruner)
    with pytest.raises(InvalidValueError, match="the proxy reported no 'bf1'"):
        plan.objective_values({"miou": 0.5})
    assert plan_search(config(out)).proxy_config is None  # a factory's options are its own


def test_a_misspelt_proxy_option_fails_before_anything_is_written(out):
    """The plan validates autoloss's proxy options first: a typo is one clear error, and the
    run folder gets no run.json (nor study) that would name a search that never started."""
    with pytest.raises(InvalidValueError, match=r"unknown proxy option 'stepz'; did you mean "
                       r"'steps'\?"):
        run_search(SearchConfig(out=out, trials=2, proxy={"stepz": 5}, plots=False),
                   progress=False)
    assert not (out / "run.json").exists() and not (out / "study.db").exists()
    run_search(config(out, trials=2), progress=False)
    kept = sorted(p.name for p in out.iterdir())
    with pytest.raises(InvalidValueError, match="unknown proxy option 'stepz'"):
        run_search(SearchConfig(out=out, trials=2, proxy={"stepz": 5}, plots=False),
                   progress=False, overwrite=True)  # nor deletes the search it would replace
    assert sorted(p.name for p in out.iterdir()) == kept


def test_a_study_recorded_before_drop_bg_existed_resumes(out):
    """Identities recorded before the proxy had ``drop_bg`` match the value they ran with."""
    from autoloss.search.setup import check_identity

    plan = plan_search(SearchConfig(out=out))
    ident = {"version": 2, "metric": "miou", "data": "shapes", "params": {},
             "proxy": {"steps": 60, "drop_bg": False}}
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("identity", {**ident, "proxy": {"steps": 60}})
    check_identity(plan, study, ident)  # no error
    with pytest.raises(ValueError, match="proxy"):
        check_identity(plan, study, {**ident, "proxy": {"steps": 60, "drop_bg": True}})


def test_search_help_shows_the_defaults_of_the_configs(capsys):
    """Each default in ``autoloss search --help`` is read from ProxyConfig / SearchConfig, the
    one place it is defined, so the help cannot drift from what runs."""
    import re

    from autoloss.cli.app import main
    from autoloss.train.proxy import ProxyConfig

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    proxy, search = ProxyConfig(), SearchConfig()
    for flag, value in [("--proxy-steps", proxy.steps), ("--width", proxy.width),
                        ("--depth", proxy.depth), ("--proxy-batch-size", proxy.batch_size),
                        ("--proxy-eval-every", proxy.eval_every), ("--tol", proxy.tol),
                        ("--trials", search.trials), ("--workers", search.workers),
                        ("--seed", search.seed)]:
        entry = re.search(re.escape(flag) + r" [A-Z_]+ (.*?)(?= --|$)", text)
        assert entry and f"(default {value})" in entry.group(1), (flag, value)


class _RecordingSampler(optuna.samplers.RandomSampler):
    """A user's own sampler (picklable, module level): random, and it says it was used."""

    def sample_independent(self, study, trial, name, distribution):
        # the sampler sees a FrozenTrial: write to the storage
        study._storage.set_trial_user_attr(trial._trial_id, "my_sampler", True)
        return super().sample_independent(study, trial, name, distribution)


@pytest.mark.parametrize("workers", [1, 2])
def test_run_search_takes_a_sampler_instance_and_a_proxy_factory(out, workers):
    """Plug-ins by type: a sampler instance and a factory callable instead of their names; the
    study records them by name, and an export re-scores with the recorded factory."""
    cfg = SearchConfig(out=out, trials=4, workers=workers, sampler=_RecordingSampler(seed=3),
                       proxy_factory=FakeProxy, plots=False, rescore_top=1, rescore_seeds=1,
                       cache=out / "cache", enqueue_references=False)
    result = run_search(cfg, progress=False)
    study = load(result)
    sampled = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(sampled) == 4 and all(t.user_attrs.get("my_sampler") for t in sampled)
    config = study.user_attrs["config"]
    assert config["sampler"] == f"{__name__}:_RecordingSampler"
    assert config["proxy_factory"] == "fake_proxy:FakeProxy"
    assert result.loss_path is not None and result.gain is not None
    if workers == 1:  # an export re-scores with the recorded factory (the sampler is not needed)
        parser = _parser()
        args = parser.parse_args(["export", str(out), "--rescore-top", "2", "--rescore-seeds",
                                  "1", "--to", str(out / "again.yaml")])
        assert args.func(args) == 0
        from autoloss.losses import load_loss

        assert load_loss(out / "again.yaml").provenance["rescore"]["top"] == 2


def test_a_sampler_that_is_not_one_is_refused(out):
    with pytest.raises(TypeError, match="sampler must be one of .* or an optuna sampler instance, "
                                        "but got dict"):
        run_search(config(out, sampler={"name": "tpe"}), progress=False)
    with pytest.raises(TypeError, match="proxy_factory must be a callable, its 'module:attr' "
                                        "name or None, but got int"):
        run_search(SearchConfig(out=out, proxy_factory=3), progress=False)


def test_resume_with_another_seed_or_cross_entropy_weight_is_refused(out, tmp_path):
    """The identity holds the whole space (a fixed cross-entropy weight changes every trial's
    loss, with the same bounds) and the proxy seed every trial trains with; a study recorded
    before they were checked resumes and gets them recorded, with its digest."""
    from autoloss.search.setup import identity_digest

    plain, with_ce = _miou_space_pair(tmp_path, "ce_weight: {fixed: 0.0}", "ce_weight: {fixed: 0.5}")
    first = run_search(config(out, trials=2, study="s", space=str(plain)), progress=False)
    with pytest.raises(ValueError, match=r"other \['space'\]"):
        run_search(config(out, trials=3, study="s", space=str(with_ce)), progress=False)
    with pytest.raises(ValueError, match=r"other \['seed'\]"):
        run_search(config(out, trials=3, study="s", space=str(plain), seed=1), progress=False)
    study = load(first)
    ident = study.user_attrs["identity"]
    assert study.user_attrs["identity_digest"] == identity_digest(ident)
    study.set_user_attr("identity", {k: v for k, v in ident.items() if k not in ("space", "seed")})
    run_search(config(out, trials=3, study="s", space=str(plain)), progress=False)
    assert load(first).user_attrs["identity"] == ident


def test_search_study_only_searches_and_finish_run_works_from_memory(out, monkeypatch):
    """search_study runs the trials and writes nothing but run.json; finish_run re-scores,
    exports, summarises and plots from the objects it holds, without reopening the study."""
    import autoloss.search.run_plots
    from autoloss.search.run import finish_run, search_study

    run = search_study(config(out, trials=3, plots=True), progress=False)
    folder = run.folder
    assert len([t for t in run.study.trials if t.state.is_finished()]) == 3
    assert not (folder.loss_path.exists() or folder.summary_path.exists()
                or folder.plots_dir.exists())

    def reopened(*args, **kwargs):
        raise AssertionError("the study was reopened from the folder")

    monkeypatch.setattr(autoloss.search.run_plots, "open_run_study", reopened)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a failed plot would warn
        result = finish_run(run, progress=False)
    assert result.loss_path == folder.loss_path and folder.loss_path.is_file()
    assert folder.summary_path.is_file()
    assert (folder.plots_dir / "curves.png").is_file()
    assert (folder.plots_dir / "history.png").is_file()


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_an_interrupted_reference_trial_runs_again_on_resume(out, sampler):
    """SIGTERM during trial 0 (the identity, the search's control), then the same search
    again: the identity is queued again and runs, it is not left failed while other trials
    fill the budget (issue 26, item 7)."""
    cfg = config(out, trials=5, sampler=sampler, proxy={"interrupt_once": True})
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, progress=False)
    stopped = load(SimpleNamespace(study="miou-shapes", storage=f"sqlite:///{out / 'study.db'}"))
    assert stopped.trials[0].user_attrs["reference"] == "identity"
    assert stopped.trials[0].state == TrialState.FAIL
    result = run_search(cfg, progress=False)
    study = load(result)
    refs = {t.user_attrs["reference"]: t.state for t in study.trials
            if "reference" in t.user_attrs and t.state != TrialState.FAIL}
    assert refs == {"identity": TrialState.COMPLETE, "paper:asl-voc-miou": TrialState.COMPLETE}
    assert result.counts["complete"] == 5
    assert "| identity | 0 | FAIL" in (out / "summary.md").read_text()  # the stopped one, kept
    run_search(cfg, progress=False)  # once it ran, a rerun queues nothing
    assert len(load(result).trials) == len(study.trials)


def _cli_search(out: Path, *argv: str) -> list[str]:
    return ["search", "--out", str(out), "--data", "shapes", "--trials", "2", "--sampler",
            "random", "--rescore-top", "0", "--no-plots", "--no-progress", "--proxy-factory",
            FACTORY, "--cache", str(out.parent / "cache"), *argv]


def test_a_run_folder_holds_one_search(out, capsys, monkeypatch):
    """--out of a miou search reused with another target (or study name) is refused naming what
    differs (exit 2); its outputs are untouched; --overwrite starts over (issue 26, item 2)."""
    from autoloss.cli.app import main

    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")
    assert main(_cli_search(out, "--metric", "miou")) == 0
    before = {name: (out / name).read_bytes() for name in ("run.json", "summary.md",
                                                          "best_loss.yaml", "study.db")}
    capsys.readouterr()
    for argv in (("--metric", "bf1"), ("--metric", "miou", "--study", "other")):
        assert main(_cli_search(out, *argv)) == 2
        err = capsys.readouterr().err
        assert "holds another search: study 'miou-shapes'" in err and "--overwrite" in err
        assert len(err.strip().splitlines()) == 1
    assert {name: (out / name).read_bytes() for name in before} == before
    assert main(_cli_search(out, "--metric", "bf1", "--overwrite")) == 0
    study = optuna.load_study(study_name="bf1-shapes", storage=f"sqlite:///{out / 'study.db'}")
    assert optuna.get_all_study_names(f"sqlite:///{out / 'study.db'}") == ["bf1-shapes"]
    assert len(study.trials) == 2
    assert "bf1" in (out / "summary.md").read_text()


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt"])
def test_a_run_folder_whose_study_file_is_gone_is_refused(out, capsys, monkeypatch, damage):
    """A missing, 0-byte or garbage study.db beside run.json does not start a new search that
    replaces the old outputs: refused naming the file (exit 2); --overwrite starts over."""
    from autoloss.cli.app import main

    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")
    assert main(_cli_search(out, "--metric", "miou")) == 0
    db = out / "study.db"
    if damage == "missing":
        db.unlink()
    else:
        db.write_bytes(b"" if damage == "empty" else b"garbage " * 100)
    summary = (out / "summary.md").read_bytes()
    capsys.readouterr()
    assert main(_cli_search(out, "--metric", "miou")) == 2
    err = capsys.readouterr().err
    said = {"missing": "is missing", "empty": "is empty (0 bytes)",
            "corrupt": "is not an SQLite database"}[damage]
    assert f"{str(db)!r}, which {said}" in err and "--overwrite" in err
    assert (out / "summary.md").read_bytes() == summary
    assert main(_cli_search(out, "--metric", "miou", "--overwrite")) == 0
    assert len(load(SimpleNamespace(study="miou-shapes", storage=f"sqlite:///{db}")).trials) == 2


def test_a_metric_named_twice_is_refused(out):
    """--metric miou,miou is not a two-objective search of one metric (issue 26, item 13)."""
    with pytest.raises(InvalidValueError, match=r"metric names \['miou'\] more than once"):
        resolve_config(config(out, metric=["miou", "miou"], multi_objective=True))


def test_a_reference_queued_twice_runs_once(out):
    """Two processes that both found the study unprepared (its creator stalled) queue the first
    trials twice; only the first copy of each reference point runs, the later ones are
    discarded (no wait has to be long enough for the creator; issue 26, item 12)."""
    first = run_search(config(out, trials=2), progress=False)
    study = load(first)
    identity = study.trials[0]
    assert identity.user_attrs["reference"] == "identity"
    study.enqueue_trial(identity.params, user_attrs={"reference": "identity"})
    result = run_search(config(out, trials=3), progress=False)
    study = load(result)
    copy = study.trials[2]
    assert copy.user_attrs["reference"] == "identity" and copy.state == TrialState.FAIL
    assert copy.user_attrs["discarded"] == "a copy of reference trial 0"
    assert result.counts["complete"] == 3 and result.counts["fail"] == 0
    ran = [t.user_attrs.get("reference") for t in study.trials if "discarded" not in t.user_attrs]
    assert ran.count("identity") == 1
