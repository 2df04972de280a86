"""The package's layers, read from its source: every import (function-local ones included)
goes to the same or a lower layer, nothing imports the package root, and there is no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autoloss"

#: lowest first; a module may import from its own layer and the ones above it in this list
LAYERS = ("errors", "utils", "core", "data", "losses", "integrations", "train", "report", "search",
          "retrain", "workflow", "cli")
_BASE = {"_version": "errors"}  # top-level modules that sit in a layer of their own name


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """``(line, module)`` of every autoloss import in ``path`` (module ``name``, by default its
    place in the package); ``from pkg import name`` counts as an import of ``pkg.name`` when
    that is a module, else of ``pkg``."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub) else base))
    return [(line, mod) for line, mod in found if mod == "autoloss" or mod.startswith("autoloss.")]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(module: str) -> str:
    """The layer of ``autoloss.<top>...``; the package root is above every layer."""
    if module == "autoloss":
        return "the package root"
    top = module.split(".")[1]
    return _BASE.get(top, top)


MODULES = {(_module_name(p)): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer():
    unknown = sorted(m for m in MODULES if m != "autoloss" and _layer(m) not in LAYERS)
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "autoloss"))
def test_imports_go_down_the_layers(module):
    rank = LAYERS.index(_layer(module))
    bad = [f"line {line}: {target} (layer {_layer(target)!r})"
           for line, target in _imports(MODULES[module])
           if target == "autoloss" or LAYERS.index(_layer(target)) > rank]
    assert not bad, (f"{module} (layer {_layer(module)!r}) imports from a higher layer or the "
                     f"package root: {bad}")


def test_there_is_no_import_cycle():
    graph = {m: {t for _, t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_check_sees_function_local_and_relative_imports(tmp_path):
    """The kinds of import a layering slip hides in are all read, with their targets."""
    source = tmp_path / "x.py"
    source.write_text("import torch\n"
                      "from autoloss.core import programs\n"
                      "def f():\n"
                      "    from autoloss.search.run import run_search\n"
                      "    from ..search import budget\n"
                      "    from . import relaxations\n")
    assert _imports(source, "autoloss.core.x") == [
        (2, "autoloss.core.programs"), (4, "autoloss.search.run"), (5, "autoloss.search.budget"),
        (6, "autoloss.core.relaxations")]
    assert LAYERS.index(_layer("autoloss.search.run")) > LAYERS.index(_layer("autoloss.core.x"))
