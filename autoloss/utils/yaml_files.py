"""Reading the YAML files autoloss takes (experiments, studies, loss files, search spaces), with
errors that name the file and the line. A key given twice in one mapping is an error (plain YAML
loaders keep the last one silently)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autoloss.errors import InvalidValueError, MissingFileError

__all__ = ["load_yaml", "read_mapping"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a duplicate key."""

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


def load_yaml(path: str | Path) -> Any:
    """The data of a YAML file (safe types only), or an error naming the file and the line:
    invalid YAML or a key given twice in one mapping."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InvalidValueError(f"{path}{line}: invalid YAML: {problem}") from None


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
