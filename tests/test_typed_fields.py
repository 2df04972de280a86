"""Field types checked from a dataclass's annotations (autoloss.utils.typed_fields), and the
search config built on them: frozen, its sections typed, its defaults in one place each."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autoloss.errors import InvalidTypeError, InvalidValueError
from autoloss.utils.typed_fields import (
    at_least,
    check_fields,
    converted,
    from_mapping,
    in_range,
    matches,
    one_of,
    parse_size,
    positive,
    reject_unknown,
    type_names,
)


@dataclass
class _Config:
    count: int = 1
    rate: float = 0.5
    flag: bool = True
    name: str | None = None
    where: Path | str | None = None
    names: list[str] | str = "a"
    hook: Callable[..., Any] | None = None
    anything: Any = None


@pytest.mark.parametrize(("value", "hint", "ok"), [
    (3, int, True), (True, int, False), ("3", int, False),
    (3, float, True), (True, float, False), (0.5, float, True),
    (True, bool, True), (1, bool, False),
    (None, str | None, True), ("x", str | None, True), (3, str | None, False),
    ([1], list[str], True), ((1,), list[str], False),
    (print, Callable[..., Any] | None, True), ("print", Callable[..., Any] | None, False),
    (object(), Any, True),
])
def test_matches(value, hint, ok):
    assert matches(value, hint) is ok


def test_errors_name_the_field_the_expected_types_and_the_value():
    assert type_names(int | None) == "int or NoneType"
    check_fields(_Config())
    with pytest.raises(InvalidValueError, match=r"^f\.yaml: count must be int, but got '2'$"):
        check_fields(_Config(count="2"), where="f.yaml: ")
    with pytest.raises(InvalidValueError, match="where must be Path or str or NoneType"):
        check_fields(_Config(where=3))
    with pytest.raises(InvalidValueError, match="hook must be a callable or NoneType"):
        check_fields(_Config(hook="x"))


def test_search_config_is_frozen_and_owns_its_sections():
    from autoloss.search.config import SearchConfig
    from autoloss.search.ppo import PPOOptions

    proxy = {"steps": 7}
    cfg = SearchConfig(proxy=proxy, ppo={"sigma": 0.1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trials = 3  # type: ignore[misc]
    proxy["steps"] = 8
    assert cfg.proxy == {"steps": 7}  # a copy: the caller's dict does not change it
    assert cfg.ppo == PPOOptions(sigma=0.1)
    assert SearchConfig(**cfg.__dict__) == cfg  # round trip, as the tests resuming a search do
    with pytest.raises(InvalidValueError, match="ppo option sigma must be float, but got 'x'"):
        SearchConfig(ppo={"sigma": "x"})


def test_ppo_defaults_live_in_ppo_options_only():
    from autoloss.search.ppo import PPOOptions, PPOSampler

    params = inspect.signature(PPOSampler).parameters
    for f in dataclasses.fields(PPOOptions):
        assert params[f.name].default == f.default, f.name


def test_every_sampler_name_has_a_builder():
    from autoloss.search.samplers import SAMPLER_BUILDERS, SAMPLERS

    assert tuple(SAMPLER_BUILDERS) == SAMPLERS


# ---- rules in field metadata, from_mapping, parse_size ------------------------------------------


@dataclass(frozen=True)
class _Inner:
    rate: float = dataclasses.field(default=0.5, metadata=in_range(0, 1, high_open=True))

    def __post_init__(self) -> None:
        check_fields(self, where="inner option ")


@dataclass(frozen=True)
class _Ruled:
    steps: int = dataclasses.field(default=10, metadata=at_least(1))
    lr: float = dataclasses.field(default=0.1, metadata=positive())
    timeout: float | None = dataclasses.field(default=None, metadata=positive(finite=False))
    optimizer: str = dataclasses.field(default="sgd", metadata=one_of("sgd", "adamw"))
    compile: bool | str = dataclasses.field(default="auto", metadata=one_of(True, False, "auto"))
    crop: tuple[int, int] | None = dataclasses.field(default=None, metadata=converted(parse_size))
    inner: _Inner = dataclasses.field(default_factory=_Inner)

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize(("options", "message"), [
    ({"steps": 0}, "steps must be >= 1, but got steps=0"),
    ({"steps": 2.0}, "steps must be int, but got 2.0"),  # the type first
    ({"lr": 0.0}, "lr must be > 0, but got lr=0.0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0, but got lr=inf"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, but got lr=nan"),
    ({"timeout": -1.0}, "timeout must be > 0, but got timeout=-1.0"),
    ({"optimizer": "sdg"}, "optimizer must be one of ['sgd', 'adamw'], but got optimizer='sdg'; "
                           "did you mean 'sgd'?"),
    ({"compile": "fast"}, "compile must be one of [True, False, 'auto'], but got compile='fast'"),
    ({"crop": "big"}, "crop must be HxW (e.g. 96x128), a side S, or [H, W] of positive ints, "
                      "but got crop='big'"),
])
def test_rules_name_the_field_the_expected_and_the_actual_value(options, message):
    with pytest.raises(InvalidValueError) as info:
        _Ruled(**options)
    assert str(info.value) == message


def test_rules_accept_their_values_and_converters_normalise():
    ruled = _Ruled(steps=1, lr=3, timeout=float("inf"), optimizer="adamw", compile=False,
                   crop="24x32")
    assert (ruled.steps, ruled.lr, ruled.timeout, ruled.compile, ruled.crop) == (
        1, 3, float("inf"), False, (24, 32))
    assert _Ruled(crop=[16, 8]).crop == (16, 8) and _Ruled(crop=16).crop == (16, 16)
    assert _Inner(rate=0.0).rate == 0.0
    with pytest.raises(InvalidValueError, match=r"^inner option rate must be in \[0, 1\), "
                                                r"but got rate=1\.0$"):
        _Inner(rate=1.0)


def test_from_mapping_refuses_an_unknown_key_with_a_suggestion():
    assert from_mapping(_Ruled, {"steps": 3, "crop": [8, 8]}) == _Ruled(steps=3, crop=(8, 8))
    with pytest.raises(InvalidValueError) as info:
        from_mapping(_Ruled, {"stpes": 3}, where="run.yaml: ")
    assert str(info.value) == ("run.yaml: unknown option 'stpes'; did you mean 'steps'?; expected "
                               "one of ['steps', 'lr', 'timeout', 'optimizer', 'compile', 'crop', "
                               "'inner']")
    with pytest.raises(InvalidValueError, match=r"^unknown proxy option 'zzz'; expected one of"):
        from_mapping(_Ruled, {"zzz": 1}, what="proxy option")
    with pytest.raises(InvalidTypeError, match="the _Ruled options must be a mapping of its "
                                               "fields, but got list"):
        from_mapping(_Ruled, ["steps"])  # type: ignore[arg-type]


def test_from_mapping_builds_nested_sections():
    assert from_mapping(_Ruled, {"inner": {"rate": 0.25}}).inner == _Inner(rate=0.25)
    with pytest.raises(InvalidValueError, match=r"^f: inner: unknown option 'rat'; did you mean "
                                                r"'rate'\?; expected one of \['rate'\]$"):
        from_mapping(_Ruled, {"inner": {"rat": 0.25}}, where="f: ")
    with pytest.raises(InvalidValueError, match=r"^inner option rate must be in"):
        from_mapping(_Ruled, {"inner": {"rate": 2.0}})


def test_reject_unknown_names_what_and_where():
    reject_unknown({"a": 1}, ["a", "b"])
    with pytest.raises(InvalidValueError, match=r"^space\.yaml: unknown key 'curvs'; did you mean "
                                                r"'curves'\?; expected one of \['curves'\]$"):
        reject_unknown(["curvs"], ["curves"], where="space.yaml: ", what="key")


@pytest.mark.parametrize(("text", "size"), [
    ("96x128", (96, 128)), ("96X128", (96, 128)), ("32", (32, 32)), (32, (32, 32)),
    ([24, 32], (24, 32)), ((24, 32), (24, 32)), (None, None),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["big", "0x8", "8x", "1x2x3", (32,), [0, 8], True, 2.0, ""])
def test_parse_size_refuses(bad):
    with pytest.raises(InvalidValueError, match=r"^crop must be HxW .* but got crop="):
        parse_size(bad, name="crop")
