"""Search spaces: ``autoloss/search_spaces/<metric>.yaml`` -> a typed :class:`SearchSpace`.

A space says which curves of the metric program are searched and how (Li et al., "Auto
Seg-Loss", ICLR 2021, section 3.3): each curve is a ``bezier`` (``pieces`` quadratic pieces,
``2 (2 pieces - 1)`` raw numbers) or a ``linear`` curve (``knots`` interior knots), each raw number
searched in ``[low, high]`` inside ``[0, 1]``. Raw numbers map to a valid curve by construction
(``autoloss.core.relaxations``: cumulative transform), so a sampled point is never rejected.
Every file is readable on its own (no includes)::

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
searched. :class:`CompositeSpace` joins several metrics' spaces; the search reads either
through the :class:`Space` protocol.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from autoloss.core.programs import BUILTIN_PROGRAMS, get_program, is_user_reference
from autoloss.core.relaxations import FAMILIES, RelaxationFamily, cumulative_inverse, family
from autoloss.errors import InvalidValueError, MissingFileError, did_you_mean
from autoloss.utils.typed_fields import reject_unknown
from autoloss.utils.yaml_files import load_yaml

__all__ = ["CeWeight", "CompositeSpace", "CurveSpace", "SearchSpace", "Space",
           "bezier_raw_from_points", "default_space", "load_space"]

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


def bezier_raw_from_points(points: Sequence[float]) -> list[float]:
    """Raw search numbers ``[s1x, s1y, s2x, s2y, ...]`` of absolute Bezier control points
    ``[x1, y1, x2, y2, ...]`` (non-decreasing per coordinate): the cumulative transform of the
    reference search script (fundamentalvision/Auto-Seg-Loss, ``ASL_search``),
    ``1 - P_k = prod_{j<=k} (1 - s_j)`` per coordinate, inverted."""
    xs = cumulative_inverse(points[0::2])
    ys = cumulative_inverse(points[1::2])
    return [v for pair in zip(xs, ys) for v in pair]


@dataclass(frozen=True)
class CurveSpace:
    """How one curve is searched: ``kind`` (``bezier`` with ``pieces``, or ``linear`` with
    ``knots`` and optional fixed ``knots_x``), and the bounds ``[low, high]`` of its raw numbers."""

    kind: str
    pieces: int | None = None
    knots: int | None = None
    knots_x: tuple[float, ...] | None = None
    low: float = 0.0
    high: float = 1.0

    @property
    def family(self) -> RelaxationFamily:
        """The curve family of ``kind`` (:data:`autoloss.core.relaxations.FAMILIES`)."""
        return family(self.kind)

    def _shape(self) -> dict[str, Any]:
        return {"pieces": self.pieces, "knots": self.knots, "knots_x": self.knots_x}

    @property
    def size(self) -> int:
        """Number of raw search numbers of this curve."""
        return self.family.raw_size(**self._shape())

    def curve(self, raw: Sequence[float]) -> Any:
        """The :class:`~autoloss.core.relaxations.Curve` of raw numbers ``raw`` (``size`` of them)."""
        return self.family.from_raw(raw, **self._shape())

    def identity_raw(self) -> list[float]:
        """Raw numbers of the identity ``h(x) = x`` (see the family's ``identity_raw``)."""
        return self.family.identity_raw(**self._shape())

    def to_dict(self) -> dict[str, Any]:
        shape = self._shape()
        out: dict[str, Any] = {"kind": self.kind}
        for key in self.family.shape_keys:
            if key == "knots_x" and shape[key] is None:  # written only when the knots are fixed
                continue
            out[key] = list(shape[key]) if key == "knots_x" else shape[key]
        out.update(low=self.low, high=self.high)
        return out


@dataclass(frozen=True)
class CeWeight:
    """Weight of an added cross-entropy term: ``fixed`` value, or searched in ``[low, high]``."""

    fixed: float | None = 0.0
    low: float = 0.0
    high: float = 1.0

    @property
    def searched(self) -> bool:
        return self.fixed is None


def _clip(value: float, low: float, high: float) -> float:
    return min(max(float(value), low), high)


class Space(Protocol):
    """What the search reads of a space: :class:`SearchSpace` (one metric) or
    :class:`CompositeSpace` (several). Parameters are flat ``{name: raw number}`` dicts."""

    def param_names(self) -> list[str]:
        """The searched parameters, in a fixed order."""

    def bounds(self) -> dict[str, tuple[float, float]]:
        """Parameter name -> ``(low, high)``."""

    def initial_params(self) -> dict[str, float]:
        """Where a search starts (PPO's first mean, ``prior`` startup points)."""

    def reference_points(self) -> dict[str, dict[str, float]]:
        """Label -> point, evaluated first (the plain soft metric, published curves)."""

    def params_of_loss(self, spec: Mapping[str, Any]) -> dict[str, float]:
        """The point of a loss spec (``init_from``); raises ValueError if it has none here."""

    def identity(self) -> dict[str, Any]:
        """Everything a trial's loss depends on besides its parameters (JSON-able)."""

    def fixed_options(self) -> dict[str, Any]:
        """The fixed surrogate options (per metric for several metrics)."""

    def metric_spaces(self) -> tuple[SearchSpace, ...]:
        """The one-metric spaces it is made of."""

    def loss_spec(self, params: Mapping[str, float], *, ignore_index: int | None = None
                  ) -> dict[str, Any]:
        """The loss spec (``autoloss.losses.load_loss`` schema) of ``params``."""


@dataclass(frozen=True)
class SearchSpace:
    """A typed search space for one metric (see the module docstring for the file format).

    Attributes:
        metric: metric name (or user program ``file.py:name``).
        curves: curve name -> :class:`CurveSpace`, in the metric program's order.
        options: fixed :class:`~autoloss.losses.SurrogateLoss` options.
        ce_weight: the cross-entropy weight, fixed or searched.
        initial_points: name -> {curve -> raw numbers}.
        reference: loss preset holding the paper's published curves (or None).
        source: the file it came from (or ``"default"``).
    """

    metric: str
    curves: dict[str, CurveSpace]
    options: dict[str, Any] = field(default_factory=dict)
    ce_weight: CeWeight = field(default_factory=CeWeight)
    initial_points: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)
    reference: str | None = None
    source: str = "default"

    def identity(self) -> dict[str, Any]:
        """Everything a trial's loss depends on besides its parameters (JSON-able): the metric,
        every curve's family, shape and bounds, the fixed options and the cross-entropy weight
        (what a resumed study must share; the initial and reference points are left out)."""
        return {"metric": self.metric,
                "curves": {name: cs.to_dict() for name, cs in self.curves.items()},
                "options": json.loads(json.dumps(self.options, default=list)),
                "ce_weight": dataclasses.asdict(self.ce_weight)}

    def fixed_options(self) -> dict[str, Any]:
        """The fixed surrogate options (``classes``, ``tol``, ``drop_bg``, ...)."""
        return dict(self.options)

    def metric_spaces(self) -> tuple[SearchSpace, ...]:
        return (self,)

    def param_names(self) -> list[str]:
        """``<curve>.<i>`` for every raw number in curve order, then ``ce_weight`` if searched."""
        names = [f"{c}.{i}" for c, cs in self.curves.items() for i in range(cs.size)]
        return names + (["ce_weight"] if self.ce_weight.searched else [])

    def bounds(self) -> dict[str, tuple[float, float]]:
        """Parameter name -> ``(low, high)``."""
        out = {f"{c}.{i}": (cs.low, cs.high) for c, cs in self.curves.items()
               for i in range(cs.size)}
        if self.ce_weight.searched:
            out["ce_weight"] = (self.ce_weight.low, self.ce_weight.high)
        return out

    def params_of(self, raw: Mapping[str, Sequence[float]], *, ce_weight: float | None = None
                  ) -> dict[str, float]:
        """Flat parameters from raw numbers per curve, clipped to the bounds (missing curves:
        identity; ``ce_weight`` defaults to its lower bound, i.e. the plain surrogate)."""
        params: dict[str, float] = {}
        for name, cs in self.curves.items():
            values = list(raw.get(name, cs.identity_raw()))
            for i, v in enumerate(values):
                params[f"{name}.{i}"] = _clip(v, cs.low, cs.high)
        if self.ce_weight.searched:
            w = self.ce_weight.low if ce_weight is None else ce_weight
            params["ce_weight"] = _clip(w, self.ce_weight.low, self.ce_weight.high)
        return params

    def identity_params(self) -> dict[str, float]:
        """Every curve the identity: the plain soft metric (Auto Seg-Loss's search start)."""
        return self.params_of({})

    def initial_params(self) -> dict[str, float]:
        """The first ``initial_points`` entry (the identity if there is none)."""
        first = next(iter(self.initial_points.values()), {})
        return self.params_of(first)

    def reference_points(self) -> dict[str, dict[str, float]]:
        """Points worth evaluating first: ``identity``, each ``initial:<name>`` that differs from
        it (by more than 1e-3), and ``paper:<preset>`` (published curves, absolute control points
        converted to raw numbers and clipped to the bounds)."""
        points = {"identity": self.identity_params()}
        for name, raw in self.initial_points.items():
            points[f"initial:{name}"] = self.params_of(raw)
        if self.reference is not None:
            points[f"paper:{self.reference}"] = self.params_of(self._reference_raw())
        unique: dict[str, dict[str, float]] = {}
        for label, params in points.items():
            if not any(max(abs(params[k] - p[k]) for k in params) <= 1e-3
                       for p in unique.values()):
                unique[label] = params
        return unique

    def _reference_raw(self) -> dict[str, list[float]]:
        from autoloss.losses.presets import PRESETS

        return self._raw_of_curves(PRESETS[self.reference]["curves"])

    def _raw_of_curves(self, curves: Mapping[str, Any]) -> dict[str, list[float]]:
        raw = {}
        for name, cs in self.curves.items():
            spec = curves.get(name)
            if (isinstance(spec, Mapping) and spec.get("kind") == "bezier" == cs.kind
                    and len(spec.get("points", ())) == cs.size):
                raw[name] = bezier_raw_from_points(spec["points"])
        return raw

    def params_of_loss(self, spec: Mapping[str, Any]) -> dict[str, float]:
        """Flat parameters of a loss spec (e.g. a loss file searched elsewhere): the Bezier
        curves of its surrogate whose name and size match this space's, the weight of a
        cross-entropy part as ``ce_weight``; the rest as :meth:`params_of` fills it in.

        Raises if the loss has no surrogate for this space's metric or no curve matches."""
        parts = spec["combine"] if "combine" in spec else [spec]
        surrogate = next((p for p in parts if p.get("name") == "surrogate"), None)
        if surrogate is None or surrogate.get("metric") != self.metric:
            found = None if surrogate is None else surrogate.get("metric")
            raise InvalidValueError(f"the loss has no surrogate of metric {self.metric!r} (found "
                             f"{found!r}), so it cannot start a search of this space")
        raw = self._raw_of_curves(surrogate.get("curves") or {})
        if not raw:
            raise InvalidValueError(f"none of the loss's curves {sorted(surrogate.get('curves') or {})} "
                             f"is a Bezier curve that fits this space's "
                             f"{ {n: (c.kind, c.size) for n, c in self.curves.items()} }")
        ce = next((p for p in parts if p.get("name") == "cross_entropy"), None)
        weight = None  # the cross-entropy weight next to a surrogate of weight 1 (loss_spec)
        if ce is not None and "combine" in spec:
            base = float(surrogate.get("weight", 1.0))
            weight = float(ce.get("weight", 1.0)) / base if base > 0 else None
        return self.params_of(raw, ce_weight=weight)

    def curve_specs(self, params: Mapping[str, float]) -> dict[str, dict[str, Any]]:
        """Curve name -> curve dict (absolute points) of flat parameters ``params``."""
        missing = [n for n in self.param_names() if n not in params]
        if missing:
            raise InvalidValueError(f"params lack {missing[:4]}{' ...' if len(missing) > 4 else ''} "
                             f"of the {self.metric!r} space")
        return {c: cs.curve([params[f"{c}.{i}"] for i in range(cs.size)]).to_dict()
                for c, cs in self.curves.items()}

    def loss_spec(self, params: Mapping[str, float], *, ignore_index: int | None = None,
                  weight: float | None = None) -> dict[str, Any]:
        """The loss spec (``autoloss.losses.load_loss`` schema) of ``params``: the surrogate, or
        ``{"combine": [surrogate (weight 1), cross_entropy (weight w)]}`` when ``w > 0``."""
        spec: dict[str, Any] = {"name": "surrogate", "metric": self.metric,
                                "ignore_index": ignore_index, **self.options,
                                "curves": self.curve_specs(params)}
        w = params["ce_weight"] if self.ce_weight.searched else self.ce_weight.fixed
        if weight is not None:
            return {**spec, "weight": weight}
        if w and w > 0:
            ce: dict[str, Any] = {"name": "cross_entropy", "weight": float(w)}
            if ignore_index is not None:
                ce["ignore_index"] = ignore_index
            return {"combine": [{**spec, "weight": 1.0}, ce]}
        return spec

    def build_loss(self, params: Mapping[str, float], *, ignore_index: int | None = None
                   ) -> nn.Module:
        """The loss module of ``params`` (valid by construction, never rejected)."""
        from autoloss.losses import load_loss

        return load_loss(self.loss_spec(params, ignore_index=ignore_index))


