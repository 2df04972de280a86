"""Re-scoring the top trials with fresh proxy seeds before the export (fake proxy)."""

from __future__ import annotations

import argparse

import numpy as np
import optuna
import pytest
from fake_proxy import FakeProxy, curve_value, fast_tmp_dir

from autoloss.cli import search as search_cli
from autoloss.losses import SurrogateLoss, load_loss
from autoloss.search.config import SearchConfig
from autoloss.search.rescore import (
    gain_line,
    identity_gain_line,
    rescore_seeds,
    rescore_summary,
    rescore_top,
    rescored_gain,
    searched_gain,
)
from autoloss.search.run import run_search
from autoloss.search.storage import make_storage, open_study
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
    result, study = search(out, rescore_top=3, rescore_seeds=2, export_rule="best-mean")
    summary = rescore_summary(study)
    assert summary["seeds"] == rescore_seeds(0, 2) == [1, 2]
    top = sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                 key=lambda t: -t.value)[:3]
    # the top trials and every reference point (identity, published curves) are re-scored
    refs = [t for t in study.trials if "reference" in t.user_attrs]
    assert {t.user_attrs["reference"] for t in refs} >= {"identity"}
    assert sorted(summary["trials"]) == sorted({str(t.number) for t in [*top, *refs]})
    assert summary["references"] == {str(t.number): t.user_attrs["reference"] for t in refs}
    # by hand: the fake proxy's mIoU of each re-scored trial's loss with seeds 1 and 2
    fake = FakeProxy({}, cache_dir=tmp_path)
    rescored = {t.number: t for t in [*top, *refs]}.values()
    means = {t.number: np.mean([fake.metrics_of(load_loss(t.user_attrs["loss"]), s)["miou"]
                                for s in (1, 2)]) for t in rescored}
    chosen = max(means, key=means.get)
    assert summary["chosen"] == chosen
    assert summary["trials"][str(chosen)]["mean"] == pytest.approx(means[chosen])
    assert summary["baseline"]["mean"] == pytest.approx(
        np.mean([fake.metrics_of(load_loss("cross_entropy"), s)["miou"] for s in (1, 2)]))
    prov = load_loss(result.loss_path).provenance
    assert prov["trial"] == chosen and prov["rescore"]["chosen"] == chosen
    assert prov["rescored_score"] == pytest.approx(means[chosen])
    text = (out / "summary.md").read_text()
    assert "## Re-scoring: the top 3 trials and the reference points with proxy seeds [1, 2]" in text
    label = summary["references"].get(str(chosen))
    assert f"| {chosen}{f' ({label})' if label else ''} **exported** |" in text
    assert prov["export_rule"] == "best-mean" and "best re-scored mean" in prov["export_reason"]
    # the gain: the export minus cross-entropy, paired by re-scoring seed, in the summary and
    # the result
    gain = rescored_gain(summary)
    values = dict(zip([1, 2], summary["trials"][str(chosen)]["values"]))
    expected = paired_difference(values, dict(zip([1, 2], summary["baseline"]["values"])))
    assert (gain.mean, gain.low, gain.high, gain.n) == pytest.approx(
        (expected.mean, expected.low, expected.high, 2))
    assert result.gain == gain_line(summary)
    assert f"**Gain over cross-entropy:** {result.gain}." in text
    assert f"{100 * gain.mean:+.2f} points" in result.gain
    assert f"best of {len(summary['trials'])}" in result.gain


