"""docs/pipeline.md stays true: its Python snippets parse, every autoloss name they import
exists, the mmseg plug-in they name is a module, and the messages it quotes are the ones
autoloss prints."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autoloss.data import load_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "pipeline.md"
TEXT = DOC.read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)


def test_the_snippets_parse_and_their_autoloss_imports_exist():
    assert len(SNIPPETS) >= 5
    for snippet in SNIPPETS:
        for node in ast.walk(ast.parse(snippet)):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("autoloss"):
                module = importlib.import_module(node.module) if "lightning" not in node.module \
                    else None
                for alias in node.names if module is not None else []:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


def test_the_named_modules_exist():
    root = DOC.parents[1] / "autoloss" / "integrations"
    assert "autoloss.integrations.mmseg_plugin" in TEXT and (root / "mmseg_plugin.py").is_file()
    assert (root / "lightning.py").is_file() and (DOC.parent / "pipeline.md").is_file()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_the_quoted_errors_are_what_autoloss_says(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4) % 3
    mask[0, 0] = 255
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(data / "images" / "a.png")
    Image.fromarray(mask).save(data / "masks" / "a.png")
    monkeypatch.chdir(tmp_path)
    blocks = [_one_line(b) for b in re.findall(r"```\n(folder:data.*?)```", TEXT, flags=re.S)]
    assert len(blocks) == 2
    for spec, split in (("folder:data?ignore_index=255", "val"), ("folder:data", "train")):
        with pytest.raises(ValueError) as err:
            load_dataset(spec, split)
        assert _one_line(str(err.value)) in blocks
