"""Re-scoring the top trials with fresh proxy seeds before the export (fake proxy)."""

from __future__ import annotations

import argparse

import numpy as np
import optuna
import pytest
from fake_proxy import FakeProxy, fast_tmp_dir

from autoloss import search_cli
from autoloss.losses import load_loss
from autoloss.rescore import rescore_seeds, rescore_summary, rescore_top
from autoloss.search import SearchConfig, make_storage, open_study, run_search

FACTORY = "fake_proxy:FakeProxy"


@pytest.fixture
def out():
    for path in fast_tmp_dir():
        yield path / "run"


def search(out, **kw):
    kw = {"trials": 6, "sampler": "random", "plots": False, "proxy_factory": FACTORY, **kw}
    result = run_search(SearchConfig(out=out, **kw), progress=False)
    study = optuna.load_study(study_name=result.study, storage=make_storage(result.storage))
    return result, study


def test_rescoring_exports_the_best_mean_of_fresh_seeds(out, tmp_path):
    result, study = search(out, rescore_top=3, rescore_seeds=2)
    summary = rescore_summary(study)
    assert summary["seeds"] == rescore_seeds(0, 2) == [1, 2]
    top = sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                 key=lambda t: -t.value)[:3]
    assert sorted(summary["trials"]) == sorted(str(t.number) for t in top)
    # by hand: the fake proxy's mIoU of each top trial's loss with seeds 1 and 2
    fake = FakeProxy({}, cache_dir=tmp_path)
    means = {t.number: np.mean([fake.metrics_of(load_loss(t.user_attrs["loss"]), s)["miou"]
                                for s in (1, 2)]) for t in top}
    chosen = max(means, key=means.get)
    assert summary["chosen"] == chosen
    assert summary["trials"][str(chosen)]["mean"] == pytest.approx(means[chosen])
    assert summary["baseline"]["mean"] == pytest.approx(
        np.mean([fake.metrics_of(load_loss("cross_entropy"), s)["miou"] for s in (1, 2)]))
    prov = load_loss(result.loss_path).provenance
    assert prov["trial"] == chosen and prov["rescore"]["chosen"] == chosen
    assert prov["rescored_score"] == pytest.approx(means[chosen])
    text = (out / "summary.md").read_text()
    assert "## Re-scoring: the top 3 trials with proxy seeds [1, 2]" in text
    assert f"| {chosen} (exported) |" in text


def test_rescoring_off_exports_the_single_best_trial(out):
    result, study = search(out, rescore_top=0)
    assert rescore_summary(study) is None
    assert load_loss(result.loss_path).provenance["trial"] == study.best_trial.number
    assert "Re-scoring" not in (out / "summary.md").read_text()


class Interrupted(Exception):
    """Stands for a Ctrl-C in the middle of the re-scoring."""


def test_interrupted_rescoring_resumes_without_redoing_scores(out):
    _, study = search(out, trials=4, rescore_top=0)
    calls, interrupt = [], [True]

    def run_proxy(loss, seed):
        calls.append(seed)
        if len(calls) == 3 and interrupt.pop():
            raise Interrupted
        return 0.5 + 0.01 * seed

    with pytest.raises(Interrupted):
        rescore_top(study, run_proxy, baseline=load_loss("cross_entropy"), top=2, seeds=[1, 2])
    assert rescore_summary(study) is None  # not finished: the export does not use it
    calls.clear()
    interrupt.append(False)
    summary = rescore_top(study, run_proxy, baseline=load_loss("cross_entropy"), top=2,
                          seeds=[1, 2])
    assert len(calls) == 3 * 2 - 2  # 2 trials + CE, 2 seeds each; 2 were stored before
    assert summary["chosen"] is not None and rescore_summary(study)["chosen"] == summary["chosen"]
    # a study with more trials than when it was re-scored: the stale choice is not used
    search(out, trials=6, rescore_top=0)
    assert rescore_summary(open_study(f"sqlite:///{out / 'study.db'}")) is None


def test_export_command_rescores(out, tmp_path, capsys):
    search(out, trials=4, rescore_top=0)
    parser = argparse.ArgumentParser()
    search_cli.register(parser.add_subparsers())
    target = tmp_path / "best.yaml"
    args = parser.parse_args(["export", str(out), "--rescore-top", "2", "--rescore-seeds", "2",
                              "--out", str(target)])
    assert args.func(args) == 0
    prov = load_loss(target).provenance
    assert prov["rescore"]["top"] == 2 and prov["rescore"]["seeds"] == [1, 2]
    assert "re-scoring trial" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--trial exports that trial"):
        parser.parse_args(["export", str(out), "--trial", "1", "--rescore-top", "2"]).func(
            parser.parse_args(["export", str(out), "--trial", "1", "--rescore-top", "2"]))