def _summary(values, base, top=1):
    done = [b for b in base if b is not None]
    std = float(np.std(done, ddof=1)) if len(done) > 1 else None
    others = {str(n): {"values": [0.5, 0.5, 0.5]} for n in range(5, 4 + top)}
    return {"seeds": [1, 2, 3], "top": top, "chosen": 4,
            "trials": {"4": {"values": values}, **others},
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
    # the plain soft metric exported as the beat-identity rule's fallback was not picked as a
    # best mean: no such note
    fallback = {**_summary([0.56, 0.54, 0.57], [0.55, 0.56, 0.555], top=5),
                "rule": "beat-identity", "references": {"4": "identity"}}
    assert "chosen as the best" not in gain_line(fallback)
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


def _study_with_identity(out):
    """A finished 5-trial study (fake proxy, no re-scoring) whose trial 0 is the identity."""
    _, study = search(out, trials=5, rescore_top=0)
    identity = next(t for t in study.trials if t.user_attrs.get("reference") == "identity")
    return study, identity.number


def _proxy_of(study, score):
    """A ``run_proxy`` that gives a trial's loss ``score(number, seed)`` (the trial found by its
    curves' mean ``h(0.5)``, :func:`fake_proxy.curve_value`) and cross-entropy 0.5."""
    numbers = {}
    for t in study.trials:
        if "loss" in t.user_attrs:
            numbers.setdefault(round(curve_value(load_loss(t.user_attrs["loss"])), 9), t.number)

    def run_proxy(loss, seed):
        if not isinstance(loss, SurrogateLoss):
            return 0.5  # cross-entropy
        return score(numbers[round(curve_value(loss), 9)], seed)

    return run_proxy


def test_export_rule_keeps_the_plain_soft_metric_unless_a_searched_trial_beats_it(out):
    study, identity = _study_with_identity(out)
    ce = load_loss("cross_entropy")
    # every searched trial is ahead of the identity on average, but not on every seed: the
    # paired interval holds zero, so the plain soft metric is exported and the summary says why
    noisy = {1: 0.03, 2: -0.02, 3: 0.01}
    summary = rescore_top(study, _proxy_of(study, lambda n, s: 0.6 + (0 if n == identity else
                                                                       noisy[s] + 0.001 * n)),
                          baseline=ce, top=3, seeds=[1, 2, 3])
    assert summary["rule"] == "beat-identity" and summary["chosen"] == identity
    assert "no searched trial beats the plain soft metric" in summary["reason"]
    assert summary["references"][str(identity)] == "identity"
    trial, gain = searched_gain(summary)
    assert trial != identity and gain.low < 0 < gain.mean
    line = identity_gain_line(summary)
    assert f"vs the plain soft metric (trial {identity}" in line
    assert "within the seed noise: the search did not beat its start" in line
    # best-mean exports the best searched trial anyway, and says by which rule
    best = rescore_top(study, _proxy_of(study, lambda n, s: 0.6 + (0 if n == identity else
                                                                    noisy[s] + 0.001 * n)),
                       baseline=ce, top=3, seeds=[1, 2, 3], rule="best-mean")
    assert best["chosen"] == trial and best["rule"] == "best-mean"
    # the plain soft metric scores best: best-mean exports it, best-searched the best searched
    for rule, chosen in (("best-mean", identity), ("best-searched", trial)):
        study.set_user_attr("rescore", None)
        ahead = rescore_top(study, _proxy_of(study, lambda n, s: 0.6 + (0.05 if n == identity
                                                                        else 0.001 * n)),
                            baseline=ce, top=3, seeds=[1, 2, 3], rule=rule)
        assert ahead["chosen"] == chosen and ahead["reason"].startswith(f"rule {rule}:")
    # a searched trial ahead on every seed by more than the noise: it is exported
    study.set_user_attr("rescore", None)
    clear = rescore_top(study, _proxy_of(study, lambda n, s: 0.6 + (0 if n == identity else
                                                                     0.02 + 0.001 * (n + s))),
                        baseline=ce, top=3, seeds=[1, 2, 3])
    trial, gain = searched_gain(clear)
    assert clear["chosen"] == trial != identity and gain.low > 0
    assert f"trial {trial} beats the plain soft metric" in clear["reason"]
    assert "retrain it beside the plain soft metric (identity_loss.yaml)" in clear["reason"]
    assert "the search beat its start" in identity_gain_line(clear)
    with pytest.raises(ValueError, match="rule must be one of"):
        rescore_top(study, _proxy_of(study, lambda n, s: 0.5), baseline=ce, top=1, seeds=[1],
                    rule="best")


def test_a_search_reports_its_gain_over_the_plain_soft_metric(out, capsys):
    """End to end from the CLI: the summary, the loss file and the last lines of the command
    give the gain over the plain soft metric with its interval and the rule that chose the
    export (fake proxy: every searched curve nearer h(0.5) = 0.7 than the identity scores
    higher, with 1e-3 seed noise)."""
    parser = argparse.ArgumentParser()
    search_cli.register(parser.add_subparsers())
    args = parser.parse_args(["search", "--trials", "5", "--sampler", "random", "--no-plots",
                              "--out", str(out), "--rescore-top", "2", "--rescore-seeds", "3",
                              "--no-progress"])
    args.proxy_factory = FACTORY
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    study = open_study(f"sqlite:///{out / 'study.db'}")
    summary = rescore_summary(study)
    trial, gain = searched_gain(summary)
    assert f"gain over the plain soft metric: {identity_gain_line(summary)}" in printed
    assert f"export: {summary['reason']}" in printed
    text = (out / "summary.md").read_text()
    assert f"**Gain over the plain soft metric:** {identity_gain_line(summary)}." in text
    assert f"**Export:** trial {summary['chosen']}; {summary['reason']}." in text
    assert f"{100 * gain.mean:+.2f} points, 95 % interval [{100 * gain.low:+.2f}" in text
    prov = load_loss(out / "best_loss.yaml").provenance
    assert prov["export_rule"] == "beat-identity" and prov["trial"] == summary["chosen"]
    assert prov["best_searched_vs_identity"]["trial"] == trial
    assert prov["best_searched_vs_identity"]["mean"] == pytest.approx(100 * gain.mean, abs=1e-4)


def test_without_rescoring_the_user_is_told_the_export_was_not_compared(out, capsys):
    parser = argparse.ArgumentParser()
    search_cli.register(parser.add_subparsers())
    args = parser.parse_args(["search", "--trials", "3", "--sampler", "random", "--no-plots",
                              "--out", str(out), "--rescore-top", "0", "--no-progress"])
    args.proxy_factory = FACTORY
    assert args.func(args) == 0
    assert "not compared with the plain soft metric" in capsys.readouterr().out
    assert "not compared with the plain soft metric" in (out / "summary.md").read_text()
    prov = load_loss(out / "best_loss.yaml").provenance
    assert "not compared with the plain soft metric" in prov["export_reason"]


def test_export_rescoring_a_run_folder_rewrites_its_summary(out, capsys):
    """`autoloss export DIR --rescore-top 3 --rescore-seeds 4` writes best_loss.yaml and
    summary.md (and identity_loss.yaml) from the same re-scoring: the folder's files agree
    (issue 26, item 6); the summary keeps the search's command and wall time."""
    from autoloss.cli.app import main

    search(out, trials=5, rescore_top=2, rescore_seeds=2)
    summary = (out / "summary.md").read_text()
    assert "proxy seeds [1, 2]" in summary
    wall = next(line for line in summary.splitlines() if line.startswith("- wall time"))
    assert main(["export", str(out), "--rescore-top", "3", "--rescore-seeds", "4"]) == 0
    prov = load_loss(out / "best_loss.yaml").provenance
    assert prov["rescore"]["seeds"] == [1, 2, 3, 4]
    summary = (out / "summary.md").read_text()
    assert "proxy seeds [1, 2, 3, 4]" in summary and "top 3 trials" in summary
    assert f"**Export:** trial {prov['trial']};" in summary
    assert wall in summary
    assert f"Re-scored and exported by `autoloss export {out} --rescore-top 3" in summary
    assert load_loss(out / "identity_loss.yaml").provenance["export_rule"] == "control"
