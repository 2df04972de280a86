"""Exported losses: round trip through load_loss + check_loss, provenance, loading without optuna,
exporting any trial, and the summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from fake_proxy import fast_tmp_dir

from autoloss.losses import SurrogateLoss, load_loss
from autoloss.losses.check import check_loss
from autoloss.search.config import SearchConfig
from autoloss.search.export import best_trial, export_trial, summarize
from autoloss.search.run import run_search
from autoloss.search.storage import make_storage

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def searched():
    """One small search (module-wide): its result and the study."""
    for path in fast_tmp_dir():
        cfg = SearchConfig(out=path / "run", trials=5, sampler="random", seed=1,
                           proxy_factory="fake_proxy:FakeProxy", proxy={"crash_above": 0.75})
        result = run_search(cfg, progress=False)
        study = optuna.load_study(study_name=result.study, storage=make_storage(result.storage))
        yield result, study


def test_best_loss_round_trip(searched):
    result, study = searched
    assert result.loss_path == result.out / "best_loss.yaml"
    loss = load_loss(result.loss_path)
    assert isinstance(loss, SurrogateLoss) and loss.metric == "miou"
    assert loss.ignore_index is None  # the proxy's 255 is the data's: in provenance only
    assert all(r.passed for r in check_loss(loss, trials=2))
    best = study.best_trial
    assert loss.to_dict()["curves"] == best.user_attrs["loss"]["curves"]
    prov = loss.provenance
    assert prov["trial"] == best.number == result.best_trial
    assert prov["score"] == pytest.approx(best.value) == pytest.approx(result.best_value)
    assert prov["baseline_ce"] == pytest.approx(result.baseline_ce)
    assert prov["gain_over_ce_points"] == pytest.approx(100 * (best.value - result.baseline_ce),
                                                        abs=1e-3)
    assert prov["study"] == result.study and prov["storage"] == "sqlite:///study.db"  # beside it
    assert (prov["dataset"], prov["reward_split"], prov["sampler"], prov["seed"]) == (
        "shapes", "val", "random", 1)
    assert prov["proxy"] == {"crash_above": 0.75}
    assert set(prov["versions"]) == {"autoloss", "torch", "optuna", "python"}
    assert prov["dataset_options"] == {"ignore_index": 255}
    assert prov["params"] == pytest.approx(best.params)
    assert prov["metrics"]["miou"] == pytest.approx(best.value)


def test_exported_file_loads_without_optuna(searched):
    result, _ = searched
    code = (
        "import sys; sys.modules['optuna'] = None\n"  # any optuna import now fails
        "from autoloss.losses import load_loss\n"
        "from autoloss.losses.check import check_loss\n"
        f"loss = load_loss({str(result.loss_path)!r})\n"
        "assert all(r.passed for r in check_loss(loss, trials=1))\n"
        "import torch\n"
        "x = torch.randn(2, 3, 8, 8, requires_grad=True)\n"
        "loss(x, torch.randint(0, 3, (2, 8, 8))).backward()\n"
        "assert 'optuna' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_export_any_trial_and_errors(searched, tmp_path):
    _, study = searched
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    path = export_trial(study, 0, tmp_path / "t0.yaml", storage="sqlite:///elsewhere.db")
    data = yaml.safe_load(path.read_text())
    assert data["autoloss_schema"] == 1 and data["provenance"]["trial"] == 0
    assert data["provenance"]["storage"] == "sqlite:///elsewhere.db"
    assert data["curves"]["inter"]["points"] == pytest.approx(
        [0.25, 0.25, 0.5, 0.5, 0.75, 0.75])  # trial 0: the identity reference
    if failed:  # a failed trial keeps its loss: it can be exported and inspected
        data = yaml.safe_load(export_trial(study, failed[0].number, tmp_path / "f.yaml")
                              .read_text())
        assert data["provenance"]["trial_state"] == "FAIL" and data["provenance"]["score"] is None
    with pytest.raises(ValueError, match="no trial 99"):
        export_trial(study, 99, tmp_path / "x.yaml")
    empty = optuna.create_study(direction="maximize")
    with pytest.raises(ValueError, match="no complete trial"):
        export_trial(empty, None, tmp_path / "x.yaml")
    foreign = optuna.create_study(direction="maximize")
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ValueError, match="no recorded loss"):
        export_trial(foreign, None, tmp_path / "x.yaml")


def test_summary(searched):
    result, study = searched
    text = (result.out / "summary.md").read_text()
    assert text == summarize(study, wall_time=result.wall_time)
    best = best_trial(study)
    assert f"- best: trial {best.number}, {best.value:.4f}" in text
    assert f"cross-entropy baseline: {result.baseline_ce:.4f}" in text
    gain = 100 * (best.value - result.baseline_ce)
    assert f"({gain:+.2f} points over cross-entropy)" in text
    counts = result.counts
    assert (f"- trials: {counts['complete']} complete, {counts['pruned']} pruned, "
            f"{counts['fail']} failed") in text
    assert "| identity | 0 |" in text and "| paper:asl-voc-miou | 1 |" in text
    top = text.split("## Top")[1].split("##")[0]
    rows = [line for line in top.splitlines() if line.startswith("| ") and "trial" not in line]
    values = [float(r.split("|")[2]) for r in rows]
    assert values == sorted(values, reverse=True) and len(rows) == min(5, counts["complete"])
    assert json.loads((result.out / "run.json").read_text())["study"] == result.study
