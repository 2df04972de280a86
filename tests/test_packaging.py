"""Packaging: one version, ``autoloss --version``, a wheel with LICENSE and ``py.typed``, and an
install that keeps the user's torch (the dependency is an open lower bound)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import autoloss

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert importlib.metadata.version("autoloss") == autoloss.__version__


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "autoloss.cli", "--version"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert out.stdout.startswith(f"autoloss {autoloss.__version__} (torch ")


def test_torch_requirement_is_an_open_lower_bound():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_dep = [d for d in deps if d.startswith("torch")]
    assert torch_dep == ["torch>=2.1"], "an upper bound makes pip replace a newer user build"


def test_wheel_carries_license_and_py_typed(tmp_path):
    pytest.importorskip("setuptools")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("autoloss-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "autoloss/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names), names