@dataclass(frozen=True)
class CompositeSpace:
    """Several metrics' spaces joined: loss ``sum_i w_i * (1 - surrogate_i)`` (+ CE as in the first
    term's space). ``weights[i]`` is a number (weighted-sum target: the loss mixes the surrogates
    with the objective's weights) or None (searched as ``mix.<metric>`` in [0, 1]; the weights are
    normalised to sum 1, used for multi-objective searches so the Pareto front spans trade-offs).
    """

    terms: tuple[tuple[str, float | None, SearchSpace], ...]

    def _prefixed(self) -> list[tuple[str, SearchSpace, float | None]]:
        return [(f"{m}.", s, w) for m, w, s in self.terms]

    def param_names(self) -> list[str]:
        names = [p + n for p, s, _ in self._prefixed() for n in s.param_names()]
        return names + [f"mix.{m}" for m, w, _ in self.terms if w is None]

    def bounds(self) -> dict[str, tuple[float, float]]:
        out = {p + n: b for p, s, _ in self._prefixed() for n, b in s.bounds().items()}
        out.update({f"mix.{m}": (0.0, 1.0) for m, w, _ in self.terms if w is None})
        return out

    def _join(self, per_term: Sequence[Mapping[str, float]]) -> dict[str, float]:
        out = {p + n: v for (p, _, _), params in zip(self._prefixed(), per_term)
               for n, v in params.items()}
        out.update({f"mix.{m}": 0.5 for m, w, _ in self.terms if w is None})
        return out

    def identity_params(self) -> dict[str, float]:
        return self._join([s.identity_params() for _, _, s in self.terms])

    def initial_params(self) -> dict[str, float]:
        return self._join([s.initial_params() for _, _, s in self.terms])

    def reference_points(self) -> dict[str, dict[str, float]]:
        return {"identity": self.identity_params()}

    def params_of_loss(self, spec: Mapping[str, Any]) -> dict[str, float]:
        """Always raises: a loss file's curves start a single-metric search only."""
        raise InvalidValueError(f"a loss's curves start a single-metric search only, but this "
                                f"space combines {[m for m, _, _ in self.terms]}")

    def identity(self) -> dict[str, Any]:
        """Every term's metric, weight (None: searched) and :meth:`SearchSpace.identity`."""
        return {"terms": [[m, w, s.identity()] for m, w, s in self.terms]}

    def fixed_options(self) -> dict[str, Any]:
        """Metric -> its space's fixed surrogate options."""
        return {metric: dict(term.options) for metric, _, term in self.terms}

    def metric_spaces(self) -> tuple[SearchSpace, ...]:
        return tuple(s for _, _, s in self.terms)

    def loss_spec(self, params: Mapping[str, float], *, ignore_index: int | None = None
                  ) -> dict[str, Any]:
        weights = [w if w is not None else float(params[f"mix.{m}"]) for m, w, _ in self.terms]
        if any(w is None for _, w, _ in self.terms):
            total = sum(weights)
            weights = [w / total if total > 0 else 1 / len(weights) for w in weights]
        parts = []
        for (prefix, space, _), w in zip(self._prefixed(), weights):
            sub = {n[len(prefix):]: v for n, v in params.items() if n.startswith(prefix)}
            parts.append(space.loss_spec(sub, ignore_index=ignore_index, weight=w))
        first = self.terms[0][2]
        ce = (params.get(f"{self.terms[0][0]}.ce_weight") if first.ce_weight.searched
              else first.ce_weight.fixed)
        if ce and ce > 0:
            part: dict[str, Any] = {"name": "cross_entropy", "weight": float(ce)}
            if ignore_index is not None:
                part["ignore_index"] = ignore_index
            parts.append(part)
        return {"combine": parts}

    def build_loss(self, params: Mapping[str, float], *, ignore_index: int | None = None
                   ) -> nn.Module:
        from autoloss.losses import load_loss

        return load_loss(self.loss_spec(params, ignore_index=ignore_index))


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
    """Load a space file, or the space of a metric name: ``search_spaces/<metric>.yaml`` in the
    current directory (a user's own version, with a warning naming it), else
    :func:`default_space` (the shipped file; a user metric ``file.py:name`` gets the default
    space)."""
    text = str(path_or_metric)
    path = Path(text).expanduser()
    if path.suffix not in (".yaml", ".yml") and not path.is_file():
        if is_user_reference(text):
            return default_space(text)
        local = Path("search_spaces") / f"{text}.yaml"
        if local.is_file():
            warnings.warn(f"metric {text!r}: using the search space {str(local.resolve())!r} of "
                          f"the working folder, not the built-in one (the study records its "
                          f"contents; pass --space FILE to name a space explicitly)", stacklevel=2)
            return load_space(local.resolve())
        if text not in BUILTIN_PROGRAMS:
            raise InvalidValueError(f"unknown metric {text!r} and no space file: expected one of "
                             f"{sorted(BUILTIN_PROGRAMS)}, a 'file.py:name' program or a .yaml "
                             f"path{did_you_mean(text, list(BUILTIN_PROGRAMS))}")
        return default_space(text)
    if not path.is_file():
        raise MissingFileError(f"search space file {str(path)!r} does not exist")
    return parse_space(load_yaml(path), source=str(path))
