"""Packaging: one version, ``autoloss --version``, a wheel with LICENSE and ``py.typed``, and an
install that keeps the user's torch (the dependency is an open lower bound)."""

from __future__ import annotations

import importlib.metadata
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(folder), str(ROOT)], check=True, capture_output=True)
    (path,) = folder.glob("autoloss-*.whl")
    return path


def test_wheel_carries_license_py_typed_and_the_search_spaces(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "autoloss/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names), names
    spaces = sorted(Path(n).stem for n in names if n.startswith("autoloss/search_spaces/"))
    assert spaces == sorted(p.stem for p in (ROOT / "autoloss" / "search_spaces").glob("*.yaml"))
    assert not any(n.startswith(("tests/", "results/", "experiments/")) for n in names)


def _site_dirs() -> list[str]:
    """The site-packages folders this interpreter imports from, its own first: a venv's when the
    tests run in one (and the base interpreter's only if that venv includes them)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    return dirs


def _venv_seeing_these_packages(venv: Path) -> Path:
    """A new venv that imports this interpreter's packages after its own. ``venv
    --system-site-packages`` would expose the *base* interpreter's site-packages, which from inside
    a venv (the README's install) hold no torch; a ``.pth`` file naming this interpreter's
    site-packages works from a venv or not. ``site.addsitedir`` also runs their ``.pth`` files."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})\n" for d in _site_dirs()]
    (Path(purelib) / "_autoloss_test_parent_site.pth").write_text("".join(lines))
    return python


def test_the_test_venv_imports_this_interpreters_packages(tmp_path):
    """The wheel test's venv finds the torch this suite runs with, also from inside a venv."""
    python = _venv_seeing_these_packages(tmp_path / "venv")
    code = "import torch, yaml; print(torch.__file__); print(yaml.__file__)"
    here = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=tmp_path).stdout
    there = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                           cwd=tmp_path).stdout
    assert there == here


@pytest.mark.usefixtures("single_thread")
def test_a_wheel_install_runs_a_search_from_any_folder(wheel, tmp_path):
    """Installed from the wheel into a new venv (its dependencies from this environment, autoloss
    itself only from the wheel), ``autoloss search`` runs on the embedded data in an empty folder
    and the built-in spaces are the files shipped in the wheel."""
    venv = tmp_path / "venv"
    python = _venv_seeing_these_packages(venv)
    env = {**os.environ, "AUTOLOSS_COMPILE": "0", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # a checkout on PYTHONPATH would shadow the wheel
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, env=env)
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import autoloss; print(autoloss.__file__)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(venv), f"autoloss imported from {where}, not the wheel"
    run = subprocess.run(
        [str(venv / "bin" / "autoloss"), "search", "--metric", "miou", "--data",
         "shapes?n=16&size=32", "--trials", "3", "--sampler", "random", "--width", "4",
         "--depth", "2", "--proxy-steps", "2", "--proxy-eval-every", "2", "--proxy",
         "warm_start_steps=2", "--rescore-top", "0", "--num-threads", "1", "--out", "run",
         "--cache", "cache", "--no-progress", "--no-plots"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    spec = yaml.safe_load((work / "run" / "best_loss.yaml").read_text())
    assert spec["metric"] == "miou" and "trial" in spec["provenance"]
    assert "exported loss" in run.stdout
    source = subprocess.run([str(python), "-c", "from autoloss.search.spaces import load_space; "
                             "print(load_space('bf1').source)"], cwd=work, env=env, check=True,
                            capture_output=True, text=True).stdout.strip()
    assert Path(source).is_relative_to(venv) and source.endswith("search_spaces/bf1.yaml")
