"""``autoloss study``: search, re-score and export, retrain against the baselines, report
(fake proxy for the search, a real tiny comparison on the embedded data)."""

from __future__ import annotations

import json

import pytest

from autoloss.cli.app import main
from autoloss.report.compare_report import RunRecord
from autoloss.workflow import run_study, strongest_baseline, verdict

STUDY = """\
out: out
search:
  metric: miou
  data: shapes
  trials: 4
  sampler: random
  rescore_top: 2
  rescore_seeds: 2
  plots: false
  proxy_factory: fake_proxy:FakeProxy
retrain:
  losses: [cross_entropy, lovasz_softmax]
  data: shapes?n=16&size=32
  seeds: 2
  width: 4
  depth: 2
  protocol: finetune
  pretrain: {steps: 4}
  steps: 2
  batch_size: 2
  eval_every: 2
  num_threads: 1
"""

pytestmark = pytest.mark.usefixtures("single_thread")


def test_study_runs_every_stage_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")  # the file's proxy_factory imports a module
    (tmp_path / "study.yaml").write_text(STUDY)
    result = run_study("study.yaml", progress=False)
    assert result.loss_path == (tmp_path / "out" / "search" / "best_loss.yaml").resolve()
    report = result.report_path.read_text()
    assert "## Verdict" in report and "miou: " in report
    assert "strongest hand-designed loss of the panel" in report
    # the search's own start: with 2 re-scoring seeds no searched trial can show an interval
    # above zero, so the export is the plain soft metric itself and the report says so
    assert "- miou: the export is the plain soft metric itself" in report
    assert any(line.startswith("- miou: ") and "lovasz_softmax" in line
               for line in report.splitlines())  # the verdict against the best baseline
    assert "re-scored the top 2 trials and the reference points with proxy seeds [1, 2]" in report
    assert "| out/search/best_loss.yaml |" in report  # relative, no machine path
    assert str(tmp_path) not in report
    assert "![retraining scores](retrain/plots/bars.png)" in report  # compare drew its figures
    assert (tmp_path / "out" / "retrain" / "plots" / "bars.png").is_file()
    compare = json.loads((tmp_path / "out" / "retrain" / "compare.json").read_text())
    assert compare["losses"] == ["cross_entropy", "lovasz_softmax", "out/search/best_loss.yaml"]
    assert compare["protocol"] == "finetune" and len(compare["runs"]) == 6
    assert set(json.loads((tmp_path / "out" / "study.json").read_text())["times"]) == {
        "search", "retrain"}
    # a second run redoes nothing: every run is cached, the report is redrawn (not the figures)
    (tmp_path / "study.yaml").write_text(STUDY + "  plots: false\n")
    mtime = (tmp_path / "out" / "retrain" / "runs").stat().st_mtime
    drawn = (tmp_path / "out" / "retrain" / "plots" / "bars.png").stat().st_mtime_ns
    assert main(["study", "--config", "study.yaml", "--no-progress"]) == 0
    assert "finished earlier" in capsys.readouterr().out
    assert (tmp_path / "out" / "retrain" / "runs").stat().st_mtime == mtime
    assert (tmp_path / "out" / "retrain" / "plots" / "bars.png").stat().st_mtime_ns == drawn


def test_a_section_can_start_from_an_experiment_file(tmp_path, monkeypatch):
    from autoloss.workflow import read_study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "retrain.yaml").write_text("losses: [cross_entropy]\nseeds: 3\nsteps: 9\n")
    (tmp_path / "s.yaml").write_text("search: {metric: miou}\n"
                                     "retrain: {config: retrain.yaml, seeds: 2}\n")
    assert read_study("s.yaml")["retrain"] == {"losses": ["cross_entropy"], "seeds": 2,
                                               "steps": 9}


