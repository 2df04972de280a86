"""The docstring examples run: every module of the package with a ``>>>`` example is run through
:mod:`doctest` (each in a second or so on one thread), and no example is skipped."""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autoloss"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if ">>>" in p.read_text()}


def test_the_package_has_examples():
    assert len(SOURCES) >= 15
    assert {"autoloss.core.metrics", "autoloss.losses.surrogate", "autoloss.train.proxy"} <= set(SOURCES)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_no_example_is_skipped(name):
    assert "doctest: +SKIP" not in SOURCES[name].read_text(), f"{name}: run the example, or drop it"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_examples_run(name, single_thread):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has '>>>' but no example doctest finds"
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()
