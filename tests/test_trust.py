"""Files never run user code unless the user said so (autoloss.utils.trust): a crafted loss,
experiment or study file that names a Python file fails before a line of it runs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from autoloss import evaluate, load_loss, trust_code
from autoloss.cli.app import build_parser, main
from autoloss.cli.search import _config_from_args
from autoloss.search.config import load_experiment
from autoloss.utils.trust import ENV_ALL, ENV_FILES, UntrustedCodeError, is_trusted
from autoloss.workflow import run_study

DOC = Path(__file__).resolve().parents[1] / "docs" / "loss_files.md"


@pytest.fixture(autouse=True)
def no_trust(monkeypatch):
    monkeypatch.delenv(ENV_ALL, raising=False)
    monkeypatch.setenv(ENV_FILES, "")  # restored after the test, whatever trust_code() adds


@pytest.fixture()
def evil(tmp_path: Path) -> Path:
    """A valid user metric file that leaves a marker when it runs."""
    block = re.search(r"<!-- user-metric-example -->\n```python\n(.*?)```", DOC.read_text(),
                      re.S).group(1)
    path = tmp_path / "evil.py"
    path.write_text(f"from pathlib import Path\nPath({str(tmp_path / 'RAN')!r}).touch()\n"
                    + block)
    return path


def ran(evil: Path) -> bool:
    return (evil.parent / "RAN").exists()


def loss_file(evil: Path) -> Path:
    path = evil.parent / "shared_loss.yaml"
    path.write_text(f"name: surrogate\nmetric: {evil}:tversky\n")
    return path


def test_a_loss_file_naming_code_is_refused_before_it_runs(evil):
    with pytest.raises(UntrustedCodeError, match=r"--trust-code .*trust_code\(PATH\)"):
        load_loss(loss_file(evil))
    with pytest.raises(UntrustedCodeError):
        load_loss({"combine": [{"name": "cross_entropy"},
                               {"name": "surrogate", "metric": f"{evil}:tversky"}]})
    with pytest.raises(UntrustedCodeError):
        evaluate(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int), num_classes=2,
                 metrics=[f"{evil}:tversky"])
    assert not ran(evil)


def test_each_opt_in_lets_it_run(evil, monkeypatch):
    assert load_loss(loss_file(evil), trust_code=True) is not None and ran(evil)
    assert is_trusted(evil)  # and stays trusted in this process (and its workers)


def test_trust_code_for_one_file(evil, tmp_path):
    other = tmp_path / "other.py"
    other.write_text(evil.read_text())
    trust_code(evil)
    assert load_loss(loss_file(evil)) is not None
    with pytest.raises(UntrustedCodeError):
        load_loss({"name": "surrogate", "metric": f"{other}:tversky"})


def test_environment_trusts_everything(evil, monkeypatch):
    monkeypatch.setenv(ENV_ALL, "1")
    assert load_loss(loss_file(evil)) is not None and ran(evil)


def test_cli_check_needs_trust_code(evil, capsys):
    path = loss_file(evil)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "autoloss check: error:" in err and "--trust-code" in err and not ran(evil)
    assert main(["check", str(path), "--trust-code"]) == 0 and ran(evil)


def test_a_metric_typed_on_the_command_line_is_trusted(evil):
    args = build_parser().parse_args(["search", "--metric", f"{evil}:tversky", "--trials", "1"])
    _config_from_args(args)
    assert is_trusted(evil) and not ran(evil)


def test_proxy_factory_in_a_file_needs_trust(tmp_path, monkeypatch):
    module = tmp_path / "evil_proxy.py"
    module.write_text(f"from pathlib import Path\nPath({str(tmp_path / 'RAN')!r}).touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    exp = tmp_path / "exp.yaml"
    exp.write_text("metric: miou\nproxy_factory: evil_proxy:make\n")
    with pytest.raises(UntrustedCodeError, match="proxy_factory='evil_proxy:make'"):
        load_experiment(exp)
    study = tmp_path / "study.yaml"
    study.write_text(f"out: {tmp_path / 'st'}\nsearch:\n  metric: miou\n  proxy_factory: "
                     f"evil_proxy:make\nretrain:\n  losses: [cross_entropy]\n")
    with pytest.raises(UntrustedCodeError, match="proxy_factory"):
        run_study(study, progress=False)
    assert not (tmp_path / "RAN").exists() and "evil_proxy" not in sys.modules
    monkeypatch.setenv(ENV_ALL, "1")
    assert load_experiment(exp).proxy_factory == "evil_proxy:make"


def test_an_untrusted_proxy_metric_is_refused_before_the_warm_start(evil, tmp_path, capsys):
    """--proxy metrics=[file.py:name] of an untrusted file: refused when the proxy is
    configured, before the warm start trains (was: after it; issue 26, item 13)."""
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), "--trials", "1", "--no-progress",
                 "--proxy", f"metrics=[miou, '{evil}:tversky']"]) == 2
    err = capsys.readouterr().err
    assert "proxy option metrics" in err and "--trust-code" in err
    assert not ran(evil) and not out.exists()