def test_study_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {metric: miou}\nretrain: {losses: [cross_entropy]}\nextra: 1\n")
    with pytest.raises(ValueError, match="unknown option 'extra'"):
        run_study(bad)
    bad.write_text("search: {metric: miou, trails: 3}\nretrain: {losses: [cross_entropy]}\n")
    with pytest.raises(ValueError, match="search: unknown option 'trails'"):
        run_study(bad)
    bad.write_text("search: {metric: [miou, bf1], multi_objective: true}\nretrain: {}\n")
    with pytest.raises(ValueError, match="Pareto front"):
        run_study(bad)


def runs(loss, values):
    return [RunRecord(loss, s, tmp, {"miou": v}, 1.0) for s, v in enumerate(values)
            for tmp in [None]]


def test_study_retrains_the_plain_soft_metric_beside_a_searched_export(tmp_path, monkeypatch):
    """With the best-mean rule the export is a searched trial; its control, the plain soft
    metric (``identity_loss.yaml``), joins the retraining panel and the verdict."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")
    study = STUDY.replace("  plots: false\n", "  plots: false\n  export_rule: best-mean\n")
    (tmp_path / "study.yaml").write_text(study.replace("trials: 4", "trials: 6"))
    result = run_study("study.yaml", progress=False)
    report = result.report_path.read_text()
    compare = json.loads((tmp_path / "out" / "retrain" / "compare.json").read_text())
    assert compare["losses"] == ["cross_entropy", "lovasz_softmax", "out/search/best_loss.yaml",
                                 "out/search/identity_loss.yaml"]
    assert any(line.startswith("- miou: ") and "out/search/identity_loss.yaml" in line
               for line in report.splitlines())
    assert "- on the proxy, best searched trial" in report


def test_verdict_says_beats_worse_or_within_noise():
    ref = runs("ce", [0.50, 0.60, 0.70])
    up = runs("x", [0.52, 0.62, 0.72])
    assert verdict(ref + up, "x", "ce", "miou").startswith("miou: **beats ce** by +2.00 ± 0.00")
    down = runs("x", [0.45, 0.56, 0.64])
    assert "**worse than ce**" in verdict(ref + down, "x", "ce", "miou")
    noisy = runs("x", [0.60, 0.55, 0.70])
    text = verdict(ref + noisy, "x", "ce", "miou")
    assert text.startswith("miou: within noise of ce: +1.67") and "better on 1/3 seeds" in text
    assert "one seed" in verdict(runs("ce", [0.5]) + runs("x", [0.6]), "x", "ce", "miou")


def test_strongest_baseline_is_the_best_mean_other_than_reference_and_searched():
    def runs_val(loss, test, val):  # test and last-validation scores of one run per seed
        return [RunRecord(loss, s, None, {"miou": t}, 1.0, history=[(10, {"miou": v})])
                for s, (t, v) in enumerate(zip(test, val))]

    panel = (runs_val("ce", [0.50, 0.60], [0.5, 0.5]) + runs_val("a", [0.52, 0.58], [0.7, 0.7])
             + runs_val("b", [0.55, 0.60], [0.6, 0.6])
             + runs_val("searched", [0.70, 0.70], [0.9, 0.9])
             + runs_val("nan", [float("nan")] * 2, [float("nan")] * 2))
    # chosen on the validation split (a), not on test (b), unless asked
    assert strongest_baseline(panel, "miou", exclude=["ce", "searched"]) == "a"
    assert strongest_baseline(panel, "miou", exclude=["ce", "searched"], split="test") == "b"
    assert strongest_baseline(runs("ce", [0.5]), "miou", exclude=["ce"]) is None
    with pytest.raises(ValueError, match="split must be 'val' or 'test'"):
        strongest_baseline(panel, "miou", exclude=[], split="train")


def test_committed_study_files_resolve(monkeypatch):
    """Every experiments/study_*.yaml reads, and both of its sections are valid options."""
    from pathlib import Path

    from autoloss.retrain.experiment import experiment_from_dict
    from autoloss.workflow import _search_config, read_study

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # sections name other experiment files relative to the root
    files = sorted((repo / "experiments").glob("study_*.yaml"))
    assert files
    for path in files:
        data = read_study(path)
        _search_config(data["search"], Path("out"), str(path))
        experiment_from_dict(data["retrain"], source=str(path))
