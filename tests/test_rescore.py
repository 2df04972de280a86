"""Re-scoring the top trials with fresh proxy seeds before the export (fake proxy)."""

from __future__ import annotations

import argparse

import numpy as np
import optuna
import pytest
from fake_proxy import FakeProxy, fast_tmp_dir

from autoloss.cli import search as search_cli
from autoloss.losses import load_loss
from autoloss.search.rescore import gain_line, rescore_seeds, rescore_summary, rescore_top, rescored_gain
from autoloss.search.run import SearchConfig, make_storage, open_study, run_search
from autoloss.utils.stats import paired_difference

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
    # the gain: the export minus cross-entropy, paired by re-scoring seed, in the summary and
    # the result
    gain = rescored_gain(summary)
    values = dict(zip([1, 2], summary["trials"][str(chosen)]["values"]))
    expected = paired_difference(values, dict(zip([1, 2], summary["baseline"]["values"])))
    assert (gain.mean, gain.low, gain.high, gain.n) == pytest.approx(
        (expected.mean, expected.low, expected.high, 2))
    assert result.gain == gain_line(summary)
    assert f"**Gain over cross-entropy:** {result.gain}." in text
    assert f"{100 * gain.mean:+.2f} points" in result.gain and "best of 3" in result.gain


def _summary(values, base, top=1):
    done = [b for b in base if b is not None]
    std = float(np.std(done, ddof=1)) if len(done) > 1 else None
    return {"seeds": [1, 2, 3], "top": top, "chosen": 4, "trials": {"4": {"values": values}},
            "baseline": {"values": base, "std": std}}


def test_gain_line_says_whether_the_gain_is_beyond_the_seed_noise():
    beyond = gain_line(_summary([0.60, 0.62, 0.61], [0.55, 0.56, 0.555]))
    assert beyond.startswith("trial 4 vs cross-entropy, paired over proxy seeds 1, 2, 3: +5.50 "
                             "points, 95 % interval [")
    assert "3/3 seeds; cross-entropy's seed std 0.50: beyond the seed noise" in beyond
    assert "chosen as the best" not in beyond  # top 1: the seeds did not select it
    within = gain_line(_summary([0.56, 0.54, 0.57], [0.55, 0.56, 0.555], top=5))
    assert "within the seed noise: not a demonstrated gain" in within
    assert "best of 5 on these seeds" in within
    one = gain_line({**_summary([0.6, None, None], [0.5, None, None]), "seeds": [1, 2, 3]})
    assert "+10.00 points (one seed: no interval)" in one
    assert gain_line({**_summary([0.6] * 3, [0.5] * 3), "baseline": None}) is None


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
