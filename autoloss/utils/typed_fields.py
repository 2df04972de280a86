"""The validation kit of every config dataclass: its field types read from its own annotations,
its ranges, choices and normalisers declared in each field's metadata, so a rule is written
once (on the field) and never repeated in a table or a hand check; a config built from a
mapping refuses unknown keys with a did-you-mean; one parser of ``"HxW"`` sizes.

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

The rest of a field's rules is declared in its metadata, next to its default, and checked by
:func:`check_fields` (a config's ``__post_init__`` calls it) after the type: ``at_least(1)``,
``positive()``, ``in_range(0, 1, high_open=True)``, ``one_of("sgd", "adamw")`` and
``converted(fn)`` (a normaliser run first, e.g. :func:`parse_size` for ``"HxW"``); rules
combine with ``|``. :func:`from_mapping` builds a config from a mapping (a YAML section, CLI
options), refusing an unknown key with a did-you-mean (:func:`reject_unknown`):

    >>> @dataclasses.dataclass(frozen=True)
    ... class Train:
    ...     steps: int = dataclasses.field(default=300, metadata=at_least(1))
    ...     optimizer: str = dataclasses.field(default="sgd", metadata=one_of("sgd", "adamw"))
    ...     def __post_init__(self):
    ...         check_fields(self)
    >>> from_mapping(Train, {"steps": 10})
    Train(steps=10, optimizer='sgd')
    >>> from_mapping(Train, {"stpes": 10}, where="run.yaml: ")
    Traceback (most recent call last):
    ...
    autoloss.errors.InvalidValueError: run.yaml: unknown option 'stpes'; did you mean 'steps'?; ...
    >>> Train(steps=0)
    Traceback (most recent call last):
    ...
    autoloss.errors.InvalidValueError: steps must be >= 1, but got steps=0
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean

__all__ = ["Range", "at_least", "check_fields", "converted", "field_hints",
           "field_type_error", "from_mapping", "in_range", "matches", "one_of", "parse_size",
           "positive", "reject_unknown", "type_names", "value_type_error"]

T = TypeVar("T")


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


# ---- rules declared in field metadata -----------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """The numbers a field accepts: ``low`` / ``high`` (None: unbounded), each included unless
    ``low_open`` / ``high_open``; ``finite``: infinity (and always NaN) refused."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True

    def __contains__(self, value: float) -> bool:
        if value != value or (self.finite and not math.isfinite(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """``">= 1"``, ``"> 0"``, ``"in [0, 1)"``: the expected part of an error message."""
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low}, {self.high}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return "a finite number"


def at_least(low: float, *, finite: bool = True) -> dict[str, Any]:
    """Field metadata: a number ``>= low`` (None passes when the type allows it)."""
    return {"range": Range(low, finite=finite)}


def positive(*, finite: bool = True) -> dict[str, Any]:
    """Field metadata: a number ``> 0``."""
    return {"range": Range(0, low_open=True, finite=finite)}


def in_range(low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> dict[str, Any]:
    """Field metadata: a finite number between ``low`` and ``high``."""
    return {"range": Range(low, high, low_open=low_open, high_open=high_open)}


def one_of(*choices: Any) -> dict[str, Any]:
    """Field metadata: one of ``choices`` (a misspelt string gets a did-you-mean)."""
    return {"choices": tuple(choices)}


def converted(convert: Callable[..., Any]) -> dict[str, Any]:
    """Field metadata: ``convert(value, name=field_name)`` normalises the value before the
    checks (e.g. ``"96x128"`` -> ``(96, 128)``); it raises naming ``name`` when it cannot."""
    return {"convert": convert}


def _rule_error(f: dataclasses.Field, value: Any) -> str | None:
    """The message when ``value`` breaks a range or choice rule of field ``f``, else None."""
    if value is None:
        return None
    bounds = f.metadata.get("range")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if bounds is not None and number and value not in bounds:
        expected = bounds.describe()
        if bounds.finite and not math.isfinite(value) and expected != "a finite number":
            expected = f"a finite number {expected}"
        return f"{f.name} must be {expected}, but got {f.name}={value!r}"
    choices = f.metadata.get("choices")
    if choices is not None and not any(value is c or (type(value) is type(c) and value == c)
                                       for c in choices):
        return (f"{f.name} must be one of {list(choices)}, but got {f.name}={value!r}"
                f"{did_you_mean(value, [c for c in choices if isinstance(c, str)])}")
    return None


def check_fields(obj: Any, *, where: str = "") -> None:
    """Normalise and check every field of the dataclass instance ``obj`` (frozen or not), in
    field order: its ``converted`` function, its type (:func:`field_type_error`), then its
    range and choice rules. Raise :class:`~autoloss.errors.InvalidValueError` for the first
    field that fails, as ``"<where><name> must be <expected>, but got <value>"``."""
    for f in dataclasses.fields(obj):
        convert = f.metadata.get("convert")
        if convert is not None:
            try:
                object.__setattr__(obj, f.name, convert(getattr(obj, f.name), name=f.name))
            except (TypeError, ValueError) as err:
                raise InvalidValueError(f"{where}{err}") from None
        message = field_type_error(obj, f.name) or _rule_error(f, getattr(obj, f.name))
        if message is not None:
            raise InvalidValueError(f"{where}{message}")


# ---- building from a mapping --------------------------------------------------------------------


def reject_unknown(keys: Iterable[Any], allowed: Iterable[str], *, where: str = "",
                   what: str = "option") -> None:
    """Raise :class:`~autoloss.errors.InvalidValueError` for the first of ``keys`` not in
    ``allowed``: ``"<where>unknown <what> 'x'; did you mean 'y'?; expected one of [...]"``."""
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            raise InvalidValueError(f"{where}unknown {what} {key!r}{did_you_mean(str(key), allowed)}"
                                    f"; expected one of {allowed}")


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass among the members of ``hint`` (a nested section), else None."""
    for member in _members(hint):
        if isinstance(member, type) and dataclasses.is_dataclass(member):
            return member
    return None


def from_mapping(cls: type[T], data: Mapping[str, Any], *, where: str = "",
                 what: str = "option") -> T:
    """The dataclass ``cls`` built from ``data`` (a YAML section, CLI options): an unknown key
    is an error with a did-you-mean (:func:`reject_unknown`), a mapping given for a field whose
    type is a dataclass is built the same way (errors then name the section, ``"ppo: "``), and
    the values are checked by ``cls`` itself (its ``__post_init__``)."""
    if not isinstance(data, Mapping):
        raise InvalidTypeError(f"{where}the {cls.__name__} options must be a mapping of its "
                               f"fields, but got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    reject_unknown(data, names, where=where, what=what)
    hints = field_hints(cls)
    values = {}
    for key, value in data.items():
        nested = _dataclass_of(hints[key])
        if nested is not None and isinstance(value, Mapping):
            value = from_mapping(nested, value, where=f"{where}{key}: ", what=what)
        values[key] = value
    return cls(**values)


# ---- one parser of image sizes ------------------------------------------------------------------


def parse_size(value: Any, *, name: str = "size") -> tuple[int, int] | None:
    """``"HxW"`` / ``"S"`` / ``S`` / ``[H, W]`` / ``(H, W)`` -> ``(H, W)`` of positive ints (a
    single side S means SxS); None stays None.

    >>> parse_size("96x128"), parse_size(32), parse_size([24, 32])
    ((96, 128), (32, 32), (24, 32))
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            dims = [int(part) for part in value.lower().split("x")]
        except ValueError:
            dims = []
    else:
        dims = list(value) if isinstance(value, (list, tuple)) else [value]
    pair = len(dims) == 2 or (len(dims) == 1 and not isinstance(value, (list, tuple)))
    if not pair or not all(matches(d, int) and d >= 1 for d in dims):
        raise InvalidValueError(f"{name} must be HxW (e.g. 96x128), a side S, or [H, W] of "
                                f"positive ints, but got {name}={value!r}")
    return (int(dims[0]), int(dims[-1]))
