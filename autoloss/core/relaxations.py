"""Monotone curves ``h: [0,1] -> [0,1]`` with ``h(0) = 0``, ``h(1) = 1``: the relaxations.

Auto Seg-Loss (Li et al., "Auto Seg-Loss: Searching Metric Surrogates for Semantic
Segmentation", ICLR 2021, sec. 3) relaxes a metric's logical operators with parameterised curves,
e.g. ``AND(p, g) = h(p) * g``. Two constraints keep the search sane, and here both hold **by
construction** for every parameter value (never by rejection), in floating point too: the truth
table (``h(0) = 0``, ``h(1) = 1``) and monotonicity (``h`` non-decreasing).

- :class:`BezierCurve`: piecewise quadratic Bezier through ``(0,0)`` and ``(1,1)`` (the paper's
  choice); the search maps raw ``s in [0,1]^k`` to control points by a cumulative transform.
- :class:`LinearCurve`: monotone piecewise linear on fixed or searched interior knots.
- :class:`IdentityCurve`: ``h(x) = x``.

A curve maps a tensor of any shape (clamped to ``[0, 1]``) to one of the same shape, dtype and
device, differentiably in the input (curve parameters are constants). Curves are immutable;
``to_dict`` / :func:`curve_from_dict` round-trip exactly.

This module is the public face and holds the families (:class:`RelaxationFamily`, :data:`FAMILIES`,
:func:`family`, :func:`curve_from_dict`, ...); the shared evaluation (:class:`Curve`, chunked
kernels, autograd) is in :mod:`autoloss.core._curve_eval` and the three curves in
:mod:`autoloss.core._curves`. Import every name from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from autoloss.core._curve_eval import Curve
from autoloss.core._curves import BezierCurve, IdentityCurve, LinearCurve, _count, cumulative_inverse
from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean

__all__ = ["FAMILIES", "BezierCurve", "BezierFamily", "Curve", "IdentityCurve", "IdentityFamily",
           "LinearCurve", "LinearFamily", "RelaxationFamily", "cumulative_inverse",
           "curve_from_dict", "curve_from_raw", "family", "family_of"]


class RelaxationFamily:
    """One kind of curve, and all the rest of autoloss needs to know of it: the ``kind`` its
    files and search spaces name it by, its class, the keys of its file form
    (:meth:`from_dict`), and for a search its raw numbers in ``[0, 1]``: how many
    (:meth:`raw_size`), the curve they give (:meth:`from_raw`) and those of the identity
    (:meth:`identity_raw`). A curve's *shape* is what fixes its number of parameters: ``pieces``
    (bezier), ``knots`` and ``knots_x`` (linear; ``knots_x`` given: fixed knot positions); a
    family ignores the shape options of the others. Every family is in :data:`FAMILIES`."""

    kind: ClassVar[str]
    curve_type: ClassVar[type[Curve]]
    file_keys: ClassVar[tuple[str, ...]] = ()  # required keys of to_dict, besides "kind"
    optional_file_keys: ClassVar[tuple[str, ...]] = ()
    shape_keys: ClassVar[tuple[str, ...]] = ()  # the shape options of a search-space entry

    @property
    def searchable(self) -> bool:
        """Whether a search space can tune it (it has raw numbers)."""
        return bool(self.shape_keys)

    def raw_size(self, *, pieces: int | None = None, knots: int | None = None,
                 knots_x: Sequence[float] | None = None) -> int:
        """Number of raw search numbers of a curve of this shape."""
        raise NotImplementedError

    def from_raw(self, raw: Sequence[float], *, pieces: int | None = None,
                 knots: int | None = None, knots_x: Sequence[float] | None = None) -> Curve:
        """The curve of raw search numbers ``raw`` (``raw_size`` of them, in ``[0, 1]``)."""
        raise NotImplementedError

    def identity_raw(self, *, pieces: int | None = None, knots: int | None = None,
                     knots_x: Sequence[float] | None = None) -> list[float]:
        """The raw numbers whose curve is the identity ``h(x) = x``."""
        raise NotImplementedError

    def graph_size(self, curve: Curve) -> int:
        """What, beside the kind, a compiled graph of this curve depends on (its pieces)."""
        return 0

    def from_dict(self, fields: Mapping[str, Any]) -> Curve:
        """The curve of its file form without ``kind``; unknown or missing keys are errors."""
        allowed = self.file_keys + self.optional_file_keys
        if unknown := sorted(set(fields) - set(allowed)):
            raise InvalidValueError(f"unknown keys {unknown} for a {self.kind!r} curve, which "
                                    f"takes {list(allowed)}" + did_you_mean(unknown[0], allowed))
        if missing := [k for k in self.file_keys if k not in fields]:
            raise InvalidValueError(f"a {self.kind!r} curve needs keys {list(self.file_keys)}, "
                                    f"but {missing} are missing in {dict(fields)!r}")
        return self.curve_type(**fields)


class BezierFamily(RelaxationFamily):
    """Piecewise quadratic Bezier curves (:class:`BezierCurve`), shaped by ``pieces``."""

    kind, curve_type, file_keys, shape_keys = "bezier", BezierCurve, ("points",), ("pieces",)

    def raw_size(self, *, pieces: int | None = None, knots: int | None = None,
                 knots_x: Sequence[float] | None = None) -> int:
        return BezierCurve.raw_size(pieces)

    def from_raw(self, raw: Sequence[float], *, pieces: int | None = None,
                 knots: int | None = None, knots_x: Sequence[float] | None = None) -> Curve:
        return BezierCurve.from_raw(list(raw), pieces=pieces)

    def identity_raw(self, *, pieces: int | None = None, knots: int | None = None,
                     knots_x: Sequence[float] | None = None) -> list[float]:
        """Control points ``P_k = (k/2p, k/2p)`` give ``s_k = 1 / (2p - k + 1)``."""
        p = _count("pieces", pieces, 1)
        return [v for k in range(1, 2 * p) for v in (1 / (2 * p - k + 1),) * 2]

    def graph_size(self, curve: Curve) -> int:
        return curve.pieces


class LinearFamily(RelaxationFamily):
    """Monotone piecewise linear curves (:class:`LinearCurve`), shaped by ``knots`` (searched
    positions) or ``knots_x`` (fixed positions)."""

    kind, curve_type = "linear", LinearCurve
    file_keys, optional_file_keys = ("knots_x", "knots_y"), ("fixed_x",)
    shape_keys = ("knots", "knots_x")

    def raw_size(self, *, pieces: int | None = None, knots: int | None = None,
                 knots_x: Sequence[float] | None = None) -> int:
        return LinearCurve.raw_size(len(knots_x) if knots_x is not None else knots,
                                    fixed_x=knots_x is not None)

    def from_raw(self, raw: Sequence[float], *, pieces: int | None = None,
                 knots: int | None = None, knots_x: Sequence[float] | None = None) -> Curve:
        raw = list(raw)
        if knots_x is not None:
            return LinearCurve.from_raw(raw, knots=len(knots_x), knots_x=list(knots_x))
        return LinearCurve.from_raw(raw, knots=knots if knots is not None
                                    else (len(raw) + 1) // 2)  # odd length: an error

    def identity_raw(self, *, pieces: int | None = None, knots: int | None = None,
                     knots_x: Sequence[float] | None = None) -> list[float]:
        """Knots on the diagonal: fixed ones get ``y = x``; ``k`` searched ones, raw ``[s^x...,
        s^y...]``, sit at ``x_i = y_i = (i+1)/(k+1)``."""
        if knots_x is not None:
            return cumulative_inverse(list(knots_x))
        steps = cumulative_inverse([(i + 1) / (knots + 1) for i in range(knots)])
        return steps + steps

    def graph_size(self, curve: Curve) -> int:
        return len(curve.knots_x) + 1


class IdentityFamily(RelaxationFamily):
    """The identity ``h(x) = x`` (:class:`IdentityCurve`): no parameters, not searched."""

    kind, curve_type = "identity", IdentityCurve

    def raw_size(self, *, pieces: int | None = None, knots: int | None = None,
                 knots_x: Sequence[float] | None = None) -> int:
        return 0

    def from_raw(self, raw: Sequence[float], *, pieces: int | None = None,
                 knots: int | None = None, knots_x: Sequence[float] | None = None) -> Curve:
        if list(raw):
            raise InvalidValueError(f"an identity curve has no parameters, but got "
                                    f"len(raw)={len(list(raw))}")
        return IdentityCurve()

    def identity_raw(self, *, pieces: int | None = None, knots: int | None = None,
                     knots_x: Sequence[float] | None = None) -> list[float]:
        return []


#: every curve family, by the ``kind`` its files and search spaces name it by
FAMILIES: dict[str, RelaxationFamily] = {
    "bezier": BezierFamily(), "linear": LinearFamily(), "identity": IdentityFamily()}


def family(kind: Any) -> RelaxationFamily:
    """The family named ``kind``, or an error naming the known kinds."""
    if kind not in FAMILIES:
        raise InvalidValueError(f"kind must be one of {sorted(FAMILIES)}, but got {kind!r}"
                                + did_you_mean(str(kind), list(FAMILIES)))
    return FAMILIES[kind]


def family_of(curve: Curve) -> RelaxationFamily:
    """The family of a curve object (a :class:`Curve` subclass outside :data:`FAMILIES` is an
    error)."""
    for fam in FAMILIES.values():
        if isinstance(curve, fam.curve_type):
            return fam
    raise InvalidTypeError(f"curve must be one of "
                           f"{[f.curve_type.__name__ for f in FAMILIES.values()]}, but got "
                           f"{type(curve).__name__}")


def curve_from_dict(d: Mapping[str, Any]) -> Curve:
    """Inverse of ``Curve.to_dict``: ``{"kind": "bezier", "points": [...]}``,
    ``{"kind": "linear", "knots_x": [...], "knots_y": [...]}`` or ``{"kind": "identity"}``."""
    if not isinstance(d, Mapping) or "kind" not in d:
        raise InvalidValueError(f"d must be a mapping with a 'kind' entry, but got {d!r}")
    return family(d["kind"]).from_dict({k: v for k, v in d.items() if k != "kind"})


def curve_from_raw(kind: str, raw: Sequence[float], *, pieces: int = 2,
                   knots_x: Sequence[float] | None = None) -> Curve:
    """Curve of ``kind`` from raw search parameters in ``[0, 1]`` (what a sampler proposes):
    ``bezier`` with ``pieces`` pieces; ``linear`` with fixed ``knots_x`` (``len(raw)`` of them)
    or ``len(raw) / 2`` searched knots (``pieces`` unused); ``identity`` with empty ``raw``."""
    return family(kind).from_raw(raw, pieces=pieces, knots_x=knots_x)
