"""Search-space files -> a typed :class:`~autoloss.search.space_types.SearchSpace`.

The built-in space of each metric ships inside the package, ``autoloss/search_spaces/<metric>.yaml``;
any other space is a file named by path (``--space PATH``, ``space:`` in an experiment file; the
project's own are in the repository's top-level ``search_spaces/``). A space says which curves of
the metric program are searched and how (Li et al., "Auto Seg-Loss", ICLR 2021, section 3.3): each
curve is a ``bezier`` (``pieces`` quadratic pieces, ``2 (2 pieces - 1)`` raw numbers) or a
``linear`` curve (``knots`` interior knots), each raw number searched in ``[low, high]`` inside
``[0, 1]``. Every file is readable on its own (no includes)::

    metric: miou                          # built-in metric, or a user program "file.py:name"
    curves:                               # exactly the curves the metric program uses
      inter: {kind: bezier, pieces: 2, low: 0.0, high: 1.0}
      union: {kind: bezier, pieces: 2}
    options: {classes: present}           # SurrogateLoss options: classes, tol, drop_bg, eps
    ce_weight: {fixed: 0.0}               # or {low: 0.0, high: 1.0}: + w * cross-entropy
    initial_points:                       # optional, raw numbers per curve; the first one is the
      paper_mu: {inter: [...], union: [...]}   # PPO sampler's initial mean (default: identity)
    reference: asl-voc-miou               # optional preset with the paper's published curves

Parameters are named ``<curve>.<i>`` (``inter.0`` .. ``inter.5``), plus ``ce_weight`` when it is
searched. The space classes (:class:`SearchSpace`, :class:`CompositeSpace` joining several
metrics' spaces, the :class:`Space` protocol the search reads) live in
:mod:`autoloss.search.space_types`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoloss.core.programs import BUILTIN_PROGRAMS, get_program, is_user_reference
from autoloss.core.relaxations import FAMILIES
from autoloss.errors import InvalidValueError, MissingFileError, did_you_mean
from autoloss.search.space_types import CeWeight, CurveSpace, SearchSpace
from autoloss.utils.typed_fields import reject_unknown
from autoloss.utils.yaml_files import load_yaml

__all__ = ["MAX_CURVE_PIECES", "SPACES_DIR", "default_space", "load_space", "parse_space"]

#: the built-in spaces, one file per built-in metric, shipped inside the package
SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
_TOP_KEYS = ("metric", "description", "curves", "options", "ce_weight", "initial_points",
             "reference")
# the keys of a search-space curve entry, per family a space can search
_CURVE_KEYS = {kind: ("kind", *fam.shape_keys, "low", "high")
               for kind, fam in FAMILIES.items() if fam.searchable}
_OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "classes": str, "tol": int, "drop_bg": bool, "eps": float, "float32_dilation": bool}


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    reject_unknown(data, allowed, where=f"{where}: ", what="key")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValueError(f"{where} must be a number, but got {value!r} ({type(value).__name__})")
    return float(value)


#: the most Bezier pieces or linear knots of one searched curve (the paper uses 1 or 2 pieces):
#: each adds raw search numbers, and a curve is evaluated per pixel
MAX_CURVE_PIECES = 32


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CURVE_PIECES:
        raise InvalidValueError(f"{where} must be an integer in [1, {MAX_CURVE_PIECES}] "
                                f"(autoloss.search.spaces.MAX_CURVE_PIECES), but got {value!r}")
    return value


def default_space(metric: str) -> SearchSpace:
    """The built-in space of a metric: the shipped ``autoloss/search_spaces/<metric>.yaml``
    (Auto Seg-Loss's settings: 2-piece Bezier per curve, 1-piece for BF1's four curves, raw
    numbers in [0, 1], BIoU with ``drop_bg``, ``tol=5``, classes present in the batch, no
    cross-entropy, the paper's initial point). A user program ``file.py:name`` gets a 2-piece
    Bezier per curve and the same options, with no initial point or reference."""
    if metric in BUILTIN_PROGRAMS:
        path = SPACES_DIR / f"{metric}.yaml"
        if not path.is_file():
            raise MissingFileError(f"the built-in search space {path} is missing: this autoloss "
                                   "install is incomplete; reinstall it")
        return parse_space(load_yaml(path), source=str(path))
    program = get_program(metric)
    curves = {c: CurveSpace("bezier", pieces=2) for c in program.curves}
    return SearchSpace(metric, curves, {"classes": "present"}, CeWeight())


def _parse_curve(data: Any, where: str) -> CurveSpace:
    if not isinstance(data, Mapping):
        raise InvalidValueError(f"{where} must be a mapping like {{kind: bezier, pieces: 2}}, "
                         f"but got {data!r}")
    kind = data.get("kind")
    if kind not in _CURVE_KEYS:
        raise InvalidValueError(f"{where}.kind must be one of {list(_CURVE_KEYS)}, but got {kind!r}"
                         f"{did_you_mean(str(kind), list(_CURVE_KEYS))}")
    _check_keys(data, _CURVE_KEYS[kind], where)
    low = _number(data.get("low", 0.0), f"{where}.low")
    high = _number(data.get("high", 1.0), f"{where}.high")
    if not 0.0 <= low <= high <= 1.0:
        raise InvalidValueError(f"{where}: bounds must satisfy 0 <= low <= high <= 1, but got "
                         f"low={low}, high={high}")
    if kind == "bezier":
        return CurveSpace("bezier", pieces=_count(data.get("pieces", 2), f"{where}.pieces"),
                          low=low, high=high)
    knots_x = data.get("knots_x")
    if knots_x is not None:
        if not isinstance(knots_x, list):
            raise InvalidValueError(f"{where}.knots_x must be a list of numbers, but got {knots_x!r}")
        knots_x = tuple(_number(v, f"{where}.knots_x[{i}]") for i, v in enumerate(knots_x))
        if not all(0 < a < b < 1 for a, b in zip((0.0, *knots_x), (*knots_x, 1.0))
                   if (a, b) != (0.0, 1.0)) or any(not 0 < v < 1 for v in knots_x):
            raise InvalidValueError(f"{where}.knots_x must be strictly increasing inside (0, 1), but "
                             f"got {list(knots_x)}")
    knots = _count(data.get("knots", len(knots_x) if knots_x else 3), f"{where}.knots")
    if knots_x is not None and len(knots_x) != knots:
        raise InvalidValueError(f"{where}: knots_x must have knots={knots} entries, but got "
                         f"{len(knots_x)}")
    return CurveSpace("linear", knots=knots, knots_x=knots_x, low=low, high=high)


def _parse_options(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidValueError(f"{where} must be a mapping, but got {data!r}")
    _check_keys(data, list(_OPTION_TYPES), where)
    out = dict(data)
    for key, value in out.items():
        expected = _OPTION_TYPES[key]
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok, out[key] = True, float(value)
        if not ok:
            raise InvalidValueError(f"{where}.{key} must be {expected.__name__}, but got {value!r}")
    if out.get("classes", "present") not in ("present", "all"):
        raise InvalidValueError(f"{where}.classes must be 'present' or 'all', but got "
                         f"{out['classes']!r}")
    return out


def _parse_ce(data: Any, where: str) -> CeWeight:
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        data = {"fixed": data}
    if not isinstance(data, Mapping):
        raise InvalidValueError(f"{where} must be {{fixed: w}} or {{low: a, high: b}}, but got {data!r}")
    _check_keys(data, ["fixed", "low", "high"], where)
    if "fixed" in data:
        if "low" in data or "high" in data:
            raise InvalidValueError(f"{where}: give either 'fixed' or 'low'/'high', not both")
        fixed = _number(data["fixed"], f"{where}.fixed")
        if fixed < 0:
            raise InvalidValueError(f"{where}.fixed must be >= 0, but got {fixed}")
        return CeWeight(fixed=fixed)
    low = _number(data.get("low", 0.0), f"{where}.low")
    high = _number(data.get("high", 1.0), f"{where}.high")
    if not 0.0 <= low <= high:
        raise InvalidValueError(f"{where}: bounds must satisfy 0 <= low <= high, but got "
                         f"low={low}, high={high}")
    return CeWeight(fixed=None, low=low, high=high)


def _parse_points(data: Any, curves: Mapping[str, CurveSpace], where: str
                  ) -> dict[str, dict[str, tuple[float, ...]]]:
    if not isinstance(data, Mapping):
        raise InvalidValueError(f"{where} must map a name to {{curve: [raw numbers]}}, but got {data!r}")
    out = {}
    for name, point in data.items():
        w = f"{where}.{name}"
        if not isinstance(point, Mapping):
            raise InvalidValueError(f"{w} must map curve names to lists of numbers, but got {point!r}")
        _check_keys(point, list(curves), w)
        raw = {}
        for curve, values in point.items():
            cs = curves[curve]
            if not isinstance(values, list) or len(values) != cs.size:
                raise InvalidValueError(f"{w}.{curve} must be a list of {cs.size} numbers, but got "
                                 f"{values!r}")
            nums = tuple(_number(v, f"{w}.{curve}[{i}]") for i, v in enumerate(values))
            bad = [v for v in nums if not cs.low <= v <= cs.high]
            if bad:
                raise InvalidValueError(f"{w}.{curve}: values must lie in [low, high] = "
                                 f"[{cs.low}, {cs.high}], but got {bad[0]}")
            raw[curve] = nums
        out[str(name)] = raw
    return out


def parse_space(data: Any, *, source: str = "<dict>") -> SearchSpace:
    """Validate a space mapping (the parsed YAML); errors name ``source`` and the key."""
    if not isinstance(data, Mapping):
        raise InvalidValueError(f"{source}: a search space must be a mapping (metric: ..., curves: ...), "
                         f"but got {type(data).__name__}")
    _check_keys(data, _TOP_KEYS, source)
    for key in ("metric", "curves"):
        if key not in data:
            raise InvalidValueError(f"{source}: missing required key {key!r}")
    metric = data["metric"]
    if not isinstance(metric, str):
        raise InvalidValueError(f"{source}: metric must be a string, but got {metric!r}")
    try:
        program = get_program(metric)
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise InvalidValueError(f"{source}: {err}") from None
    raw_curves = data["curves"]
    if not isinstance(raw_curves, Mapping):
        raise InvalidValueError(f"{source}: curves must map curve names to settings, but got "
                         f"{raw_curves!r}")
    missing = [c for c in program.curves if c not in raw_curves]
    extra = [c for c in raw_curves if c not in program.curves]
    if missing or extra:
        hint = "".join(did_you_mean(str(c), program.curves) for c in extra)
        raise InvalidValueError(f"{source}: curves must be exactly those of metric {metric!r}: "
                         f"{list(program.curves)}, but got {list(raw_curves)} (missing "
                         f"{missing}, unknown {extra}){hint}")
    curves = {c: _parse_curve(raw_curves[c], f"{source}: curves.{c}") for c in program.curves}
    options = _parse_options(data.get("options", {}), f"{source}: options")
    ce = _parse_ce(data.get("ce_weight", {"fixed": 0.0}), f"{source}: ce_weight")
    points = _parse_points(data.get("initial_points", {}), curves, f"{source}: initial_points")
    reference = data.get("reference")
    if reference is not None:
        from autoloss.losses.presets import PRESETS

        if reference not in PRESETS or "curves" not in PRESETS[reference]:
            names = [n for n, p in PRESETS.items() if "curves" in p]
            hint = did_you_mean(str(reference), names)
            raise InvalidValueError(f"{source}: reference must be a preset with curves, one of "
                             f"{names}, but got {reference!r}{hint}")
    return SearchSpace(metric, curves, options, ce, points, reference, source)


def load_space(path_or_metric: str | Path) -> SearchSpace:
    """Load a space file named by path, or the built-in space of a metric name
    (:func:`default_space`: the shipped file; a user metric ``file.py:name`` gets the default
    space). A metric name never reads a file of the working folder, so a search does not depend
    on where it is started; a ``search_spaces/<metric>.yaml`` there only gets a one-line warning
    saying it is not read (it once replaced the shipped space)."""
    text = str(path_or_metric)
    path = Path(text).expanduser()
    if path.suffix not in (".yaml", ".yml") and not path.is_file():
        if is_user_reference(text):
            return default_space(text)
        if text not in BUILTIN_PROGRAMS:
            raise InvalidValueError(f"unknown metric {text!r} and no space file: expected one of "
                             f"{sorted(BUILTIN_PROGRAMS)}, a 'file.py:name' program or a .yaml "
                             f"path{did_you_mean(text, list(BUILTIN_PROGRAMS))}")
        local = Path("search_spaces") / f"{text}.yaml"
        if local.is_file():
            warnings.warn(f"metric {text!r}: the built-in search space is used, not {str(local)!r} "
                          f"of the working folder (name a space by path: --space {local})",
                          stacklevel=2)
        return default_space(text)
    if not path.is_file():
        raise MissingFileError(f"search space file {str(path)!r} does not exist")
    return parse_space(load_yaml(path), source=str(path))
