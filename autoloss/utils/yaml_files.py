"""Reading the YAML files autoloss takes (experiments, studies, loss files, search spaces), with
errors that name the file and the line. A key given twice in one mapping is an error (plain YAML
loaders keep the last one silently). ``1e-5`` is the number it looks like (YAML 1.1 wants
``1.0e-5``). Limits, checked before parsing: a file of at most :data:`MAX_YAML_BYTES`, nested at
most :data:`MAX_YAML_DEPTH` levels (the files autoloss reads are a few KB and a few levels)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from autoloss.errors import InvalidValueError, MissingFileError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "load_yaml", "parse_value", "read_mapping"]

MAX_YAML_BYTES = 100_000  # the largest committed loss file is 4.3 KB; PyYAML reads ~80 KB/s of flow lists
MAX_YAML_DEPTH = 32

# a number with an exponent and no dot (1e-5, 2E+3, -1_000e2) or without the exponent sign YAML 1.1
# requires (1.5e3): floats in every other YAML reader and in Python
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _DepthError(yaml.YAMLError):
    def __init__(self, mark: Any) -> None:
        super().__init__()
        self.problem = (f"nested more than {MAX_YAML_DEPTH} levels deep (the limit, "
                        f"autoloss.utils.yaml_files.MAX_YAML_DEPTH); flatten it")
        self.problem_mark = mark


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a duplicate key and nesting deeper than
    :data:`MAX_YAML_DEPTH`, and reads ``1e-5`` as a float."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _DepthError(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key]} and {line}); "
                    "keep one", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT,
                                       list("-+0123456789."))


def _load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InvalidValueError(f"{where}{line}: invalid YAML: {problem}") from None


def load_yaml(path: str | Path) -> Any:
    """The data of a YAML file (safe types only), or an error naming the file and the line:
    invalid YAML, a key given twice in one mapping, a file over :data:`MAX_YAML_BYTES` (refused
    before it is read) or nested deeper than :data:`MAX_YAML_DEPTH`."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise InvalidValueError(f"{path} is {size} bytes, more than the {MAX_YAML_BYTES} a YAML "
                                f"file autoloss reads may have (MAX_YAML_BYTES; loss, experiment "
                                f"and space files are a few KB); is it the right file?")
    return _load(path.read_text(), str(path))


def parse_value(text: str, *, what: str = "value") -> Any:
    """``text`` (a command-line value such as ``0.05``, ``1e-5``, ``[miou, bf1]``) read as YAML,
    with the limits of :func:`load_yaml`; invalid YAML is an error naming ``what``.

    >>> parse_value("1e-5"), parse_value("[miou, bf1]")
    (1e-05, ['miou', 'bf1'])
    """
    if len(text) > MAX_YAML_BYTES:
        raise InvalidValueError(f"{what} is {len(text)} characters, more than {MAX_YAML_BYTES}")
    return _load(text, f"{what} {text!r}")


def read_mapping(path: str | Path, *, what: str = "an experiment") -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is ``{}``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file (and the
    line) for invalid YAML or a top level that is not a mapping; ``what`` names the file's role
    in that message."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{what.split(' ', 1)[-1]} file {str(path)!r} does not exist")
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise InvalidValueError(f"{path}: {what} must be a mapping of options, but got "
                         f"{type(data).__name__}")
    return data
