"""The contract test of a user's proxy (autoloss.search.check_proxy): a good proxy passes, each
broken one fails with a message naming what is wrong."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from fake_proxy import FakeProxy
from torch import nn

from autoloss.search import ProxyContractError, check_proxy
from autoloss.utils.trust import ENV_FILES, import_reference, trust_code


class Good:
    """The smallest proxy that keeps the contract: scores from the seed, no training."""

    num_classes = 3
    ignore_index: int | None = 255
    eval_steps = [5, 10]

    def __init__(self) -> None:
        self.prepared = 0
        self.losses: list[nn.Module] = []

    def prepare(self) -> None:
        self.prepared += 1

    def scores(self, step: int, seed: int) -> dict[str, float]:
        return {"miou": 0.1 * step / 10 + 0.01 * seed, "bf1": 0.2}

    def run(self, loss, *, seed, on_eval=None):
        self.losses.append(loss)
        for step in self.eval_steps:
            if on_eval is not None:
                on_eval(step, self.scores(step, seed))
        return self.scores(self.eval_steps[-1], seed)


def test_a_good_proxy_passes_and_the_report_says_what_it_saw():
    proxy = Good()
    report = check_proxy(proxy, seed=2)
    assert proxy.prepared == 1 and len(proxy.losses) == 2  # a full run and a pruned one
    assert report.metrics == pytest.approx({"miou": 0.12, "bf1": 0.2})
    assert [step for step, _ in report.evals] == [5, 10]
    loss = proxy.losses[0]  # the plain soft metric for the proxy's classes and ignore index
    assert loss.to_dict()["metric"] == "miou" and loss.to_dict()["ignore_index"] == 255


def test_the_search_tests_fake_proxy_passes(tmp_path: Path):
    report = check_proxy(FakeProxy({}, cache_dir=tmp_path), metric="bf1")
    assert math.isfinite(report.metrics["bf1"])


class NoEvalSteps(Good):
    eval_steps = None  # type: ignore[assignment]


class TextClasses(Good):
    num_classes = "3"  # type: ignore[assignment]


class Decreasing(Good):
    eval_steps = [10, 5]


class NoOnEval(Good):
    def run(self, loss, *, seed):  # type: ignore[override]
        return self.scores(10, seed)


class LastOnly(Good):
    def run(self, loss, *, seed, on_eval=None):
        on_eval(10, self.scores(10, seed))
        return self.scores(10, seed)


class ReturnsList(Good):
    def run(self, loss, *, seed, on_eval=None):
        super().run(loss, seed=seed, on_eval=on_eval)
        return [0.5]


class NoTarget(Good):
    def scores(self, step, seed):
        return {"mIoU": 0.5}


class NanTarget(Good):
    def run(self, loss, *, seed, on_eval=None):
        super().run(loss, seed=seed, on_eval=on_eval)
        return {"miou": math.nan}


class Swallows(Good):
    def run(self, loss, *, seed, on_eval=None):
        for step in self.eval_steps:
            try:
                on_eval(step, self.scores(step, seed))
            except Exception:
                pass
        return self.scores(10, seed)


class Wraps(Good):
    def run(self, loss, *, seed, on_eval=None):
        try:
            return super().run(loss, seed=seed, on_eval=on_eval)
        except Exception as err:
            raise RuntimeError("training failed") from err


class KeepsGoing(Good):
    def run(self, loss, *, seed, on_eval=None):
        error = None
        for step in self.eval_steps:
            try:
                on_eval(step, self.scores(step, seed))
            except Exception as err:
                error = err
        if error is not None:
            raise error
        return self.scores(10, seed)


@pytest.mark.parametrize(("proxy", "message"), [
    (object(), "object is not a proxy: it has no attribute 'num_classes'.*no attribute 'run'"),
    (NoEvalSteps(), r"eval_steps must be a non-empty list of increasing positive ints, but got "
                    r"None"),
    (TextClasses(), "num_classes must be an int >= 1, but got '3'"),
    (Decreasing(), r"increasing positive ints, but got \[10, 5\]"),
    (NoOnEval(), r"run must accept run\(loss, \*, seed, on_eval\)"),
    (LastOnly(), r"at each of eval_steps=\[5, 10\], in order, but called it at \[10\]"),
    (ReturnsList(), "the value run returns must be a mapping of metric names to numbers, but "
                    "got list"),
    (NoTarget(), r"on_eval at step 5 must include the target 'miou'.*\['mIoU'\]"),
    (NanTarget(), "run must return a finite 'miou', but returned miou=nan"),
    (Swallows(), "must propagate out of run, but run returned normally"),
    (Wraps(), "must propagate out of run unchanged, but run raised RuntimeError: training "
              "failed"),
    (KeepsGoing(), r"on_eval raised at step 5, but run went on to call it at \[10\]"),
])
def test_a_broken_proxy_fails_naming_what_is_wrong(proxy, message):
    with pytest.raises(ProxyContractError, match=message):
        check_proxy(proxy)


def test_the_error_is_a_type_error_of_autoloss():
    from autoloss.errors import AutoLossError

    with pytest.raises(TypeError) as info:
        check_proxy(object())
    assert isinstance(info.value, AutoLossError)


# ---- the proxy of docs/own_model.md ------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_model.md"


@pytest.fixture
def doc_proxy_file(tmp_path, monkeypatch) -> Path:
    """The complete proxy example of the docs, as the user would save it (my_proxy.py)."""
    blocks = re.findall(r"```python\n(# my_proxy.py\n.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/own_model.md must hold one '# my_proxy.py' example"
    path = tmp_path / "my_proxy.py"
    path.write_text(blocks[0])
    monkeypatch.setenv(ENV_FILES, "")
    return path


def test_the_docs_proxy_keeps_the_contract(doc_proxy_file, tmp_path, single_thread):
    trust_code(doc_proxy_file)
    factory = import_reference(f"{doc_proxy_file}:MyProxy", what="proxy_factory")
    proxy = factory({"data": "shapes?n=16&size=32", "steps": 4}, cache_dir=tmp_path / "cache")
    report = check_proxy(proxy)
    assert [step for step, _ in report.evals] == [2, 4]
    assert 0 <= report.metrics["miou"] <= 1


def test_the_cli_searches_with_the_docs_proxy_and_records_its_factory(
        doc_proxy_file, tmp_path, monkeypatch, single_thread):
    from autoloss.cli.app import main

    monkeypatch.chdir(tmp_path)
    assert main(["search", "--data", "shapes?n=16&size=32", "--trials", "2", "--sampler",
                 "random", "--proxy-factory", "my_proxy.py:MyProxy", "--proxy", "steps=4",
                 "--rescore-top", "0", "--out", "run", "--no-progress", "--no-plots"]) == 0
    provenance = yaml.safe_load((tmp_path / "run" / "best_loss.yaml").read_text())["provenance"]
    assert provenance["proxy_factory"] == "my_proxy.py:MyProxy"
    assert provenance["model"] is None  # a proxy without model_record()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["proxy_factory"] == "my_proxy.py:MyProxy" and "model" not in info
