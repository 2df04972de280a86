"""The user-defined metric example of docs/loss_files.md: exact metric and surrogate from one program."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss import evaluate, load_loss, trust_code
from autoloss.losses.check import check_loss
from autoloss.utils.trust import ENV_FILES

DOC = Path(__file__).resolve().parents[1] / "docs" / "loss_files.md"


@pytest.fixture()
def user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    text = DOC.read_text()
    block = re.search(r"<!-- user-metric-example -->\n```python\n(.*?)```", text, re.S)
    assert block, "docs/loss_files.md lost its user-metric example"
    path = tmp_path / "my_metrics.py"
    path.write_text(block.group(1))
    monkeypatch.setenv(ENV_FILES, os.environ.get(ENV_FILES, ""))  # restored afterwards
    trust_code(path)  # the docs' opt-in (autoloss runs no user file unless told to)
    return path


def _brute_tversky(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    values = []
    for c in range(num_classes):
        p, g = pred == c, target == c
        if not (p.any() or g.any()):
            continue
        tp = float((p & g).sum())
        fp, fn = float((p & ~g).sum()), float((~p & g).sum())
        values.append(tp / (tp + 0.3 * fp + 0.7 * fn))
    return float(np.mean(values))


def test_user_metric_exact_and_surrogate(user_file: Path) -> None:
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, (3, 10, 12))
    target = rng.integers(0, 4, (3, 10, 12))
    ref = f"{user_file}:tversky"
    value = evaluate(pred, target, num_classes=4, metrics=[ref])[ref]
    assert value == pytest.approx(_brute_tversky(pred, target, 4), abs=1e-12)

    loss = load_loss({"name": "surrogate", "metric": ref})
    logits = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    out = loss(logits, torch.from_numpy(target[:2, :8, :8]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
    assert all(r.passed for r in check_loss(loss))


def test_user_metric_errors(user_file: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_loss({"name": "surrogate", "metric": "nowhere.py:tversky"})
    with pytest.raises(ValueError, match="did you mean 'tversky'"):
        load_loss({"name": "surrogate", "metric": f"{user_file}:tverski"})


@pytest.mark.usefixtures("single_thread")
def test_search_of_a_user_metric_end_to_end(user_file: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``autoloss search --metric my_metrics.py:tversky`` on the embedded data (real proxy):
    the proxy reports the user metric at every evaluation, the objective and the pruner read
    it, and the exported loss is accepted by ``load_loss`` and ``autoloss check``."""
    import optuna
    import yaml

    from autoloss.cli.app import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_FILES, "")  # trusted by being named on the command line only
    ref = "my_metrics.py:tversky"
    args = ["search", "--metric", ref, "--data", "shapes?n=16&size=32", "--trials", "6",
            "--sampler", "random", "--width", "4", "--depth", "2", "--proxy-steps", "4",
            "--proxy-eval-every", "2", "--proxy", "warm_start_steps=6", "--rescore-top", "2",
            "--rescore-seeds", "1", "--out", "run", "--cache", "cache", "--no-progress",
            "--no-plots"]
    assert main(args) == 0
    study = optuna.load_study(study_name=None, storage="sqlite:///run/study.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) + sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials) == 6
    for trial in done:  # the objective is the user metric, reported at each evaluation
        assert trial.value == pytest.approx(trial.user_attrs["metrics"][ref])
        steps = [step for step, _ in trial.user_attrs["evals"]]
        assert steps == [2, 4] and all(ref in m for _, m in trial.user_attrs["evals"])
        assert sorted(trial.intermediate_values) == [2, 4]
    assert ref in study.user_attrs["baseline_ce_metrics"]

    spec = yaml.safe_load((tmp_path / "run" / "best_loss.yaml").read_text())
    assert spec["metric"] == ref
    loss = load_loss(tmp_path / "run" / "best_loss.yaml", trust_code=True)
    out = loss(torch.randn(2, 4, 8, 8, requires_grad=True), torch.randint(0, 4, (2, 8, 8)))
    out.backward()
    assert torch.isfinite(out)
    capsys.readouterr()
    assert main(["--trust-code", "check", "run/best_loss.yaml", "--cases", "20"]) == 0
    assert "FAIL" not in capsys.readouterr().out
