"""Type checks read from a dataclass's own annotations, so a config's field types are written
once (on the field) and never repeated in a table.

A hint is one of: ``Any`` (anything), a class (``isinstance``; ``int`` refuses ``bool``, ``float``
accepts an ``int``), a union ``A | B`` (any member), ``list[...]`` / ``tuple[...]`` / ``dict[...]``
(the container type only), or ``Callable[...]`` (``callable``).

Example:
    >>> @dataclasses.dataclass
    ... class Config:
    ...     trials: int = 20
    ...     out: str | None = None
    >>> print(field_type_error(Config(trials="5"), "trials"))
    trials must be int, but got '5'
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import types
import typing
from typing import Any

from autoloss.errors import InvalidValueError

__all__ = ["check_field_types", "field_hints", "field_type_error", "matches", "type_names",
           "value_type_error"]


def _members(hint: Any) -> tuple[Any, ...]:
    """The members of a union hint (``A | B``, ``Optional[A]``), else ``(hint,)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def matches(value: Any, hint: Any) -> bool:
    """Does ``value`` have the type ``hint`` describes (see the module docstring)?"""
    for member in _members(hint):
        if member is Any:
            return True
        if member is type(None) or member is None:
            if value is None:
                return True
            continue
        origin = typing.get_origin(member) or member
        if origin is collections.abc.Callable:
            if callable(value):
                return True
            continue
        # an annotation this module cannot check is autoloss's bug, not the user's input
        assert isinstance(origin, type), f"unsupported type hint {member!r}"
        if isinstance(value, bool) and origin is not bool and origin is not object:
            continue  # True is not a count
        if isinstance(value, origin) or (origin is float and isinstance(value, int)):
            return True
    return False


def type_names(hint: Any) -> str:
    """``int | None`` -> ``"int or NoneType"``: what an error message says was expected."""
    names = []
    for member in _members(hint):
        origin = typing.get_origin(member) or member
        if origin is collections.abc.Callable:
            names.append("a callable")
        else:
            names.append(getattr(origin, "__name__", str(origin)))
    return " or ".join(names)


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of the dataclass ``cls`` (cached)."""
    return typing.get_type_hints(cls)


def value_type_error(name: str, value: Any, hint: Any) -> str | None:
    """``"<name> must be <types>, but got <value>"`` when ``value`` does not match ``hint``,
    else None."""
    if matches(value, hint):
        return None
    return f"{name} must be {type_names(hint)}, but got {value!r}"


def field_type_error(obj: Any, name: str) -> str | None:
    """The message for field ``name`` of the dataclass instance ``obj`` when its value does not
    match the field's annotation, else None."""
    return value_type_error(name, getattr(obj, name), field_hints(type(obj))[name])


def check_field_types(obj: Any, *, where: str = "") -> None:
    """Raise :class:`~autoloss.errors.InvalidValueError` for the first field of the dataclass
    instance ``obj`` whose value does not match its annotation (``where``: a prefix naming the
    source, e.g. a file)."""
    for f in dataclasses.fields(obj):
        message = field_type_error(obj, f.name)
        if message is not None:
            raise InvalidValueError(f"{where}{message}")
