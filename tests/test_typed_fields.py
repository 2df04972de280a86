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

from autoloss.errors import InvalidValueError
from autoloss.utils.typed_fields import check_field_types, matches, type_names


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
    check_field_types(_Config())
    with pytest.raises(InvalidValueError, match=r"^f\.yaml: count must be int, but got '2'$"):
        check_field_types(_Config(count="2"), where="f.yaml: ")
    with pytest.raises(InvalidValueError, match="where must be Path or str or NoneType"):
        check_field_types(_Config(where=3))
    with pytest.raises(InvalidValueError, match="hook must be a callable or NoneType"):
        check_field_types(_Config(hook="x"))


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
