"""The README stays true: its Python example runs as printed (from the repository root, where its
loss file lies), and its test command is the one CI runs (.ci/run)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_python_example_runs(tmp_path, monkeypatch, capsys, single_thread):
    block = re.search(r"## In Python\n\n```python\n(.*?)```", README, re.S)
    assert block, "README lost its Python example"
    script = tmp_path / "example.py"
    script.write_text(block.group(1))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(script), run_name="__main__")
    assert "'miou'" in capsys.readouterr().out


def test_the_test_command_is_what_ci_runs():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    install = 'pip install torch==2.13.0 && pip install -e ".[dev]"'
    assert f"{install} && python -m pytest" in commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and "python -m pytest" in ci
