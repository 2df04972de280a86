"""The README's user-defined metric example: exact metric and surrogate from one program."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss import evaluate, load_loss, trust_code
from autoloss.check import check_loss
from autoloss.trust import ENV_FILES

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture()
def user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    text = README.read_text()
    block = re.search(r"<!-- user-metric-example -->\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its user-metric example"
    path = tmp_path / "my_metrics.py"
    path.write_text(block.group(1))
    monkeypatch.setenv(ENV_FILES, os.environ.get(ENV_FILES, ""))  # restored afterwards
    trust_code(path)  # the README's opt-in (autoloss runs no user file unless told to)
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
